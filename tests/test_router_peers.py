"""[ext] peer state in the router (issue 11): a peer's nonce is learned per session, from
packets addressed to us only, and every table strangers can grow is capped.

Seen failing before the change: one forged packet to ALL_NODES planted a nonce for
good (the real peer's updates were refused for ever), a peer that came back with a
new nonce after its session ended was refused for good, and the tables grew without
bound with invented NIDs."""
from actors.proto import ilnp as wire
from actors.proto.addr import ALL_NODES
from actors.proto.numbers import NH_DISCOVERY, NH_LOCATOR_UPDATE
from actors.router.core import Deliver, RouterCore
from actors.router.peers import PeerTable

A, B = 0xA, 0xB
ME = 0xFFFF_0000_0000_000D
BOB = 0xFFFF_0000_0000_000B
LIFETIME = 30_000


def router():
    core = RouterCore(ME, session_lifetime_ms=LIFETIME, rng_bytes=lambda n: b"m" * n)
    core.set_locators([A, B], [], 0)
    return core


def update(nonce, seq=1, dst_loc=A, dst_nid=ME, nh=NH_LOCATOR_UPDATE, body=b"\x01" + bytes(8)):
    return wire.encode_with_opts(A, BOB, dst_loc, dst_nid, nh, body, 3, {"nonce": nonce, "seq": seq})


def nonce_ok(core, datagram, now):
    [deliver] = [a for a in core.receive(A, datagram, now) if isinstance(a, Deliver)]
    return deliver.item.opts["nonce_ok"]


def test_a_nonce_sent_to_all_nodes_is_not_learned():
    core = router()
    planted = update(b"p" * 12, dst_loc=ALL_NODES, dst_nid=0, nh=NH_DISCOVERY, body=b"x" * 17)
    assert nonce_ok(core, planted, 0) is None
    assert nonce_ok(core, update(b"b" * 12), 1) is True  # bob's real nonce, in his session


def test_a_new_session_replaces_the_nonce_but_a_live_one_keeps_it():
    core = router()
    assert nonce_ok(core, update(b"1" * 12), 0) is True
    assert nonce_ok(core, update(b"2" * 12), 20_000) is False   # live session: a forgery
    assert nonce_ok(core, update(b"1" * 12), 25_000) is True    # bob keeps it alive
    assert nonce_ok(core, update(b"2" * 12), 50_000) is False   # 25 s after bob: still his
    assert nonce_ok(core, update(b"2" * 12), 25_000 + LIFETIME) is True  # silent a lifetime: a new session
    assert core.peers.counters["nonce_replaced"] == 1
    assert nonce_ok(core, update(b"1" * 12), 25_001 + LIFETIME) is False


def test_plain_packets_keep_the_session_alive():
    core = router()
    core.ports.bind(1000, "app")
    nonce_ok(core, update(b"1" * 12), 0)
    for now in range(10_000, 100_000, 10_000):
        core.receive(A, wire.encode(A, BOB, A, ME, 42, b"\x03\xe8\x03\xe8data", 3), now)
    assert nonce_ok(core, update(b"2" * 12), 100_000) is False


def test_a_missing_nonce_on_an_update_is_wrong_only_during_a_live_session():
    core = router()
    nonce_ok(core, update(b"1" * 12), 0)
    plain = wire.encode(A, BOB, A, ME, NH_LOCATOR_UPDATE, b"\x01" + bytes(8), 3)
    assert nonce_ok(core, plain, 10) is False
    assert nonce_ok(core, plain, LIFETIME + 10) is None


def test_peer_tables_are_capped_and_evict_the_least_recently_used():
    peers = PeerTable(rng_bytes=lambda n: b"x" * n, max_peers=100)
    peers.heard(1, 6)
    for nid in range(2, 5000):
        peers.heard(nid, 6)
        peers.heard(1, 6)  # nid 1 keeps talking to us
        peers.check(nid, b"n" * 12, None, None, True, nid)
        peers.options(nid, 42, True, None)
    assert peers.sizes() == {"ext": 100, "local": 100, "remote": 100}
    assert peers.speaks_ext(1) and not peers.speaks_ext(2)
    assert peers.counters["peers_evicted"] == 3 * (4998 - 100) + 1


def test_state_survives_a_restart_and_version_tracks_changes():
    peers = PeerTable(rng_bytes=lambda n: b"x" * n)
    peers.heard(BOB, 6)
    peers.check(BOB, b"b" * 12, None, None, True, 0)
    v = peers.version
    peers.check(BOB, b"b" * 12, None, None, True, 5)   # same nonce again: nothing to save
    assert peers.version == v
    again = PeerTable()
    again.restore(peers.state(), now=1_000_000)
    assert again.check(BOB, b"b" * 12, None, None, True, 1_000_001)["nonce_ok"] is True
    assert again.speaks_ext(BOB)


def test_a_locator_update_or_its_ack_starts_no_session():
    """Seen failing before: the router made a session of a stranger's update, and its
    state.sessions could reach mobility before the update, which then passed the
    'no-nonce updates only from a peer with a session' rule (256 of 33,333 on the lab)."""
    core = router()
    plain = wire.encode(A, BOB, A, ME, NH_LOCATOR_UPDATE, b"\x01" + bytes(8), 3)
    core.receive(A, plain, 0)
    core.peers.heard(BOB, 6)
    core.send(BOB, [A], NH_LOCATOR_UPDATE, b"\x00", A, {"seq": 1}, 1)
    assert core.session_keys() == []
    core.ports.bind(1000, "app")
    core.receive(A, wire.encode(A, BOB, A, ME, 42, b"\x03\xe8\x03\xe8data", 3), 2)
    assert core.session_keys() == [[A, BOB]]


def test_nonces_derived_from_the_node_key_survive_a_restart_without_any_file():
    """Seen failing on the lab: peers.json is written at a bounded rate, and a kill -9
    right after a new peer's first packet lost our nonce towards it."""
    first = PeerTable(nonce_key=b"k" * 32)
    first.heard(BOB, 6)
    opts = first.options(BOB, 42, True, None)
    again = PeerTable(nonce_key=b"k" * 32)  # restarted, nothing restored
    again.heard(BOB, 6)
    assert again.options(BOB, 42, True, None) == opts
    other = PeerTable(nonce_key=b"o" * 32)
    other.heard(BOB, 6)
    assert other.options(BOB, 42, True, None) != opts
