"""ilnp-lab: a network of overlay nodes in namespaces on this machine.

    ilnp-lab up TOPOLOGY          (a path, or NAME for conf/lab/NAME.toml)
    ilnp-lab exec NODE -- CMD...
    ilnp-lab link NODE BRIDGE up|down   (the node's interface to BRIDGE: a cable pulled)
    ilnp-lab status [--json]
    ilnp-lab down

Every error is one line on stderr and a non-zero exit, never a traceback
(ILNP_DEBUG=1 shows the traceback of an unexpected error).
"""
from __future__ import annotations

import json
import signal
import sys

import click

from ..common import run_cli
from .errors import LabError
from .lab import Lab, require_root

PROG = "ilnp-lab"


class ExecCommand(click.Command):
    """`exec NODE -- CMD...`: the `--` is required, so CMD's own options are never ours."""

    def parse_args(self, ctx, args):
        head = args[:args.index("--")] if "--" in args else args
        if "--help" in head or "-h" in head:
            return super().parse_args(ctx, args)
        if "--" not in args:
            raise click.UsageError("exec needs -- before the command: ilnp-lab exec NODE -- CMD...")
        split = args.index("--")
        if split != 1 or not args[split + 1:]:
            raise click.UsageError("usage: ilnp-lab exec NODE -- CMD...")
        return super().parse_args(ctx, args)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--lab", "lab_name", envvar="ILNP_LAB", default="ilnp", show_default=True,
              help="Lab name (env ILNP_LAB): namespaces <lab>-*, run dir /run/ilnp/<lab>.")
@click.pass_context
def cli(ctx, lab_name):
    """A network of ILNP overlay nodes in network namespaces on this machine."""
    ctx.obj = lab_name


def _lab(ctx, **kwargs) -> Lab:
    require_root()            # first, so no other error hides this one
    return Lab(ctx.obj, **kwargs)


@cli.command()
@click.argument("topology")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for every program RUNNING.")
@click.option("--no-start", is_flag=True, help="Plumbing and run dirs only; start no node.")
@click.option("--supervisord-conf", type=click.Path(dir_okay=False),
              help="supervisord config instead of <repo>/supervisord.conf.")
@click.pass_context
def up(ctx, topology, timeout, no_start, supervisord_conf):
    """Bring TOPOLOGY up (a path, or NAME for conf/lab/NAME.toml)."""
    lab = _lab(ctx, supervisord_conf=supervisord_conf)
    state = lab.up(topology, start=not no_start, timeout=timeout)
    nodes = ", ".join(f"{n} ({e['namespace']})" for n, e in state["nodes"].items())
    click.echo(f"lab {lab.name} up: {nodes}" + ("" if not no_start else " [not started]"))


@cli.command("exec", cls=ExecCommand, context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx, node, argv):
    """Run CMD in NODE's namespace and environment; exit with its code."""
    lab = _lab(ctx)
    lab.node(node)                                   # unknown node: error before running anything
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)   # ^C belongs to the command
    try:
        rc = lab.exec(node, list(argv)).returncode
    finally:
        signal.signal(signal.SIGINT, old)
    ctx.exit(rc if rc >= 0 else 128 - rc)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx, as_json):
    """Show the lab: namespaces, nodes, supervisord and program states."""
    st = _lab(ctx).status()
    if as_json:
        click.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    click.echo(f"lab {st['lab']}: {st['phase']}  topology {st['topology']}")
    b = st["bridge"]
    bridges = st.get("bridges") or {b["bridge"]: {"device": b["bridge"]}}
    for name, spec in bridges.items():
        subnets = " ".join(spec[f] for f in ("ipv4", "ipv6") if spec.get(f))
        click.echo(f"  bridge  {name}: {b['namespace']} {spec['device']}"
                   + (f"  {subnets}" if subnets else "") + ("  unicast only" if spec.get("unicast_only") else "")
                   + ("" if b["present"] else "  MISSING"))
    for host, h in st["hosts"].items():
        links = h.get("links") or {h["iface"]: {"peer": h["peer"]}}
        ends = "  ".join(f"{iface}<->{link['peer']}" + "".join(f" {a}" for a in link.get("addresses", []))
                         + ("" if link.get("up", True) else " DOWN") for iface, link in links.items())
        click.echo(f"  host    {host}: {h['namespace']} {ends}{'' if h['present'] else '  MISSING'}")
    for name, n in st["nodes"].items():
        pid = n.get("supervisord_pid")
        sup = f"supervisord {pid} {'alive' if n['supervisord_alive'] else 'DEAD'}" if pid else "not started"
        click.echo(f"  node    {name}: {n['namespace']}  {n['run_dir']}  {sup}")
        if n.get("programs"):
            click.echo("          " + "  ".join(f"{p} {s}" for p, s in n["programs"].items()))


@cli.command()
@click.argument("node")
@click.argument("bridge")
@click.argument("updown", metavar="up|down", type=click.Choice(["up", "down"]))
@click.pass_context
def link(ctx, node, bridge, updown):
    """Set NODE's interface to BRIDGE up or down (its host's: nodes sharing it lose it too)."""
    lab = _lab(ctx)
    lab.set_link(node, bridge, updown == "up")
    click.echo(f"{node} {bridge} {updown}")


@cli.command()
@click.pass_context
def down(ctx):
    """Stop every node and remove the lab's namespaces, bridge, veths and run dirs."""
    lab = _lab(ctx)
    left = lab.down()
    for what in left:
        click.echo(f"{PROG}: warning: could not remove {what}", err=True)
    click.echo(f"lab {lab.name} down")


def run(argv: list[str] | None = None) -> int:
    """The CLI as a function: returns the exit code, prints errors as one line."""
    return run_cli(cli, PROG, argv, expected=(LabError,))


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
