"""Discovery protocol core (PROTOCOL.md, Discovery): pure, fake-clock testable.

Speaks solicitations and advertisements and keeps the host table. The flood
(forwarding each discovery packet to the other joined locators) is the router's.

Locators: `joined` may include the `leaving` ones (state.locators does) or not;
the core treats their union as joined and `joined - leaving` as *active*. Only
active locators solicit, send answers and accept discovery packets.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from ..proto import discovery as wire
from ..proto.addr import ALL_NODES
from ..proto.frames import TxItem
from ..proto.numbers import NH_DISCOVERY


@dataclass(frozen=True, slots=True)
class Announce:
    """Send `body` as discovery (next header 43) to ALL_NODES, NID 0, out on `via_loc`."""
    via_loc: int
    body: bytes

    def tx_item(self) -> TxItem:
        return TxItem(0, [ALL_NODES], NH_DISCOVERY, self.body, self.via_loc)


@dataclass(frozen=True, slots=True)
class HostsChanged:
    """The host table's content changed (not a mere refresh): republish hosts(now)."""


Action = Announce | HostsChanged


class HostRow(NamedTuple):
    hostname: str
    nid: int
    locs: list[int]  # most recently seen first
    age_ms: int  # since the most recent sighting of any of them


@dataclass(slots=True)
class _Node:
    hostname: str
    locs: dict[int, int] = field(default_factory=dict)  # loc -> last seen (ms)


class DiscoveryCore:
    def __init__(self, hostname: str, nid: int, wait_time_ms: int, rng: random.Random):
        wire.check_hostname(hostname)
        if wait_time_ms < 1:
            raise ValueError(f"wait_time_ms must be positive, got {wait_time_ms}")
        self.hostname = hostname
        self.nid = nid
        self.wait_time_ms = wait_time_ms
        self.expiry_ms = 3 * wait_time_ms
        self._rng = rng
        self.counters: Counter[str] = Counter()
        self._joined: set[int] = set()
        self._active: list[int] = []  # joined and not leaving, in the caller's order
        self._solicit_at: dict[int, int] = {}  # active loc -> next solicitation due
        self._forced_at = -1_000_000  # last solicit_now()
        self._solicited_rx: dict[int, int] = {}  # joined loc -> last solicitation received
        self._nodes: dict[int, _Node] = {}  # nid -> hostname and its locators
        self._by_name: dict[str, dict[int, None]] = {}  # hostname -> nids (ordered set)

    # -- locators and timers ---------------------------------------------------------

    def set_locators(self, joined: Iterable[int], leaving: Iterable[int], now: int) -> list[Action]:
        leaving_set = set(leaving)
        joined_list = list(dict.fromkeys(joined))
        active = [loc for loc in joined_list if loc not in leaving_set]
        was_active = set(self._active)
        self._joined = set(joined_list) | leaving_set
        self._active = active
        self._solicit_at = {loc: t for loc, t in self._solicit_at.items() if loc in active}
        self._solicited_rx = {loc: t for loc, t in self._solicited_rx.items() if loc in self._joined}
        actions: list[Action] = []
        # Newly active (also back from leaving): solicit at once, so the network
        # learns where we are and answers teach us its hosts.
        for loc in active:
            if loc not in was_active:
                actions.append(self._solicit(loc))
                self._solicit_at[loc] = now + self._interval()
        return actions

    def on_timer(self, now: int) -> list[Action]:
        actions: list[Action] = []
        for loc in self._active:
            if self._solicit_at[loc] > now:
                continue
            heard = self._solicited_rx.get(loc)
            if heard is not None and now - heard < self.wait_time_ms:
                self.counters["solicitations_suppressed"] += 1
            else:
                actions.append(self._solicit(loc))
            self._solicit_at[loc] = now + self._interval()
        if self._expire(now):
            actions.append(HostsChanged())
        return actions

    def next_deadline(self) -> int | None:
        deadlines = list(self._solicit_at.values())
        deadlines.extend(min(n.locs.values()) + self.expiry_ms for n in self._nodes.values())
        return min(deadlines, default=None)

    def _interval(self) -> int:
        w = self.wait_time_ms
        return self._rng.randint((w + 1) // 2, w)

    def solicit_now(self, now: int) -> list[Action]:
        """Solicit on every active locator at once (at most once a second): the local
        router restarted with an empty forwarding table, and the answers re-teach it
        the paths by backwards learning instead of leaving it blind until the next period."""
        if now - self._forced_at < 1000:
            self.counters["solicit_now_suppressed"] += 1
            return []
        self._forced_at = now
        actions = []
        for loc in self._active:
            actions.append(self._solicit(loc))
            self._solicit_at[loc] = now + self._interval()
        return actions

    def _solicit(self, loc: int) -> Announce:
        self.counters["solicitations_out"] += 1
        return Announce(loc, wire.encode(self.nid, loc, True, self.hostname))

    # -- receiving ---------------------------------------------------------------------

    def receive(self, src_loc: int, src_nid: int, arrival_loc: int, body: bytes,
                now: int) -> list[Action]:
        if arrival_loc not in self._joined:
            self.counters["ignored_not_joined"] += 1
            return []
        if arrival_loc not in self._solicit_at:  # joined but leaving (timers = active locators)
            self.counters["ignored_leaving"] += 1
            return []
        try:
            msg = wire.decode(body)
        except wire.DiscoveryWireError:
            self.counters["malformed"] += 1
            return []
        if msg.nid == self.nid or src_nid == self.nid:  # our own, flooded back
            self.counters["own"] += 1
            return []
        actions: list[Action] = []
        # Every copy teaches the table, flooded or eavesdropped alike.
        if self._learn(msg.loc, msg.nid, msg.hostname, now):
            actions.append(HostsChanged())
        if not msg.solicitation:
            self.counters["adverts_in"] += 1
            return actions
        self.counters["solicitations_in"] += 1
        self._solicited_rx[arrival_loc] = now
        # One answer naming the arrival locator, out on every active locator.
        answer = wire.encode(self.nid, arrival_loc, False, self.hostname)
        for loc in self._active:
            actions.append(Announce(loc, answer))
        self.counters["adverts_out"] += len(self._active)
        return actions

    # -- host table --------------------------------------------------------------------

    def peer_moved(self, nid: int, locs: Iterable[int], now: int) -> list[Action]:
        """An accepted locator update: the NID's locators are now exactly `locs`."""
        node = self._nodes.get(nid)
        if node is None:  # never discovered: no hostname to file it under
            self.counters["moved_unknown"] += 1
            return []
        new = {loc: now for loc in dict.fromkeys(locs)}
        changed = new.keys() != node.locs.keys()
        node.locs = new
        if not new:
            self._forget(nid)
        return [HostsChanged()] if changed else []

    def resolve(self, hostname: str, now: int | None = None) -> list[tuple[int, int]]:
        """(loc, nid) for a hostname, most recently seen first; `now` hides expired ones."""
        seen = []
        for nid in self._by_name.get(hostname, ()):
            for loc, last in self._nodes[nid].locs.items():
                if now is None or now - last < self.expiry_ms:
                    seen.append((last, loc, nid))
        seen.sort(key=lambda e: -e[0])  # stable: ties keep table order
        return [(loc, nid) for _, loc, nid in seen]

    def name_of(self, loc: int, nid: int) -> str | None:
        node = self._nodes.get(nid)
        return node.hostname if node is not None and loc in node.locs else None

    def hosts(self, now: int) -> list[HostRow]:
        rows = []
        for nid, node in self._nodes.items():
            live = [(last, loc) for loc, last in node.locs.items() if now - last < self.expiry_ms]
            if not live:
                continue
            live.sort(key=lambda e: -e[0])
            rows.append(HostRow(node.hostname, nid, [loc for _, loc in live], now - live[0][0]))
        rows.sort(key=lambda r: (r.hostname, r.nid))
        return rows

    def _learn(self, loc: int, nid: int, hostname: str, now: int) -> bool:
        """Record a sighting; True when the table's content changed."""
        node = self._nodes.get(nid)
        changed = False
        if node is None:
            node = self._nodes[nid] = _Node(hostname)
            self._by_name.setdefault(hostname, {})[nid] = None
            changed = True
        elif node.hostname != hostname:  # the node was renamed: one NID, one name
            self._unname(nid, node.hostname)
            node.hostname = hostname
            self._by_name.setdefault(hostname, {})[nid] = None
            changed = True
        if loc not in node.locs:
            changed = True
        node.locs[loc] = now
        return changed

    def _expire(self, now: int) -> bool:
        changed = False
        for nid in list(self._nodes):
            node = self._nodes[nid]
            stale = [loc for loc, last in node.locs.items() if now - last >= self.expiry_ms]
            for loc in stale:
                del node.locs[loc]
            if stale:
                changed = True
                self.counters["host_entries_expired"] += len(stale)
            if not node.locs:
                self._forget(nid)
        return changed

    def _forget(self, nid: int) -> None:
        node = self._nodes.pop(nid)
        self._unname(nid, node.hostname)

    def _unname(self, nid: int, hostname: str) -> None:
        nids = self._by_name[hostname]
        del nids[nid]
        if not nids:
            del self._by_name[hostname]
