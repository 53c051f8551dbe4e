"""`ilnp-forward`: TCP services over the overlay, through the node's stream relay.

    ilnp-forward serve STP_PORT --to HOST:PORT          make a local TCP service reachable
    ilnp-forward listen LOCAL_TCP_PORT REMOTE_HOST STP_PORT
                                                        a local TCP port that reaches it
    ilnp-forward list [--json]                          the forwards
    ilnp-forward delete serve STP_PORT | listen LOCAL_TCP_PORT

Forwards are kept by the relay (they survive a restart of the relay and of the node).
Streams are encrypted (QUIC); with plain NIDs they are not authenticated, and `list`
says so. Every error is one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import sys

import click

from .common import ask, json_option, node, parse_port, print_json, run_cli, run_dir_option

PROG = "ilnp-forward"


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise click.UsageError(f"bad --to {text!r}: expected HOST:PORT")
    return host, parse_port(port, "port in --to")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """TCP services over the overlay (QUIC streams over STP)."""


@cli.command()
@click.argument("stp_port")
@click.option("--to", "target", required=True, metavar="HOST:PORT", help="The local TCP service to reach.")
@run_dir_option
@json_option
def serve(stp_port, target, run_dir, as_json):
    """Make the TCP service HOST:PORT reachable over the overlay at STP_PORT of this node."""
    host, port = host_port(target)
    stp_port = parse_port(stp_port, "STP port")  # arguments first: a bad one needs no node
    result = ask(node(run_dir), "stream", "serve", stp_port=stp_port, host=host, port=port)
    show(result, as_json, "serving")


@cli.command()
@click.argument("local_port")
@click.argument("remote_host")
@click.argument("stp_port")
@click.option("--bind", default=None, metavar="ADDRESS", help="Listen address (default: the node's stream.bind).")
@run_dir_option
@json_option
def listen(local_port, remote_host, stp_port, bind, run_dir, as_json):
    """Listen on LOCAL_PORT; each TCP connection reaches REMOTE_HOST's forward at STP_PORT."""
    args = {"local_port": parse_port(local_port, "local port"), "host": remote_host,
            "stp_port": parse_port(stp_port, "STP port"), "bind": bind}
    result = ask(node(run_dir), "stream", "listen", **args)
    show(result, as_json, "listening")


@cli.command(name="list")
@run_dir_option
@json_option
def list_(run_dir, as_json):
    """List the forwards."""
    result = ask(node(run_dir), "stream", "forwards")
    if as_json:
        print_json(result)
        return
    rows = result["serve"] + result["listen"]
    if not rows:
        click.echo("no forwards")
    for row in rows:
        click.echo(describe(row))
    if rows and not result.get("authenticated"):
        click.echo("streams are encrypted, not authenticated (plain NIDs)")


@cli.command()
@click.argument("kind", type=click.Choice(["serve", "listen"]))
@click.argument("port")
@run_dir_option
@json_option
def delete(kind, port, run_dir, as_json):
    """Delete a forward: serve STP_PORT, or listen LOCAL_TCP_PORT."""
    args = {kind: parse_port(port, "port")}
    result = ask(node(run_dir), "stream", "delete", **args)
    show(result, as_json, "deleted")


def describe(row: dict) -> str:
    if row["kind"] == "serve":
        state = "" if row.get("bound", True) else " (not bound yet)"
        return f"serve  STP port {row['stp_port']} -> {row['to']}{state}"
    return f"listen {row['bind']}:{row['local_port']} -> {row['to']}"


def show(result: dict, as_json: bool, verb: str) -> None:
    if as_json:
        print_json(result)
    else:
        click.echo(f"{verb}: {describe(result)}")


def run(argv: list[str] | None = None) -> int:
    return run_cli(cli, PROG, argv)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
