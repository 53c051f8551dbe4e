"""`ilnp-attack`: a rogue on the overlay's LAN (docs/SECURITY.md). Each subcommand is
one attack the security tests make; run it in a lab namespace, never on a real LAN."""
from __future__ import annotations

import sys

import click

from tools.common import run_cli

from .bus import bus_garbage
from .flood import solicit
from .forge import capture_updates, forge_update, replay
from .invent import advert, invent
from .rogue import Rogue


class Context:
    def __init__(self, interface: str, port: int, tag: int):
        self.interface, self.port, self.tag = interface, port, tag
        self._rogue: Rogue | None = None

    def rogue(self) -> Rogue:
        if self._rogue is None:
            try:
                self._rogue = Rogue(self.interface, self.port, self.tag)
            except OSError as exc:
                raise click.ClickException(f"cannot open the underlay on {self.interface}: {exc.strerror}")
        return self._rogue


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--interface", default="eth0", show_default=True, help="The LAN interface (in a lab namespace).")
@click.option("--port", default=10000, show_default=True, help="The overlay's UDP port.")
@click.option("--tag", default=0, show_default=True, help="The overlay's group tag.")
@click.pass_context
def cli(ctx, interface, port, tag):
    """Attacks on the overlay from its LAN, for the security tests."""
    ctx.obj = Context(interface, port, tag)


for command in (forge_update, capture_updates, replay, solicit, invent, advert, bus_garbage):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(cli, "ilnp-attack", argv))
