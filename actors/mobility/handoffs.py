"""Handoff figures: what each move of this node cost, as far as the node can know.

Pure, like the core that drives it: time comes in as int milliseconds (the core's
clock: CLOCK_MONOTONIC, which every process of a host shares). MobilityCore tells the
log when a move starts and what becomes of each locator update; the shell feeds it what
the router saw (`router_seen`, from the router's `status`) whenever `on_timer` says a
look is due. The log keeps the last MAX_MOVES moves (`records()`, the `moves` request).

A move's record:
- `started`, `cause` (schedule or command), `old` and `new` locator sets, the handoff time;
- per peer updated: its sequence number, when it was sent, retries, when it was
  acknowledged and how it ended (acked, unacked: retries exhausted, superseded: a later
  move's update replaced it, pending);
- `first_packet`: when the first data packet (STP) arrived on a locator of the new set
  that the old set did not have (the router's per-locator arrival log: its first
  arrival since the locator was joined). None when none arrived in the window, or when
  the move added no locator;
- the window: from the start until the handoff is over (`started + handoff_ms`) and no
  update of the move is pending any more (closed_by "settled"), or until the next move
  starts ("next_move"), or MAX_WINDOW_MS at most ("max_window"). What the router counted
  in the window (deltas of WINDOW_COUNTERS between the first look after the start and
  the look that closed it: `router`) and
  - `lost` = no_route + fwd_no_route: packets the router dropped for want of a route
    (to send: after the route wait; to forward: at once);
  - `waited` = route_wait: packets that waited for a route (sent when one came, or lost);
  - `late_on_old`: data packets that arrived on a locator of the old set after the
    first one arrived on the new set. Data carries no sequence numbers, so this is the
    reordering the node can see: the peer sent them before it learned of the move (or
    kept using the old path), and they came after a packet it sent later.
  A figure is None when the router did not answer in time to measure it.
Not knowable here: what the peer lost on its side, and reordering within one path.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

MAX_MOVES = 16            # records kept (the oldest dropped first)
MAX_WINDOW_MS = 30_000    # a move's window closes at the latest this long after its start
POLL_MS = 250             # a look at the router this often while a move's window is open
# router counters whose change over a window is reported (docs/DESIGN.md, the router's docstring)
WINDOW_COUNTERS = ("no_route", "fwd_no_route", "route_wait", "route_waited", "dup_arrival", "via_not_joined")
LOST = ("no_route", "fwd_no_route")

PENDING, ACKED, UNACKED, SUPERSEDED = "pending", "acked", "unacked", "superseded"


@dataclass
class UpdateRecord:
    peer: int
    seq: int
    sent: int
    retries: int = 0
    acked: int | None = None
    outcome: str = PENDING


@dataclass
class MoveRecord:
    id: int
    started: int
    cause: str
    old: tuple[int, ...]
    new: tuple[int, ...]
    handoff_ms: int
    updates: dict[int, UpdateRecord] = field(default_factory=dict)
    first_packet: int | None = None
    first_packet_loc: int | None = None
    closed: int | None = None
    closed_by: str | None = None
    router: dict[str, int] | None = None
    late_on_old: int | None = None
    _baseline: dict[str, int] | None = None   # router counters at the first look
    _at_first: dict[int, int] | None = None   # old locators' arrival counts at first_packet

    @property
    def added(self) -> tuple[int, ...]:
        return tuple(loc for loc in self.new if loc not in self.old)

    @property
    def removed(self) -> tuple[int, ...]:
        return tuple(loc for loc in self.old if loc not in self.new)

    def view(self) -> dict:
        """JSON-friendly; times in ms after `started` (the shell adds wall time)."""
        rel = (lambda t: None if t is None else t - self.started)
        lost = None if self.router is None else sum(self.router.get(k, 0) for k in LOST)
        updates = [{"peer": u.peer, "seq": u.seq, "sent_ms": rel(u.sent), "retries": u.retries,
                    "acked_ms": rel(u.acked), "outcome": u.outcome} for u in self.updates.values()]
        return {"id": self.id, "started": self.started, "cause": self.cause, "old": list(self.old),
                "new": list(self.new), "handoff_ms": self.handoff_ms, "updates": updates,
                "updates_sent": len(updates), "updates_acked": sum(u.acked is not None for u in self.updates.values()),
                "first_packet_ms": rel(self.first_packet), "first_packet_loc": self.first_packet_loc,
                "open": self.closed is None, "window_ms": rel(self.closed), "closed_by": self.closed_by,
                "router": self.router, "lost": lost,
                "waited": None if self.router is None else self.router.get("route_wait", 0),
                "late_on_old": self.late_on_old}


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class HandoffLog:
    def __init__(self, max_moves: int = MAX_MOVES, poll_ms: int = POLL_MS, max_window_ms: int = MAX_WINDOW_MS):
        self.moves: deque[MoveRecord] = deque(maxlen=max_moves)
        self.poll_ms = poll_ms
        self.max_window_ms = max_window_ms
        self.counters: Counter = Counter()  # cumulative figures over every move (the metrics' sums)
        self._next_id = 1
        self._next_look: int | None = None

    # ---- what the core tells ---------------------------------------------------

    def started(self, now: int, old, new, cause: str, handoff_ms: int) -> int:
        """A move starts; a window still open closes (its figures as of the last look)."""
        for move in self._open():
            self._close(move, now, "next_move")
        move = MoveRecord(self._next_id, now, cause, tuple(old), tuple(new), handoff_ms)
        self._next_id += 1
        self.moves.append(move)
        self.counters["handoff_moves"] += 1
        self._next_look = now  # the baseline: at once
        return move.id

    def update_sent(self, move_id: int, peer: int, seq: int, now: int) -> None:
        move = self._find(move_id)
        if move is not None:
            move.updates[peer] = UpdateRecord(peer, seq, now)
            self.counters["handoff_updates_sent"] += 1

    def update_retried(self, move_id: int, peer: int) -> None:
        record = self._update(move_id, peer)
        if record is not None:
            record.retries += 1

    def update_acked(self, move_id: int, peer: int, now: int) -> None:
        record = self._update(move_id, peer)
        if record is not None and record.outcome == PENDING:
            record.acked, record.outcome = now, ACKED
            self.counters["handoff_updates_acked"] += 1
            self.counters["handoff_ack_ms_sum"] += now - record.sent
            self.counters["handoff_ack_count"] += 1

    def update_ended(self, move_id: int, peer: int, outcome: str) -> None:
        """UNACKED (retries exhausted) or SUPERSEDED (a later move's update replaced it)."""
        record = self._update(move_id, peer)
        if record is not None and record.outcome == PENDING:
            record.outcome = outcome
            self.counters[f"handoff_updates_{outcome}"] += 1

    # ---- what the router saw -----------------------------------------------------

    def router_seen(self, now: int, counters, arrivals) -> None:
        """The router's counters and its arrival log ({locator: [count, first_ms,
        last_ms, {other locator: its count at this one's first arrival}]}), as it
        answered at `now`. Malformed parts are ignored (the router is another process)."""
        counters = counters if isinstance(counters, dict) else {}
        current = {name: _count(counters.get(name)) for name in WINDOW_COUNTERS}
        arrivals = arrivals if isinstance(arrivals, dict) else {}
        for move in self._open():
            if move._baseline is None:
                move._baseline = current
            if move.first_packet is None:
                self._find_first_packet(move, arrivals)
            if self._due(move, now):
                self._measure(move, current, arrivals)
                self._close(move, now, "settled")
            else:
                self._measure(move, current, arrivals)  # as of this look, in case the next never comes

    def _find_first_packet(self, move: MoveRecord, arrivals: dict) -> None:
        best = None
        for loc in move.added:
            entry = arrivals.get(loc)
            if not (isinstance(entry, (list, tuple)) and len(entry) == 4):
                continue
            first, at_first = entry[1], entry[3]
            if not isinstance(first, int) or first < move.started:
                continue  # joined before this move (a set we came back to within its handoff)
            if best is None or first < best[0]:
                best = (first, loc, at_first if isinstance(at_first, dict) else {})
        if best is not None:
            move.first_packet, move.first_packet_loc = best[0], best[1]
            move._at_first = {loc: _count(best[2].get(loc)) for loc in move.removed}
            self.counters["handoff_first_packet_ms_sum"] += best[0] - move.started
            self.counters["handoff_first_packet_count"] += 1

    def _measure(self, move: MoveRecord, current: dict[str, int], arrivals: dict) -> None:
        if move._baseline is None:
            return
        move.router = {k: max(0, current[k] - move._baseline[k]) for k in WINDOW_COUNTERS}
        if move._at_first is not None:
            late = 0
            for loc, before in move._at_first.items():
                entry = arrivals.get(loc)
                if isinstance(entry, (list, tuple)) and entry:
                    late += max(0, _count(entry[0]) - before)
            move.late_on_old = late

    # ---- time --------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        opened = list(self._open())
        if not opened:
            return None
        times = [m.started + self.max_window_ms for m in opened]
        if self._next_look is not None:
            times.append(self._next_look)
        return min(times)

    def on_timer(self, now: int) -> bool:
        """Close the windows past MAX_WINDOW_MS; True when the router should be asked now."""
        for move in self._open():
            if now >= move.started + self.max_window_ms:
                self._close(move, now, "max_window")
        if not any(True for _ in self._open()):
            self._next_look = None
            return False
        if self._next_look is not None and now >= self._next_look:
            self._next_look = now + self.poll_ms
            return True
        return False

    # ---- reading -----------------------------------------------------------------

    def records(self) -> list[dict]:
        """The last moves, oldest first."""
        return [m.view() for m in self.moves]

    def last(self) -> dict | None:
        return self.moves[-1].view() if self.moves else None

    # ---- helpers -----------------------------------------------------------------

    def _open(self):
        return [m for m in self.moves if m.closed is None]

    def _find(self, move_id: int) -> MoveRecord | None:
        for move in reversed(self.moves):
            if move.id == move_id:
                return move
        return None  # dropped from the list already

    def _update(self, move_id: int, peer: int) -> UpdateRecord | None:
        move = self._find(move_id)
        return None if move is None else move.updates.get(peer)

    def _due(self, move: MoveRecord, now: int) -> bool:
        return now >= move.started + move.handoff_ms and all(u.outcome != PENDING for u in move.updates.values())

    def _close(self, move: MoveRecord, now: int, how: str) -> None:
        move.closed, move.closed_by = now, how
        self.counters["handoff_windows_closed"] += 1
        if move.router is not None:
            self.counters["handoff_lost"] += sum(move.router[k] for k in LOST)
            self.counters["handoff_waited"] += move.router["route_wait"]
        if move.late_on_old:
            self.counters["handoff_late_on_old"] += move.late_on_old
