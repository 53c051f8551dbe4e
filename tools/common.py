"""What every node tool shares: finding the node, one-line errors, JSON output."""
from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import click

from bus.client import RequestError, request
from bus.rundir import NodeNotFound, RunDir, find_run_dir

run_dir_option = click.option(
    "--run-dir", envvar="ILNP_RUN_DIR", default=None, metavar="DIR",
    help="The node's run directory (default: $ILNP_RUN_DIR, else the one node in this namespace).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def node(run_dir: str | None) -> RunDir:
    """The node to talk to, or a one-line error."""
    try:
        return find_run_dir(run_dir)
    except NodeNotFound as exc:
        raise click.ClickException(str(exc)) from None


def ask(run: RunDir, actor: str, cmd: str, timeout: float = 3.0, **args: Any) -> Any:
    try:
        return request(run, actor, cmd, timeout=timeout, **args)
    except RequestError as exc:
        raise click.ClickException(str(exc)) from None


def one_line_errors(fn: Callable) -> Callable:
    """Turn unexpected exceptions of a tool into one line and exit status 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:  # a tool never prints a traceback at a user
            raise click.ClickException(f"{exc.__class__.__name__}: {exc}") from None
    return wrapper


class OneLineCommand(click.Command):
    """A click command whose every error, usage errors included, is one line on stderr."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        prog = prog_name or self.name
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            _say(prog, f"{exc.format_message()} (see --help)")
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            _say(prog, exc.format_message())
            sys.exit(exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def _say(prog: str, message: str) -> None:
    click.echo(f"{prog}: {' '.join(str(message).split())}", err=True)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, default=_json_default, sort_keys=True))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
