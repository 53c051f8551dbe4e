"""What the mobility experiment measured: pure counting over the traffic generators' CSVs.

No lab, no plotting here: tests feed it synthetic rows. Locators stay the strings the CSV
holds ("0:0:0:a"); a locator set is its locators joined by commas.

Definitions (per direction, over the sequence numbers 0 .. sent-1 the sender sent):
  received    distinct sequence numbers that arrived
  lost        sent - received (sequence numbers that never arrived)
  reordered   first copies that arrived after a higher sequence number had
  duplicated  copies of a sequence number after its first
A packet belongs to the locator set its mobile node was in (state.locators `cur`) when
the packet was sent: its send time for a received one, start_ns + (seq + 1) / rate for a
lost one (the generator sends on that schedule).
"""
from __future__ import annotations

import bisect
import csv
from collections import Counter
from pathlib import Path
from typing import Iterable, NamedTuple

FIGURES = ("sent", "received", "lost", "reordered", "duplicated")
LOST_SEQS_SHOWN = 200  # the summary lists this many lost sequence numbers; the count is exact


class Packet(NamedTuple):
    """One CSV row: a packet as it arrived (duplicates have rows of their own)."""
    seq: int
    sent_ns: int
    received_ns: int
    src_loc: str = ""
    dst_loc: str = ""
    arrival_loc: str = ""


class Transition(NamedTuple):
    """A node's locator state from time_ns on (one state.locators publication)."""
    node: str
    time_ns: int
    cur: str       # the set it is in, "0:0:0:b" or "0:0:0:a,0:0:0:b"
    leaving: str   # the set it is leaving during a handoff, "" when none


def read_packets(path: str | Path) -> list[Packet]:
    """The rows of a trafficgen --csv file, in arrival order."""
    out = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return out
        for row in reader:
            if not row:
                continue
            seq, sent_ns, received_ns = int(row[0]), int(row[1]), int(row[2])
            locs = (row[3:6] + ["", "", ""])[:3]
            out.append(Packet(seq, sent_ns, received_ns, *locs))
    return out


def write_transitions(path: str | Path, transitions: Iterable[Transition]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(Transition._fields)
        writer.writerows(transitions)


def read_transitions(path: str | Path) -> list[Transition]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        return [Transition(r[0], int(r[1]), r[2], r[3]) for r in reader if r]


class Timeline:
    """Each mobile node's locator set over time, from its transitions."""

    def __init__(self, transitions: Iterable[Transition]):
        self.by_node: dict[str, list[Transition]] = {}
        for t in sorted(transitions, key=lambda t: t.time_ns):
            self.by_node.setdefault(t.node, []).append(t)
        self._times = {node: [t.time_ns for t in ts] for node, ts in self.by_node.items()}

    def nodes(self) -> list[str]:
        return sorted(self.by_node)

    def state_at(self, node: str, time_ns: int) -> Transition | None:
        """The node's state at time_ns (its first known state for earlier times)."""
        ts = self.by_node.get(node)
        if not ts:
            return None
        i = bisect.bisect_right(self._times[node], time_ns) - 1
        return ts[max(i, 0)]

    def cur_at(self, node: str, time_ns: int) -> str:
        state = self.state_at(node, time_ns)
        return state.cur if state else "?"

    def moves(self, node: str) -> list[Transition]:
        """The transitions that changed the node's set (not the ends of handoffs)."""
        out, cur = [], None
        for t in self.by_node.get(node, ()):
            if cur is not None and t.cur != cur:
                out.append(t)
            cur = t.cur
        return out

    def handoffs(self, node: str) -> list[tuple[int, int | None, str]]:
        """(start_ns, end_ns or None if still going, set being left) of each handoff."""
        out: list[tuple[int, int | None, str]] = []
        open_: tuple[int, str] | None = None  # (start, leaving) of the handoff going on
        for t in self.by_node.get(node, ()):
            if open_ is not None and t.leaving != open_[1]:
                out.append((open_[0], t.time_ns, open_[1]))
                open_ = None
            if t.leaving and open_ is None:
                open_ = (t.time_ns, t.leaving)
        if open_ is not None:
            out.append((open_[0], None, open_[1]))
        return out


def count(packets: Iterable[Packet], sent: int) -> dict:
    """The five figures plus the lost sequence numbers, from packets in arrival order."""
    seen: set[int] = set()
    highest = -1
    reordered = duplicated = 0
    for p in packets:
        if p.seq in seen:
            duplicated += 1
            continue
        seen.add(p.seq)
        if p.seq < highest:
            reordered += 1
        else:
            highest = p.seq
    received = sum(1 for s in seen if 0 <= s < sent)
    lost = [s for s in range(sent) if s not in seen]
    return {"sent": sent, "received": received, "lost": len(lost), "reordered": reordered,
            "duplicated": duplicated, "unexpected": len(seen) - received, "lost_seqs": lost}


def send_time_ns(seq: int, start_ns: int, rate: float) -> int:
    """When the generator sent `seq` (its schedule), for packets that never arrived."""
    return start_ns + int((seq + 1) * 1e9 / rate) if rate else start_ns


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def direction(packets: list[Packet], sent: int, start_ns: int, rate: float,
              timeline: Timeline) -> dict:
    """Figures of one direction, overall and per locator set of each mobile node."""
    figures = count(packets, sent)
    lost_seqs = figures.pop("lost_seqs")
    out = dict(figures)
    out["lost_seqs"] = lost_seqs[:LOST_SEQS_SHOWN]
    out["lost_runs"] = _runs(lost_seqs)
    latencies = sorted((p.received_ns - p.sent_ns) / 1e6 for p in packets)
    out["latency_ms"] = {"p50": _round(_percentile(latencies, 0.5)),
                         "p99": _round(_percentile(latencies, 0.99)),
                         "max": _round(latencies[-1] if latencies else None)}
    out["by_arrival_locator"] = dict(sorted(Counter(p.arrival_loc for p in packets).items()))
    out["by_locator"] = {node: _by_phase(packets, lost_seqs, sent, start_ns, rate, timeline, node)
                         for node in timeline.nodes()}
    return out


def _by_phase(packets, lost_seqs, sent, start_ns, rate, timeline: Timeline, node: str) -> dict:
    """The five figures per locator set `node` was in when each packet was sent."""
    phases: dict[str, Counter] = {}

    def bump(time_ns: int, key: str, n: int = 1) -> None:
        phases.setdefault(timeline.cur_at(node, time_ns), Counter())[key] += n

    seen: set[int] = set()
    highest = -1
    for p in packets:
        if p.seq in seen:
            bump(p.sent_ns, "duplicated")
            continue
        seen.add(p.seq)
        if 0 <= p.seq < sent:
            bump(p.sent_ns, "sent")
            bump(p.sent_ns, "received")
        if p.seq < highest:
            bump(p.sent_ns, "reordered")
        else:
            highest = p.seq
    for seq in lost_seqs:
        t = send_time_ns(seq, start_ns, rate)
        bump(t, "sent")
        bump(t, "lost")
    return {loc: {k: c[k] for k in FIGURES} for loc, c in sorted(phases.items())}


def _runs(seqs: list[int]) -> list[list[int]]:
    """[first, last] of each run of consecutive lost sequence numbers (at most 100)."""
    runs: list[list[int]] = []
    for s in seqs:
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return runs[:100]


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def throughput(packets: Iterable[Packet], t0_ns: int, locator_of, bucket_s: float = 1.0) -> dict:
    """{bucket index: Counter(locator -> packets)}: first copies by receive time, coloured
    by locator_of(packet) (the locator in use, e.g. the mobile end's)."""
    buckets: dict[int, Counter] = {}
    seen: set[int] = set()
    width = bucket_s * 1e9
    for p in packets:
        if p.seq in seen:
            continue
        seen.add(p.seq)
        i = int((p.received_ns - t0_ns) // width)
        buckets.setdefault(i, Counter())[locator_of(p)] += 1
    return buckets


def lossless(summary_directions: dict) -> bool:
    return all(d["lost"] == 0 and d["reordered"] == 0 and d["duplicated"] == 0
               for d in summary_directions.values())
