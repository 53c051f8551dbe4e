"""The router layer against the capture of the original overlay (tests/golden/)."""
import re
from collections import Counter
from pathlib import Path

import pytest

from actors.proto.addr import ALL_NODES
from actors.proto import ilnp as wire
from actors.proto.frames import LinkItem, RxItem
from actors.router.core import Deliver, RouterCore
from actors.proto import stp as stp
from tests.golden_pcap import by_next_header, golden_frames

README = Path(__file__).parent / "golden" / "README.md"
A, B, C = 0xA, 0xB, 0xC
ROUTER, BOB, ALICE = 0xFFFF_0000_0000_000D, 0xFFFF_0000_0000_000B, 0xFFFF_0000_0000_000A
NAMES = {ROUTER: b"router", BOB: b"bob", ALICE: b"alice"}
FRAMES = golden_frames()


def readme_examples() -> list[bytes]:
    """The hex blocks of the README, comments like ("router") removed."""
    blocks = re.findall(r"```\n(.*?)```", README.read_text(), re.S)
    return [bytes.fromhex(re.sub(r"\(.*?\)", "", b)) for b in blocks]


def reencode(p: wire.Packet, version: int) -> bytes:
    return wire.encode(p.src_loc, p.src_nid, p.dst_loc, p.dst_nid, p.next_header, p.payload,
                       p.hop_limit, version, p.traffic_class, p.flow_label)


def test_capture_has_every_kind():
    kinds = Counter(f.payload[6] for f in FRAMES)
    assert len(FRAMES) == 101 and set(kinds) == {42, 43, 44}


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: f"frame{f.index}")
def test_every_frame_decodes_as_version_0_and_reencodes_exactly(frame):
    p = wire.decode(frame.payload)
    assert p.version == 0 and p.traffic_class == 0 and p.flow_label == 0
    assert p.hop_limit in (2, 3) and p.next_header in (42, 43, 44)
    assert p.src_nid in NAMES and (p.dst_nid in NAMES or (p.dst_loc, p.dst_nid) == (ALL_NODES, 0))
    assert wire.decode_with_opts(frame.payload) == (p, None)
    assert reencode(p, 0) == frame.payload
    v6 = reencode(p, 6)
    assert v6[0] == 0x60 | (frame.payload[0] & 0x0F) and v6[1:] == frame.payload[1:]


def test_stp_frames_ports_and_payload():
    frames = by_next_header(42)
    assert len(frames) == 46
    for f in frames:
        p = wire.decode(f.payload)
        src, dst, data = stp.decode(p.payload)
        assert (src, dst) == (1000, 1000)
        stamp, name = data.split(b" | ")
        assert name == NAMES[p.src_nid] and re.fullmatch(rb"2026-11-26 \d\d:\d\d:\d\d\.\d{6}", stamp)


def test_readme_examples_are_in_the_capture_and_decode():
    examples = readme_examples()
    assert len(examples) == 5
    captured = {f.payload for f in FRAMES}
    assert all(e in captured for e in examples)
    fields = [(wire.decode(e).next_header, wire.decode(e).src_loc, wire.decode(e).src_nid,
               wire.decode(e).dst_loc, wire.decode(e).dst_nid) for e in examples]
    assert fields == [
        (42, B, BOB, A, ALICE),
        (43, A, ROUTER, ALL_NODES, 0),
        (43, A, ROUTER, ALL_NODES, 0),
        (44, A, ALICE, B, BOB),
        (44, B, BOB, B, ALICE),
    ]
    seg = wire.decode(examples[0]).payload
    assert stp.decode(seg) == (1000, 1000, b"2026-11-26 09:45:53.224052 | bob")
    assert wire.decode(examples[3]).payload == b"\x01" + B.to_bytes(8, "big")
    assert wire.decode(examples[4]).payload == b"\x00"


def test_readme_examples_encode_to_the_same_bytes():
    examples = readme_examples()
    stp_example = wire.encode(B, BOB, A, ALICE, 42,
                              stp.encode(1000, 1000, b"2026-11-26 09:45:53.224052 | bob"), 3, version=0)
    ack = wire.encode(B, BOB, B, ALICE, 44, b"\x00", 3, version=0)
    assert stp_example == examples[0] and ack == examples[4]


def router_underlay_address() -> bytes:
    """The router's underlay address: the source of the packets it originated."""
    sources = {f.source for f in FRAMES if wire.decode(f.payload).src_nid == ROUTER}
    assert len(sources) == 1
    return sources.pop()


def test_our_router_forwards_and_floods_exactly_like_the_original_router():
    """Replay the capture into a RouterCore playing the original router (d, in a, b, c),
    set up as the deployed router is (actors/router/main.py) behind the link's filter.

    The capture holds the original router's own transmissions, forwards and floods
    included (hop 2), as heard on the bridge: the link drops what it sent itself (by
    underlay source), so the core sees the others' packets only, and must produce
    exactly those forwards and floods."""
    core = RouterCore(ROUTER)
    core.set_locators([A, B, C], [], 0)
    mine = router_underlay_address()
    produced, expected = Counter(), Counter()
    for f in FRAMES:
        if f.source == mine:  # the link's own-frame filter
            if wire.decode(f.payload).hop_limit == 2:
                expected[(f.locator, f.payload)] += 1
            continue
        for action in core.receive(f.locator, f.payload, f.t_ms):
            if isinstance(action, LinkItem):
                produced[(action.loc, action.datagram)] += 1
    assert sum(expected.values()) == 43
    assert produced == expected
    assert core.counters["own"] == 0 and core.counters["malformed"] == 0


def test_bob_delivers_each_packet_addressed_to_him_once_and_forwards_nothing():
    core = RouterCore(BOB)
    core.set_locators([B], [], 0)
    core.ports.bind(1000, "heartbeat")
    delivered = []
    for f in FRAMES:
        if f.locator != B:
            continue
        for action in core.receive(B, f.payload, f.t_ms):
            assert not isinstance(action, LinkItem)
            if isinstance(action, Deliver):
                delivered.append((action, f))
    to_bob = [f for f in FRAMES if f.locator == B and f.payload[32:40] == BOB.to_bytes(8, "big")]
    unicast = [(d, f) for d, f in delivered if d.next_header != 43]
    assert [f.index for _, f in unicast] == [f.index for f in to_bob]
    for d, f in unicast:
        p = wire.decode(f.payload)
        assert d.item == (p.src_loc, p.src_nid, B, BOB, B, p.payload, d.item.opts)
        if d.next_header == 42:
            assert d.port == 1000 and d.item[6] is None
        else:
            assert p.payload[0] == 1 and d.item[6] == {"nonce": None, "seq": None, "nonce_ok": None, "sig": None}
    assert not core.peers.speaks_ext(ALICE) and not core.peers.speaks_ext(ROUTER)  # original nodes send version 0
    assert {(loc, nid) for loc, nid, _ in core.sessions(100)} >= {(A, ALICE), (C, ALICE)}


def test_alice_in_handoff_takes_the_ack_only_from_its_own_locator():
    """Frames 57 and 60: bob acks alice's move to c over b; the router forwards it to c."""
    core = RouterCore(ALICE)
    core.set_locators([B, C], [B], 0)
    by_index = {f.index: f for f in FRAMES}
    assert core.receive(B, by_index[56].payload, 56) == []  # her own update
    assert core.counters["own"] == 1
    assert core.receive(B, by_index[57].payload, 57) == []  # addressed to c, arrived on b
    assert core.counters["dup_arrival"] == 1
    out = core.receive(C, by_index[60].payload, 60)
    assert out[0] == Deliver(44, None, RxItem(B, BOB, C, ALICE, C, b"\x00",
                                        {"nonce": None, "seq": None, "nonce_ok": None, "sig": None}))
