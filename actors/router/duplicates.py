"""Duplicate packet detection for forwarding and flooding (PROTOCOL.md "[ext] Forwarding
safeguards", as SMF's hash-based DPD, RFC 6621).

A forwarder remembers, for `hold_ms`, a digest of every packet it has forwarded or
flooded (the whole packet but its hop limit, which each hop rewrites) and drops a copy
that comes again by another path or from another forwarder. Bounded: past `capacity`
digests the oldest are forgotten early (counted by the caller). Pure: `now` is int ms.
"""
from __future__ import annotations

from collections import deque


def digest(datagram: bytes) -> int:
    """The packet without its hop limit (byte 7), hashed."""
    return hash((datagram[:7], datagram[8:]))


class DuplicateFilter:
    def __init__(self, hold_ms: int = 500, capacity: int = 65536):
        self.hold_ms = hold_ms
        self.capacity = capacity
        self._until: dict[int, int] = {}   # digest -> when it is forgotten
        self._order: deque = deque()       # (until, digest), oldest first
        self.evicted = 0

    def seen(self, key: int, now: int) -> bool:
        """Was this packet forwarded or flooded within the hold time?"""
        until = self._until.get(key)
        return until is not None and until > now

    def remember(self, key: int, now: int) -> None:
        if self.hold_ms <= 0:
            return
        until = now + self.hold_ms
        self._until[key] = until
        order = self._order
        order.append((until, key))
        while order and (order[0][0] <= now or len(order) > self.capacity):
            old_until, old_key = order.popleft()
            if old_until > now:
                self.evicted += 1  # full: forgotten before its time
            if self._until.get(old_key) == old_until:
                del self._until[old_key]

    def __len__(self) -> int:
        return len(self._until)
