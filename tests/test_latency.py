"""The per-stage latency figures (bus/latency.py) and ilnp-latency's refusals."""
from __future__ import annotations

import subprocess
import sys

from bus.latency import BUCKETS, Histogram, StageClock


def test_percentiles_are_the_upper_edge_of_the_bucket_that_holds_them():
    hist = Histogram()
    for us in [10] * 90 + [1000] * 9 + [100_000]:
        hist.add(us)
    assert hist.percentile(50) == 16.0       # 10 us lies in [8, 16)
    assert hist.percentile(99) == 1024.0     # the 99th of 100 is one of the 1000s
    assert hist.percentile(100) == 131072.0
    snap = hist.snapshot()
    assert snap["count"] == 100 and snap["p50_us"] == 16.0 and snap["buckets"] == {"16": 90, "1024": 9, "131072": 1}


def test_an_empty_histogram_says_nothing_and_extremes_stay_in_range():
    hist = Histogram()
    assert hist.percentile(50) is None and hist.snapshot()["mean_us"] is None
    hist.add(-5)          # rounding between two clock reads
    hist.add(10 ** 12)    # a frame stamped long ago: the last bucket
    assert hist.counts[0] == 1 and hist.counts[BUCKETS - 1] == 1


def test_a_stage_clock_keeps_wait_and_handle_per_topic_and_bounds_the_topics():
    clock = StageClock()
    clock.record(b"link.rx", 1_000_000, 1_300_000, 1_350_000)  # waited 300 us, took 50
    snap = clock.snapshot()["link.rx"]
    assert snap["wait"]["p50_us"] == 512.0 and snap["handle"]["p50_us"] == 64.0
    for i in range(100):  # topics are what publishers send: strangers must not grow it
        clock.record(b"t%d" % i, 0, 0, 0)
    assert len(clock.wait) == 64
    clock.reset()
    assert clock.snapshot() == {}


def test_ilnp_latency_on_a_node_that_is_not_running_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tools.latency", "--run-dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "not running" in proc.stderr
