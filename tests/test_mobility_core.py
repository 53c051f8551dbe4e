"""Mobility core: schedule, soft/hard handoff, locator updates, acks, nonce and replay policy."""
import pytest

from actors.proto.addr import ALL_NODES
from actors.proto.frames import TxItem
from actors.mobility.core import MobilityCore, PeerMoved, PublishLocators, SendUpdate
from actors.proto.locator_update import encode_ack, encode_update

A, B, C, D = 0xA, 0xB, 0xC, 0xD
ME = 0xFFFF_0000_0000_0001
BOB, CAROL = 0xFFFF_0000_0000_000B, 0xFFFF_0000_0000_000C
ACK = encode_ack()


def core(schedule=([A], [B], [C]), move=4000, handoff=2000, **kw):
    return MobilityCore(ME, [list(s) for s in schedule], move, handoff, **kw)


def pubs(actions):
    return [(a.cur, a.joined, a.leaving) for a in actions if isinstance(a, PublishLocators)]


def txs(actions):
    return [a for a in actions if isinstance(a, SendUpdate)]


def opts(seq, nonce_ok=True, nonce=b"n" * 12):
    return {"nonce": nonce, "seq": seq, "nonce_ok": nonce_ok}


# ------------------------------------------------------------ schedule and handoff


def test_start_publishes_first_set_and_arms_the_schedule():
    m = core()
    assert pubs(m.start(1000)) == [((A,), (A,), ())]
    assert m.next_deadline() == 5000


def test_single_set_never_moves():
    m = core(schedule=([A, B],))
    assert pubs(m.start(0)) == [((A, B), (A, B), ())]
    assert m.next_deadline() is None
    assert m.on_timer(10**9) == []


def test_schedule_cycles_a_b_c_a_every_move_time():
    m = core(handoff=0)
    m.start(0)
    seen = []
    for t in range(4000, 4000 * 7, 4000):
        assert m.next_deadline() == t
        assert m.on_timer(t - 1) == []  # nothing early
        seen += [cur for cur, _, _ in pubs(m.on_timer(t))]
    assert seen == [(B,), (C,), (A,), (B,), (C,), (A,)]
    assert m.counters["moves"] == 6


def test_soft_handoff_sets_over_time():
    m = core(schedule=([A, B], [B, C]), move=4000, handoff=1500)
    m.start(0)
    # make before break: b stays, c joins, a is kept for handoff_time
    assert pubs(m.on_timer(4000)) == [((B, C), (B, C, A), (A,))]
    assert m.next_deadline() == 5500
    assert m.on_timer(5499) == []
    assert pubs(m.on_timer(5500)) == [((B, C), (B, C), ())]
    assert m.next_deadline() == 8000
    assert pubs(m.on_timer(8000)) == [((A, B), (A, B, C), (C,))]


def test_hard_handoff_drops_the_old_set_at_once():
    m = core(handoff=0)
    m.start(0)
    assert pubs(m.on_timer(4000)) == [((B,), (B,), ())]
    assert m.next_deadline() == 8000  # no handoff end to wait for


def test_move_during_handoff_finishes_the_old_one_first():
    m = core(move=4000, handoff=6000)  # handoff longer than a move
    m.start(0)
    assert pubs(m.on_timer(4000)) == [((B,), (B, A), (A,))]
    # a is dropped right away, b becomes the leaving set of the new handoff
    assert pubs(m.on_timer(8000)) == [((C,), (C, B), (B,))]
    assert m.counters["handoffs_cut_short"] == 1
    assert m.next_deadline() == 12000


def test_handoff_end_and_move_at_the_same_time_publish_once():
    m = core(move=4000, handoff=4000)
    m.start(0)
    m.on_timer(4000)
    assert m.next_deadline() == 8000
    assert pubs(m.on_timer(8000)) == [((C,), (C, B), (B,))]  # a gone, b leaving
    assert m.counters["handoffs_done"] == 1 and m.counters["handoffs_cut_short"] == 0


def test_late_timer_moves_once_and_keeps_the_grid():
    m = core(handoff=0)
    m.start(0)
    assert pubs(m.on_timer(13000)) == [((B,), (B,), ())]  # three moves late: one move
    assert m.next_deadline() == 16000


def test_move_on_command_restarts_the_schedule_timer_and_continues_from_there():
    m = core(handoff=1000)
    m.start(0)
    assert pubs(m.move([C], 1500)) == [((C,), (C, A), (A,))]
    assert m.next_deadline() == 2500  # handoff end
    assert pubs(m.on_timer(2500)) == [((C,), (C,), ())]
    assert m.next_deadline() == 5500  # a full move_time after the command
    assert pubs(m.on_timer(5500))[0][0] == (A,)  # the step after c


def test_move_on_command_to_a_set_outside_the_schedule():
    m = core(handoff=0)
    m.start(0)
    assert pubs(m.move([D, D, A], 100)) == [((D, A), (D, A), ())]  # duplicates removed
    assert pubs(m.on_timer(4100))[0][0] == (B,)  # schedule goes on where it was


def test_move_to_the_current_set_does_nothing():
    m = core()
    m.start(0)
    assert m.move([A], 1000) == []
    assert m.next_deadline() == 4000
    assert m.counters["moves"] == 0


@pytest.mark.parametrize("bad", [[], [ALL_NODES], [-1], [2**64], ["0:0:0:a"]])
def test_move_rejects_a_bad_set(bad):
    m = core()
    m.start(0)
    with pytest.raises(ValueError):
        m.move(bad, 0)
    assert m.cur == (A,)


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        MobilityCore(ME, [], 1000, 0)
    with pytest.raises(ValueError):
        MobilityCore(ME, [[A], [B]], 0, 0)
    with pytest.raises(ValueError):
        MobilityCore(ME, [[A]], 1000, -1)


def test_start_can_resume_at_a_given_set():
    m = core(handoff=0)
    assert pubs(m.start(0, current=[B])) == [((B,), (B,), ())]
    assert pubs(m.on_timer(4000))[0][0] == (C,)


# ------------------------------------------------------------ sending updates


def moved(sessions=((B, BOB),), **kw):
    """A core that has a session replica and has just moved a -> b (on command) at t=4000."""
    kw.setdefault("move", 60000)  # no scheduled move gets in the way of retries
    m = core(**kw)
    m.start(0)
    m.set_sessions(list(sessions))
    return m, txs(m.move([B], 4000))


def test_move_sends_one_update_per_peer_nid():
    m, tx = moved(sessions=[(A, BOB), (C, CAROL), (D, BOB), (ALL_NODES, 0), (A, ME)])
    body = encode_update([B])
    by_nid = {t.dst_nid: t for t in tx}
    assert len(tx) == 2 and set(by_nid) == {BOB, CAROL}
    # later session entries are more recent: their locator is tried first
    assert by_nid[BOB] == SendUpdate(BOB, (D, A), None, body, by_nid[BOB].seq)
    assert by_nid[CAROL] == SendUpdate(CAROL, (C,), None, body, by_nid[CAROL].seq)
    assert by_nid[BOB].seq != by_nid[CAROL].seq  # each update its own sequence number
    assert m.counters["updates_sent"] == 2


def test_update_names_the_new_set_not_the_joined_set():
    m = core(schedule=([A], [B, C]))
    m.start(0)
    m.set_sessions([(D, BOB)])
    tx = txs(m.on_timer(4000))
    assert tx[0].body == encode_update([B, C])
    assert tx[0].via is None
    assert tx[0].tx_item() == TxItem(BOB, [D], 44, encode_update([B, C]), None, {"seq": tx[0].seq})


def test_no_sessions_no_updates():
    m, tx = moved(sessions=[])
    assert tx == []


def test_sequence_numbers_increase_across_moves_and_start_at_first_seq():
    m = core(first_seq=1000, handoff=0)
    m.start(0)
    m.set_sessions([(B, BOB)])
    seqs = [txs(m.on_timer(t))[0].seq for t in (4000, 8000, 12000)]
    assert seqs == [1000, 1001, 1002]


def test_sequence_numbers_wrap_at_32_bits():
    m = core(first_seq=2**32 - 1, handoff=0)
    m.start(0)
    m.set_sessions([(B, BOB)])
    assert [txs(m.on_timer(t))[0].seq for t in (4000, 8000)] == [2**32 - 1, 0]


def test_retries_then_give_up():
    m, tx = moved(retries=3, retry_interval_ms=1000)
    seq = tx[0].seq
    assert m.next_deadline() == 5000
    for t in (5000, 6000, 7000):
        again = txs(m.on_timer(t))
        assert again == [SendUpdate(BOB, (B,), None, encode_update([B]), seq)]  # same seq
    assert m.counters["update_retries"] == 3
    assert txs(m.on_timer(8000)) == []
    assert m.counters["updates_unacked"] == 1
    assert m.pending() == {}


def test_ack_stops_retries():
    m, tx = moved()
    assert m.receive(B, BOB, A, ACK, opts(tx[0].seq), 4500) == []
    assert m.counters["updates_acked"] == 1
    assert txs(m.on_timer(5000)) == []
    assert m.pending() == {}


def test_ack_without_seq_from_an_original_peer_counts():
    m, tx = moved()
    m.receive(B, BOB, A, ACK, None, 4500)
    assert m.counters["updates_acked"] == 1 and m.pending() == {}


def test_ack_with_the_wrong_seq_or_from_a_stranger_is_unexpected():
    m, tx = moved()
    m.receive(B, BOB, A, ACK, opts(tx[0].seq + 1), 4500)
    m.receive(C, CAROL, A, ACK, None, 4500)
    assert m.counters["acks_unexpected"] == 2
    assert len(txs(m.on_timer(5000))) == 1  # still retrying


def test_ack_with_a_bad_nonce_does_not_stop_retries():
    m, tx = moved()
    m.receive(B, BOB, A, ACK, opts(tx[0].seq, nonce_ok=False), 4500)
    assert m.counters["ack_bad_nonce"] == 1
    assert len(txs(m.on_timer(5000))) == 1


def test_a_new_move_supersedes_unacked_updates():
    m, tx = moved(handoff=0)
    tx2 = txs(m.move([C], 4200))
    assert tx2[0].body == encode_update([C]) and tx2[0].seq > tx[0].seq
    assert m.counters["updates_superseded"] == 1
    # the late ack of the first update no longer matches
    m.receive(B, BOB, B, ACK, opts(tx[0].seq), 4300)
    assert m.counters["acks_unexpected"] == 1
    assert m.pending() == {BOB: (tx2[0].seq, 3)}


def test_move_on_command_sends_updates_too():
    m = core()
    m.start(0)
    m.set_sessions([(C, BOB)])
    tx = txs(m.move([D], 100))
    assert [(t.dst_nid, t.body) for t in tx] == [(BOB, encode_update([D]))]


def test_retries_follow_a_peer_that_moved_meanwhile():
    m, tx = moved()
    m.receive(D, BOB, B, encode_update([D]), None, 4500)
    assert txs(m.on_timer(5000))[0].dst_locs == (D,)


# ------------------------------------------------------------ receiving updates


def receiver(**kw):
    m = core(schedule=([B],), **kw)
    m.start(0)
    m.set_sessions([[A, BOB]])  # bob has been talking to us
    return m


def test_update_without_nonce_from_a_stranger_is_refused():
    """Issue 11: a no-nonce update is taken only from a peer we have a session with."""
    m = receiver()
    m.set_sessions([])
    assert m.receive(A, BOB, B, encode_update([C]), None, 100) == []
    assert m.counters["update_no_session"] == 1


def test_accepted_update_moves_the_peer_and_acks_to_first_new_locator_via_arrival():
    m = receiver()
    out = m.receive(A, BOB, B, encode_update([C, D]), opts(7), 100)
    assert out == [PeerMoved(BOB, (C, D), B), SendUpdate(BOB, (C,), B, ACK, 7)]
    assert out[1].opts == {"seq": 7}
    assert m.counters["updates_accepted"] == 1


def test_update_with_bad_nonce_is_dropped():
    m = receiver()
    assert m.receive(A, BOB, B, encode_update([C]), opts(7, nonce_ok=False), 100) == []
    assert m.counters["update_bad_nonce"] == 1


def test_update_without_nonce_accepted_by_default():
    m = receiver()
    out = m.receive(A, BOB, B, encode_update([C]), None, 100)
    assert out == [PeerMoved(BOB, (C,), B), SendUpdate(BOB, (C,), B, ACK, None)]
    assert out[1].opts is None
    assert m.counters["update_no_nonce_accepted"] == 1


def test_update_without_nonce_refused_when_configured():
    m = receiver(accept_without_nonce=False)
    assert m.receive(A, BOB, B, encode_update([C]), None, 100) == []
    assert m.receive(A, BOB, B, encode_update([C]), opts(3, nonce_ok=None, nonce=None), 100) == []
    assert m.counters["update_no_nonce_refused"] == 2


def test_nonce_proved_update_without_seq_is_refused():
    m = receiver()
    assert m.receive(A, BOB, B, encode_update([C]), opts(None), 100) == []
    assert m.counters["update_missing_seq"] == 1


def test_replayed_update_is_refused_and_not_acked():
    m = receiver()
    m.receive(A, BOB, B, encode_update([C]), opts(5), 100)
    m.receive(C, BOB, B, encode_update([D]), opts(6), 200)
    assert m.receive(A, BOB, B, encode_update([C]), opts(5), 300) == []
    assert m.receive(A, BOB, B, encode_update([A]), opts(6), 300) == []  # same seq, other locs
    assert m.counters["update_replay"] == 2
    assert m.counters["updates_accepted"] == 2


def test_replay_check_survives_wrap_around():
    m = receiver()
    m.receive(A, BOB, B, encode_update([C]), opts(2**32 - 1), 100)
    assert m.receive(A, BOB, B, encode_update([D]), opts(0), 200)[0] == PeerMoved(BOB, (D,), B)
    assert m.receive(A, BOB, B, encode_update([A]), opts(2**32 - 5), 300) == []
    assert m.counters["update_replay"] == 1


def test_retried_update_after_lost_ack_is_acked_again_but_not_reapplied():
    m = receiver()
    m.receive(A, BOB, B, encode_update([C]), opts(5), 100)
    out = m.receive(A, BOB, B, encode_update([C]), opts(5), 1100)
    assert out == [SendUpdate(BOB, (C,), B, ACK, 5)]
    assert m.counters["update_duplicate"] == 1 and m.counters["updates_accepted"] == 1


def test_a_new_nonce_starts_a_new_sequence_space():
    """A restarted peer (new nonce, accepted by the router) counts from the start again."""
    m = receiver()
    m.receive(A, BOB, B, encode_update([C]), opts(500, nonce=b"old" * 4), 100)
    out = m.receive(A, BOB, B, encode_update([D]), opts(1, nonce=b"new" * 4), 200)
    assert out[0] == PeerMoved(BOB, (D,), B)


def test_sequence_numbers_are_per_peer():
    m = receiver()
    m.receive(A, BOB, B, encode_update([C]), opts(9), 100)
    out = m.receive(A, CAROL, B, encode_update([D]), opts(1), 100)
    assert out[0] == PeerMoved(CAROL, (D,), B)


@pytest.mark.parametrize("body, opts_, counter", [
    (b"", None, "malformed"),
    (b"\x01\x00", None, "malformed"),
    (b"\x07", None, "malformed"),
    (encode_update([C]), "junk", "malformed_opts"),
    (encode_update([C]), {"seq": "1", "nonce_ok": True}, "malformed_opts"),
    (encode_update([ALL_NODES]), None, "update_bad_locator"),
])
def test_malformed_input_is_counted_and_dropped(body, opts_, counter):
    m = receiver()
    assert m.receive(A, BOB, B, body, opts_, 100) == []
    assert m.counters[counter] == 1


def test_update_claiming_to_be_from_us_is_dropped():
    m = receiver()
    assert m.receive(A, ME, B, encode_update([C]), None, 100) == []
    assert m.counters["update_bad_sender"] == 1


def test_peer_moved_only_for_accepted_updates():
    m = receiver(accept_without_nonce=False)
    inputs = [
        (encode_update([C]), opts(1, nonce_ok=False)),
        (encode_update([C]), None),
        (encode_update([C]), opts(None)),
        (encode_update([C]), opts(2)),           # accepted
        (encode_update([C]), opts(2)),           # duplicate
        (encode_update([D]), opts(1)),           # replay
        (ACK, opts(2)),
    ]
    moved_ = [a for body, o in inputs for a in m.receive(A, BOB, B, body, o, 0)
              if isinstance(a, PeerMoved)]
    assert moved_ == [PeerMoved(BOB, (C,), B)]


def test_bad_session_entries_are_counted_and_skipped():
    m = core(handoff=0)
    m.start(0)
    m.set_sessions([(C, BOB), "x", (1, 2, 3), ("a", CAROL)])
    assert [t.dst_nid for t in txs(m.on_timer(4000))] == [BOB]
    assert m.counters["bad_session_entry"] == 3
