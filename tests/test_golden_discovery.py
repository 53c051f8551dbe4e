"""Discovery against the capture of the original overlay (tests/golden/)."""
import random
import re
from pathlib import Path

import pytest

from actors.proto import numbers
from actors.proto.addr import ALL_NODES
from actors.discovery.core import DiscoveryCore, Announce
from actors.proto.discovery import decode, encode
from actors.proto import ilnp as router_wire
from tests.golden_pcap import by_next_header, golden_frames

README = Path(__file__).parent / "golden" / "README.md"
A, B, C = 0xA, 0xB, 0xC
ROUTER, BOB, ALICE = 0xFFFF_0000_0000_000D, 0xFFFF_0000_0000_000B, 0xFFFF_0000_0000_000A


def split(payload: bytes):
    """(header fields, discovery body), via the router's own header decoder."""
    pkt = router_wire.decode(payload)
    assert pkt.next_header == numbers.NH_DISCOVERY
    hdr = dict(hop=pkt.hop_limit, version=pkt.version,
               src_loc=pkt.src_loc, src_nid=pkt.src_nid, dst_loc=pkt.dst_loc, dst_nid=pkt.dst_nid)
    return hdr, pkt.payload


FRAMES = by_next_header(43)
FRAME = {f.index: f for f in golden_frames()}


def body_of(index):
    return split(FRAME[index].payload)[1]


def test_capture_has_discovery_of_both_kinds():
    flags = {split(f.payload)[1][16] for f in FRAMES}
    assert len(FRAMES) >= 40 and flags == {0, 1}


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: f"frame{f.index}")
def test_every_captured_body_decodes_and_reencodes_to_the_same_bytes(frame):
    hdr, body = split(frame.payload)
    assert (hdr["dst_loc"], hdr["dst_nid"]) == (ALL_NODES, 0)
    msg = decode(body)
    assert msg.nid == hdr["src_nid"]  # the body names its sender
    assert msg.hostname in {"router", "bob", "alice"}
    assert encode(msg.nid, msg.loc, msg.solicitation, msg.hostname) == body


def test_original_solicitations_name_the_locator_they_are_sent_on():
    originals = [split(f.payload) + (f,) for f in FRAMES if f.payload[7] == 3]
    sols = [(hdr, decode(body), f) for hdr, body, f in originals if body[16] == 1]
    assert sols
    for hdr, msg, f in sols:
        assert msg.loc == hdr["src_loc"] == f.locator


def _readme_example(title: str) -> bytes:
    text = README.read_text()
    block = re.search(re.escape(title) + r".*?```\n(.*?)```", text, re.S).group(1)
    block = re.sub(r"\(.*?\)", "", block)  # drop ("router") notes
    return bytes.fromhex("".join(block.split()))


@pytest.mark.parametrize("title, solicitation, loc", [
    ("Discovery solicitation", True, A),
    ("Discovery advertisement", False, B),
])
def test_readme_examples(title, solicitation, loc):
    payload = _readme_example(title)
    hdr, body = split(payload)
    assert hdr["src_loc"] == A and hdr["src_nid"] == ROUTER
    msg = decode(body)
    assert (msg.nid, msg.loc, msg.solicitation, msg.hostname) == (ROUTER, loc, solicitation, "router")
    assert encode(ROUTER, loc, solicitation, "router") == body
    assert payload in {f.payload for f in FRAMES}


# -- the core replays what the original nodes did ---------------------------------------

def core_for(hostname, nid, joined, leaving=()):
    core = DiscoveryCore(hostname, nid, 10_000, random.Random(0))
    first = core.set_locators(list(joined), list(leaving), 0)
    return core, first


def sent(indexes):
    return [Announce(FRAME[i].locator, body_of(i)) for i in indexes]


def test_shell_wrapping_of_a_transmit_gives_the_captured_datagram():
    # What the shell does with Announce(via, body): next header 43 to ALL_NODES, NID 0,
    # source = via and our NID (original version 0 here, to compare bytes).
    _, first = core_for("router", ROUTER, [A, B, C])
    for t, i in zip(first, (0, 1, 2)):
        datagram = router_wire.encode(t.via_loc, ROUTER, ALL_NODES, 0, numbers.NH_DISCOVERY,
                                      t.body, 3, version=0)
        assert datagram == FRAME[i].payload


def test_startup_solicitations_match_the_router():
    _, first = core_for("router", ROUTER, [A, B, C])
    assert first == sent([0, 1, 2])


def test_router_answers_bob_like_the_original():
    # Frame 3: bob solicits on b; frames 4-6: one answer naming b, out on a, b and c.
    core, _ = core_for("router", ROUTER, [A, B, C])
    f = FRAME[3]
    hdr, body = split(f.payload)
    actions = core.receive(hdr["src_loc"], hdr["src_nid"], f.locator, body, 1_000)
    assert [a for a in actions if isinstance(a, Announce)] == sent([4, 5, 6])
    assert core.resolve("bob") == [(B, BOB)]


def test_bob_answers_a_flooded_solicitation_like_the_original():
    # Frame 13: alice's solicitation from a, flooded by the router onto b; frame 15: bob's answer.
    core, _ = core_for("bob", BOB, [B])
    f = FRAME[13]
    hdr, body = split(f.payload)
    actions = core.receive(hdr["src_loc"], hdr["src_nid"], f.locator, body, 1_000)
    assert [a for a in actions if isinstance(a, Announce)] == sent([15])
    assert core.resolve("alice") == [(A, ALICE)]


def test_alice_in_handoff_ignores_the_old_locator_and_answers_on_the_new():
    # Frames 42/43: the router solicits on a and b while alice is leaving a for b;
    # frame 46: alice answers only the copy on b, only on b.
    core, _ = core_for("alice", ALICE, [A, B], leaving=[A])
    outs = []
    for i in (42, 43):
        f = FRAME[i]
        hdr, body = split(f.payload)
        outs += core.receive(hdr["src_loc"], hdr["src_nid"], f.locator, body, 1_000)
    assert [a for a in outs if isinstance(a, Announce)] == sent([46])
    assert core.counters["ignored_leaving"] == 1


def test_eavesdropping_the_capture_teaches_every_host():
    core, _ = core_for("watcher", 0xFFFF_0000_0000_00EE, [A, B, C])
    for now, f in enumerate(FRAMES):
        hdr, body = split(f.payload)
        core.receive(hdr["src_loc"], hdr["src_nid"], f.locator, body, now)
    names = {row.hostname: row.nid for row in core.hosts(len(FRAMES))}
    assert names == {"router": ROUTER, "bob": BOB, "alice": ALICE}
    assert core.resolve("bob") == [(B, BOB)]
    assert core.resolve("alice")[0] == (A, ALICE)  # alice's last move went back to a
