"""`ilnp-map`: map a local UDP port to a remote host and port through the node's UDP proxy.

    ilnp-map LOCAL_PORT REMOTE_HOST REMOTE_PORT [--replace] [--any-remote]
                                            map, print the proxy port
    ilnp-map --list                         the mappings
    ilnp-map --delete LOCAL_PORT            remove one
    (each with --json for scripts, --run-dir DIR for a node other than the one here)

An application bound to UDP port LOCAL_PORT sends to the proxy port (127.0.0.1) and
receives from it: only what REMOTE_HOST sends from STP port REMOTE_PORT, or with
--any-remote what any overlay host sends to LOCAL_PORT (its own datagrams still go to
REMOTE_HOST:REMOTE_PORT). Every error is one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import sys

import click

from bus.client import RequestError, request
from bus.rundir import NodeNotFound, find_run_dir

from .common import json_option, parse_port, print_json, run_cli, run_dir_option

PROG = "ilnp-map"


def ask_proxy(run_dir: str | None, cmd: str, **args):
    try:
        return request(find_run_dir(run_dir), "proxy", cmd, **args)
    except (RequestError, NodeNotFound) as exc:
        raise click.ClickException(str(exc)) from None


def note(text: str) -> None:
    click.echo(f"{PROG}: note: {text}", err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, metavar="[LOCAL_PORT REMOTE_HOST REMOTE_PORT]")
@click.option("--replace", is_flag=True, help="Change LOCAL_PORT's mapping if it has one.")
@click.option("--any-remote", is_flag=True,
              help="Deliver to LOCAL_PORT what any overlay host sends it, from any STP port (for a "
                   "server); replies still go to REMOTE_HOST:REMOTE_PORT.")
@click.option("--list", "do_list", is_flag=True, help="List the mappings.")
@click.option("--delete", "delete_port", metavar="LOCAL_PORT", help="Remove LOCAL_PORT's mapping.")
@run_dir_option
@json_option
def cli(args, replace, any_remote, do_list, delete_port, run_dir, as_json):
    """Map local UDP port LOCAL_PORT to REMOTE_HOST:REMOTE_PORT over the overlay and print
    the proxy port the application sends to; or --list, or --delete LOCAL_PORT.

    The application (bound to LOCAL_PORT on this host) sends to the proxy port on
    loopback; datagrams from other hosts are dropped. It is delivered what arrives for
    STP port LOCAL_PORT only from REMOTE_HOST:REMOTE_PORT (the NID REMOTE_HOST resolves
    to now, and STP port REMOTE_PORT) unless the mapping is --any-remote: then from any
    overlay host and port, and its replies still go to REMOTE_HOST:REMOTE_PORT."""
    modes = [bool(args), do_list, delete_port is not None]
    if sum(modes) != 1:
        raise click.UsageError("give exactly one of: LOCAL_PORT REMOTE_HOST REMOTE_PORT, --list, "
                               "--delete LOCAL_PORT")
    for flag, given in (("--replace", replace), ("--any-remote", any_remote)):
        if given and not args:
            raise click.UsageError(f"{flag} goes with LOCAL_PORT REMOTE_HOST REMOTE_PORT")
    if do_list:
        show_list(ask_proxy(run_dir, "list"), as_json)
    elif delete_port is not None:
        port = parse_port(delete_port, "local port")
        show_one(ask_proxy(run_dir, "unmap", local_port=port), as_json, "unmapped")
    else:
        if len(args) != 3:
            raise click.UsageError(f"expected LOCAL_PORT REMOTE_HOST REMOTE_PORT, got {len(args)} "
                                   f"argument{'s' if len(args) != 1 else ''}")
        local_port = parse_port(args[0], "local port")
        host = args[1]
        if not host or not host.isprintable():
            raise click.UsageError(f"bad remote host {host!r}")
        remote_port = parse_port(args[2], "remote port")
        result = ask_proxy(run_dir, "map", local_port=local_port, host=host, remote_port=remote_port,
                           replace=replace, any_remote=any_remote)
        show_one(result, as_json, "mapped")
        if not result.get("resolved"):
            note(f"{host} is not discovered yet: datagrams are dropped (and counted) until it is")
        if not result.get("bound"):
            note(f"the router has not bound STP port {local_port} yet: the proxy keeps trying")


def show_one(result: dict, as_json: bool, verb: str) -> None:
    if as_json:
        print_json({k: result[k] for k in ("proxy_port", "local_port", "remote_host", "remote_port",
                                           "any_remote", "resolved", "bound") if k in result})
        return
    local = f"{loopback(result)}:{result['local_port']}"
    anyone = " (any remote)" if result.get("any_remote") else ""
    click.echo(f"{verb} {local} -> {result['remote_host']}:{result['remote_port']}{anyone}"
               f" via proxy port {result['proxy_port']}")


def show_list(result: dict, as_json: bool) -> None:
    if as_json:
        print_json({"proxy_port": result["proxy_port"],
                    "mappings": [{"local_port": m["local_port"], "remote_host": m["remote_host"],
                                  "remote_port": m["remote_port"], "any_remote": bool(m.get("any_remote")),
                                  "resolved": m["resolved"], "bound": m["bound"]} for m in result["mappings"]]})
        return
    click.echo(f"proxy port {result['proxy_port']} ({result['proxy_bind']})")
    if not result["mappings"]:
        click.echo("no mappings")
        return
    # FROM: who may deliver to LOCAL: only the mapped REMOTE, or any overlay host
    click.echo(f"{'LOCAL':>6}  {'REMOTE':32}  {'FROM':6}  STATE")
    for m in result["mappings"]:
        state = ("ok" if m["resolved"] and m["bound"] else
                 ", ".join(s for s, bad in (("host not discovered", not m["resolved"]),
                                            ("not bound", not m["bound"])) if bad))
        source = "any" if m.get("any_remote") else "remote"
        click.echo(f"{m['local_port']:>6}  {m['remote_host'] + ':' + str(m['remote_port']):32}  {source:6}  {state}")


def loopback(result: dict) -> str:
    return "[::1]" if ":" in str(result.get("proxy_bind", "")) else "127.0.0.1"


def run(argv: list[str] | None = None) -> int:
    """The CLI as a function: the exit code; every error one line on stderr."""
    return run_cli(cli, PROG, argv)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
