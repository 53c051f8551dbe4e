"""`ilnp-move LOCATORS`: move a running node to another locator set now (a soft handoff).

LOCATORS is one set, comma separated: `0:0:0:b` or `0:0:0:b,0:0:0:c`. The node joins
it, advertises there, sends locator updates to its active sessions and keeps the old
set for its handoff time (make before break).
"""
from __future__ import annotations

import click

from actors.proto.addr import AddressError, parse_locator_set

from .common import OneLineCommand, ask, json_option, node, print_json, run_dir_option


@click.command(cls=OneLineCommand)
@click.argument("locators")
@run_dir_option
@json_option
def main(locators, run_dir, as_json):
    """Move the node to LOCATORS (e.g. 0:0:0:b or 0:0:0:b,0:0:0:c)."""
    try:
        parse_locator_set(locators)
    except AddressError as exc:
        raise click.ClickException(f"bad LOCATORS: {exc}") from None
    state = ask(node(run_dir), "mobility", "move", locs=locators)
    if as_json:
        print_json(state)
    else:
        leaving = ",".join(state["leaving"]) or "-"
        click.echo(f"now in {','.join(state['cur'])} (leaving {leaving})")


if __name__ == "__main__":
    main()
