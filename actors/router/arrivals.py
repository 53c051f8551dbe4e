"""The router's arrival log: data (STP) delivered to us, per arrival locator.

For mobility's handoff figures (actors/mobility/handoffs.py): when the first data packet
came on a locator the node just joined, and how many came on the old locators after it.
Per locator since it was (last) joined: [count, first ms, last ms, {other locator: its
count when this one's first packet came}]. The shell notes each delivered STP packet
(one dict lookup); the rest happens once per locator. Bounded: at most MAX_LOCATORS
entries, the ones not joined any more and least recently heard dropped first.
"""
from __future__ import annotations

MAX_LOCATORS = 64


class ArrivalLog:
    def __init__(self, max_locators: int = MAX_LOCATORS):
        self.max_locators = max_locators
        self.now = 0  # the batch's time (ms), set once per batch by the shell
        self._entries: dict[int, list] = {}
        self._joined: frozenset[int] = frozenset()

    def note(self, loc: int) -> None:
        entry = self._entries.get(loc)
        if entry is not None:
            entry[0] += 1
            entry[2] = self.now
            return
        others = {other: e[0] for other, e in self._entries.items()}
        self._entries[loc] = [1, self.now, self.now, others]
        if len(self._entries) > self.max_locators:
            self._shrink()

    def joined(self, joined) -> None:
        """The node's joined locators now: one joined anew starts afresh."""
        joined = frozenset(joined)
        for loc in joined - self._joined:
            self._entries.pop(loc, None)
        self._joined = joined

    def _shrink(self) -> None:
        stale = sorted((e[2], loc) for loc, e in self._entries.items() if loc not in self._joined)
        for _, loc in stale[:len(self._entries) - self.max_locators]:
            del self._entries[loc]

    def view(self) -> dict[int, list]:
        """{locator: [count, first_ms, last_ms, {locator: count}]} (the router's `status`)."""
        return {loc: [e[0], e[1], e[2], dict(e[3])] for loc, e in self._entries.items()}
