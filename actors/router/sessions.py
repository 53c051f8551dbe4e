"""Active sessions (PROTOCOL.md "Forwarding"): (remote locator, remote NID) pairs with a
packet sent or received in the last `lifetime_ms`, and how many packets of each carried
our nonce. Pure: `now` is int ms.
"""
from __future__ import annotations


class SessionTable:
    def __init__(self, lifetime_ms: int = 30000):
        self.lifetime_ms = lifetime_ms
        self._last: dict[tuple[int, int], int] = {}     # (loc, nid) -> last packet ms
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
        last = self._last.get(key)
        self._last[key] = now
        fresh = last is None or now - last >= self.lifetime_ms
        if fresh:
            self._stamped.pop(key, None)  # expired, not yet collected: a new session
        if stamped:
            self._stamped[key] = self._stamped.get(key, 0) + 1
        return fresh, last is None

    def expire(self, now: int) -> tuple[bool, list[int]]:
        """Drop sessions without a packet for lifetime_ms: (any gone, pending expiries)."""
        gone = [key for key, last in self._last.items() if now - last >= self.lifetime_ms]
        for key in gone:
            del self._last[key]
            self._stamped.pop(key, None)
        return bool(gone), [last + self.lifetime_ms for last in self._last.values()]

    def keys(self) -> list[list[int]]:
        """[[loc, nid], ...] every session in the table, sorted (what state.sessions carries)."""
        return sorted([loc, nid] for loc, nid in self._last)

    def active(self, now: int) -> list[tuple[int, int, int]]:
        return sorted((loc, nid, last) for (loc, nid), last in self._last.items()
                      if now - last < self.lifetime_ms)
