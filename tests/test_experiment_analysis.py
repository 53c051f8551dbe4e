"""ilnp-experiment's analysis on synthetic CSVs: loss, reordering, duplicates, per-locator figures."""
from __future__ import annotations

import csv
import json

import pytest

from tools.experiment import analysis
from tools.experiment.analysis import Packet, Timeline, Transition
from tools.experiment.orchestrate import Params, summarize, write_topology

S = 1_000_000_000  # ns per second
T0 = 1_700_000_000 * S
RATE = 10.0        # packets/s: seq n is sent at T0 + (n + 1) / RATE


def sent_at(seq: int) -> int:
    return T0 + int((seq + 1) * S / RATE)


def pkt(seq: int, src="0:0:0:a", dst="0:0:0:b", arrival="0:0:0:b", delay_ms=2) -> Packet:
    return Packet(seq, sent_at(seq), sent_at(seq) + delay_ms * 1_000_000, src, dst, arrival)


def write_csv(path, packets) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["seq", "sent_ns", "received_ns", "src_loc", "dst_loc", "arrival_loc"])
        w.writerows(packets)


# alice: in a from the start, moves to b at 1.0 s (handoff until 1.5 s), to c at 2.0 s (hard)
TRANSITIONS = [
    Transition("alice", T0 - S, "0:0:0:a", ""),
    Transition("alice", T0 + S, "0:0:0:b", "0:0:0:a"),
    Transition("alice", T0 + S + S // 2, "0:0:0:b", ""),
    Transition("alice", T0 + 2 * S, "0:0:0:c", ""),
]


def test_a_clean_run_counts_everything_once():
    packets = [pkt(s) for s in range(30)]
    assert analysis.count(packets, 30) == {"sent": 30, "received": 30, "lost": 0, "reordered": 0,
                                           "duplicated": 0, "unexpected": 0, "lost_seqs": []}


def test_loss_reordering_and_duplicates_are_told_apart():
    order = [0, 1, 2, 5, 3, 4, 4, 6, 9, 2]  # 7 and 8 never came; 3 and 4 late; 4 and 2 twice
    got = analysis.count([pkt(s) for s in order], sent=10)
    assert got["lost_seqs"] == [7, 8]
    assert (got["received"], got["lost"], got["reordered"], got["duplicated"]) == (8, 2, 2, 2)


def test_loss_at_the_end_counts_against_what_the_sender_sent():
    got = analysis.count([pkt(s) for s in range(8)], sent=10)
    assert got["lost"] == 2 and got["lost_seqs"] == [8, 9]


def test_a_duplicate_of_a_late_packet_is_not_reordered_twice():
    got = analysis.count([pkt(s) for s in (1, 0, 0)], sent=2)
    assert (got["reordered"], got["duplicated"]) == (1, 1)


def test_sequence_numbers_beyond_what_was_sent_are_not_received():
    got = analysis.count([pkt(0), pkt(1), pkt(7)], sent=2)
    assert got["received"] == 2 and got["unexpected"] == 1 and got["lost"] == 0


def test_timeline_answers_where_a_node_was_and_its_moves_and_handoffs():
    tl = Timeline(TRANSITIONS)
    assert tl.cur_at("alice", T0) == "0:0:0:a"
    assert tl.cur_at("alice", T0 + S) == "0:0:0:b"          # from the transition on
    assert tl.cur_at("alice", T0 - 5 * S) == "0:0:0:a"      # before the first: its first state
    assert tl.cur_at("bob", T0) == "?"
    assert [t.cur for t in tl.moves("alice")] == ["0:0:0:b", "0:0:0:c"]
    assert tl.handoffs("alice") == [(T0 + S, T0 + S + S // 2, "0:0:0:a")]


def test_a_handoff_still_going_has_no_end():
    tl = Timeline(TRANSITIONS[:2])
    assert tl.handoffs("alice") == [(T0 + S, None, "0:0:0:a")]


def test_figures_per_locator_follow_the_send_time_lost_ones_included():
    # seq 0..9 sent before 1.0 s (in a), 10..19 in b, 20..29 in c; 12 and 25 lost; 15 late
    arrived = [s for s in range(30) if s not in (12, 15, 25)] + [15]
    packets = [pkt(s) for s in arrived] + [pkt(3)]  # and 3 twice
    d = analysis.direction(packets, 30, T0, RATE, Timeline(TRANSITIONS))
    assert (d["sent"], d["received"], d["lost"], d["reordered"], d["duplicated"]) == (30, 28, 2, 1, 1)
    by = d["by_locator"]["alice"]
    # seq 9 is sent at exactly 1.0 s: the move's own instant counts for the new set
    assert by["0:0:0:a"] == {"sent": 9, "received": 9, "lost": 0, "reordered": 0, "duplicated": 1}
    assert by["0:0:0:b"] == {"sent": 10, "received": 9, "lost": 1, "reordered": 1, "duplicated": 0}
    assert by["0:0:0:c"] == {"sent": 11, "received": 10, "lost": 1, "reordered": 0, "duplicated": 0}
    assert sum(f["sent"] for f in by.values()) == d["sent"]
    assert d["lost_seqs"] == [12, 25] and d["lost_runs"] == [[12, 12], [25, 25]]


def test_arrival_locators_and_latency_are_reported():
    packets = [pkt(0, arrival="0:0:0:a", delay_ms=1), pkt(1, arrival="0:0:0:b", delay_ms=3),
               pkt(2, arrival="0:0:0:b", delay_ms=5)]
    d = analysis.direction(packets, 3, T0, RATE, Timeline(TRANSITIONS))
    assert d["by_arrival_locator"] == {"0:0:0:a": 1, "0:0:0:b": 2}
    assert d["latency_ms"] == {"p50": 3.0, "p99": 5.0, "max": 5.0}


def test_lost_runs_group_consecutive_losses():
    packets = [pkt(s) for s in range(20) if s not in (3, 4, 5, 9, 17, 18)]
    d = analysis.direction(packets, 20, T0, RATE, Timeline(TRANSITIONS))
    assert d["lost_runs"] == [[3, 5], [9, 9], [17, 18]]


def test_throughput_buckets_count_first_copies_by_receive_time_and_locator():
    packets = [pkt(s, src="0:0:0:a" if s < 10 else "0:0:0:b") for s in range(20)] + [pkt(5)]
    buckets = analysis.throughput(packets, T0, lambda p: p.src_loc)
    # received at (seq + 1) / 10 s + 2 ms: seqs 0..8 in second 0, 9..18 in second 1, 19 in 2
    assert buckets[0] == {"0:0:0:a": 9}
    assert buckets[1] == {"0:0:0:a": 1, "0:0:0:b": 9}
    assert buckets[2] == {"0:0:0:b": 1}


def test_csv_round_trip_keeps_rows_in_arrival_order(tmp_path):
    rows = [pkt(2), pkt(0), pkt(1, arrival="0:0:0:c")]
    write_csv(tmp_path / "x.csv", rows)
    assert analysis.read_packets(tmp_path / "x.csv") == rows
    analysis.write_transitions(tmp_path / "t.csv", TRANSITIONS)
    assert analysis.read_transitions(tmp_path / "t.csv") == TRANSITIONS


def test_raw_underlay_rows_without_locators_read_as_empty(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text("seq,sent_ns,received_ns\n3,10,20\n")
    assert analysis.read_packets(path) == [Packet(3, 10, 20, "", "", "")]


def test_summary_has_stable_per_direction_keys(tmp_path):
    write_csv(tmp_path / "alice_to_bob.csv", [pkt(s) for s in range(10) if s != 4])
    write_csv(tmp_path / "bob_to_alice.csv", [pkt(s, src="0:0:0:b", dst="0:0:0:a") for s in range(10)])
    results = {node: {"sent": 10, "start_ns": T0, "rate": RATE} for node in ("alice", "bob")}
    summary = summarize(Params(rate=RATE, duration=1), results, tmp_path, TRANSITIONS)
    json.dumps(summary)  # it goes to summary.json as is
    assert set(summary["directions"]) == {"alice->bob", "bob->alice"}
    for d in summary["directions"].values():
        assert set(analysis.FIGURES) <= set(d)
    assert summary["directions"]["alice->bob"]["lost"] == 1
    assert summary["directions"]["bob->alice"]["lost"] == 0
    assert summary["lossless"] is False
    assert [(m["to"], m["t_s"]) for m in summary["moves"]] == [("0:0:0:b", 1.0), ("0:0:0:c", 2.0)]


@pytest.mark.parametrize("both", [False, True])
def test_topology_sets_the_schedules(tmp_path, both):
    import tomllib

    params = Params(move_time=6, handoff_time=3, both_mobile=both)
    topo = tomllib.loads(write_topology(tmp_path, params).read_text())
    alice = topo["nodes"]["alice"]["set"]["locators"]
    assert alice == {"schedule": "0:0:0:a-0:0:0:b-0:0:0:c", "move_time": 6, "handoff_time": 3}
    bob = topo["nodes"]["bob"]["set"]["locators"]
    assert bob["schedule"] == ("0:0:0:b-0:0:0:c-0:0:0:a" if both else "0:0:0:b")
    assert topo["nodes"]["router"]["set"]["locators"]["schedule"] == "0:0:0:a,0:0:0:b,0:0:0:c"
    assert topo["defaults"]["discovery"]["wait_time"] == 2.0
