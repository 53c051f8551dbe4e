"""Packets from invented NIDs (issue 11): a rogue on the LAN makes up identities by the
thousand, so every table a stranger can grow (hosts, sessions, routes, peer state) is
pushed to its cap; and forged advertisements that claim a hostname somebody else holds.

    ilnp-attack invent --packets 100000 --kinds advert,ping,update --locator 0:0:0:a \\
                       --rate 4000 --target-nid ffff:0:0:d
    ilnp-attack advert --hostname bob --locator 0:0:0:a [--nid NID]

Each invented packet comes from a new random plain NID (never the [ext] cryptographic
prefix) with a new hostname: an advertisement to ALL_NODES, an STP ping to the
target's echo port, or a locator update (no options: a stranger has no nonce) to the
target. The builders here are what the unit tests decode (tests/test_attack_tools.py).
"""
from __future__ import annotations

import json
import random
import secrets
import time
from collections import Counter

import click

from actors.proto import discovery, ilnp, stp
from actors.proto.addr import ALL_NODES, AddressError, format64, is_cryptographic, parse64
from actors.proto.locator_update import encode_update
from actors.proto.numbers import ECHO_PORT, EPHEMERAL_FIRST, EPHEMERAL_LAST, NH_DISCOVERY, NH_LOCATOR_UPDATE, NH_STP

KINDS = ("advert", "ping", "update")
HOP_LIMIT = 3  # what a node sends with (router.hop_limit's default)
PING_DATA = b"\x00" * 12  # as small as ilnp-ping's probe header: sequence and time


# --- builders ---------------------------------------------------------------------

def invented_nid(rng: random.Random) -> int:
    """A random plain NID: not 0, not the [ext] cryptographic prefix."""
    while True:
        nid = rng.getrandbits(64)
        if nid and not is_cryptographic(nid):
            return nid


def invented_hostname(rng: random.Random) -> str:
    return f"inv-{rng.getrandbits(48):012x}"


def discovery_packet(nid: int, loc: int, solicitation: bool, hostname: str, hop: int = HOP_LIMIT) -> bytes:
    """A solicitation or advertisement from `nid` on `loc` to ALL_NODES (NID 0); the body
    names the packet's own source NID, so it passes the body check."""
    body = discovery.encode(nid, loc, solicitation, hostname)
    return ilnp.encode(loc, nid, ALL_NODES, 0, NH_DISCOVERY, body, hop)


def ping_packet(nid: int, loc: int, target_nid: int, target_loc: int, src_port: int,
                data: bytes = PING_DATA, hop: int = HOP_LIMIT) -> bytes:
    """An STP datagram to the target's echo port (the echo actor answers it)."""
    return ilnp.encode(loc, nid, target_loc, target_nid, NH_STP, stp.encode(src_port, ECHO_PORT, data), hop)


def update_packet(nid: int, loc: int, target_nid: int, target_loc: int, new_locs: list[int],
                  hop: int = HOP_LIMIT) -> bytes:
    """A plain locator update (no nonce, no sequence number, no signature)."""
    return ilnp.encode(loc, nid, target_loc, target_nid, NH_LOCATOR_UPDATE, encode_update(new_locs), hop)


def invented_packet(kind: str, rng: random.Random, loc: int, target_nid: int | None,
                    target_loc: int) -> bytes:
    nid = invented_nid(rng)
    if kind == "advert":
        return discovery_packet(nid, loc, False, invented_hostname(rng))
    if kind == "ping":
        return ping_packet(nid, loc, target_nid, target_loc, rng.randint(EPHEMERAL_FIRST, EPHEMERAL_LAST))
    if kind == "update":
        return update_packet(nid, loc, target_nid, target_loc, [loc])
    raise ValueError(f"unknown kind {kind!r}")


# --- option parsing ---------------------------------------------------------------

def parse_loc(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    try:
        return parse64(text)
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint=what) from None


def parse_kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",")]
    bad = [k for k in kinds if k not in KINDS]
    if not text.strip() or bad:
        raise click.BadParameter(f"{text!r}: a comma separated list of {', '.join(KINDS)}",
                                 param_hint="--kinds")
    return list(dict.fromkeys(kinds))


def check_hostname(text: str) -> str:
    try:
        discovery.check_hostname(text)
    except discovery.DiscoveryWireError as exc:
        raise click.BadParameter(str(exc), param_hint="--hostname") from None
    return text


def make_rng(seed: int | None) -> random.Random:
    return random.Random(secrets.randbits(64) if seed is None else seed)


class Pacer:
    """Sleeps so that packet i goes out no earlier than i / rate seconds after the start
    (rate 0: no pacing). Sleeps only when a millisecond or more ahead, so high rates go
    out in small bursts rather than paying a sleep per packet."""

    def __init__(self, rate: float):
        self.rate = rate
        self.start = time.monotonic()

    def wait(self, i: int) -> None:
        if self.rate <= 0:
            return
        ahead = self.start + i / self.rate - time.monotonic()
        if ahead >= 0.001:
            time.sleep(ahead)


# --- commands ---------------------------------------------------------------------

@click.command("invent")
@click.option("--packets", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="How many packets to send.")
@click.option("--kinds", default=",".join(KINDS), show_default=True,
              help="Comma separated: advert, ping, update (sent in turn).")
@click.option("--locator", required=True, help="The network (locator) to send them on.")
@click.option("--rate", type=click.FloatRange(min=0), default=2000.0, show_default=True,
              help="Packets per second (0: as fast as possible).")
@click.option("--target-nid", help="The node pings and updates go to (needed for ping and update).")
@click.option("--target-locator", help="The target's locator (default: --locator).")
@click.option("--seed", type=int, help="Seed of the invented NIDs (default: random).")
@click.pass_obj
def invent(obj, packets, kinds, locator, rate, target_nid, target_locator, seed):
    """Send packets from invented NIDs: adverts, pings and locator updates."""
    kinds = parse_kinds(kinds)
    loc = parse_loc(locator, "--locator")
    target = parse_loc(target_nid, "--target-nid")
    target_loc = parse_loc(target_locator, "--target-locator") or loc
    if target is None and ("ping" in kinds or "update" in kinds):
        raise click.UsageError("--target-nid is needed for ping and update")
    rng = make_rng(seed)
    rogue = obj.rogue()
    sent: Counter = Counter()
    pacer = Pacer(rate)
    for i in range(packets):
        kind = kinds[i % len(kinds)]
        pacer.wait(i)
        rogue.send(loc, invented_packet(kind, rng, loc, target, target_loc))
        sent[kind] += 1
    seconds = time.monotonic() - pacer.start
    click.echo(json.dumps({"sent": packets, "kinds": dict(sent), "seconds": round(seconds, 3),
                           "rate": round(packets / seconds, 1) if seconds > 0 else None,
                           "locator": format64(loc),
                           "target_nid": format64(target) if target is not None else None}))


@click.command("advert")
@click.option("--hostname", required=True, help="The hostname to claim (someone else's).")
@click.option("--locator", required=True, help="The network to advertise on (and the body's locator).")
@click.option("--nid", "nid_text", help="The NID to claim it with (default: an invented one).")
@click.option("--hop", type=click.IntRange(0, 255), default=HOP_LIMIT, show_default=True)
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="Advertisements to send (each a second apart: a copy within a router's "
                   "duplicate hold time is dropped).")
@click.option("--interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between advertisements.")
@click.pass_obj
def advert(obj, hostname, locator, nid_text, hop, count, interval):
    """Advertise HOSTNAME from a NID that is not its owner's (body NID = source NID)."""
    check_hostname(hostname)
    loc = parse_loc(locator, "--locator")
    nid = parse_loc(nid_text, "--nid")
    if nid is None:
        nid = invented_nid(make_rng(None))
    datagram = discovery_packet(nid, loc, False, hostname, hop)
    rogue = obj.rogue()
    for i in range(count):
        if i:
            time.sleep(interval)
        rogue.send(loc, datagram)
    click.echo(json.dumps({"sent": count, "hostname": hostname, "nid": format64(nid),
                           "locator": format64(loc)}))
