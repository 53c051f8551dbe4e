"""Handoff figures (actors/mobility/handoffs.py) driven through the mobility core with a
fake clock: updates sent, retried, acked, given up or superseded; the first data packet
on the new locators and what the router counted in each move's window."""
from __future__ import annotations

from actors.mobility.core import MobilityCore, SendUpdate
from actors.mobility.handoffs import MAX_MOVES, MAX_WINDOW_MS, POLL_MS, HandoffLog
from actors.proto.locator_update import encode_ack

A, B, C = 0xA, 0xB, 0xC
ME = 0xFFFF_0000_0000_0001
BOB, CAROL = 0xFFFF_0000_0000_000B, 0xFFFF_0000_0000_000C
ACK = encode_ack()


def mover(handoff=2000, sessions=((C, BOB), (C, CAROL)), retries=3, interval=1000):
    m = MobilityCore(ME, [[A], [B]], 60_000, handoff, retries=retries, retry_interval_ms=interval)
    m.start(0)
    m.set_sessions([list(s) for s in sessions])
    return m


def ack(m, peer, seq, now):
    return m.receive(C, peer, B, ACK, {"nonce": b"n" * 12, "seq": seq, "nonce_ok": True}, now)


def seqs(actions):
    return {a.dst_nid: a.seq for a in actions if isinstance(a, SendUpdate)}


def router(no_route=0, fwd_no_route=0, route_wait=0, **extra):
    return {"no_route": no_route, "fwd_no_route": fwd_no_route, "route_wait": route_wait, **extra}


def test_a_move_records_its_updates_and_their_acks():
    m = mover()
    sent = seqs(m.move([B], 1000))
    ack(m, BOB, sent[BOB], 1012)
    ack(m, CAROL, sent[CAROL], 1030)
    [move] = m.handoffs.records()
    assert (move["old"], move["new"], move["cause"], move["started"]) == ([A], [B], "command", 1000)
    assert {u["peer"]: (u["seq"], u["sent_ms"], u["acked_ms"], u["outcome"]) for u in move["updates"]} == {
        BOB: (sent[BOB], 0, 12, "acked"), CAROL: (sent[CAROL], 0, 30, "acked")}
    assert move["updates_sent"] == 2 and move["updates_acked"] == 2
    assert m.handoffs.counters["handoff_ack_ms_sum"] == 42 and m.handoffs.counters["handoff_ack_count"] == 2


def test_retries_then_giving_up_is_unacked_and_an_unexpected_ack_changes_nothing():
    m = mover(retries=1, interval=500, sessions=((C, BOB),))
    sent = seqs(m.move([B], 0))
    m.on_timer(500)           # the retry
    ack(m, BOB, sent[BOB] + 7, 700)  # not our seq: acks_unexpected
    m.on_timer(1000)          # retries exhausted
    [update] = m.handoffs.records()[0]["updates"]
    assert (update["retries"], update["acked_ms"], update["outcome"]) == (1, None, "unacked")
    assert m.handoffs.counters["handoff_updates_unacked"] == 1


def test_a_move_during_the_window_supersedes_and_closes_the_previous_one():
    m = mover(handoff=5000, sessions=((C, BOB),))
    m.move([B], 0)
    m.handoffs.router_seen(10, router(), {})
    m.handoffs.router_seen(250, router(no_route=3), {})
    m.move([A], 1000)
    first, second = m.handoffs.records()
    assert first["updates"][0]["outcome"] == "superseded"
    assert (first["open"], first["closed_by"], first["window_ms"]) == (False, "next_move", 1000)
    assert first["lost"] == 3  # as of the last look before the next move
    assert second["open"] and second["updates"][0]["outcome"] == "pending"


def test_the_first_data_packet_on_the_new_locator_and_late_arrivals_on_the_old():
    m = mover(handoff=2000, sessions=((C, BOB),))
    sent = seqs(m.move([B], 1000))
    log = m.handoffs
    assert log.next_deadline() == 1000 and log.on_timer(1000)  # the baseline look, at once
    # before the move: 50 packets on a; nothing on b yet
    log.router_seen(1001, router(no_route=2, route_wait=5), {A: [50, 0, 990, {}]})
    assert log.records()[0]["first_packet_ms"] is None
    assert log.next_deadline() == 1000 + POLL_MS
    ack(m, BOB, sent[BOB], 1020)
    # the first packet on b at 1040, when a had had 53; a had 56 by the next look
    log.router_seen(1250, router(no_route=2, route_wait=6), {A: [56, 0, 1100, {}], B: [4, 1040, 1200, {A: 53}]})
    move = log.records()[0]
    assert (move["first_packet_ms"], move["first_packet_loc"]) == (40, B)
    assert move["open"]  # the handoff (2000 ms) is not over
    assert log.on_timer(1250) and not log.on_timer(1400) and log.on_timer(1500)  # a look every POLL_MS
    log.router_seen(3001, router(no_route=4, fwd_no_route=1, route_wait=9), {A: [57, 0, 2500, {}], B: [90, 1040, 3000, {A: 53}]})
    move = log.records()[0]
    assert (move["open"], move["closed_by"], move["window_ms"]) == (False, "settled", 2001)
    assert move["lost"] == 3 and move["waited"] == 4 and move["late_on_old"] == 4
    assert move["router"]["no_route"] == 2 and move["router"]["fwd_no_route"] == 1
    assert log.next_deadline() is None  # nothing open: no more looks
    assert log.counters["handoff_first_packet_ms_sum"] == 40 and log.counters["handoff_lost"] == 3


def test_a_window_waits_for_pending_updates_after_the_handoff():
    m = mover(handoff=0, sessions=((C, BOB),))
    sent = seqs(m.move([B], 0))
    m.handoffs.router_seen(5, router(), {})
    assert m.handoffs.records()[0]["open"]  # the update is not acked yet
    ack(m, BOB, sent[BOB], 300)
    m.handoffs.router_seen(310, router(), {})
    assert m.handoffs.records()[0]["closed_by"] == "settled"


def test_an_arrival_log_entry_older_than_the_move_is_not_its_first_packet():
    """Back to a set still held from the previous handoff: b was joined all along."""
    m = mover(handoff=5000, sessions=())
    m.move([B], 0)
    m.move([A], 1000)  # a was leaving, still joined
    m.handoffs.router_seen(1001, router(), {A: [70, 10, 990, {}]})
    assert m.handoffs.records()[-1]["first_packet_ms"] is None


def test_a_move_that_adds_no_locator_has_no_first_packet_to_wait_for():
    m = MobilityCore(ME, [[A, B], [A]], 60_000, 0)
    m.start(0)
    m.move([A], 100)
    m.handoffs.router_seen(101, router(), {A: [5, 101, 101, {}]})
    [move] = m.handoffs.records()
    assert move["first_packet_ms"] is None and move["closed_by"] == "settled"


def test_a_router_that_never_answers_closes_the_window_after_the_maximum():
    m = mover(sessions=())
    m.move([B], 0)
    assert m.handoffs.next_deadline() == 0
    assert m.handoffs.on_timer(0)
    assert m.handoffs.on_timer(MAX_WINDOW_MS - 1)  # looks go on meanwhile
    m.handoffs.on_timer(MAX_WINDOW_MS)
    [move] = m.handoffs.records()
    assert move["closed_by"] == "max_window" and move["router"] is None and move["lost"] is None
    assert m.handoffs.next_deadline() is None


def test_malformed_router_answers_are_ignored():
    log = HandoffLog()
    log.started(0, (A,), (B,), "command", 0)
    log.router_seen(1, "nonsense", [1, 2])
    log.router_seen(2, {"no_route": "x", "route_wait": -4}, {B: "x", A: [1]})
    log.router_seen(3, {"no_route": True}, {B: [1, "t", 3, None]})
    [move] = log.records()
    assert move["router"] == dict.fromkeys(move["router"], 0) and move["first_packet_ms"] is None


def test_only_the_last_moves_are_kept():
    m = mover(handoff=0, sessions=())
    for i in range(MAX_MOVES + 5):
        m.move([B] if i % 2 == 0 else [A], 1000 * (i + 1))
    records = m.handoffs.records()
    assert len(records) == MAX_MOVES
    assert [r["id"] for r in records] == list(range(6, MAX_MOVES + 6))
    assert m.handoffs.counters["handoff_moves"] == MAX_MOVES + 5


def test_scheduled_moves_are_recorded_as_such():
    m = MobilityCore(ME, [[A], [B]], 4000, 0)
    m.start(0)
    m.on_timer(4000)
    assert m.handoffs.records()[0]["cause"] == "schedule"
