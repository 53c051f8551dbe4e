"""What each restart cost: from the receivers' CSVs and the kill times.

For a kill at time K: the *outage* is the longest silence between two packets received
within [K - 0.2 s, K + window] (traffic flows again at the end of it); *lost* counts the
packets whose send time falls in [K - 0.5 s, K + window] and never arrived. The window
ends 0.6 s before the next kill, so that no kill is charged with the next one's cost. Send times
are in the packets themselves (trafficgen stamps them), so lost ones are known by seq.
"""
from __future__ import annotations

from dataclasses import dataclass

from tools.experiment.analysis import Packet


@dataclass(frozen=True)
class Kill:
    node: str
    actor: str
    time_ns: int
    restart_s: float | None  # kill -> supervisord shows it RUNNING again (None: did not come back)


@dataclass(frozen=True)
class Cost:
    outage_ms: float
    lost: int


def cost(packets: list[Packet], start_ns: int, rate: float, kill_ns: int, window_s: float = 4.0,
         next_kill_ns: int | None = None) -> Cost:
    lo, hi = kill_ns - 200_000_000, kill_ns + int(window_s * 1e9)
    if next_kill_ns is not None:
        hi = min(hi, next_kill_ns - 600_000_000)
    times = sorted(p.received_ns for p in packets if lo <= p.received_ns <= hi)
    edges = [lo, *times, hi] if times else [lo, hi]
    outage = max(b - a for a, b in zip(edges, edges[1:]))
    period = 1e9 / rate
    first = max(0, int((kill_ns - 500_000_000 - start_ns) / period))
    last = int((hi - start_ns) / period)
    got = {p.seq for p in packets}
    sent_window = range(first, last)
    lost = sum(1 for seq in sent_window if seq not in got and start_ns + (seq + 1) * period <= hi)
    return Cost(round(outage / 1e6, 1), lost)
