"""`ilnp-hosts`: what a node's discovery knows: hostname, NID, locators, age."""
from __future__ import annotations

import click

from actors.proto.addr import format64

from .common import OneLineCommand, ask, json_option, node, print_json, run_dir_option


@click.command(cls=OneLineCommand)
@run_dir_option
@json_option
def main(run_dir, as_json):
    """List the hosts the node has discovered."""
    rows = ask(node(run_dir), "discovery", "hosts")
    if as_json:
        print_json([{"hostname": h, "nid": format64(nid), "locators": [format64(x) for x in locs],
                     "age_s": round(age / 1000, 3)} for h, nid, locs, age in rows])
        return
    click.echo(f"{'HOSTNAME':16} {'NID':20} {'AGE':>7}  LOCATORS")
    for hostname, nid, locs, age in rows:
        click.echo(f"{hostname:16} {format64(nid):20} {age / 1000:6.1f}s  "
                   f"{','.join(format64(x) for x in locs)}")


if __name__ == "__main__":
    main()
