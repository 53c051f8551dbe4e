"""The forwarding table (PROTOCOL.md "Forwarding"): locator -> interface, with expiry.

Joined locators route to themselves and never expire; others are learned backwards
(a packet from src_loc that arrived on interface I teaches src_loc -> I) or from
route hints (an accepted locator update). Pure: `now` is int ms.
"""
from __future__ import annotations

from ..proto.addr import ALL_NODES


class ForwardingTable:
    def __init__(self, route_lifetime_ms: int = 30000):
        self.route_lifetime_ms = route_lifetime_ms
        self.joined: frozenset[int] = frozenset()    # interfaces, handoff ones included
        self.leaving: frozenset[int] = frozenset()
        self.current: frozenset[int] = frozenset()   # joined and not being left
        self.flood_to: tuple[int, ...] = ()          # the current ones, in a fixed order
        self._iface: dict[int, int] = {}             # learned: locator -> interface
        self._expires: dict[int, int] = {}           # learned: locator -> expiry ms

    def set_locators(self, joined, leaving) -> None:
        """`joined` includes the locators in handoff; `leaving` is the handoff subset.

        Learned routes through an interface no longer joined are dropped, and so are
        learned routes for locators now joined (they route to themselves)."""
        self.joined = frozenset(joined)
        self.leaving = self.joined.intersection(leaving)
        self.current = self.joined - self.leaving
        self.flood_to = tuple(sorted(self.current))
        for loc, iface in list(self._iface.items()):
            if iface not in self.joined or loc in self.current:
                del self._iface[loc]
                del self._expires[loc]

    def learn(self, src_loc: int, iface: int, now: int) -> int | None:
        """src_loc is reachable through iface; returns the route's expiry (None: kept
        the route it had, because the network we are leaving must not steal a live
        route through one we keep)."""
        if iface in self.leaving:
            current = self._iface.get(src_loc)
            if current is not None and current not in self.leaving and self._expires[src_loc] > now:
                return None
        expires = now + self.route_lifetime_ms
        self._iface[src_loc] = iface
        self._expires[src_loc] = expires
        return expires

    def hint(self, locs, via: int, now: int) -> list[int]:
        """An accepted locator update arrived on `via`: its new locators are reachable
        there, before any data from them has taught us so. Only for locators we have
        no live route for. Returns the expiries it set."""
        if via not in self.current:
            return []
        set_ = []
        for loc in locs:
            if loc in self.joined or loc == ALL_NODES:
                continue
            if loc in self._iface and self._expires[loc] > now:
                continue
            set_.append(self.learn(loc, via, now))
        return [e for e in set_ if e is not None]

    def route(self, loc: int, now: int) -> int | None:
        """The interface towards `loc`, or None."""
        if loc in self.joined:
            return loc
        iface = self._iface.get(loc)
        if iface is not None and self._expires[loc] > now:
            return iface
        return None

    def expire(self, now: int) -> list[int]:
        """Drop expired learned routes; returns the expiries still pending."""
        for loc in [loc for loc, exp in self._expires.items() if exp <= now]:
            del self._expires[loc]
            del self._iface[loc]
        return list(self._expires.values())

    def routes(self, now: int) -> list[tuple[int, int, int | None]]:
        """(locator, interface, expiry ms or None): joined locators first, then learned."""
        joined = [(loc, loc, None) for loc in sorted(self.joined)]
        learned = sorted((loc, iface, self._expires[loc]) for loc, iface in self._iface.items()
                         if self._expires[loc] > now)
        return joined + learned
