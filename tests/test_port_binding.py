"""PortBinder (actors/stp/binding.py): the pure machine that keeps STP ports bound with
the router, driven here like a shell drives it, with a fake clock in int ms.

The last tests put the router's real registry (actors/router/ports.PortRegistry)
behind two binders, as a fake router that answers the way the router actor does.
"""
from __future__ import annotations

import pytest

from actors.proto.numbers import EPHEMERAL_FIRST
from actors.router.ports import BindError, PortRegistry
from actors.stp.binding import AskBind, AskUnbind, Bound, Lost, PortBinder, Refused, Unanswered

ME, OTHER = 1111, 2222       # owners (pids)
T0 = 10_000                  # the fake clock's start, ms
REASON = "router: port 5000 is already bound by 2222"


def bound_binder(port: int = 5000, now: int = T0) -> PortBinder:
    binder = PortBinder(ME)
    assert binder.want(port, now) == [AskBind(port)]
    assert binder.on_bind_reply(port, True, port, now) == [Bound(port)]
    return binder


def refused_binder(port: int = 5000, now: int = T0) -> PortBinder:
    binder = PortBinder(ME)
    assert binder.want(port, now) == [AskBind(port)]
    assert binder.on_bind_reply(port, False, REASON, now) == [Refused(port, REASON)]
    return binder


# ---- wanting and binding ----------------------------------------------------------

def test_want_asks_once_while_a_bind_is_in_flight():
    binder = PortBinder(ME)
    assert binder.want(5000, T0) == [AskBind(5000)]
    assert binder.want(5000, T0 + 1) == []          # still asking: no second request
    assert binder.on_timer(T0 + 60_000) == []       # nor from the timer
    assert binder.next_deadline() is None           # an answer (or its timeout) comes first
    assert not binder.is_bound(5000)
    assert binder.ports() == [5000]


def test_an_ok_answer_binds_the_port():
    binder = PortBinder(ME)
    binder.want(5000, T0)
    assert binder.on_bind_reply(5000, True, 5000, T0 + 3) == [Bound(5000)]
    assert binder.is_bound(5000)
    assert binder.refusal(5000) is None
    assert binder.next_deadline() is None
    assert binder.want(5000, T0 + 4) == []          # already ours
    assert binder.on_timer(T0 + 60_000) == []


def test_port_zero_takes_the_port_the_router_names():
    binder = PortBinder(ME)
    assert binder.want(0, T0) == [AskBind(0)]
    assert binder.ports() == []                     # nothing known yet
    assert binder.on_bind_reply(0, True, 49153, T0 + 1) == [Bound(49153)]
    assert binder.ports() == [49153]
    assert binder.is_bound(49153)
    assert not binder.is_bound(0)
    # from now on that port is the one wanted: the router forgetting it re-asks for it
    assert binder.on_router_ports({}, T0 + 2) == [Lost(49153), AskBind(49153)]


def test_port_zero_unanswered_asks_for_port_zero_again():
    binder = PortBinder(ME)
    binder.want(0, T0)
    assert binder.on_bind_reply(0, None, "no answer", T0) == [Unanswered(0)]
    assert binder.next_deadline() == T0 + 500
    assert binder.on_timer(T0 + 500) == [AskBind(0)]
    assert binder.ports() == []


# ---- refusals and the backoff -----------------------------------------------------

def test_a_refused_bind_tells_why_and_is_retried_after_the_backoff():
    binder = refused_binder()
    assert binder.refusal(5000) == REASON
    assert not binder.is_bound(5000)
    assert binder.next_deadline() == T0 + 500
    assert binder.on_timer(T0 + 499) == []
    assert binder.on_timer(T0 + 500) == [AskBind(5000)]
    assert binder.next_deadline() is None           # asking again: no deadline meanwhile
    assert binder.refusal(5000) is None             # while asking, it is not refused
    assert binder.counters["bind_refused"] == 1
    assert binder.counters["bind_retries"] == 1


def test_the_backoff_doubles_up_to_retry_max_ms():
    binder = PortBinder(ME, retry_first_ms=500, retry_max_ms=5000)
    now = T0
    binder.want(5000, now)
    waits = []
    for _ in range(7):
        binder.on_bind_reply(5000, False, REASON, now)
        deadline = binder.next_deadline()
        waits.append(deadline - now)
        assert binder.on_timer(deadline - 1) == []
        now = deadline
        assert binder.on_timer(now) == [AskBind(5000)]
    assert waits == [500, 1000, 2000, 4000, 5000, 5000, 5000]
    assert binder.counters["bind_refused"] == 7
    assert binder.counters["bind_retries"] == 7


def test_the_backoff_starts_over_once_bound():
    binder = refused_binder()
    binder.on_timer(T0 + 500)
    binder.on_bind_reply(5000, False, REASON, T0 + 500)      # backoff 1000 now
    assert binder.next_deadline() == T0 + 1500
    binder.on_timer(T0 + 1500)
    assert binder.on_bind_reply(5000, True, 5000, T0 + 1500) == [Bound(5000)]
    binder.on_router_ports({}, T0 + 2000)                     # lost: asked again
    binder.on_bind_reply(5000, False, REASON, T0 + 2000)
    assert binder.next_deadline() == T0 + 2500               # first backoff again


def test_a_refused_port_that_comes_free_is_asked_for_at_once_and_bound():
    binder = refused_binder()
    # the holder still holds it: wait for the retry
    assert binder.on_router_ports({5000: OTHER}, T0 + 10) == []
    # the owner went away (the router reclaimed or it unbound): ask now, not in 500 ms
    assert binder.on_router_ports({}, T0 + 20) == [AskBind(5000)]
    assert binder.next_deadline() is None
    assert binder.on_router_ports({}, T0 + 30) == []         # asking already: no duplicate
    assert binder.on_bind_reply(5000, True, 5000, T0 + 40) == [Bound(5000)]
    assert binder.is_bound(5000) and binder.refusal(5000) is None


def test_an_unanswered_bind_is_retried_later():
    binder = PortBinder(ME)
    binder.want(5000, T0)
    assert binder.on_bind_reply(5000, None, "actor router does not answer", T0 + 1000) == [Unanswered(5000)]
    assert not binder.is_bound(5000)
    assert binder.refusal(5000) is None                       # not refused: nobody said no
    assert binder.next_deadline() == T0 + 1500
    assert binder.on_timer(T0 + 1500) == [AskBind(5000)]
    assert binder.on_bind_reply(5000, True, 5000, T0 + 1600) == [Bound(5000)]
    assert binder.counters["bind_unanswered"] == 1
    assert binder.counters["bind_retries"] == 1


def test_an_unanswered_port_is_asked_for_as_soon_as_the_router_publishes():
    binder = PortBinder(ME)
    binder.want(5000, T0)
    binder.on_bind_reply(5000, None, "no answer", T0)
    # a state.ports frame says the router is up (again): no need to wait for the retry
    assert binder.on_router_ports({}, T0 + 10) == [AskBind(5000)]


# ---- the router's table is the truth -----------------------------------------------

def test_a_bound_port_missing_from_the_table_is_lost_and_asked_for_at_once():
    binder = bound_binder()
    assert binder.on_router_ports({5000: ME}, T0 + 1) == []   # all well
    assert binder.on_router_ports({}, T0 + 2) == [Lost(5000), AskBind(5000)]
    assert not binder.is_bound(5000)
    assert binder.counters["lost"] == 1
    assert binder.on_bind_reply(5000, True, 5000, T0 + 3) == [Bound(5000)]


def test_a_bound_port_the_table_gives_to_another_owner_is_lost():
    binder = bound_binder()
    assert binder.on_router_ports({5000: OTHER}, T0 + 1) == [Lost(5000), AskBind(5000)]
    assert binder.on_bind_reply(5000, False, REASON, T0 + 2) == [Refused(5000, REASON)]


def test_a_table_that_shows_our_port_binds_it_without_asking():
    binder = refused_binder()                                  # e.g. the router had answered late
    assert binder.on_router_ports({5000: ME}, T0 + 1) == [Bound(5000)]
    assert binder.is_bound(5000)
    assert binder.next_deadline() is None                     # no retry left behind
    assert binder.on_timer(T0 + 60_000) == []
    # also while a request is in flight
    binder2 = PortBinder(ME)
    binder2.want(6000, T0)
    assert binder2.on_router_ports({6000: ME}, T0 + 1) == [Bound(6000)]


def test_the_table_never_concerns_port_zero():
    binder = PortBinder(ME)
    binder.want(0, T0)
    assert binder.on_router_ports({0: ME}, T0 + 1) == []
    assert binder.on_router_ports({}, T0 + 2) == []


# ---- releasing ------------------------------------------------------------------------

def test_release_of_a_bound_port_tells_the_router():
    binder = bound_binder()
    assert binder.release(5000, T0 + 1) == [AskUnbind(5000)]
    assert binder.ports() == [] and not binder.is_bound(5000)
    assert binder.on_unbind_reply(5000, True, T0 + 2) == []
    assert binder.next_deadline() is None
    assert binder.on_timer(T0 + 60_000) == []
    assert binder.on_router_ports({}, T0 + 3) == []           # not wanted: not asked for


def test_an_unanswered_unbind_is_retried_until_the_table_no_longer_shows_the_port():
    binder = bound_binder()
    binder.release(5000, T0)
    assert binder.on_unbind_reply(5000, None, T0 + 1000) == []
    assert binder.counters["unbind_unanswered"] == 1
    assert binder.next_deadline() == T0 + 1500
    assert binder.on_timer(T0 + 1499) == []
    assert binder.on_timer(T0 + 1500) == [AskUnbind(5000)]
    assert binder.next_deadline() is None                     # asking
    assert binder.on_unbind_reply(5000, None, T0 + 2500) == []
    assert binder.on_timer(T0 + 3000) == [AskUnbind(5000)]
    assert binder.on_unbind_reply(5000, None, T0 + 4000) == []
    # the table still shows it ours: keep at it
    assert binder.on_router_ports({5000: ME}, T0 + 4100) == []
    assert binder.next_deadline() == T0 + 4500
    # the table no longer shows it: done, nothing more is sent
    assert binder.on_router_ports({}, T0 + 4200) == []
    assert binder.next_deadline() is None
    assert binder.on_timer(T0 + 60_000) == []
    assert binder.counters["unbind_unanswered"] == 3


def test_release_of_a_port_never_bound_asks_nothing():
    binder = refused_binder()
    assert binder.release(5000, T0 + 1) == []
    assert binder.next_deadline() is None
    assert binder.on_timer(T0 + 60_000) == []
    assert binder.release(7000, T0) == []                     # never wanted
    unanswered = PortBinder(ME)
    unanswered.want(5000, T0)
    unanswered.on_bind_reply(5000, None, "x", T0)
    assert unanswered.release(5000, T0 + 1) == []
    assert unanswered.next_deadline() is None


def test_release_while_a_bind_is_in_flight_gives_the_port_back_when_it_is_granted():
    binder = PortBinder(ME)
    binder.want(5000, T0)
    binder.release(5000, T0 + 1)
    assert binder.ports() == []
    # the late ok answer: the router gave it to us, give it back
    assert binder.on_bind_reply(5000, True, 5000, T0 + 2) == [AskUnbind(5000)]
    assert not binder.is_bound(5000)
    assert binder.on_unbind_reply(5000, True, T0 + 3) == []
    assert binder.next_deadline() is None


def test_release_while_a_bind_is_in_flight_then_refused_or_unanswered_is_quiet():
    for ok, result in ((False, REASON), (None, "no answer")):
        binder = PortBinder(ME)
        binder.want(5000, T0)
        binder.release(5000, T0 + 1)
        assert binder.on_bind_reply(5000, ok, result, T0 + 2) == []
        assert binder.ports() == [] and binder.next_deadline() is None


def test_release_of_port_zero_while_asking_gives_the_ephemeral_port_back():
    binder = PortBinder(ME)
    binder.want(0, T0)
    binder.release(0, T0 + 1)
    assert binder.on_bind_reply(0, True, 49152, T0 + 2) == [AskUnbind(49152)]


def test_want_again_while_releasing_keeps_the_port():
    binder = bound_binder()
    binder.release(5000, T0)
    binder.on_unbind_reply(5000, None, T0 + 1000)
    assert binder.want(5000, T0 + 1100) == [AskBind(5000)]
    assert binder.next_deadline() is None                     # no unbind retry left over
    assert binder.on_timer(T0 + 60_000) == []
    assert binder.on_unbind_reply(5000, True, T0 + 1200) == []  # a stale unbind answer: ignored
    assert binder.on_bind_reply(5000, True, 5000, T0 + 1300) == [Bound(5000)]


def test_a_stray_answer_changes_nothing():
    binder = PortBinder(ME)
    assert binder.on_bind_reply(5000, False, REASON, T0) == []
    assert binder.on_bind_reply(5000, None, "x", T0) == []
    assert binder.on_unbind_reply(5000, True, T0) == []
    assert binder.ports() == [] and binder.next_deadline() is None
    assert sum(binder.counters.values()) == 0


def test_several_ports_keep_their_own_state_and_deadlines():
    binder = PortBinder(ME)
    assert binder.want(5000, T0) == [AskBind(5000)]
    assert binder.want(6000, T0) == [AskBind(6000)]
    assert binder.want(7000, T0) == [AskBind(7000)]
    binder.on_bind_reply(5000, True, 5000, T0)
    binder.on_bind_reply(6000, False, "router: port 6000 is already bound by 2222", T0 + 100)
    binder.on_bind_reply(7000, None, "no answer", T0 + 300)
    assert binder.ports() == [5000, 6000, 7000]
    assert binder.next_deadline() == T0 + 600
    assert binder.on_timer(T0 + 600) == [AskBind(6000)]
    assert binder.next_deadline() == T0 + 800
    assert binder.on_timer(T0 + 800) == [AskBind(7000)]
    # the router restarted: only what we held is lost; 6000 and 7000 are in flight
    assert binder.on_router_ports({}, T0 + 900) == [Lost(5000), AskBind(5000)]
    assert dict(binder.counters) == {"bind_refused": 1, "bind_unanswered": 1, "bind_retries": 2, "lost": 1}


def test_a_port_the_table_shows_ours_but_not_wanted_is_given_back():
    binder = PortBinder(ME)
    binder.want(5000, T0)
    binder.on_bind_reply(5000, None, "actor router does not answer", T0 + 1000)
    binder.release(5000, T0 + 1100)
    assert binder.on_router_ports({5000: ME}, T0 + 2000) == [AskUnbind(5000)]


# ---- the real registry as a fake router ---------------------------------------------

class FakeRouter:
    """Answers AskBind/AskUnbind like the router actor: PortRegistry.bind/unbind, an error
    reply "router: <reason>", and state.ports = registry.bindings()."""

    def __init__(self, alive: set):
        self.alive = alive
        self.registry = PortRegistry(is_owner_alive=lambda owner: owner in self.alive)
        self.up = True

    def restart(self) -> None:
        """A router that restarted without its file: an empty registry."""
        self.registry = PortRegistry(is_owner_alive=lambda owner: owner in self.alive)

    def table(self) -> dict:
        return self.registry.bindings()


def drive(router: FakeRouter, binder: PortBinder, actions: list, now: int) -> list:
    """Carry out the binder's requests against the router; returns the events."""
    events, todo = [], list(actions)
    while todo:
        action = todo.pop(0)
        if isinstance(action, AskBind):
            if not router.up:
                todo.extend(binder.on_bind_reply(action.port, None, "actor router does not answer", now))
                continue
            try:
                ok, result = True, router.registry.bind(action.port, binder.owner)
            except BindError as exc:
                ok, result = False, f"router: {exc}"
            todo.extend(binder.on_bind_reply(action.port, ok, result, now))
        elif isinstance(action, AskUnbind):
            ok = router.registry.unbind(action.port) if router.up else None
            todo.extend(binder.on_unbind_reply(action.port, ok, now))
        else:
            events.append(action)
    return events


def test_two_owners_one_port_with_the_real_registry():
    a, b = PortBinder(101), PortBinder(202)
    router = FakeRouter(alive={101, 202})
    now = T0
    assert drive(router, a, a.want(5000, now), now) == [Bound(5000)]
    assert drive(router, b, b.want(5000, now), now) == [Refused(5000, "router: port 5000 is already bound by 101")]
    assert b.refusal(5000) == "router: port 5000 is already bound by 101"
    # both follow state.ports: nothing changes while the winner lives
    for binder in (a, b):
        assert drive(router, binder, binder.on_router_ports(router.table(), now + 1), now + 1) == []
    # b's retry is refused again while a lives
    now = b.next_deadline()
    assert now == T0 + 500
    assert drive(router, b, b.on_timer(now), now) == [Refused(5000, "router: port 5000 is already bound by 101")]
    # a dies without unbinding; the table still names it, so b waits for its retry ...
    router.alive.discard(101)
    assert drive(router, b, b.on_router_ports(router.table(), now + 1), now + 1) == []
    now = b.next_deadline()
    assert now == T0 + 500 + 1000
    # ... which the registry grants: a dead owner's port is reclaimed
    assert drive(router, b, b.on_timer(now), now) == [Bound(5000)]
    assert router.table() == {5000: 202}
    assert router.registry.counters["stale_reclaimed"] == 1
    assert b.is_bound(5000) and b.next_deadline() is None


def test_the_loser_binds_at_once_when_the_winner_unbinds():
    a, b = PortBinder(101), PortBinder(202)
    router = FakeRouter(alive={101, 202})
    drive(router, a, a.want(5000, T0), T0)
    drive(router, b, b.want(5000, T0), T0)
    assert drive(router, a, a.release(5000, T0 + 10), T0 + 10) == []
    assert router.table() == {}
    # the router publishes state.ports after the unbind: b asks at once, before its retry
    assert drive(router, b, b.on_router_ports(router.table(), T0 + 11), T0 + 11) == [Bound(5000)]
    assert router.table() == {5000: 202}


def test_a_router_restart_makes_the_binders_bind_again():
    a, b = PortBinder(101), PortBinder(202)
    router = FakeRouter(alive={101, 202})
    drive(router, a, a.want(5000, T0), T0)
    assert drive(router, b, b.want(0, T0), T0) == [Bound(EPHEMERAL_FIRST)]
    assert router.table() == {5000: 101, EPHEMERAL_FIRST: 202}
    # down for a while: a request times out
    router.up = False
    drive(router, a, a.want(6000, T0 + 100), T0 + 100)
    assert not a.is_bound(6000)
    router.restart()
    router.up = True
    # its first state.ports frame is an empty table: every binder asks again at once
    now = T0 + 200
    assert drive(router, a, a.on_router_ports(router.table(), now), now) == [Lost(5000), Bound(5000), Bound(6000)]
    assert drive(router, b, b.on_router_ports(router.table(), now), now) == [Lost(EPHEMERAL_FIRST),
                                                                             Bound(EPHEMERAL_FIRST)]
    assert router.table() == {5000: 101, 6000: 101, EPHEMERAL_FIRST: 202}
    assert a.counters["lost"] == 1 and b.counters["lost"] == 1
    assert a.next_deadline() is None and b.next_deadline() is None


def test_releasing_an_in_flight_bind_leaves_the_holders_port_alone():
    a, b = PortBinder(101), PortBinder(202)
    router = FakeRouter(alive={101, 202})
    drive(router, a, a.want(5000, T0), T0)
    # b asks; before the answer is processed, b's owner releases the port (e.g. unmap)
    asks = b.want(5000, T0 + 1)
    unbinds = b.release(5000, T0 + 2)
    drive(router, b, asks + unbinds, T0 + 3)   # the router serves both, in order
    assert router.table() == {5000: 101}
