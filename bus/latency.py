"""Per-stage latency: how long a data frame waited between its publisher and our loop,
and how long our handlers took with it.

A data frame carries `t`, the publisher's CLOCK_MONOTONIC in ns when it left (every
process of a node shares that clock). The consumer adds (now - t) to the topic's `wait`
histogram and its handlers' time to the topic's `handle` histogram. Each histogram is
log2 buckets of microseconds: two clock reads and two integer operations per frame, and
a frame under load holds a batch, so the cost per packet shrinks as the rate grows.
Read it with the `status` request (`latency`), reset it with `latency_reset`;
`ilnp-latency` prints a node's budget stage by stage.
"""
from __future__ import annotations

BUCKETS = 24  # [2^i, 2^(i+1)) us for i < 23; the last one is everything from ~4 s up


class Histogram:
    __slots__ = ("counts", "total", "sum_us")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.total = 0
        self.sum_us = 0

    def add(self, us: int) -> None:
        if us < 0:
            us = 0  # clocks of one host: only rounding makes this negative
        i = us.bit_length()
        self.counts[i if i < BUCKETS else BUCKETS - 1] += 1
        self.total += 1
        self.sum_us += us

    def percentile(self, p: float) -> float | None:
        """The upper edge of the bucket holding the p-th percentile, in us (None: empty).
        Bucket i holds [2^(i-1), 2^i): the figure is at most twice too high."""
        if not self.total:
            return None
        rank = max(1, int(self.total * p / 100 + 0.999999))
        seen = 0
        for i, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return float(1 << i)
        return float(1 << (BUCKETS - 1))

    def snapshot(self) -> dict:
        return {"count": self.total, "mean_us": round(self.sum_us / self.total, 1) if self.total else None,
                "p50_us": self.percentile(50), "p99_us": self.percentile(99),
                "buckets": {str(1 << i): c for i, c in enumerate(self.counts) if c}}


class StageClock:
    """The wait and handle histograms of each data topic an actor consumes."""

    def __init__(self) -> None:
        self.wait: dict[bytes, Histogram] = {}
        self.handle: dict[bytes, Histogram] = {}

    def record(self, topic: bytes, sent_ns: int, got_ns: int, done_ns: int) -> None:
        hist = self.wait.get(topic)
        if hist is None:
            if len(self.wait) >= 64:  # topics are the publishers' to invent: bounded
                return
            hist = self.wait[topic] = Histogram()
            self.handle[topic] = Histogram()
        hist.add((got_ns - sent_ns) // 1000)
        self.handle[topic].add((done_ns - got_ns) // 1000)

    def snapshot(self) -> dict:
        return {topic.decode(errors="replace"): {"wait": self.wait[topic].snapshot(),
                                                  "handle": self.handle[topic].snapshot()}
                for topic in sorted(self.wait)}

    def reset(self) -> None:
        self.wait.clear()
        self.handle.clear()
