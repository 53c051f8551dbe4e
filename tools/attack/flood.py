"""A discovery flood (issue 11): one solicitation with a forged hop limit (255), the
packet every router floods to its other networks. Without the hop-limit clamp and
duplicate detection, routers that share networks multiply it (3 x 2^h copies).

    ilnp-attack solicit --hop 255 --locator 0:0:0:a [--count N] [--watch 3 --listen 0:0:0:a,0:0:0:b]

With --watch the rogue then listens on the --listen networks and counts the copies of
its solicitation that come back: per sending address (which node transmitted it), per
hop limit and per network, so a test can tell how often each router sent it.
"""
from __future__ import annotations

import json
import select
import socket
import time
from collections import Counter

import click

from actors.link.ipv6_multicast import multicast_group
from actors.proto import ilnp
from actors.proto.addr import AddressError, format64, parse_locator_set
from actors.proto.numbers import NH_DISCOVERY

from .invent import check_hostname, discovery_packet, invented_hostname, invented_nid, make_rng, parse_loc


def watch_copies(rogue, locs: list[int], nid: int, seconds: float) -> dict:
    """Count the discovery packets from `nid` heard on `locs` for `seconds` (the rogue
    must have joined them before sending). Keys: sender address, hop limit, network."""
    underlay = rogue.underlay
    group_to_loc = {socket.inet_pton(socket.AF_INET6, multicast_group(loc, underlay.tag)): loc for loc in locs}
    ancbufsize = socket.CMSG_SPACE(20)  # in6_pktinfo
    by_sender: Counter = Counter()
    by_hop: Counter = Counter()
    by_loc: Counter = Counter()
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select([underlay.sock], [], [], left)
        if not ready:
            continue
        while True:
            try:
                data, anc, _flags, addr = underlay.sock.recvmsg(65535, ancbufsize, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            try:
                packet = ilnp.decode(data)
            except ilnp.WireError:
                continue
            if packet.src_nid != nid or packet.next_header != NH_DISCOVERY:
                continue
            loc = None
            for level, kind, cdata in anc:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                    loc = group_to_loc.get(cdata[:16])
            by_sender[addr[0].split("%")[0]] += 1
            by_hop[str(packet.hop_limit)] += 1
            by_loc[format64(loc) if loc is not None else "?"] += 1
    return {"heard": sum(by_sender.values()), "by_sender": dict(by_sender),
            "by_hop": dict(by_hop), "by_locator": dict(by_loc)}


@click.command("solicit")
@click.option("--hop", type=click.IntRange(0, 255), default=255, show_default=True,
              help="The hop limit to forge.")
@click.option("--locator", required=True, help="The network to send it on.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="Copies to send (identical: a router drops the repeats it flooded already).")
@click.option("--nid", "nid_text", help="The source NID (default: an invented one).")
@click.option("--hostname", help="The hostname in the body (default: an invented one).")
@click.option("--watch", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds to listen afterwards, counting the copies the routers send.")
@click.option("--listen", default="0:0:0:a,0:0:0:b,0:0:0:c", show_default=True,
              help="Networks to listen on with --watch.")
@click.pass_obj
def solicit(obj, hop, locator, count, nid_text, hostname, watch, listen):
    """Send a discovery solicitation with a forged hop limit from an invented NID."""
    loc = parse_loc(locator, "--locator")
    try:
        listen_locs = parse_locator_set(listen)
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    rng = make_rng(None)
    nid = parse_loc(nid_text, "--nid")
    if nid is None:
        nid = invented_nid(rng)
    hostname = check_hostname(hostname) if hostname is not None else invented_hostname(rng)
    datagram = discovery_packet(nid, loc, True, hostname, hop)
    rogue = obj.rogue()
    if watch:
        rogue.listen(listen_locs)  # before sending: the first copies come back at once
    rogue.send(loc, datagram, count)
    out = {"sent": count, "nid": format64(nid), "hostname": hostname, "hop": hop, "locator": format64(loc)}
    if watch:
        out.update(watch_copies(rogue, listen_locs, nid, watch))
    click.echo(json.dumps(out))
