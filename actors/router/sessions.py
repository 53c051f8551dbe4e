"""Active sessions (PROTOCOL.md "Forwarding"): (remote locator, remote NID) pairs with a
packet sent or received in the last `lifetime_ms`, and how many packets of each carried
our nonce.

Capped (MAX_SESSIONS): strangers can start a session with invented NIDs, so past the
cap the least recently active session goes (counted `sessions_evicted`). Kept least
recently active first, which with one lifetime is also soonest to expire first: expiry
takes what is due from the front, and costs what expires, not the table. Pure: `now` is
int ms, and never goes back.
"""
from __future__ import annotations

from collections import Counter, OrderedDict

MAX_SESSIONS = 4096  # a node's real peers are far fewer


class SessionTable:
    def __init__(self, lifetime_ms: int = 30000, max_sessions: int = MAX_SESSIONS,
                 counters: Counter | None = None):
        self.lifetime_ms = lifetime_ms
        self.max_sessions = max_sessions
        self.counters = Counter() if counters is None else counters
        # (loc, nid) -> last packet ms, least recently active first
        self._last: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._stamped: dict[tuple[int, int], int] = {}  # (loc, nid) -> nonces sent this session

    def is_fresh(self, key: tuple[int, int], now: int) -> bool:
        """No live session yet (a packet now would start one)."""
        last = self._last.get(key)
        return last is None or now - last >= self.lifetime_ms

    def stamps(self, key: tuple[int, int], now: int) -> int:
        """How many packets of this session carried our nonce (0 for a fresh one)."""
        return 0 if self.is_fresh(key, now) else self._stamped.get(key, 0)

    def touch(self, key: tuple[int, int], now: int, stamped: bool = False) -> tuple[bool, bool]:
        """A packet of this session now: (fresh: a session began, so its expiry is a new
        deadline; new: it was not in the table, so the published set changed)."""
        table = self._last
        last = table.get(key)
        if last is None:
            if len(table) >= self.max_sessions:
                self.expire(now)
                if len(table) >= self.max_sessions:
                    old, _ = table.popitem(last=False)
                    self._stamped.pop(old, None)
                    self.counters["sessions_evicted"] += 1
        elif last != now:  # (touched already this ms: nothing after it is older, it can stay)
            table.move_to_end(key)
        table[key] = now
        fresh = last is None or now - last >= self.lifetime_ms
        if fresh:
            self._stamped.pop(key, None)  # expired, not yet collected: a new session
        if stamped:
            self._stamped[key] = self._stamped.get(key, 0) + 1
        return fresh, last is None

    def expire(self, now: int) -> tuple[bool, int | None]:
        """Drop sessions without a packet for lifetime_ms, from the front: (any gone, the
        next expiry if any)."""
        table, lifetime = self._last, self.lifetime_ms
        gone = False
        while table:
            key = next(iter(table))
            last = table[key]
            if now - last < lifetime:
                return gone, last + lifetime
            del table[key]
            self._stamped.pop(key, None)
            gone = True
        return gone, None

    def __len__(self) -> int:
        return len(self._last)

    def keys(self) -> list[list[int]]:
        """[[loc, nid], ...] every session in the table, sorted (what state.sessions carries)."""
        return sorted([loc, nid] for loc, nid in self._last)

    def active(self, now: int) -> list[tuple[int, int, int]]:
        return sorted((loc, nid, last) for (loc, nid), last in self._last.items()
                      if now - last < self.lifetime_ms)
