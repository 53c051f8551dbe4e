"""[ext] Authenticated locator updates end to end through the cores (issue 11): alice's
router signs, bob's router delivers, bob's mobility core judges. The forgeries are the
ones a rogue on the LAN can make: it sees every packet, so it knows every nonce.

Seen failing before the change: without signatures the sniffed-nonce forgery moved
alice's session to the rogue's locator, and a replay after a restart was accepted."""
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.mobility.core import MobilityCore, PeerMoved, SendUpdate
from actors.proto import ilnp as wire
from actors.proto import signature
from actors.proto.frames import LinkItem
from actors.proto.locator_update import encode_ack, encode_update
from actors.proto.numbers import NH_LOCATOR_UPDATE
from actors.router.core import Deliver, RouterCore

A, B, R = 0xA, 0xB, 0xEE          # alice's locators, bob's, the rogue's
ALICE_KEY = signature.Signer(Ed25519PrivateKey.from_private_bytes(b"a" * 32))
ROGUE_KEY = signature.Signer(Ed25519PrivateKey.from_private_bytes(b"r" * 32))
ALICE = ALICE_KEY.nid
BOB = 0xFFFF_0000_0000_000B


class Bob:
    """bob's router and mobility core, with a session to alice."""

    def __init__(self, seen=None):
        self.router = RouterCore(BOB, rng_bytes=lambda n: b"b" * n)
        self.router.set_locators([A, B], [], 0)
        self.mobility = MobilityCore(BOB, [[B]], 0, 0)
        self.mobility.start(0)
        self.mobility.set_sessions([[A, ALICE]])
        if seen is not None:
            self.mobility.restore_seen(seen)

    def hear(self, datagram, now=10, arrival=A):
        out = []
        for action in self.router.receive(arrival, datagram, now):
            if isinstance(action, Deliver) and action.next_header == NH_LOCATOR_UPDATE:
                rx = action.item
                out += self.mobility.receive(rx.src_loc, rx.src_nid, rx.arrival_loc, rx.payload, rx.opts, now)
        return out

    def moved(self, out):
        return [a for a in out if isinstance(a, PeerMoved)]


def alice_router():
    router = RouterCore(ALICE, signer=ALICE_KEY, rng_bytes=lambda n: b"n" * n)
    router.set_locators([A], [], 0)
    router.peers.heard(BOB, 6)  # bob speaks [ext]
    return router


def genuine_update(locs, seq, router=None):
    router = router or alice_router()
    return sent(router.send(BOB, [A], NH_LOCATOR_UPDATE, encode_update(locs), A, {"seq": seq}, 0))


def sent(actions):
    [item] = [a for a in actions if isinstance(a, LinkItem)]
    return item.datagram


def forged(locs, opts, src_loc=R, nid=ALICE):
    return wire.encode_with_opts(src_loc, nid, A, BOB, NH_LOCATOR_UPDATE, encode_update(locs), 3, opts)


def test_a_signed_update_is_accepted_and_acked():
    bob = Bob()
    out = bob.hear(genuine_update([B], 100))
    assert bob.moved(out) == [PeerMoved(ALICE, (B,), A)]
    assert bob.mobility.counters["updates_accepted"] == 1
    [ack] = [a for a in out if isinstance(a, SendUpdate)]
    assert (ack.body, ack.seq, ack.dst_nid) == (encode_ack(), 100, ALICE)


SNIFFED_NONCE = b"n" * 12  # what every node on the LAN reads from alice's packets


@pytest.mark.parametrize("opts,reason", [
    (None, "update_sig_missing"),                                           # no options at all
    ({"nonce": b"x" * 12, "seq": 200}, "update_sig_missing"),               # wrong nonce
    ({"nonce": SNIFFED_NONCE, "seq": 200}, "update_sig_missing"),           # sniffed nonce, higher seq
    ({"nonce": SNIFFED_NONCE, "seq": 200, "sig": bytes(96)}, "update_sig_wrong_key"),   # bogus signature
    ({"nonce": SNIFFED_NONCE, "seq": 200,                                   # the rogue's own key
      "sig": ROGUE_KEY.sign(ALICE, BOB, 200, SNIFFED_NONCE, encode_update([R]))}, "update_sig_wrong_key"),
    ({"nonce": SNIFFED_NONCE, "seq": 200,                                   # alice's key, rogue's signature
      "sig": ALICE_KEY.public_key + bytes(64)}, "update_sig_invalid"),
    ({"nonce": SNIFFED_NONCE, "seq": 200,                                   # signed for other locators
      "sig": ALICE_KEY.sign(ALICE, BOB, 200, SNIFFED_NONCE, encode_update([B]))}, "update_sig_invalid"),
])
def test_forged_updates_for_a_cryptographic_nid_never_redirect(opts, reason):
    bob = Bob()
    bob.hear(genuine_update([A], 100))  # alice's session: nonce learned, seq 100 accepted
    out = bob.hear(forged([R], opts))
    assert bob.moved(out) == [] and not [a for a in out if isinstance(a, SendUpdate)]
    assert bob.mobility.counters[reason] == 1


def test_a_replay_is_refused_also_after_bobs_mobility_restarts():
    first, second = genuine_update([B], 100), genuine_update([A], 101)
    bob = Bob()
    assert bob.moved(bob.hear(first)) and bob.moved(bob.hear(second))
    assert bob.moved(bob.hear(first)) == []
    assert bob.mobility.counters["update_replay"] == 1
    restarted = Bob(seen=bob.mobility.seen_state())  # what the shell keeps on disk
    assert restarted.moved(restarted.hear(first)) == []
    assert restarted.mobility.counters["update_replay"] == 1
    # the latest genuine one again is a lost-ack retry: acked, not applied again
    out = restarted.hear(second)
    assert restarted.moved(out) == [] and restarted.mobility.counters["update_duplicate"] == 1


def test_a_new_nonce_does_not_reset_a_cryptographic_peers_sequence():
    bob = Bob()
    bob.hear(genuine_update([B], 100))
    other_session = RouterCore(ALICE, signer=ALICE_KEY, rng_bytes=lambda n: b"z" * n)
    other_session.set_locators([A], [], 0)
    other_session.peers.heard(BOB, 6)
    out = bob.hear(genuine_update([A], 50, other_session), now=100_000)  # signed, but an old seq
    assert bob.moved(out) == [] and bob.mobility.counters["update_replay"] == 1


def test_acks_from_a_cryptographic_peer_must_be_signed():
    """A forged ack would silence the mover's retries while the peer never learnt the move."""
    mover = MobilityCore(BOB, [[B], [A]], 1000, 0, first_seq=7)
    mover.start(0)
    mover.set_sessions([[A, ALICE]])
    [_, update] = mover.move([A], 5)
    assert update.seq == 7
    ack = encode_ack()
    unsigned = {"nonce": SNIFFED_NONCE, "seq": 7, "nonce_ok": True, "sig": None}
    assert mover.receive(A, ALICE, A, ack, unsigned, 10) == []
    assert mover.counters["ack_sig_missing"] == 1 and mover.pending() == {ALICE: (7, 3)}
    signed = dict(unsigned, sig=ALICE_KEY.sign(ALICE, BOB, 7, SNIFFED_NONCE, ack))
    assert mover.receive(A, ALICE, A, ack, signed, 11) == []
    assert mover.pending() == {} and mover.counters["updates_acked"] == 1


def test_the_router_signs_only_updates_and_acks_with_a_sequence_number():
    router = alice_router()
    data = sent(router.send(BOB, [A], 42, b"\x00\x01\x00\x02data", A, None, 0))  # data: nonce only
    _, opts = wire.decode_with_opts(data)
    assert opts["sig"] is None and opts["nonce"] == SNIFFED_NONCE
    ack = sent(router.send(BOB, [A], NH_LOCATOR_UPDATE, encode_ack(), A, {"seq": 9}, 0))
    packet, opts = wire.decode_with_opts(ack)
    assert signature.check(ALICE, BOB, 9, opts["nonce"], packet.payload, opts["sig"]) is None
    assert router.peers.counters["signed"] == 1


def test_a_plain_nid_keeps_the_nonce_rules():
    """An original-style peer (plain NID): the nonce and the configured policy decide."""
    plain = 0xFFFF_0000_0000_000A
    bob = Bob()
    bob.mobility.set_sessions([[A, plain]])
    first = forged([A], {"nonce": b"p" * 12, "seq": 5}, src_loc=A, nid=plain)
    assert bob.moved(bob.hear(first))
    wrong = forged([R], {"nonce": b"x" * 12, "seq": 6}, nid=plain)
    assert bob.moved(bob.hear(wrong)) == [] and bob.mobility.counters["update_bad_nonce"] == 1


def test_an_original_node_still_moves_with_a_cryptographic_peer():
    """Interop under the documented policy (docs/SECURITY.md): an original node (version 0,
    plain NID, no options) updates a project node that has nid = auto and a session with
    it; the project node's ack goes back as the original expects it: plain, unsigned."""
    original = 0xFFFF_0000_0000_000A
    bob_key = signature.Signer(Ed25519PrivateKey.from_private_bytes(b"b" * 32))
    router = RouterCore(bob_key.nid, signer=bob_key)
    router.set_locators([A, B], [], 0)
    mobility = MobilityCore(bob_key.nid, [[B]], 0, 0)
    mobility.start(0)
    mobility.set_sessions([[A, original]])
    update = wire.encode(A, original, B, bob_key.nid, NH_LOCATOR_UPDATE, encode_update([B]), 3, version=0)
    [deliver] = [a for a in router.receive(B, update, 5) if isinstance(a, Deliver)]
    rx = deliver.item
    out = mobility.receive(rx.src_loc, rx.src_nid, rx.arrival_loc, rx.payload, rx.opts, 5)
    assert [a for a in out if isinstance(a, PeerMoved)] == [PeerMoved(original, (B,), B)]
    [ack] = [a for a in out if isinstance(a, SendUpdate)]
    datagram = sent(router.send(*ack.tx_item()[:5], ack.tx_item().opts, 6))
    packet, opts = wire.decode_with_opts(datagram)
    assert opts is None and packet.payload == encode_ack()  # what the original understands
    # and our own move reaches the original the same way: no options it would choke on
    mover = sent(router.send(original, [B], NH_LOCATOR_UPDATE, encode_update([A]), B, {"seq": 1}, 7))
    assert wire.decode_with_opts(mover)[1] is None and router.peers.counters["opts_dropped"] == 1
