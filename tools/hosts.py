"""`ilnp-hosts`: what a node's discovery knows: hostname, NID, locators, age, and the
name conflicts (other live NIDs claiming a hostname: they lost it, PROTOCOL.md
"[ext] Discovery safeguards")."""
from __future__ import annotations

import click

from actors.proto.addr import format64

from .common import OneLineCommand, ask, json_option, node, print_json, run_dir_option


@click.command(cls=OneLineCommand)
@run_dir_option
@json_option
def main(run_dir, as_json):
    """List the hosts the node has discovered, and who lost a name to them."""
    run = node(run_dir)
    rows = ask(run, "discovery", "hosts")
    conflicts = ask(run, "discovery", "conflicts")
    lost = {hostname: [format64(n) for n in losers] for hostname, _nid, losers, _me in conflicts}
    if as_json:
        out = [{"hostname": h, "nid": format64(nid), "locators": [format64(x) for x in locs],
                "age_s": round(age / 1000, 3), "conflicts": lost.get(h, [])} for h, nid, locs, age in rows]
        # our own name has no row of its own: it gets one when someone else claims it
        out += [{"hostname": h, "nid": format64(nid), "locators": [], "age_s": 0.0, "self": True,
                 "conflicts": lost[h]} for h, nid, _losers, me in conflicts if me]
        print_json(sorted(out, key=lambda e: e["hostname"]))
        return
    click.echo(f"{'HOSTNAME':16} {'NID':20} {'AGE':>7}  LOCATORS")
    for hostname, nid, locs, age in rows:
        click.echo(f"{hostname:16} {format64(nid):20} {age / 1000:6.1f}s  "
                   f"{','.join(format64(x) for x in locs)}")
    if conflicts:
        click.echo("\nCONFLICTS: other live NIDs claim these names; each name resolves to NID")
        click.echo(f"{'HOSTNAME':16} {'NID':20}  LOST")
        for hostname, nid, _losers, me in conflicts:
            click.echo(f"{hostname:16} {format64(nid) + (' (us)' if me else ''):20}  {', '.join(lost[hostname])}")


if __name__ == "__main__":
    main()
