"""Discovery core: timing, answers, host table; fake clock (ms), seeded rng."""
import random

import pytest

from actors.discovery.core import DiscoveryCore, HostRow, HostsChanged, Announce
from actors.proto.discovery import encode

W = 30_000
A, B, C = 0xA, 0xB, 0xC
ME = 0xFFFF_0000_0000_0001
BOB = 0xFFFF_0000_0000_000B
ROUTER = 0xFFFF_0000_0000_000D


def sol(nid, loc, name):
    return encode(nid, loc, True, name)


def adv(nid, loc, name):
    return encode(nid, loc, False, name)


def make(joined=(A,), leaving=(), seed=1, now=0):
    core = DiscoveryCore("me", ME, W, random.Random(seed))
    core.set_locators(list(joined), list(leaving), now)
    return core


def transmits(actions):
    return [a for a in actions if isinstance(a, Announce)]


def changed(actions):
    return sum(isinstance(a, HostsChanged) for a in actions)


# -- joining and the solicitation timer ---------------------------------------------

def test_join_solicits_at_once_on_each_new_locator():
    core = DiscoveryCore("me", ME, W, random.Random(1))
    actions = core.set_locators([A, B], [], 0)
    assert actions == [Announce(A, sol(ME, A, "me")), Announce(B, sol(ME, B, "me"))]
    assert core.counters["solicitations_out"] == 2


def test_only_newly_joined_locators_solicit():
    core = make([A])
    assert core.set_locators([A], [], 100) == []
    assert core.set_locators([A, B], [], 200) == [Announce(B, sol(ME, B, "me"))]


def test_leaving_locators_get_no_solicitations():
    core = make([A, B])
    assert core.set_locators([A, B], [A], 100) == []
    out = []
    for now in range(0, 10 * W, 500):
        out += transmits(core.on_timer(now))
    assert out and {t.via_loc for t in out} == {B}


def test_locator_back_from_leaving_solicits_again():
    core = make([A, B])
    core.set_locators([A, B], [B], 100)
    assert core.set_locators([A, B], [], 200) == [Announce(B, sol(ME, B, "me"))]


def test_leaving_given_outside_joined_counts_as_joined_but_inactive():
    core = make([A])
    core.set_locators([B], [A], 100)
    assert core.receive(A, BOB, A, sol(BOB, A, "bob"), 200) == []
    assert core.counters["ignored_leaving"] == 1


@pytest.mark.parametrize("seed", range(20))
def test_periodic_solicitation_every_half_to_whole_wait_time(seed):
    core = make([A], seed=seed)
    sent_at = [0]
    for _ in range(8):
        due = core.next_deadline()
        assert core.on_timer(due - 1) == []
        assert core.on_timer(due) == [Announce(A, sol(ME, A, "me"))]
        sent_at.append(due)
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
    assert all(W // 2 <= g <= W for g in gaps)


def test_solicitation_intervals_are_random():
    dues = {make([A], seed=s).next_deadline() for s in range(20)}
    assert len(dues) > 10


def test_received_solicitation_suppresses_ours_for_a_wait_time():
    core = make([A])
    core.receive(A, BOB, A, sol(BOB, A, "bob"), 1_000)
    fired = []
    while True:
        due = core.next_deadline()
        out = transmits(core.on_timer(due))
        if out:
            break
        fired.append(due)
    assert fired, "the first due solicitation must have been suppressed"
    assert all(t - 1_000 < W for t in fired)
    assert due - 1_000 >= W
    assert out == [Announce(A, sol(ME, A, "me"))]
    assert core.counters["solicitations_suppressed"] == len(fired)


def test_suppression_is_per_locator():
    core = make([A, B])
    core.receive(A, BOB, A, sol(BOB, A, "bob"), 1_000)
    out = []
    for now in range(1_000, W + 1, 100):
        out += transmits(core.on_timer(now))
    assert [t.via_loc for t in out] == [B]


def test_received_advertisement_does_not_suppress():
    core = make([A])
    core.receive(A, BOB, A, adv(BOB, A, "bob"), 1_000)
    due = core.next_deadline()
    assert transmits(core.on_timer(due)) == [Announce(A, sol(ME, A, "me"))]


def test_no_deadline_without_locators_or_hosts():
    core = DiscoveryCore("me", ME, W, random.Random(1))
    assert core.next_deadline() is None
    core = make([A])
    core.set_locators([], [], 10)
    assert core.next_deadline() is None


# -- receiving -----------------------------------------------------------------------

def test_solicitation_answered_once_naming_arrival_locator_on_every_joined_locator():
    core = make([A, B, C])
    actions = core.receive(B, BOB, B, sol(BOB, B, "bob"), 500)
    answer = adv(ME, B, "me")
    assert transmits(actions) == [Announce(A, answer), Announce(B, answer), Announce(C, answer)]
    assert core.counters["solicitations_in"] == 1
    assert core.counters["adverts_out"] == 3


def test_flooded_solicitation_answer_names_where_it_arrived_not_the_sender():
    core = make([A])
    actions = core.receive(B, BOB, A, sol(BOB, B, "bob"), 500)  # router flooded it to A
    assert transmits(actions) == [Announce(A, adv(ME, A, "me"))]


def test_answer_skips_leaving_locators():
    core = make([A, B, C])
    core.set_locators([A, B, C], [C], 100)
    actions = core.receive(A, BOB, A, sol(BOB, A, "bob"), 500)
    assert [t.via_loc for t in transmits(actions)] == [A, B]


def test_advertisement_is_recorded_not_answered():
    core = make([A])
    actions = core.receive(A, BOB, A, adv(BOB, A, "bob"), 500)
    assert transmits(actions) == []
    assert core.resolve("bob") == [(A, BOB)]
    assert core.counters["adverts_in"] == 1


def test_solicitation_records_its_sender():
    core = make([A])
    core.receive(A, BOB, A, sol(BOB, A, "bob"), 500)
    assert core.resolve("bob") == [(A, BOB)]


def test_table_learns_body_locator_of_eavesdropped_copies():
    core = make([A])
    core.receive(B, ROUTER, A, adv(ROUTER, B, "router"), 500)
    assert core.resolve("router") == [(B, ROUTER)]
    assert core.name_of(B, ROUTER) == "router"
    assert core.name_of(A, ROUTER) is None


@pytest.mark.parametrize("arrival, counter", [(B, "ignored_leaving"), (C, "ignored_not_joined")])
def test_packets_on_leaving_or_unjoined_locators_are_ignored(arrival, counter):
    core = make([A, B], leaving=[B])
    assert core.receive(arrival, BOB, arrival, sol(BOB, arrival, "bob"), 500) == []
    assert core.resolve("bob") == []
    assert core.counters[counter] == 1
    assert core.counters["solicitations_in"] == 0


def test_leaving_arrival_does_not_suppress_the_active_locator():
    core = make([A, B], leaving=[B])
    core.receive(B, BOB, B, sol(BOB, B, "bob"), 500)
    due = core.next_deadline()
    assert transmits(core.on_timer(due)) == [Announce(A, sol(ME, A, "me"))]


@pytest.mark.parametrize("src_nid, body_nid", [(ME, ME), (ME, BOB), (BOB, ME)])
def test_own_packets_are_ignored(src_nid, body_nid):
    core = make([A])
    assert core.receive(A, src_nid, A, sol(body_nid, A, "me"), 500) == []
    assert core.counters["own"] == 1
    assert core.hosts(500) == []


@pytest.mark.parametrize("body", [b"", b"\x00" * 16, bytes(16) + b"\x07x", bytes(17) + b"\xff"])
def test_malformed_is_counted_and_dropped(body):
    core = make([A])
    assert core.receive(A, BOB, A, body, 500) == []
    assert core.counters["malformed"] == 1


# -- host table ------------------------------------------------------------------------

def test_hosts_changed_only_when_content_changes():
    core = make([A, B])
    assert changed(core.receive(A, BOB, A, adv(BOB, A, "bob"), 100)) == 1  # new host
    assert changed(core.receive(A, BOB, A, adv(BOB, A, "bob"), 200)) == 0  # refresh
    assert changed(core.receive(A, BOB, A, sol(BOB, A, "bob"), 300)) == 0  # refresh
    assert changed(core.receive(B, BOB, B, adv(BOB, B, "bob"), 400)) == 1  # new locator
    assert changed(core.receive(B, BOB, B, adv(BOB, B, "robert"), 500)) == 1  # renamed
    assert core.resolve("bob") == []
    assert core.resolve("robert") == [(B, BOB), (A, BOB)]


def test_refresh_updates_last_seen():
    core = make([A])
    core.receive(A, BOB, A, adv(BOB, A, "bob"), 100)
    core.receive(A, BOB, A, adv(BOB, A, "bob"), 900)
    assert core.hosts(1_000) == [HostRow("bob", BOB, [A], 100)]


def test_entries_expire_after_three_wait_times():
    core = make([A])
    core.receive(A, BOB, A, adv(BOB, A, "bob"), 1_000)
    expiry = 1_000 + 3 * W
    assert changed(core.on_timer(expiry - 1)) == 0
    assert core.resolve("bob") == [(A, BOB)]
    assert core.next_deadline() <= expiry
    assert changed(core.on_timer(expiry)) == 1
    assert core.resolve("bob") == []
    assert core.hosts(expiry) == []
    assert core.counters["host_entries_expired"] == 1


def test_refresh_postpones_expiry_and_locators_expire_alone():
    core = make([A, B])
    core.receive(A, BOB, A, adv(BOB, A, "bob"), 1_000)
    core.receive(B, BOB, B, adv(BOB, B, "bob"), 1_000)
    core.receive(B, BOB, B, adv(BOB, B, "bob"), 50_000)  # refresh B only
    assert changed(core.on_timer(1_000 + 3 * W)) == 1
    assert core.resolve("bob") == [(B, BOB)]
    assert changed(core.on_timer(50_000 + 3 * W - 1)) == 0
    assert changed(core.on_timer(50_000 + 3 * W)) == 1
    assert core.hosts(50_000 + 3 * W) == []


def test_next_deadline_covers_host_expiry():
    core = DiscoveryCore("me", ME, W, random.Random(1))
    core.set_locators([A], [], 0)
    core.receive(A, BOB, A, adv(BOB, A, "bob"), 10)
    core.set_locators([], [], 20)  # no timers left: only the expiry remains
    assert core.next_deadline() == 10 + 3 * W


def test_hosts_and_resolve_hide_expired_before_the_timer_runs():
    core = make([A])
    core.receive(A, BOB, A, adv(BOB, A, "bob"), 0)
    assert core.hosts(3 * W) == []
    assert core.resolve("bob", now=3 * W) == []
    assert core.resolve("bob", now=3 * W - 1) == [(A, BOB)]


def test_peer_moved_rewrites_to_exactly_the_new_locators():
    core = make([A, B, C])
    core.receive(A, ROUTER, A, adv(ROUTER, A, "router"), 100)
    core.receive(B, ROUTER, B, adv(ROUTER, B, "router"), 100)
    assert core.peer_moved(ROUTER, [C, B], 5_000) == [HostsChanged()]
    assert core.resolve("router") == [(C, ROUTER), (B, ROUTER)]
    assert core.name_of(A, ROUTER) is None
    assert core.name_of(C, ROUTER) == "router"
    assert core.hosts(5_000) == [HostRow("router", ROUTER, [C, B], 0)]


def test_peer_moved_to_same_locators_refreshes_without_change():
    core = make([A])
    core.receive(A, BOB, A, adv(BOB, A, "bob"), 0)
    assert core.peer_moved(BOB, [A], 3 * W - 1) == []
    assert changed(core.on_timer(3 * W)) == 0  # last seen was refreshed
    assert core.resolve("bob") == [(A, BOB)]


def test_peer_moved_unknown_nid_is_counted():
    core = make([A])
    assert core.peer_moved(BOB, [A], 100) == []
    assert core.resolve("bob") == []
    assert core.counters["moved_unknown"] == 1


def test_peer_moved_to_nothing_forgets_the_peer():
    core = make([A])
    core.receive(A, BOB, A, adv(BOB, A, "bob"), 0)
    assert core.peer_moved(BOB, [], 100) == [HostsChanged()]
    assert core.resolve("bob") == [] and core.hosts(100) == []


def test_resolve_most_recently_seen_first_of_the_winning_nid_only():
    """A name claimed by two NIDs resolves to one of them (test_discovery_safeguards.py
    has the rules), its locators most recently seen first; before the [ext] safeguards
    the two NIDs' locators were mixed."""
    other_bob = 0xFFFF_0000_0000_00BB
    core = make([A, B, C])
    core.receive(A, BOB, A, adv(BOB, A, "bob"), 1)
    core.receive(B, BOB, B, adv(BOB, B, "bob"), 5)
    core.receive(C, other_bob, C, adv(other_bob, C, "bob"), 3)
    assert core.resolve("bob") == [(B, BOB), (A, BOB)]
    core.receive(A, BOB, A, adv(BOB, A, "bob"), 9)
    assert core.resolve("bob") == [(A, BOB), (B, BOB)]
    assert core.resolve("nobody") == []


def test_name_lookups():
    core = make([A])
    core.receive(B, BOB, A, adv(BOB, B, "bob"), 1)
    assert core.name_of(B, BOB) == "bob"
    assert core.name_of(A, BOB) is None


def test_hosts_rows_sorted_with_locators_newest_first():
    core = make([A, B])
    core.receive(A, ROUTER, A, adv(ROUTER, A, "router"), 100)
    core.receive(B, ROUTER, B, adv(ROUTER, B, "router"), 300)
    core.receive(A, BOB, A, adv(BOB, A, "bob"), 200)
    assert core.hosts(1_000) == [
        HostRow("bob", BOB, [A], 800),
        HostRow("router", ROUTER, [B, A], 700),
    ]


@pytest.mark.parametrize("hostname, wait", [("", W), ("a\nb", W), ("a b", W), ("x" * 64, W), ("me", 0)])
def test_constructor_rejects_bad_config(hostname, wait):
    with pytest.raises(ValueError):
        DiscoveryCore(hostname, ME, wait, random.Random(1))
    with pytest.raises(ValueError):
        DiscoveryCore("me", ME, W, random.Random(1), max_hosts=0)


def test_solicit_now_solicits_on_every_active_locator_at_most_once_a_second():
    """After a router restart (empty forwarding table) the answers re-teach the paths."""
    import random
    from actors.discovery.core import DiscoveryCore, Announce
    from actors.proto import discovery as wire
    core = DiscoveryCore("alice", 0xFFFF00000000000A, 30_000, random.Random(1))
    core.set_locators([0xA, 0xB, 0xC], [0xC], 0)
    out = core.solicit_now(5000)
    assert [(a.via_loc, wire.decode(a.body).solicitation) for a in out] == [(0xA, True), (0xB, True)]
    assert all(isinstance(a, Announce) for a in out)
    assert core.solicit_now(5500) == []
    assert len(core.solicit_now(6000)) == 2
