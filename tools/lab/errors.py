"""The one exception the lab raises: a one-line message meant for a person."""


class LabError(Exception):
    """Something the lab cannot do; str(error) is one line, shown as is by the CLI."""
