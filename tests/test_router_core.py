"""RouterCore rules, one by one, with a fake clock (ms)."""
import itertools

import pytest

from actors.proto.addr import ALL_NODES
from actors.proto import ilnp as wire
from actors.proto.frames import LinkItem, RxItem
from actors.router.core import ROUTE_WAIT_MS, Deliver, Refused, RouterCore, SessionsChanged
from actors.router.ports import BindError
from actors.proto import stp as stp

A, B, C, D, E = 0xA, 0xB, 0xC, 0xD, 0xE
ME = 0xFFFF_0000_0000_000D
ALICE = 0xFFFF_0000_0000_000A
BOB = 0xFFFF_0000_0000_000B
NONCE_A = b"alice-nonce!"  # 12 bytes


def counting_rng():
    """Deterministic nonces: 12 bytes of 0x01, then 0x02, ..."""
    counter = itertools.count(1)
    return lambda n: bytes([next(counter)]) * n


def make(joined=(A, B, C), leaving=(), **kw):
    kw.setdefault("rng_bytes", counting_rng())
    core = RouterCore(ME, **kw)
    core.set_locators(list(joined), list(leaving), 0)
    return core


def pkt(src_loc, src_nid, dst_loc, dst_nid, nh=42, payload=None, hop=3, version=6, opts=None):
    if payload is None:
        payload = stp.encode(1000, 1000, b"data") if nh == 42 else b"\x00"
    return wire.encode_with_opts(src_loc, src_nid, dst_loc, dst_nid, nh, payload, hop, opts, version)


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


# --- own transmissions and malformed input ------------------------------------------

def test_own_transmissions_are_dropped_silently():
    core = make()
    core.ports.bind(1000, "app")
    for dst in (ALL_NODES, A):
        assert core.receive(A, pkt(E, ME, dst, ME), 0) == []
    assert core.counters["own"] == 2
    assert core.routes(0) == [(A, A, None), (B, B, None), (C, C, None)]  # nothing learned from E


@pytest.mark.parametrize("datagram", [b"", b"\x60" * 39, pkt(A, BOB, A, ME)[:-1], None, "text"])
def test_malformed_datagrams_are_counted_not_raised(datagram):
    core = make()
    assert core.receive(A, datagram, 0) == []
    assert core.counters["malformed"] == 1


def test_version_other_than_0_or_6_is_malformed():
    core = make()
    core.ports.bind(1000, "app")
    d = bytearray(pkt(A, BOB, A, ME))
    d[0] = 0x40
    assert core.receive(A, bytes(d), 0) == []
    assert core.counters["malformed"] == 1


# --- backwards learning and forwarding ------------------------------------------------

def test_backwards_learning_installs_route_for_foreign_source_locators_only():
    core = make(route_lifetime_ms=1000)
    core.receive(A, pkt(E, BOB, ALL_NODES, 0, nh=43), 100)
    core.receive(A, pkt(B, BOB, ALL_NODES, 0, nh=43), 100)  # B is ours: no route via A
    assert core.routes(100) == [(A, A, None), (B, B, None), (C, C, None), (E, A, 1100)]


def test_a_source_locator_of_all_nodes_is_never_learned():
    core = make()
    core.receive(A, pkt(ALL_NODES, BOB, ALL_NODES, 0, nh=43), 0)
    assert core.routes(0) == [(A, A, None), (B, B, None), (C, C, None)]
    assert core.send(0, [ALL_NODES], 43, b"x", None, None, 0) == []


def test_forwarding_to_a_joined_locator_decrements_hop_limit():
    core = make()
    d = pkt(B, BOB, A, ALICE, hop=3, version=0)
    out = core.receive(B, d, 0)
    assert out == [LinkItem(A, wire.set_hop_limit(d, 2))]
    assert core.counters["forwarded"] == 1


def test_forwarding_uses_a_learned_route_and_stops_when_it_expires():
    core = make(route_lifetime_ms=1000)
    core.receive(C, pkt(E, BOB, ALL_NODES, 0, nh=43), 0)  # E reachable via C
    d = pkt(A, ALICE, E, BOB)
    assert core.receive(A, d, 999) == [LinkItem(C, wire.set_hop_limit(d, 2))]
    assert core.receive(A, d, 1000) == []
    assert core.counters["fwd_no_route"] == 1
    assert (E, C, 1000) not in core.routes(1000)


def test_no_forwarding_when_destination_locator_is_the_arrival_locator():
    core = make()
    assert core.receive(A, pkt(B, BOB, A, ALICE), 0) == []
    assert core.counters["not_ours"] == 1 and core.counters["forwarded"] == 0


def test_no_forwarding_back_onto_the_arrival_link():
    core = make()
    core.receive(A, pkt(E, BOB, ALL_NODES, 0, nh=43), 0)  # E via A
    assert core.receive(A, pkt(B, ALICE, E, BOB), 1) == []
    assert core.counters["fwd_same_link"] == 1


def test_no_route_drops_and_counts():
    core = make()
    assert core.receive(A, pkt(B, BOB, E, ALICE), 0) == []
    assert core.counters["fwd_no_route"] == 1


def test_hop_limit_exhausted_is_dropped_but_hop_1_still_forwarded():
    core = make()
    assert core.receive(B, pkt(B, BOB, A, ALICE, hop=0), 0) == []
    assert core.counters["hop_limit"] == 1
    out = core.receive(B, pkt(B, BOB, A, ALICE, hop=1), 0)
    assert len(out) == 1 and out[0].loc == A and out[0].datagram[7] == 0


def test_routes_via_an_interface_no_longer_joined_are_dropped():
    core = make()
    core.receive(C, pkt(E, BOB, ALL_NODES, 0, nh=43), 0)
    core.set_locators([A, B], [], 10)
    assert core.routes(10) == [(A, A, None), (B, B, None)]
    assert core.receive(A, pkt(A, ALICE, E, BOB), 10) == []
    assert core.counters["fwd_no_route"] == 1


def test_learning_on_a_leaving_interface_does_not_steal_a_live_route():
    core = make(joined=(A, B), leaving=(A,))
    core.receive(B, pkt(E, BOB, ALL_NODES, 0, nh=43), 0)
    core.receive(A, pkt(E, BOB, ALL_NODES, 0, nh=43), 5)
    assert (E, B, 30000) in core.routes(5)
    # but with no live route, the leaving interface is better than nothing
    core.receive(A, pkt(D + 0x100, BOB, ALL_NODES, 0, nh=43), 5)
    assert (D + 0x100, A, 30005) in core.routes(5)


# --- discovery (ALL_NODES) and the flood ----------------------------------------------

def test_discovery_is_delivered_and_flooded_to_every_other_joined_locator():
    core = make()
    d = pkt(B, BOB, ALL_NODES, 0, nh=43, payload=b"body", hop=3, version=0)
    out = core.receive(B, d, 0)
    assert out[0] == Deliver(43, None, RxItem(B, BOB, ALL_NODES, 0, B, b"body", None))
    flooded = wire.set_hop_limit(d, 2)
    assert out[1:] == [LinkItem(A, flooded), LinkItem(C, flooded)]
    p = wire.decode(flooded)
    assert (p.src_loc, p.src_nid, p.version) == (B, BOB, 0)  # original source kept
    assert core.sessions(0) == []  # discovery makes no session


def test_discovery_arriving_with_hop_limit_0_is_delivered_not_flooded():
    core = make()
    out = core.receive(B, pkt(B, BOB, ALL_NODES, 0, nh=43, hop=0), 0)
    assert [type(a) for a in out] == [Deliver]


def test_discovery_is_not_flooded_to_nor_from_a_locator_being_left():
    core = make(joined=(A, B, C), leaving=(C,))
    out = core.receive(B, pkt(B, BOB, ALL_NODES, 0, nh=43), 0)
    assert [a.loc for a in of(out, LinkItem)] == [A]
    # arriving on the leaving locator: still delivered (the discovery core decides), not flooded
    out = core.receive(C, pkt(C, BOB, ALL_NODES, 0, nh=43), 0)
    assert len(out) == 1 and out[0].item[4] == C


def test_other_next_headers_to_all_nodes_are_delivered_not_flooded():
    core = make()
    core.ports.bind(1000, "app")
    out = core.receive(A, pkt(A, BOB, ALL_NODES, 0, nh=42), 0)
    assert [type(a) for a in out] == [Deliver] and out[0].port == 1000
    assert core.sessions(0) == []


# --- packets for us -----------------------------------------------------------------

def test_stp_is_delivered_with_its_port_and_whole_segment():
    core = make()
    core.ports.bind(1000, "app")
    seg = stp.encode(2000, 1000, b"hello")
    out = core.receive(A, pkt(A + 0x100, BOB, A, ME, payload=seg), 7)
    assert out[0] == Deliver(42, 1000, RxItem(A + 0x100, BOB, A, ME, A, seg, None))
    assert out[1] == SessionsChanged() and core.session_keys() == [[A + 0x100, BOB]]


def test_stp_to_an_unbound_port_is_dropped_and_counted():
    core = make()
    assert core.receive(A, pkt(A, BOB, A, ME), 0) == []
    assert core.counters["stp_unbound"] == 1
    assert core.sessions(0) == []


def test_short_stp_segment_is_dropped():
    core = make()
    assert core.receive(A, pkt(A, BOB, A, ME, payload=b"\x03\xe8\x03"), 0) == []
    assert core.counters["stp_malformed"] == 1


@pytest.mark.parametrize("nh", [0, 17, 41, 45, 59, 255])
def test_unknown_next_header_is_dropped_and_counted(nh):
    core = make()
    assert core.receive(A, pkt(A, BOB, A, ME, nh=nh, payload=b"xx"), 0) == []
    assert core.counters["unknown_nh"] == 1


def test_unknown_next_header_inside_destination_options_is_dropped():
    core = make()
    assert core.receive(A, pkt(A, BOB, A, ME, nh=99, payload=b"x", opts={"seq": 1}), 0) == []
    assert core.counters["unknown_nh"] == 1


def test_bad_destination_options_are_dropped():
    core = make()
    bad = wire.encode(A, BOB, A, ME, 60, bytes([44, 0, 0xC0, 4, 0, 0, 0, 0]) + b"\x00", 3)
    assert core.receive(A, bad, 0) == []
    assert core.counters["bad_options"] == 1


def test_arrival_rule_accepts_the_copy_on_its_own_locator_and_ignores_the_other():
    core = make(joined=(B, C), leaving=(B,))
    d = pkt(B, BOB, C, ME, nh=44)
    assert core.receive(B, d, 0) == []  # addressed to joined C, arrived on B
    assert core.counters["dup_arrival"] == 1
    out = core.receive(C, wire.set_hop_limit(d, 2), 0)  # the forwarded copy on C
    assert out[0].item[:5] == (B, BOB, C, ME, C)


def test_arrival_rule_accepts_packets_to_a_locator_we_left():
    core = make(joined=(B,))
    out = core.receive(B, pkt(B, BOB, A, ME, nh=44), 0)  # A left: a forwarder brought it
    assert of(out, Deliver)[0].item[2] == A
    # and in-flight traffic still arriving on the old locator itself
    out = core.receive(A, pkt(B, BOB, A, ME, nh=44), 0)
    assert of(out, Deliver)[0].item[4] == A


# --- sessions ---------------------------------------------------------------------------

DATA = stp.encode(1000, 1000, b"data")  # sessions are data: control packets start none


def test_sessions_appear_on_unicast_and_expire_on_the_timer():
    core = make(session_lifetime_ms=1000, route_lifetime_ms=10**9)
    core.ports.bind(1000, "app")
    out = core.send(BOB, [B], 42, DATA, None, None, 0)
    assert of(out, SessionsChanged) == [SessionsChanged()] and core.session_keys() == [[B, BOB]]
    out = core.receive(A, pkt(A, ALICE, A, ME), 300)
    assert of(out, SessionsChanged) == [SessionsChanged()] and core.session_keys() == [[A, ALICE], [B, BOB]]
    # refreshing an active session changes nothing
    assert of(core.send(BOB, [B], 42, DATA, None, None, 500), SessionsChanged) == []
    assert core.next_deadline() == 1000
    assert core.on_timer(1000) == []  # early wake-up: nothing expired yet
    assert core.next_deadline() == 1300
    assert core.on_timer(1300) == [SessionsChanged()] and core.session_keys() == [[B, BOB]]
    assert core.sessions(1300) == [(B, BOB, 500)]
    assert core.on_timer(1500) == [SessionsChanged()] and core.session_keys() == []
    assert core.next_deadline() is None


def test_session_expiry_is_exact():
    core = make(session_lifetime_ms=1000)
    core.send(BOB, [B], 42, DATA, None, None, 0)
    assert core.sessions(999) == [(B, BOB, 0)]
    assert core.sessions(1000) == []


def test_forwarded_and_dropped_packets_make_no_session():
    core = make()
    core.receive(B, pkt(B, BOB, A, ALICE), 0)
    core.receive(A, pkt(A, BOB, A, ME), 0)  # unbound port
    assert core.sessions(0) == [] and core.next_deadline() is None


# --- send ---------------------------------------------------------------------------

def test_send_picks_a_joined_destination_locator_else_the_first_reachable_one():
    core = make(joined=(A, B), path_switch_hold_ms=0)  # selection alone (tests/test_path_switch.py)
    core.receive(B, pkt(E, BOB, ALL_NODES, 0, nh=43), 0)  # E via B
    out = core.send(BOB, [D, E], 42, b"seg!", None, None, 1)
    t = of(out, LinkItem)[0]
    assert t.loc == B
    p = wire.decode(t.datagram)
    assert (p.version, p.src_loc, p.src_nid, p.dst_loc, p.dst_nid, p.hop_limit) == (6, B, ME, E, BOB, 3)
    out = core.send(BOB, [D, A, E], 42, b"seg!", None, None, 1)  # the first reachable: ours
    assert of(out, LinkItem)[0].loc == A and wire.decode(of(out, LinkItem)[0].datagram).dst_loc == A
    out = core.send(BOB, [D, E, A], 42, b"seg!", None, None, 1)  # E is fresher than A
    assert of(out, LinkItem)[0].loc == B and wire.decode(of(out, LinkItem)[0].datagram).dst_loc == E


def test_send_with_via_goes_out_there_to_the_first_destination_locator():
    core = make()
    out = core.send(ALICE, [E, D], 44, b"\x00", C, None, 0)
    t = of(out, LinkItem)[0]
    p = wire.decode(t.datagram)
    assert t.loc == C and (p.src_loc, p.dst_loc) == (C, E)


def test_discovery_broadcast_with_via():
    core = make()
    out = core.send(0, [ALL_NODES], 43, b"disc", A, None, 0)
    assert out == [LinkItem(A, wire.encode(A, ME, ALL_NODES, 0, 43, b"disc", 3))]
    assert core.sessions(0) == []


def test_send_without_a_route_is_counted():
    core = make()
    assert core.send(BOB, [D, E], 42, b"seg!", None, None, 0) == []  # waits for a route...
    assert core.send(0, [ALL_NODES], 43, b"x", None, None, 0) == []
    assert core.send(BOB, [], 42, b"seg!", A, None, 0) == []
    assert core.counters["no_route"] == 2
    assert core.on_timer(ROUTE_WAIT_MS) == []  # ... and none came
    assert core.counters["no_route"] == 3


def test_send_via_a_locator_not_joined_is_refused():
    core = make()
    assert core.send(BOB, [B], 44, b"\x00", E, None, 0) == []
    assert core.counters["via_not_joined"] == 1


def test_send_expired_route_is_not_used():
    core = make(route_lifetime_ms=1000)
    core.receive(B, pkt(E, BOB, ALL_NODES, 0, nh=43), 0)
    assert of(core.send(BOB, [E], 42, b"seg!", None, None, 999), LinkItem)
    assert core.send(BOB, [E], 42, b"seg!", None, None, 1000) == []
    assert core.waiting == 1  # for a route, which does not come
    core.on_timer(1000 + ROUTE_WAIT_MS)
    assert core.counters["no_route"] == 1


def test_oversize_is_refused_and_nothing_sent():
    core = make(mtu=100)
    assert of(core.send(BOB, [A], 42, bytes(60), None, None, 0), LinkItem)
    out = core.send(BOB, [A], 42, bytes(61), None, None, 0)
    assert out == [Refused("oversize", BOB, 101)]
    assert core.counters["oversize"] == 1 and core.counters["sent"] == 1


def test_oversize_counts_the_destination_options_too():
    """A locator update must carry its nonce: if the options do not fit, it is refused."""
    core = make(mtu=100)
    core.receive(A, pkt(A, BOB, ALL_NODES, 0, nh=43), 0)  # BOB speaks ext
    out = core.send(BOB, [A], 44, b"\x01" + bytes(59), None, None, 0)  # + 16 bytes of options
    assert out == [Refused("oversize", BOB, 116)]
    assert core.sessions(0) == []  # nothing sent, no session


@pytest.mark.parametrize("args", [
    (BOB, [A], 60, b"x", None, None),   # the router owns next header 60
    (BOB, [A], 99, b"x", None, None),
    (BOB, [A], 42, "text", None, None),
    (BOB, None, 42, b"x", None, None),
    (2**64, [A], 42, b"x", None, None),
    (BOB, [A], 44, b"x", None, {"seq": -5}),
])
def test_bad_send_items_are_counted_not_raised(args):
    core = make()
    core.receive(A, pkt(A, BOB, ALL_NODES, 0, nh=43), 0)  # ext, so opts are encoded
    assert core.send(*args, now=0) == []
    assert core.counters["bad_send"] == 1


# --- [ext]: versions, nonces ----------------------------------------------------------

def ext_core(**kw):
    core = make(**kw)
    core.receive(A, pkt(A, BOB, ALL_NODES, 0, nh=43, version=6), 0)  # BOB speaks ext
    core.receive(A, pkt(A, ALICE, ALL_NODES, 0, nh=43, version=0), 0)  # ALICE is original
    return core


def sent(actions):
    return wire.decode_with_opts(of(actions, LinkItem)[0].datagram)


def test_version_6_marks_a_peer_ext_speaking_version_0_does_not():
    core = ext_core()
    assert core.peers.speaks_ext(BOB) and not core.peers.speaks_ext(ALICE)


def test_towards_an_original_peer_packets_are_plain_and_opts_dropped():
    core = ext_core()
    for n in range(5):
        p, opts = sent(core.send(ALICE, [A], 44, b"\x01" + bytes(8), None, {"seq": n}, n))
        assert opts is None and p.next_header == 44 and p.version == 6
    assert core.peers.counters["opts_dropped"] == 5


def test_nonce_on_the_first_packets_of_a_session_only():
    core = ext_core(nonce_packets=3)
    nonces = [sent(core.send(BOB, [A], 42, b"segm", None, None, t))[1] for t in range(5)]
    assert nonces[:3] == [{"nonce": b"\x01" * 12, "seq": None, "sig": None}] * 3
    assert nonces[3:] == [None, None]
    # a new session (another locator of BOB) gets the same per-NID nonce again
    p, opts = sent(core.send(BOB, [B], 42, b"segm", None, None, 5))
    assert opts == {"nonce": b"\x01" * 12, "seq": None, "sig": None} and p.next_header == 42


def test_nonce_again_after_the_session_expired():
    core = ext_core(nonce_packets=1, session_lifetime_ms=1000)
    assert sent(core.send(BOB, [A], 42, b"segm", None, None, 0))[1] is not None
    assert sent(core.send(BOB, [A], 42, b"segm", None, None, 999))[1] is None
    # expired, even before on_timer collected it
    assert sent(core.send(BOB, [A], 42, b"segm", None, None, 1999))[1] is not None


def test_every_locator_update_carries_the_nonce_and_the_callers_seq():
    core = ext_core(nonce_packets=1)
    core.send(BOB, [A], 42, b"segm", None, None, 0)
    core.send(BOB, [A], 42, b"segm", None, None, 1)
    for seq in (7, 8):
        p, opts = sent(core.send(BOB, [A], 44, b"\x01" + bytes(8), A, {"seq": seq, "nonce": b"evil"}, 2))
        assert p.next_header == 44 and p.payload == b"\x01" + bytes(8)
        assert opts == {"nonce": b"\x01" * 12, "seq": seq, "sig": None}  # the router owns the nonce


def test_one_nonce_per_peer_nid():
    core = ext_core()
    core.receive(A, pkt(A, 0x77, ALL_NODES, 0, nh=43, version=6), 0)
    n1 = sent(core.send(BOB, [A], 44, b"\x00", None, None, 0))[1]["nonce"]
    n2 = sent(core.send(0x77, [A], 44, b"\x00", None, None, 0))[1]["nonce"]
    n3 = sent(core.send(BOB, [B], 44, b"\x00", None, None, 0))[1]["nonce"]
    assert n1 == n3 == b"\x01" * 12 and n2 == b"\x02" * 12


def test_4_byte_nonces_for_interop():
    core = ext_core(nonce_length=4)
    assert sent(core.send(BOB, [A], 44, b"\x00", None, None, 0))[1]["nonce"] == b"\x01" * 4


def test_receive_learns_the_first_nonce_and_validates_later_ones():
    core = make()
    core.ports.bind(1000, "app")
    first = core.receive(A, pkt(A, BOB, A, ME, opts={"nonce": NONCE_A}), 0)
    assert first[0].item[6] == {"nonce": NONCE_A, "seq": None, "nonce_ok": True, "sig": None}
    assert first[0].next_header == 42 and first[0].item[5][:4] == b"\x03\xe8\x03\xe8"
    good = core.receive(A, pkt(A + 0x100, BOB, A, ME, nh=44, opts={"nonce": NONCE_A, "seq": 3}), 1)
    assert good[0].item[6] == {"nonce": NONCE_A, "seq": 3, "nonce_ok": True, "sig": None}
    bad = core.receive(A, pkt(A, BOB, A, ME, nh=44, opts={"nonce": b"x" * 12, "seq": 4}), 2)
    assert bad[0].item[6] == {"nonce": b"x" * 12, "seq": 4, "nonce_ok": False, "sig": None}
    # the learned nonce is not replaced by a wrong one
    again = core.receive(A, pkt(A, BOB, A, ME, nh=44, opts={"nonce": NONCE_A}), 3)
    assert again[0].item[6]["nonce_ok"] is True


def test_missing_nonce_on_a_locator_update():
    core = make()
    # never seen a nonce from BOB: None
    out = core.receive(A, pkt(A, BOB, A, ME, nh=44), 0)
    assert out[0].item[6] == {"nonce": None, "seq": None, "nonce_ok": None, "sig": None}
    core.receive(A, pkt(A, BOB, A, ME, nh=44, opts={"nonce": NONCE_A}), 1)
    # now a missing nonce is a wrong one, with or without other options
    out = core.receive(A, pkt(A, BOB, A, ME, nh=44), 2)
    assert out[0].item[6] == {"nonce": None, "seq": None, "nonce_ok": False, "sig": None}
    out = core.receive(A, pkt(A, BOB, A, ME, nh=44, opts={"seq": 9}), 3)
    assert out[0].item[6] == {"nonce": None, "seq": 9, "nonce_ok": False, "sig": None}


def test_plain_data_packets_have_no_opts():
    core = make()
    core.ports.bind(1000, "app")
    core.receive(A, pkt(A, BOB, A, ME, nh=44, opts={"nonce": NONCE_A}), 0)
    out = core.receive(A, pkt(A, BOB, A, ME), 1)
    assert out[0].item[6] is None


def test_nonces_are_per_nid_on_receive():
    core = make()
    core.receive(A, pkt(A, BOB, A, ME, nh=44, opts={"nonce": NONCE_A}), 0)
    out = core.receive(A, pkt(A, ALICE, A, ME, nh=44, opts={"nonce": b"y" * 12}), 1)
    assert out[0].item[6]["nonce_ok"] is True


def test_forwarding_keeps_destination_options_untouched():
    core = make()
    d = pkt(B, BOB, A, ALICE, nh=44, opts={"nonce": NONCE_A, "seq": 1})
    out = core.receive(B, d, 0)
    assert out == [LinkItem(A, wire.set_hop_limit(d, 2))]


# --- STP port registry ------------------------------------------------------------

def test_bind_explicit_and_in_use():
    core = make()
    assert core.ports.bind(1000, 11) == 1000
    assert core.ports.bind(1000, 11) == 1000  # same owner: idempotent
    with pytest.raises(BindError, match="already bound"):
        core.ports.bind(1000, 22)
    assert core.ports.bindings() == {1000: 11}


@pytest.mark.parametrize("port", [-1, 65536, "1000", None])
def test_bind_rejects_bad_ports(port):
    with pytest.raises(BindError):
        make().ports.bind(port, 1)


def test_bind_port_0_picks_distinct_ephemeral_ports():
    core = make()
    core.ports.bind(49153, 5)
    ports = [core.ports.bind(0, 1) for _ in range(3)]
    assert ports == [49152, 49154, 49155]
    assert all(49152 <= p <= 65535 for p in ports)


def test_ephemeral_ports_exhausted():
    core = make()
    core.ports.max_bindings = 65536  # the range, not the cap (test_the_port_registry_is_capped...)
    for _ in range(65536 - 49152):
        core.ports.bind(0, 1)
    with pytest.raises(BindError, match="no free"):
        core.ports.bind(0, 2)
    core.ports.unbind(50000)
    assert core.ports.bind(0, 2) == 50000


def test_stale_binding_of_a_dead_owner_is_reclaimed():
    alive = {11}
    core = make(is_owner_alive=lambda owner: owner in alive)
    core.ports.bind(1000, 11)
    with pytest.raises(BindError):
        core.ports.bind(1000, 22)
    alive.discard(11)
    assert core.ports.bind(1000, 22) == 1000
    assert core.ports.bindings() == {1000: 22} and core.ports.counters["stale_reclaimed"] == 1


def test_ephemeral_reclaims_a_dead_owners_port_only_when_none_is_free():
    alive = {1}
    core = make(is_owner_alive=lambda owner: owner in alive)
    core.ports.max_bindings = 65536  # the range, not the cap
    for _ in range(65536 - 49152):
        core.ports.bind(0, 1)
    core.ports._ports[60000] = 99  # a dead owner
    assert core.ports.bind(0, 2) == 60000


def test_unbind_stops_delivery():
    core = make()
    core.ports.bind(1000, 11)
    core.ports.bind(2000, 22)
    assert core.ports.unbind(1000) is True
    assert core.receive(A, pkt(A, BOB, A, ME), 0) == []
    assert core.counters["stp_unbound"] == 1
    assert core.ports.unbind(2000) is True and core.ports.unbind(2000) is False
    assert core.ports.bindings() == {}


def test_full_size_data_to_an_ext_peer_goes_plain_when_the_nonce_does_not_fit():
    """1396-byte STP payloads fill the 1440 MTU: the nonce must not make them oversize."""
    from actors.router.core import RouterCore, LinkItem
    from actors.proto import ilnp as w
    core = RouterCore(0xFFFF00000000000A, mtu=1440, rng_bytes=lambda n: b"\x01" * n)
    core.set_locators([0xA], [], 0)
    peer = 0xFFFF00000000000B
    hello = w.encode(0xA, peer, 0xA, core.nid, 42, b"\x00\x01\x00\x02", 3, version=6)
    core.ports.bind(2, "app")
    core.receive(0xA, hello, 0)  # the peer speaks [ext] (version 6)
    full = b"\x00\x02\x00\x01" + b"x" * 1396
    actions = core.send(peer, [0xA], 42, full, None, None, 1)
    sent = [a for a in actions if isinstance(a, LinkItem)]
    assert len(sent) == 1 and len(sent[0].datagram) == 1440
    assert w.decode(sent[0].datagram).next_header == 42
    assert core.counters["nonce_no_room"] == 1 and core.counters["oversize"] == 0
    small = core.send(peer, [0xA], 42, b"\x00\x02\x00\x01hi", None, None, 2)
    assert w.decode(small[0].datagram).next_header == 60  # the nonce rides on the next small one


def test_a_route_is_learned_for_a_locator_we_are_leaving_so_the_handoff_end_leaves_no_gap():
    """alice holds a and b (leaving b); bob speaks from b, heard on b: once b is dropped,
    alice still needs a route to b through the router on a (she learns it from the
    router's copy on a), not a gap until bob speaks again."""
    from actors.proto import ilnp as w
    alice = RouterCore(0xFFFF00000000000A)
    alice.set_locators([0xA, 0xB], [0xB], 0)
    bob = 0xFFFF00000000000B
    via_router = w.encode(0xB, bob, 0xA, alice.nid, 43, b"", 2)
    alice.receive(0xA, via_router, 1)  # forwarded by the router onto a
    alice.set_locators([0xA], [], 2)   # the handoff ends
    assert (0xB, 0xA) in [(loc, iface) for loc, iface, _ in alice.routes(3)]


def test_an_accepted_update_is_a_route_hint_for_the_new_locators():
    alice = RouterCore(0xFFFF00000000000A)
    alice.set_locators([0xA], [], 0)
    alice.route_hint([0xC], 0xA, 10)
    assert (0xC, 0xA) in [(loc, iface) for loc, iface, _ in alice.routes(11)]
    alice.route_hint([0xD], 0xB, 10)   # not an interface of ours: ignored
    assert 0xD not in [loc for loc, _, _ in alice.routes(11)]


def test_peer_state_survives_a_restart_of_the_router():
    """A restarted router keeps its nonce towards a peer and the peer's nonce: the peer
    still accepts our updates, and a forged update is still refused."""
    from actors.proto import ilnp as w
    first = RouterCore(0xFFFF00000000000A, rng_bytes=lambda n: b"\x01" * n)
    first.set_locators([0xA], [], 0)
    peer = 0xFFFF00000000000B
    theirs = w.encode(0xA, peer, 0xA, first.nid, 60, w.encode_destopts(44, b"\x07" * 12, 1) + b"\x00", 3)
    first.receive(0xA, theirs, 0)
    ours = first.send(peer, [0xA], 44, b"\x00", None, None, 1)[0].datagram
    again = RouterCore(0xFFFF00000000000A, rng_bytes=lambda n: b"\x02" * n)  # a new incarnation
    again.set_locators([0xA], [], 0)
    again.peers.restore(first.peers.state())
    assert again.send(peer, [0xA], 44, b"\x00", None, None, 1)[0].datagram == ours  # same nonce
    forged = w.encode(0xA, peer, 0xA, first.nid, 60, w.encode_destopts(44, b"\x09" * 12, 2) + b"\x01" + bytes(8), 3)
    delivered = [a for a in again.receive(0xA, forged, 2) if hasattr(a, "item")]
    assert delivered and delivered[0].item[6]["nonce_ok"] is False
    again.peers.restore({"ext": ["x"]})
    assert again.peers.counters["bad_peer_state"] == 1


def test_unbind_by_another_owner_leaves_the_port_alone():
    core = make()
    core.ports.bind(1000, 11)
    assert core.ports.unbind(1000, 22) is False
    assert core.ports.bindings() == {1000: 11}
    assert core.ports.unbind(1000, 11) is True and core.ports.bindings() == {}


# --- [ext] locator selection (PROTOCOL.md "[ext] Forwarding safeguards") ------------------

ROUTER = 0xFFFF_0000_0000_00D0


def dst_of(actions):
    (t,) = of(actions, LinkItem)
    p = wire.decode(t.datagram)
    return t.loc, p.dst_loc


def test_selection_prefers_a_locator_we_joined_to_one_we_only_have_a_route_to():
    core = make(joined=(A,))
    core.receive(A, pkt(B, BOB, ALL_NODES, 0, nh=43), 0)  # B via A
    assert (B, A) in [(loc, iface) for loc, iface, _ in core.routes(1)]
    assert dst_of(core.send(ROUTER, [B, C, A], 42, b"seg!", None, None, 1)) == (A, A)


def test_selection_takes_a_routed_locator_in_the_order_given_when_none_is_joined():
    core = make(joined=(A,))
    core.receive(A, pkt(D, BOB, ALL_NODES, 0, nh=43), 0)
    core.receive(A, pkt(E, BOB, ALL_NODES, 0, nh=43), 0)
    assert dst_of(core.send(ROUTER, [C, E, D], 42, b"seg!", None, None, 1)) == (A, E)
    assert dst_of(core.send(ROUTER, [C, D, E], 42, b"seg!", None, None, 1)) == (A, D)


def test_selection_follows_the_peers_freshest_locator_over_a_stale_one_we_share():
    """Both nodes moving (the lab's both-mobile experiment lost 2.5 s after each move):
    bob is now on A and leaving C; alice moved to C, and the session table still names
    A, where she was 20 s ago. The update must go to C, not to the stale A we share."""
    core = make(joined=(A, C), leaving=(C,))
    assert dst_of(core.send(ROUTER, [C, B, A], 44, b"\x00", None, None, 1)) == (C, C)
    assert dst_of(core.send(ROUTER, [A, C], 42, b"seg!", None, None, 1)) == (A, A)


def test_a_multi_homed_peer_is_reached_whatever_order_its_locators_come_in():
    """The router lab: alice on a; the router on a, b and c; alice has a route to b (bob's
    packets come from there). Whatever the host table's order, what alice sends, the
    router's arrival rule accepts."""
    alice = RouterCore(ALICE, rng_bytes=counting_rng())
    alice.set_locators([A], [], 0)
    router = RouterCore(ROUTER, rng_bytes=counting_rng())
    router.set_locators([A, B, C], [], 0)
    router.ports.bind(7, "echo")
    alice.receive(A, pkt(B, BOB, ALL_NODES, 0, nh=43, hop=2), 0)  # bob's solicitation, flooded onto a
    for order in itertools.permutations([A, B, C]):
        (t,) = of(alice.send(ROUTER, list(order), 42, stp.encode(50000, 7, b"ping"), None, None, 1), LinkItem)
        assert of(router.receive(t.loc, t.datagram, 1), Deliver), order
    assert router.counters["dup_arrival"] == 0


def test_via_never_names_another_locator_of_a_peer_that_is_on_the_interface():
    core = make()
    assert dst_of(core.send(ROUTER, [B, A], 44, b"\x00", A, None, 0)) == (A, A)
    assert dst_of(core.send(ROUTER, [E, D], 44, b"\x00", A, None, 0)) == (A, E)  # as before


# --- [ext] bounded tables (PROTOCOL.md "[ext] Discovery safeguards") ---------------------

def test_routes_are_learned_only_from_packets_we_deliver_or_forward():
    core = make(joined=(A, B))
    core.receive(A, pkt(D, BOB, A, ALICE), 0)        # for alice on the link we heard it on
    core.receive(A, pkt(E, BOB, C, ALICE), 0)        # for a locator we have no route to
    assert [loc for loc, _, _ in core.routes(1)] == [A, B]
    assert core.counters["not_ours"] == 1 and core.counters["fwd_no_route"] == 1
    core.receive(A, pkt(D, BOB, B, ALICE), 2)        # forwarded: the way back is learned
    core.receive(A, pkt(E, BOB, ALL_NODES, 0, nh=43), 2)  # delivered
    assert [(loc, iface) for loc, iface, _ in core.routes(3)] == [(A, A), (B, B), (D, A), (E, A)]


N_INVENTED = 20_000


def test_invented_locators_and_nids_leave_routes_and_sessions_at_their_caps():
    """20,000 pings to our echo port, each from an invented NID on an invented locator,
    forwarded onto a (a route through it each), within one session lifetime."""
    from actors.router.forwarding import MAX_ROUTES
    from actors.router.sessions import MAX_SESSIONS
    core = make(joined=(A,), rng_bytes=lambda n: b"\x01" * n)
    core.ports.bind(7, "echo")
    for i in range(N_INVENTED):
        loc, nid = 0x1_0000 + i, 0x2000_0000_0000_0000 + i
        out = core.receive(A, pkt(loc, nid, A, ME, payload=stp.encode(40000, 7, b"ping"), hop=2), i // 10)
        assert of(out, Deliver), i
        assert of(core.send(nid, [loc], 42, stp.encode(7, 40000, b"pong"), None, None, i // 10), LinkItem), i
    now = N_INVENTED // 10
    assert len(core.routes(now)) == 1 + MAX_ROUTES
    assert len(core.sessions(now)) == MAX_SESSIONS
    assert core.counters["routes_evicted"] == N_INVENTED - MAX_ROUTES
    assert core.counters["sessions_evicted"] == N_INVENTED - MAX_SESSIONS
    # the least recently used went; the latest are all there
    last = N_INVENTED - 1
    assert (0x1_0000 + last, A) in [(loc, iface) for loc, iface, _ in core.routes(now)]
    assert (0x1_0000 + last, 0x2000_0000_0000_0000 + last) in [(l, n) for l, n, _ in core.sessions(now)]
    assert 0x1_0000 not in [loc for loc, _, _ in core.routes(now)]


def test_a_session_in_use_outlives_a_flood_of_new_ones():
    from actors.router.sessions import MAX_SESSIONS
    core = make(joined=(A,))
    core.ports.bind(7, "echo")
    for i in range(3 * MAX_SESSIONS):
        if i % 100 == 0:  # alice keeps pinging all along
            core.receive(A, pkt(A, ALICE, A, ME, payload=stp.encode(40000, 7, b"ping")), i // 100)
        core.receive(A, pkt(A, 0x2000_0000_0000_0000 + i, A, ME, payload=stp.encode(40000, 7, b"x")), i // 100)
    assert (A, ALICE) in [(l, n) for l, n, _ in core.sessions(3 * MAX_SESSIONS // 100)]


def test_expiring_sessions_and_routes_costs_what_expires_not_the_table():
    """The timer takes what is due from the front of the tables (least recently used
    first): many sessions at distinct times expire in order, each on its own deadline."""
    core = make(joined=(A,), session_lifetime_ms=1000, route_lifetime_ms=1000)
    core.ports.bind(7, "echo")
    for i in range(100):
        core.receive(A, pkt(0x100 + i, 0x2000_0000_0000_0000 + i, A, ME, payload=stp.encode(1, 7, b"x"), hop=2), i)
    for i in range(100):
        assert core.next_deadline() == 1000 + i
        assert of(core.on_timer(1000 + i), SessionsChanged)
        assert len(core.sessions(1000 + i)) == 99 - i
        assert len(core.routes(1000 + i)) == 1 + 99 - i
    assert core.next_deadline() is None


def test_the_port_registry_is_capped_reclaiming_dead_owners_first():
    from actors.router.ports import PortRegistry
    alive = set(range(100))
    reg = PortRegistry(lambda owner: owner in alive, max_bindings=4)
    for port in (1, 2, 3, 4):
        reg.bind(port, port)
    with pytest.raises(BindError, match="full"):
        reg.bind(5, 5)               # every holder lives: refused, nothing taken from them
    assert reg.counters["bind_full"] == 1
    alive -= {3, 2}
    assert reg.bind(5, 5) == 5       # the least recently bound dead owner's port goes
    assert sorted(reg.bindings()) == [1, 3, 4, 5]
    assert reg.bind(1, 1) == 1       # the same owner again: no room needed
    assert reg.bind(0, 6) >= 49152   # an ephemeral one takes the other dead owner's room
    assert sorted(reg.bindings())[:3] == [1, 4, 5] and len(reg.bindings()) == 4
    assert reg.counters["ports_evicted"] == 2
