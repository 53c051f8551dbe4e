"""The forwarding table (PROTOCOL.md "Forwarding"): locator -> interface, with expiry,
and locator selection (PROTOCOL.md "[ext] Forwarding safeguards").

Joined locators route to themselves and never expire; others are learned backwards
(a packet from src_loc that we delivered or forwarded, arrived on interface I, teaches
src_loc -> I) or from route hints (an accepted locator update). Learned routes are
capped (MAX_ROUTES): past the cap the least recently learned goes (counted
`routes_evicted`), so strangers inventing locators cannot grow the table. They are
kept least recently learned first, and with one lifetime that is also soonest to
expire first: expiry takes what is due from the front. Pure: `now` is int ms, and
never goes back.
"""
from __future__ import annotations

from collections import Counter, OrderedDict

from ..proto.addr import ALL_NODES

MAX_ROUTES = 4096  # learned routes; an overlay's real networks are far fewer


class ForwardingTable:
    def __init__(self, route_lifetime_ms: int = 30000, max_routes: int = MAX_ROUTES,
                 counters: Counter | None = None):
        self.route_lifetime_ms = route_lifetime_ms
        self.max_routes = max_routes
        self.counters = Counter() if counters is None else counters
        self.joined: frozenset[int] = frozenset()    # interfaces, handoff ones included
        self.leaving: frozenset[int] = frozenset()
        self.current: frozenset[int] = frozenset()   # joined and not being left
        self.flood_to: tuple[int, ...] = ()          # the current ones, in a fixed order
        # learned: locator -> (interface, expiry ms), least recently learned first
        self._learned: OrderedDict[int, tuple[int, int]] = OrderedDict()
        # Grows whenever a locator may have become reachable (a new route, new locators),
        # so packets waiting for a route are tried again only then.
        self.version = 0

    def set_locators(self, joined, leaving) -> None:
        """`joined` includes the locators in handoff; `leaving` is the handoff subset.

        Learned routes through an interface no longer joined are dropped, and so are
        learned routes for locators now joined (they route to themselves)."""
        self.version += 1
        self.joined = frozenset(joined)
        self.leaving = self.joined.intersection(leaving)
        self.current = self.joined - self.leaving
        self.flood_to = tuple(sorted(self.current))
        for loc, (iface, _expires) in list(self._learned.items()):
            if iface not in self.joined or loc in self.current:
                del self._learned[loc]

    def learn(self, src_loc: int, iface: int, now: int) -> int | None:
        """src_loc is reachable through iface; returns the route's expiry (None: kept
        the route it had, because the network we are leaving must not steal a live
        route through one we keep)."""
        learned = self._learned
        if iface in self.leaving:
            current = learned.get(src_loc)
            if current is not None and current[0] not in self.leaving and current[1] > now:
                return None
        expires = now + self.route_lifetime_ms
        known = learned.get(src_loc)
        if known is not None:
            if known[1] == expires and known[0] == iface:
                return expires  # learned already this ms (under load: most packets)
            learned.move_to_end(src_loc)
        elif len(learned) >= self.max_routes:
            self.expire(now)
            if len(learned) >= self.max_routes:
                learned.popitem(last=False)
                self.counters["routes_evicted"] += 1
        if known is None or known[0] != iface or known[1] <= now:
            self.version += 1  # reachable now, or by another way
        learned[src_loc] = (iface, expires)
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
            known = self._learned.get(loc)
            if known is not None and known[1] > now:
                continue
            set_.append(self.learn(loc, via, now))
        return [e for e in set_ if e is not None]

    def route(self, loc: int, now: int) -> int | None:
        """The interface towards `loc`, or None."""
        if loc in self.joined:
            return loc
        known = self._learned.get(loc)
        if known is not None and known[1] > now:
            return known[0]
        return None

    def select(self, dst_locs, now: int) -> tuple[int, int] | None:
        """Locator selection: (interface, destination locator) to reach a peer that holds
        `dst_locs` (freshest first: the host table's order, then older session ones), or
        None when we have no way there.

        The first locator we can reach, in that order: one we joined (sent there
        directly), else one we have a route to. When that route's interface is itself
        one of the peer's locators, the peer is on that network too: the packet is
        addressed there (its arrival rule would drop a copy addressed to another of its
        locators). Freshness comes first: a stale locator of the peer's that we happen
        to share must not win over where it is now (both nodes moving at once)."""
        joined, learned = self.joined, self._learned
        for loc in dst_locs:
            if loc in joined:
                return loc, loc
            known = learned.get(loc)
            if known is not None and known[1] > now:
                iface = known[0]
                return (iface, iface) if iface in dst_locs else (iface, loc)
        return None

    def expire(self, now: int) -> int | None:
        """Drop expired learned routes (from the front); returns the next expiry, if any."""
        learned = self._learned
        while learned:
            loc = next(iter(learned))
            expires = learned[loc][1]
            if expires > now:
                return expires
            del learned[loc]
        return None

    def __len__(self) -> int:
        """How many learned routes the table holds (expired ones not yet dropped included)."""
        return len(self._learned)

    def routes(self, now: int) -> list[tuple[int, int, int | None]]:
        """(locator, interface, expiry ms or None): joined locators first, then learned."""
        joined = [(loc, loc, None) for loc in sorted(self.joined)]
        learned = sorted((loc, iface, expires) for loc, (iface, expires) in self._learned.items()
                         if expires > now)
        return joined + learned
