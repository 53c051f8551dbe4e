"""A packet to send with no route yet waits for one (as for ARP), bounded in time and
count: after a restart of the router actor its learned routes are gone until the peer's
next packet teaches them again, and the sender's packets meanwhile were dropped
(ilnp-faults: 925 lost a->b at 2,000/s when alice's router was killed)."""
from __future__ import annotations

from actors.proto.addr import ALL_NODES
from actors.proto.frames import LinkItem
from actors.router.core import ROUTE_WAIT_MAX, ROUTE_WAIT_MS
from tests.test_router_core import ALICE, BOB, A, B, E, make, pkt


def _payloads(actions) -> list[bytes]:
    return [a.datagram[-4:] for a in actions if isinstance(a, LinkItem)]


def _teach_e_via_a(core, now):
    """A packet from bob at E, delivered to us through A: E is reachable via A."""
    return core.receive(A, pkt(E, BOB, ALL_NODES, 0, nh=43), now)


def test_a_packet_without_a_route_waits_and_goes_when_one_is_learned():
    core = make(joined=(A,))
    assert core.send(BOB, [E], 42, b"seg1", None, None, 0) == []
    assert core.waiting == 1 and core.counters["route_wait"] == 1 and core.counters["no_route"] == 0
    _teach_e_via_a(core, 100)
    out = core.retry_waiting(100)
    assert [(a.loc, a.datagram[-4:]) for a in out if isinstance(a, LinkItem)] == [(A, b"seg1")]
    assert core.waiting == 0 and core.counters["route_waited"] == 1 and core.counters["sent"] == 1


def test_waiting_packets_go_before_a_later_one_to_the_same_peer():
    core = make(joined=(A,))
    for i in range(3):
        core.send(BOB, [E], 42, b"seg%d" % i, None, None, i)
    _teach_e_via_a(core, 10)  # the shell has not retried yet when the next send comes
    out = core.send(BOB, [E], 42, b"seg3", None, None, 11)
    assert _payloads(out) == [b"seg0", b"seg1", b"seg2", b"seg3"]


def test_a_later_packet_waits_behind_those_already_waiting():
    core = make(joined=(A,))
    core.send(BOB, [E], 42, b"seg0", None, None, 0)
    core.send(BOB, [E], 42, b"seg1", None, None, 1)
    assert core.waiting == 2
    _teach_e_via_a(core, 5)
    assert _payloads(core.retry_waiting(5)) == [b"seg0", b"seg1"]


def test_the_wait_ends_after_route_wait_ms_and_counts_no_route():
    core = make(joined=(A,))
    core.send(BOB, [E], 42, b"seg0", None, None, 0)
    assert core.next_deadline() <= ROUTE_WAIT_MS
    core.on_timer(ROUTE_WAIT_MS)
    assert core.waiting == 0 and core.counters["no_route"] == 1
    _teach_e_via_a(core, ROUTE_WAIT_MS + 1)
    assert core.retry_waiting(ROUTE_WAIT_MS + 1) == []  # too late: nothing is sent


def test_an_expired_packet_is_not_sent_when_the_route_comes_just_after():
    core = make(joined=(A,))
    core.send(BOB, [E], 42, b"seg0", None, None, 0)
    _teach_e_via_a(core, ROUTE_WAIT_MS)  # the timer has not run yet
    assert core.retry_waiting(ROUTE_WAIT_MS) == []
    assert core.counters["no_route"] == 1


def test_the_wait_is_bounded_in_count():
    core = make(joined=(A,))
    for i in range(ROUTE_WAIT_MAX + 5):
        core.send(BOB, [E], 42, b"s%03d" % (i % 1000), None, None, 0)
    assert core.waiting == ROUTE_WAIT_MAX and core.counters["no_route"] == 5


def test_new_locators_release_what_waits_for_them():
    core = make(joined=(A,))
    core.send(BOB, [B], 42, b"seg0", None, None, 0)
    core.set_locators([A, B], [], 10)
    out = [a for a in core.retry_waiting(10) if isinstance(a, LinkItem)]
    assert [(a.loc, a.datagram[-4:]) for a in out] == [(B, b"seg0")]


def test_a_retry_without_a_table_change_costs_nothing():
    core = make(joined=(A,))
    core.send(BOB, [E], 42, b"seg0", None, None, 0)
    core.receive(A, pkt(B, ALICE, ALL_NODES, 0, nh=43), 1)  # teaches B, not E
    assert core.retry_waiting(1) == [] and core.waiting == 1
    version = core.table.version
    core.receive(A, pkt(B, ALICE, ALL_NODES, 0, nh=43), 2)  # the same route again
    assert core.table.version == version


def test_sends_that_can_never_wait_are_refused_at_once():
    core = make(joined=(A,))
    assert core.send(BOB, [], 42, b"seg0", None, None, 0) == []        # nowhere at all
    assert core.send(BOB, [E], 42, b"seg0", B, None, 0) == []          # via a locator not joined
    assert core.send(0, [ALL_NODES], 43, b"x", None, None, 0) == []
    assert core.waiting == 0 and core.counters["no_route"] == 2 and core.counters["via_not_joined"] == 1
