"""Locator updates and acks captured from the original overlay (tests/golden)."""
import pytest

from actors.mobility.core import MobilityCore, PeerMoved, SendUpdate
from actors.proto.locator_update import Ack, Update, decode, encode_ack, encode_update
from tests.golden_pcap import by_next_header

A, B, C = 0xA, 0xB, 0xC
ALICE, BOB = 0xFFFF_0000_0000_000A, 0xFFFF_0000_0000_000B
HEADER = 40

FRAMES = by_next_header(44)


def fields(payload):
    """(src_loc, src_nid, dst_loc, dst_nid) of an overlay header."""
    return tuple(int.from_bytes(payload[o:o + 8], "big") for o in (8, 16, 24, 32))


def test_capture_holds_updates_and_acks():
    kinds = [type(decode(f.payload[HEADER:])) for f in FRAMES]
    assert kinds.count(Update) >= 3 and kinds.count(Ack) >= 3


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: f"frame{f.index}")
def test_every_frame_decodes_and_reencodes(frame):
    body = frame.payload[HEADER:]
    msg = decode(body)
    assert (encode_ack() if isinstance(msg, Ack) else encode_update(msg.locs)) == body


def test_updates_name_alice_new_set_and_acks_come_from_bob():
    """alice moves a-b-c: each update names only the new set, sent from the set she left."""
    first_hop = [f for f in FRAMES if f.payload[HEADER] == 1 and f.payload[7] == 3]
    got = [(fields(f.payload), decode(f.payload[HEADER:]).locs, f.locator) for f in first_hop]
    assert got == [
        ((A, ALICE, B, BOB), (B,), A),
        ((B, ALICE, B, BOB), (C,), B),
        ((C, ALICE, B, BOB), (A,), C),
    ]
    acks = [fields(f.payload) for f in FRAMES if f.payload[HEADER] == 0 and f.payload[7] == 3]
    # bob acks to the first new locator, over the locator the update arrived on (b).
    assert acks == [(B, BOB, B, ALICE), (B, BOB, C, ALICE), (B, BOB, A, ALICE)]


README_UPDATE = bytes.fromhex(
    "00000000 0009 2c 03 000000000000000a ffff00000000000a 000000000000000b ffff00000000000b"
    " 01 000000000000000b".replace(" ", ""))
README_ACK = bytes.fromhex(
    "00000000 0001 2c 03 000000000000000b ffff00000000000b 000000000000000b ffff00000000000a"
    " 00".replace(" ", ""))


def test_readme_examples_are_in_the_capture_and_reencode():
    payloads = {f.payload for f in FRAMES}
    assert README_UPDATE in payloads and README_ACK in payloads
    assert encode_update([B]) == README_UPDATE[HEADER:]
    assert encode_ack() == README_ACK[HEADER:]


def test_core_sends_the_captured_update_body():
    """alice a -> b with a session to bob: the update body is the captured one."""
    alice = MobilityCore(ALICE, [[A], [B], [C]], 4000, 2000)
    alice.start(0)
    alice.set_sessions([(B, BOB)])
    tx = [a for a in alice.on_timer(4000) if isinstance(a, SendUpdate)]
    assert [(t.dst_nid, t.dst_locs, t.body) for t in tx] == [(BOB, (B,), README_UPDATE[HEADER:])]


def test_core_answers_the_captured_update_like_bob_did():
    """bob (original peer, no nonce) gets the update on b and acks to b over b: README ack."""
    bob = MobilityCore(BOB, [[B]], 0, 0)
    bob.start(0)
    src_loc, src_nid, _, _ = fields(README_UPDATE)
    bob.set_sessions([[src_loc, src_nid]])  # alice updates the peers she has sessions with
    out = bob.receive(src_loc, src_nid, B, README_UPDATE[HEADER:], None, 0)
    assert out == [PeerMoved(ALICE, (B,), B), SendUpdate(ALICE, (B,), B, README_ACK[HEADER:], None)]
    ack_src_loc, ack_src_nid, ack_dst_loc, ack_dst_nid = fields(README_ACK)
    assert (out[1].via, out[1].dst_locs[0], out[1].dst_nid) == (ack_src_loc, ack_dst_loc, ack_dst_nid)
