"""The dissertation's two figures, as PNG (matplotlib, Agg backend: no display needed).

  seq_vs_time.png   received sequence number vs time, one panel per direction, each point
                    coloured by the mobile node's locator it travelled with; moves are
                    dashed lines, handoffs (both sets held) shaded; lost packets red marks
  throughput.png    received packets per 1 s bucket, one panel per direction, bars
                    stacked by the locator in use
Times are seconds since the first packet was sent.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from .analysis import Packet, Timeline, send_time_ns, throughput  # noqa: E402

PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]


class Direction:
    """What one panel shows: packets sender -> receiver and how to name their locator."""

    def __init__(self, sender: str, receiver: str, packets: list[Packet], lost_seqs: list[int],
                 start_ns: int, rate: float, mobile: str):
        self.sender, self.receiver = sender, receiver
        self.packets, self.lost_seqs = packets, lost_seqs
        self.start_ns, self.rate = start_ns, rate
        self.mobile = mobile  # whose locator colours the points

    @property
    def title(self) -> str:
        return f"{self.sender} \u2192 {self.receiver}"

    def locator_of(self, p: Packet) -> str:
        """The mobile node's locator on this packet: its source or its destination."""
        return p.src_loc if self.sender == self.mobile else p.dst_loc


def _colours(directions: list[Direction], timeline: Timeline) -> dict[str, str]:
    locs: list[str] = []
    for node in timeline.nodes():
        for t in timeline.by_node[node]:
            for loc in t.cur.split(","):
                if loc and loc not in locs:
                    locs.append(loc)
    for d in directions:
        for p in d.packets:
            loc = d.locator_of(p)
            if loc not in locs:
                locs.append(loc)
    return {loc: PALETTE[i % len(PALETTE)] for i, loc in enumerate(sorted(locs))}


def _mark_moves(ax, timeline: Timeline, node: str, t0_ns: int, x_max: float) -> None:
    for start, end, _leaving in timeline.handoffs(node):
        x0 = (start - t0_ns) / 1e9
        x1 = x_max if end is None else (end - t0_ns) / 1e9
        if x1 > 0 and x0 < x_max:
            ax.axvspan(max(x0, 0), min(x1, x_max), color="grey", alpha=0.15, lw=0)
    for t in timeline.moves(node):
        x = (t.time_ns - t0_ns) / 1e9
        if 0 <= x <= x_max:
            ax.axvline(x, color="black", ls="--", lw=0.8)
            ax.annotate(f"{node}\u2192{t.cur}", (x, 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=7)


def seq_vs_time(path: Path, directions: list[Direction], timeline: Timeline, t0_ns: int,
                x_max: float, title: str) -> None:
    colours = _colours(directions, timeline)
    fig, axes = plt.subplots(len(directions), 1, figsize=(10, 3.2 * len(directions)), sharex=True,
                             squeeze=False)
    for ax, d in zip(axes[:, 0], directions):
        by_loc: dict[str, tuple[list, list]] = {}
        for p in d.packets:
            xs, ys = by_loc.setdefault(d.locator_of(p), ([], []))
            xs.append((p.received_ns - t0_ns) / 1e9)
            ys.append(p.seq)
        for loc, (xs, ys) in sorted(by_loc.items()):
            ax.scatter(xs, ys, s=2, color=colours.get(loc, "grey"), label=f"{d.mobile} at {loc}",
                       rasterized=True)
        if d.lost_seqs:
            xs = [(send_time_ns(s, d.start_ns, d.rate) - t0_ns) / 1e9 for s in d.lost_seqs]
            ax.scatter(xs, d.lost_seqs, s=14, marker="x", color="red", label=f"lost ({len(d.lost_seqs)})")
        for node in timeline.nodes():
            _mark_moves(ax, timeline, node, t0_ns, x_max)
        ax.set_ylabel("sequence number")
        ax.set_title(f"{d.title}: received sequence number", fontsize=10)
        ax.legend(loc="lower right", fontsize=7, markerscale=4)
        ax.set_xlim(0, x_max)
    axes[-1, 0].set_xlabel("time (s); dashed: move, shaded: handoff")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput_buckets(path: Path, directions: list[Direction], timeline: Timeline, t0_ns: int,
                       x_max: float, size: int, title: str) -> None:
    colours = _colours(directions, timeline)
    fig, axes = plt.subplots(len(directions), 1, figsize=(10, 3.2 * len(directions)), sharex=True,
                             squeeze=False)
    for ax, d in zip(axes[:, 0], directions):
        buckets = throughput(d.packets, t0_ns, d.locator_of)
        locs = sorted({loc for c in buckets.values() for loc in c})
        xs = sorted(buckets)
        bottom = [0.0] * len(xs)
        for loc in locs:
            heights = [buckets[i][loc] * size / 1000 for i in xs]
            ax.bar([x + 0.5 for x in xs], heights, width=0.9, bottom=bottom,
                   color=colours.get(loc, "grey"), label=f"{d.mobile} at {loc}")
            bottom = [b + h for b, h in zip(bottom, heights)]
        for node in timeline.nodes():
            _mark_moves(ax, timeline, node, t0_ns, x_max)
        ax.set_ylabel("kB/s received")
        ax.set_title(f"{d.title}: throughput in 1 s buckets", fontsize=10)
        ax.legend(loc="lower right", fontsize=7)
        ax.set_xlim(0, x_max)
    axes[-1, 0].set_xlabel("time (s); dashed: move, shaded: handoff")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
