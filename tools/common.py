"""What every node tool shares: finding the node, one-line errors, JSON output."""
from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import click

from bus.client import RequestError, request
from bus.rundir import NodeNotFound, RunDir, find_run_dir

run_dir_option = click.option(
    "--run-dir", envvar="ILNP_RUN_DIR", default=None, metavar="DIR",
    help="The node's run directory (default: $ILNP_RUN_DIR, else the one node in this namespace).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def parse_port(text: str, what: str) -> int:
    """A port argument 1-65535, or a usage error naming `what`."""
    try:
        port = int(text, 10)
    except ValueError:
        port = None
    if port is None or not 1 <= port <= 65535:
        raise click.UsageError(f"bad {what} {text!r}: must be a number 1-65535")
    return port


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


def run_cli(cli: click.Command, prog: str, argv: list[str] | None = None,
            expected: tuple[type[Exception], ...] = ()) -> int:
    """Run a click command; return its exit code. Every error is one line on stderr
    (usage errors too), never a traceback (ILNP_DEBUG=1 shows one for a bug)."""
    try:
        rv = cli.main(args=argv, prog_name=prog, standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        say(prog, f"{exc.format_message()} (see --help)")
        return exc.exit_code
    except click.ClickException as exc:
        say(prog, exc.format_message())
        return exc.exit_code or 1
    except expected as exc:
        say(prog, str(exc))
        return 1
    except (click.exceptions.Abort, KeyboardInterrupt):
        say(prog, "interrupted")
        return 130
    except Exception as exc:  # a bug: still one line unless asked for more
        if os.environ.get("ILNP_DEBUG"):
            traceback.print_exc()
        say(prog, f"internal error: {type(exc).__name__}: {exc}")
        return 1


class OneLineCommand(click.Command):
    """A click command run through run_cli: every error is one line on stderr."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        prog = prog_name or os.path.basename(sys.argv[0]).removesuffix(".py") or self.name
        sys.exit(run_cli(self, prog, args))


def say(prog: str, message: str) -> None:
    click.echo(f"{prog}: {' '.join(str(message).split())}", err=True)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, default=_json_default, sort_keys=True))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
