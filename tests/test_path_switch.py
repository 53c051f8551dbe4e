"""No reordering when a path gets shorter (issue 13): when a peer's route through a
router becomes a direct send (we moved into its network, or it into ours), packets on
the new path overtook those still queued on the old one (the mobility experiment saw 296
reordered at 10,000/s each way). The router core now holds the peer's sends until
path_switch_hold_ms after its last send on the old path, in order."""
from __future__ import annotations

import actors.router.core as router_core
from actors.proto.addr import ALL_NODES
from actors.proto.frames import LinkItem
from tests.test_router_core import ALICE, BOB, A, B, make, pkt

HOLD = 50


def sent(actions) -> list[tuple[int, bytes]]:
    """(interface, payload tag) of each datagram sent."""
    return [(a.loc, a.datagram[-4:]) for a in actions if isinstance(a, LinkItem)]


def routed_to_bob(**kw):
    """We are on A only; bob (at B) is reached through a router on A; one packet went so."""
    core = make(joined=(A,), path_switch_hold_ms=HOLD, **kw)
    core.receive(A, pkt(B, BOB, ALL_NODES, 0, nh=43), 0)  # teaches B via A
    assert sent(core.send(BOB, [B], 42, b"old0", None, None, 10)) == [(A, b"old0")]
    return core


def test_sends_after_the_path_gets_shorter_wait_for_the_old_path_to_drain():
    core = routed_to_bob()
    core.set_locators([A, B], [], 12)  # we joined bob's network: direct from now on
    assert core.send(BOB, [B], 42, b"new1", None, None, 12) == []
    assert core.send(BOB, [B], 42, b"new2", None, None, 30) == []
    assert core.held == 2 and core.counters["path_switch_holds"] == 1
    assert core.next_deadline() <= 10 + HOLD
    assert sent(core.on_timer(10 + HOLD - 1)) == []
    assert sent(core.on_timer(10 + HOLD)) == [(B, b"new1"), (B, b"new2")]
    assert core.held == 0
    assert sent(core.send(BOB, [B], 42, b"new3", None, None, 61)) == [(B, b"new3")]  # no new hold


def test_without_the_fix_the_new_path_is_used_at_once():
    """The behaviour before: path_switch_hold 0 (the config's off switch) sends direct at once."""
    core = make(joined=(A,), path_switch_hold_ms=0)
    core.receive(A, pkt(B, BOB, ALL_NODES, 0, nh=43), 0)
    core.send(BOB, [B], 42, b"old0", None, None, 10)
    core.set_locators([A, B], [], 12)
    assert sent(core.send(BOB, [B], 42, b"new1", None, None, 12)) == [(B, b"new1")]


def test_a_peer_idle_for_longer_than_the_hold_is_not_held():
    core = routed_to_bob()
    core.set_locators([A, B], [], 100)
    assert sent(core.send(BOB, [B], 42, b"new1", None, None, 10 + HOLD)) == [(B, b"new1")]
    assert core.counters["path_switch_holds"] == 0


def test_a_path_that_gets_longer_is_not_held():
    core = make(joined=(A, B), path_switch_hold_ms=HOLD)
    assert sent(core.send(BOB, [B], 42, b"dir0", None, None, 10)) == [(B, b"dir0")]
    core.set_locators([A], [], 11)  # we left B: through the router on A now, a longer path
    core.receive(A, pkt(B, BOB, ALL_NODES, 0, nh=43), 11)  # teaches B via A
    assert sent(core.send(BOB, [B], 42, b"rtd1", None, None, 11)) == [(A, b"rtd1")]


def test_only_the_peer_whose_path_changed_is_held():
    core = routed_to_bob()
    core.receive(A, pkt(A, ALICE, ALL_NODES, 0, nh=43), 11)
    core.set_locators([A, B], [], 12)
    assert core.send(BOB, [B], 42, b"bob1", None, None, 12) == []
    assert sent(core.send(ALICE, [A], 42, b"ali1", None, None, 13)) == [(A, b"ali1")]


def test_a_hold_that_fills_up_ends_early_in_order(monkeypatch):
    monkeypatch.setattr(router_core, "PATH_HOLD_MAX", 3)
    core = routed_to_bob()
    core.set_locators([A, B], [], 12)
    assert core.send(BOB, [B], 42, b"new1", None, None, 12) == []
    assert core.send(BOB, [B], 42, b"new2", None, None, 13) == []
    out = core.send(BOB, [B], 42, b"new3", None, None, 14)
    assert sent(out) == [(B, b"new1"), (B, b"new2"), (B, b"new3")]
    assert core.counters["path_switch_overflow"] == 1 and core.held == 0


def test_a_send_through_a_named_interface_is_never_held():
    """Locator updates go out on a chosen interface (via): they must not wait."""
    core = routed_to_bob()
    core.set_locators([A, B], [], 12)
    assert sent(core.send(BOB, [B], 44, b"upd1", B, None, 12)) == [(B, b"upd1")]
