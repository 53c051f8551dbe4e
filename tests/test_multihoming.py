"""Multihoming (issue 15 item 3), without a lab: the mobility core withdraws the locators
whose link is down and offers them again when it is back, telling its peers each time,
and tells each new peer the order of the locators it holds (the primary first); the
discovery core ranks a peer's locators in the order of its last update and solicits at
once on the locators left when one is withdrawn. Fake clock throughout."""
from __future__ import annotations

import random

from actors.discovery.core import Announce, DiscoveryCore
from actors.mobility.core import MobilityCore, PublishLocators, SendUpdate
from actors.proto import discovery as wire
from actors.proto.locator_update import encode_update

A, B, C = 0xA, 0xB, 0xC
ME, BOB, CAROL = 0xFFFF_0000_0000_000A, 0xFFFF_0000_0000_000B, 0xFFFF_0000_0000_000C


def multihomed(handoff: int = 2000) -> MobilityCore:
    m = MobilityCore(ME, [[A, B]], 20_000, handoff)
    m.start(0)
    return m


def pubs(actions) -> list[tuple]:
    return [(a.cur, a.joined, a.leaving) for a in actions if isinstance(a, PublishLocators)]


def updates(actions) -> list[tuple[int, bytes]]:
    return [(a.dst_nid, a.body) for a in actions if isinstance(a, SendUpdate)]


def sessions(*nids) -> list[list[int]]:
    return [[C, nid] for nid in nids]


# ---- mobility: withdraw and restore ---------------------------------------------------

def test_a_locator_whose_link_dies_is_withdrawn_at_once_and_peers_are_told():
    m = multihomed()
    m.set_sessions(sessions(BOB))
    actions = m.set_links([A], 1000)
    # no handoff: nothing arrives on a dead link, so it is not held as "leaving"
    assert pubs(actions) == [((B,), (B,), ())]
    assert updates(actions) == [(BOB, encode_update([B]))]
    # out on B: the routes through A died with it (a router on B knows the way)
    assert [a.via for a in actions if isinstance(a, SendUpdate)] == [B]
    assert m.cur == (A, B) and m.live == (B,)        # still held: the schedule's set
    assert [a.via for a in m.on_timer(1000 + 1000) if isinstance(a, SendUpdate)] == [B]   # its retry too
    assert m.counters["locators_withdrawn"] == 1
    move = m.handoffs.moves[-1]
    assert (move.cause, move.old, move.new) == ("link_down", (A, B), (B,))


def test_a_link_back_offers_its_locator_again_in_its_place():
    m = multihomed()
    m.set_sessions(sessions(BOB))
    m.set_links([A], 1000)
    actions = m.set_links([], 2000)
    assert pubs(actions) == [((A, B), (A, B), ())]
    assert updates(actions) == [(BOB, encode_update([A, B]))]      # the primary first again
    assert [a.via for a in actions if isinstance(a, SendUpdate)] == [None]   # routes are intact
    assert m.counters["locators_restored"] == 1
    assert m.handoffs.moves[-1].cause == "link_up"


def test_the_withdrawal_supersedes_the_updates_still_pending():
    m = multihomed()
    m.set_sessions(sessions(BOB))
    m.set_links([A], 1000)
    seq = m.pending()[BOB][0]
    m.set_links([], 1100)                 # back before bob acknowledged
    assert m.pending()[BOB][0] != seq and m.counters["updates_superseded"] == 1
    # the retry carries the newest set
    retry = updates(m.on_timer(1100 + 1000))
    assert retry == [(BOB, encode_update([A, B]))]


def test_links_that_are_none_of_ours_change_nothing():
    m = multihomed()
    assert m.set_links([C], 1000) == []
    assert m.set_links([C], 1100) == []
    assert m.live == (A, B)


def test_when_every_link_is_down_the_whole_set_is_offered():
    m = multihomed()
    m.set_links([A], 1000)
    assert pubs(m.set_links([A, B], 1100)) == [((A, B), (A, B), ())]
    assert pubs(m.set_links([B], 1200)) == [((A,), (A,), ())]      # whichever comes back first


def test_a_dead_locator_leaves_a_soft_handoff_at_once():
    m = MobilityCore(ME, [[A], [B]], 4000, 2000)
    m.start(0)
    assert pubs(m.on_timer(4000)) == [((B,), (B, A), (A,))]        # holding A while leaving it
    assert pubs(m.set_links([A], 4100)) == [((B,), (B,), ())]      # its link died: gone
    assert updates(m.set_links([A], 4100)) == []                   # what we use did not change


def test_a_scheduled_move_skips_a_locator_whose_link_is_down():
    m = MobilityCore(ME, [[A, B], [C, A]], 4000, 0)
    m.start(0)
    m.set_links([A], 100)
    assert pubs(m.on_timer(4000)) == [((C,), (C,), ())]


# ---- mobility: telling new peers the order ---------------------------------------------

def test_each_new_peer_is_told_the_order_once_while_several_are_held():
    m = multihomed()
    actions = m.set_sessions(sessions(BOB), now=100)
    assert updates(actions) == [(BOB, encode_update([A, B]))]
    assert m.set_sessions(sessions(BOB), now=200) == []              # not new any more
    assert updates(m.set_sessions(sessions(BOB, CAROL), now=300)) == [(CAROL, encode_update([A, B]))]
    assert m.counters["order_updates"] == 2


def test_a_node_with_one_locator_tells_nobody():
    m = MobilityCore(ME, [[A]], 20_000, 2000)
    m.start(0)
    assert m.set_sessions(sessions(BOB), now=100) == []
    m = multihomed()
    m.set_links([A], 50)                                             # one left in use
    assert m.set_sessions(sessions(BOB), now=100) == []


# ---- discovery: ranking by the last update, soliciting after a withdrawal ---------------

def discovery() -> DiscoveryCore:
    d = DiscoveryCore("bob", BOB, 30_000, random.Random(1))
    d.set_locators([C], [], 0)
    return d


def advert(d: DiscoveryCore, loc: int, now: int) -> None:
    d.receive(loc, ME, C, wire.encode(ME, loc, False, "alice"), now)


def test_a_peers_locators_keep_the_order_of_its_last_update():
    d = discovery()
    advert(d, B, 100)
    advert(d, A, 200)                       # heard last: first
    assert d.resolve("alice", 300) == [(A, ME), (B, ME)]
    d.peer_moved(ME, [B, A], 400)           # its update: B is its primary
    advert(d, A, 500)                       # refreshes do not reorder what it stated
    assert [loc for loc, _ in d.resolve("alice", 600)] == [B, A]
    assert [row.locs for row in d.hosts(600)] == [[B, A]]


def test_a_locator_heard_after_the_update_comes_first():
    """Where it went without telling us (no session: no update) is news."""
    d = discovery()
    advert(d, A, 100)
    d.peer_moved(ME, [A, B], 200)
    advert(d, C, 300)
    assert [loc for loc, _ in d.resolve("alice", 400)] == [C, A, B]


def test_a_sighting_older_than_the_updates_last_refresh_comes_after_it():
    d = discovery()
    advert(d, A, 100)
    d.peer_moved(ME, [A, B], 200)
    advert(d, C, 300)                       # a stale copy, say
    advert(d, B, 400)                       # the update's locators heard since
    assert [loc for loc, _ in d.resolve("alice", 500)] == [A, B, C]


def test_withdrawing_a_locator_solicits_on_those_left():
    d = DiscoveryCore("alice", ME, 30_000, random.Random(1))
    d.set_locators([A, B], [], 0)
    actions = d.set_locators([B], [], 1000)
    assert [(a.via_loc, wire.decode(a.body).solicitation) for a in actions if isinstance(a, Announce)] == [(B, True)]


def test_the_end_of_a_soft_handoff_solicits_nothing():
    d = DiscoveryCore("alice", ME, 30_000, random.Random(1))
    d.set_locators([A], [], 0)
    assert [a.via_loc for a in d.set_locators([B, A], [A], 1000)] == [B]   # B is new: it solicits
    assert d.set_locators([B], [], 3000) == []                              # A was leaving already
