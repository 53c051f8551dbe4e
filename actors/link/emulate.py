"""A worse link, for tests: drop, duplicate or delay a fraction of received datagrams.

The kernel here has no netem, so the link actor does it. Pure: the shell owns the clock.
"""
from __future__ import annotations

import random


class LinkEmulator:
    def __init__(self, drop: float = 0.0, duplicate: float = 0.0, delay_ms: int = 0,
                 rng: random.Random | None = None):
        self.drop = drop
        self.duplicate = duplicate
        self.delay_ms = delay_ms
        self.rng = rng or random.Random()

    @property
    def active(self) -> bool:
        return bool(self.drop or self.duplicate or self.delay_ms)

    def copies(self) -> int:
        """How many copies of the next datagram go up: 0 (dropped), 1, or 2 (duplicated)."""
        if self.drop and self.rng.random() < self.drop:
            return 0
        if self.duplicate and self.rng.random() < self.duplicate:
            return 2
        return 1
