"""[ext] Forwarding safeguards (PROTOCOL.md): the hop-limit clamp and duplicate packet
detection, against the cores and in the in-memory harness."""
from __future__ import annotations

from collections import Counter

from actors.proto import discovery, ilnp, stp
from actors.proto.addr import ALL_NODES
from actors.proto.frames import LinkItem
from actors.proto.numbers import NH_DISCOVERY, NH_STP
from actors.router.core import Deliver, RouterCore
from actors.router.duplicates import DuplicateFilter, digest
from tests.harness import Net, config

A, B, C = 0xA, 0xB, 0xC
ME = 0xFFFF_0000_0000_000D
ALICE, BOB, STRANGER = 0xFFFF_0000_0000_000A, 0xFFFF_0000_0000_000B, 0xFFFF_0000_0000_0EEE


def router(joined=(A, B, C), **kw) -> RouterCore:
    core = RouterCore(ME, **kw)
    core.set_locators(list(joined), [], 0)
    return core


def solicitation(hop: int, src_loc: int = A) -> bytes:
    body = discovery.encode(STRANGER, src_loc, True, "stranger")
    return ilnp.encode(src_loc, STRANGER, ALL_NODES, 0, NH_DISCOVERY, body, hop)


def test_a_forged_hop_limit_is_clamped_to_ours():
    core = router(hop_limit=3)
    out = [a for a in core.receive(A, solicitation(255), 0) if isinstance(a, LinkItem)]
    assert [ilnp.decode(a.datagram).hop_limit for a in out] == [2, 2]  # as if it came with 3
    assert core.counters["hop_clamped"] == 1


def test_a_flood_that_comes_back_by_another_path_is_dropped_once_held():
    core = router(joined=(A, B))
    first = core.receive(A, solicitation(3), 0)
    assert sum(isinstance(a, Deliver) for a in first) == 1
    copy = [a for a in first if isinstance(a, LinkItem)][0].datagram  # what another router would re-flood
    assert core.receive(B, ilnp.encode(*_fields(copy), hop_limit=1), 100) == []
    assert core.counters["duplicate"] == 1 and core.counters["flooded"] == 1
    # after the hold time the same bytes are a new packet (an application may repeat itself)
    assert any(isinstance(a, LinkItem) for a in core.receive(A, solicitation(3), 600))


def test_a_forwarded_packet_sent_again_by_another_forwarder_is_dropped():
    """An original node forwards every packet it hears: its copy of what we forwarded
    must not be forwarded (and delivered) twice."""
    core = router(joined=(A, B))
    core.receive(B, ilnp.encode(B, BOB, B, 0xFFFF_0000_0000_00BB, NH_STP, stp.encode(1, 1, b"x"), 3), 0)  # learn b
    data = ilnp.encode(A, ALICE, B, BOB, NH_STP, stp.encode(1, 1, b"hi"), 3)
    assert [a.loc for a in core.receive(A, data, 0)] == [B]
    assert core.receive(A, ilnp.encode(*_fields(data), hop_limit=2), 5) == []  # the other forwarder's copy
    assert core.counters["forwarded"] == 1 and core.counters["duplicate"] == 1


def test_the_duplicate_set_is_bounded():
    held = DuplicateFilter(hold_ms=500, capacity=100)
    for i in range(1000):
        held.remember(digest(i.to_bytes(2, "big") * 30), 0)
    assert len(held) == 100 and held.evicted == 900
    assert held.seen(digest((999).to_bytes(2, "big") * 30), 1)
    assert not held.seen(digest((0).to_bytes(2, "big") * 30), 1)


def _fields(datagram: bytes) -> tuple:
    p = ilnp.decode(datagram)
    return (p.src_loc, p.src_nid, p.dst_loc, p.dst_nid, p.next_header, p.payload)


def test_a_solicitation_with_hop_limit_255_among_three_routers_sharing_two_networks():
    """Without the safeguards, three routers on a and b turn one solicitation into
    3 x 2^h transmissions. With them, each router sends a small constant number."""
    net = Net(seed=11)
    for i in range(3):
        net.add(config(f"r{i}", 0xFFFF_0000_0000_0D00 + i, [[A, B]]))
    net.start()
    net.advance(3000)  # the routers' own start-up discovery settles
    before = len(net.log)
    for node in net.nodes.values():  # everyone on a hears the stranger's solicitation
        net.post(node.link_rx, A, solicitation(255))
    net.advance(200)
    per_router = Counter(f.sender for f in net.log[before:])
    assert set(per_router) == {"r0", "r1", "r2"}
    assert max(per_router.values()) <= 8, per_router
    totals = sum((n.counters["router"] for n in net.nodes.values()), Counter())
    assert totals["hop_clamped"] == 3 and totals["duplicate"] > 0
    for node in net.nodes.values():  # and the stranger is known to all, once
        assert [row[0] for row in node.rows()].count("stranger") == 1
