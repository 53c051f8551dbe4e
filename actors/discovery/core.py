"""Discovery protocol core (PROTOCOL.md, Discovery): pure, fake-clock testable.

Speaks solicitations and advertisements and keeps the host table. The flood
(forwarding each discovery packet to the other joined locators) is the router's.

Locators: `joined` may include the `leaving` ones (state.locators does) or not;
the core treats their union as joined and `joined - leaving` as *active*. Only
active locators solicit, send answers and accept discovery packets.

[ext] Discovery safeguards (PROTOCOL.md): a body must name its packet's source NID; a
hostname claimed by several live NIDs resolves to a cryptographic NID before a plain
one, then to the claimant seen first (our own hostname always to us), and the others
are conflicts; the table holds at most `max_hosts` NIDs and `MAX_LOCATORS_PER_HOST`
locators each. Eviction is a segmented LRU: a NID heard once is on probation, one heard
again at least PROMOTE_AFTER_MS later (a node answering a later solicitation) or moved by
an accepted update is established, and a newcomer evicts the least recently heard NID
on probation first, so a flood of invented NIDs (each heard once) churns among itself
and leaves the hosts that were there before it; a refresh costs O(1), and HostsChanged is
rate-limited (a token bucket: a burst of PUBLISH_BURST, then one per
PUBLISH_INTERVAL_MS, the change held back going out when the next token comes), so
publishing the whole table costs in proportion to time, not to packets. The clock
(`now`) never goes backwards.
"""
from __future__ import annotations

import random
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from ..proto import discovery as wire
from ..proto.addr import ALL_NODES, is_cryptographic
from ..proto.frames import TxItem
from ..proto.numbers import NH_DISCOVERY


DEFAULT_MAX_HOSTS = 1024        # NIDs in the host table (config discovery.max_hosts)
MAX_LOCATORS_PER_HOST = 16      # a NID's locators beyond these: the least recently seen goes
PUBLISH_INTERVAL_MS = 100       # HostsChanged: one per interval once the burst is spent
PUBLISH_BURST = 8               # ... and this many at once after a quiet time (start-up)
PROMOTE_AFTER_MS = 1000         # heard again this much later: established, evicted last


@dataclass(frozen=True, slots=True)
class Announce:
    """Send `body` as discovery (next header 43) to ALL_NODES, NID 0, out on `via_loc`."""
    via_loc: int
    body: bytes

    def tx_item(self) -> TxItem:
        return TxItem(0, [ALL_NODES], NH_DISCOVERY, self.body, self.via_loc)


@dataclass(frozen=True, slots=True)
class HostsChanged:
    """The host table's content changed (not a mere refresh): republish hosts(now).
    Rate-limited: a change made while the bucket is empty comes out of on_timer."""


Action = Announce | HostsChanged


class HostRow(NamedTuple):
    hostname: str
    nid: int  # the NID the name resolves to (the winner of a conflict)
    locs: list[int]  # most recently seen first
    age_ms: int  # since the most recent sighting of any of them


class Conflict(NamedTuple):
    hostname: str
    nid: int  # who the name resolves to (our own NID for our hostname)
    losers: tuple[int, ...]  # the other live NIDs claiming it, in the order first seen


@dataclass(slots=True)
class _Node:
    hostname: str
    last: int  # most recent sighting of any locator (ms)
    locs: dict[int, int] = field(default_factory=dict)  # loc -> last seen (ms)
    first: int = 0  # first sighting (ms): promotion from probation
    rank: dict[int, int] = field(default_factory=dict)  # loc -> place in its last accepted update


class DiscoveryCore:
    def __init__(self, hostname: str, nid: int, wait_time_ms: int, rng: random.Random,
                 max_hosts: int = DEFAULT_MAX_HOSTS):
        wire.check_hostname(hostname)
        if wait_time_ms < 1:
            raise ValueError(f"wait_time_ms must be positive, got {wait_time_ms}")
        if max_hosts < 1:
            raise ValueError(f"max_hosts must be positive, got {max_hosts}")
        self.max_hosts = max_hosts
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
        # nid -> hostname and its locators, least recently heard first (LRU eviction)
        self._nodes: OrderedDict[int, _Node] = OrderedDict()
        self._probation: OrderedDict[int, None] = OrderedDict()  # NIDs heard once, LRU first
        # (nid, loc) -> last seen, least recently seen first (expiry pops from the front)
        self._sightings: OrderedDict[tuple[int, int], int] = OrderedDict()
        # hostname -> nids claiming it, in the order first seen under that name
        self._by_name: dict[str, dict[int, None]] = {}
        self._credit_ms = PUBLISH_BURST * PUBLISH_INTERVAL_MS  # token bucket, in ms of refill
        self._credit_at = 0
        self._publish_due: int | None = None  # a change is held back until then

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
        newly = [loc for loc in active if loc not in was_active]
        # A locator withdrawn while in use (its link died, a hard move): the router's
        # routes through it are gone, so ask on those left at once; the answers re-teach them.
        if any(loc not in self._joined for loc in was_active):
            newly += [loc for loc in active if loc not in newly]
        for loc in newly:
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
        expired = self._expire(now)
        if self._publish_due is not None and now >= self._publish_due:
            self._publish_due = None
            self._publish(now, actions)  # what was held back, and the expiry with it
        elif expired:
            self._changed(now, actions)
        return actions

    def next_deadline(self) -> int | None:
        deadlines = list(self._solicit_at.values())
        if self._sightings:
            deadlines.append(next(iter(self._sightings.values())) + self.expiry_ms)
        if self._publish_due is not None:
            deadlines.append(self._publish_due)
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
        except wire.BadHostname:
            self.counters["bad_hostname"] += 1
            return []
        except wire.DiscoveryWireError:
            self.counters["malformed"] += 1
            return []
        if msg.nid == self.nid or src_nid == self.nid:  # our own, flooded back
            self.counters["own"] += 1
            return []
        if msg.nid != src_nid:  # a body speaking for another node: a forgery
            self.counters["body_nid_mismatch"] += 1
            return []
        actions: list[Action] = []
        # Every copy teaches the table, flooded or eavesdropped alike.
        if self._learn(msg.loc, msg.nid, msg.hostname, now):
            self._changed(now, actions)
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
        new = list(dict.fromkeys(locs))[:MAX_LOCATORS_PER_HOST]
        self._probation.pop(nid, None)  # a peer with a session moved: established
        node.rank = {loc: i for i, loc in enumerate(new)}  # its order holds (multihoming: its primary first)
        changed = set(new) != node.locs.keys()
        for loc in node.locs:
            del self._sightings[(nid, loc)]
        node.locs = {}
        if not new:
            self._forget(nid)
        else:
            for loc in new:  # same time: rows keep this order
                self._see(nid, node, loc, now)
        actions: list[Action] = []
        if changed:
            self._changed(now, actions)
        return actions

    def resolve(self, hostname: str, now: int | None = None) -> list[tuple[int, int]]:
        """(loc, nid) of the NID the hostname resolves to, most recently seen first;
        `now` hides expired ones. Our own hostname resolves to us, on our active locators."""
        if hostname == self.hostname:
            return [(loc, self.nid) for loc in self._active]
        nid = self._winner(hostname, now)
        if nid is None:
            return []
        node = self._nodes[nid]
        seen = [(last, loc) for loc, last in node.locs.items() if now is None or now - last < self.expiry_ms]
        return [(loc, nid) for loc in _ordered(node, seen)]

    def name_of(self, loc: int, nid: int) -> str | None:
        """The hostname of an I-LV; None for a NID that lost its name in a conflict."""
        node = self._nodes.get(nid)
        if node is None or loc not in node.locs or self._winner(node.hostname, None) != nid:
            return None
        return node.hostname

    def hosts(self, now: int) -> list[HostRow]:
        """One row per hostname (its winner's), sorted by hostname; our own name has none."""
        rows = []
        for hostname in self._by_name:
            if hostname == self.hostname:
                continue
            nid = self._winner(hostname, now)
            if nid is None:
                continue
            node = self._nodes[nid]
            live = [(last, loc) for loc, last in node.locs.items() if now - last < self.expiry_ms]
            rows.append(HostRow(hostname, nid, _ordered(node, live), now - max(live)[0]))
        rows.sort(key=lambda r: r.hostname)
        return rows

    def conflicts(self, now: int) -> list[Conflict]:
        """Every hostname claimed by more than one live NID (ours counts for our name):
        who it resolves to and the losers, sorted by hostname."""
        out = []
        for hostname, nids in self._by_name.items():
            live = [nid for nid in nids if self._live(nid, now)]
            winner = self._winner(hostname, now)
            losers = tuple(nid for nid in live if nid != winner)
            if losers:
                out.append(Conflict(hostname, winner, losers))
        out.sort(key=lambda c: c.hostname)
        return out

    def _live(self, nid: int, now: int | None) -> bool:
        return now is None or now - self._nodes[nid].last < self.expiry_ms

    def _winner(self, hostname: str, now: int | None) -> int | None:
        """The live NID a hostname resolves to: us for our own name; else the first seen
        cryptographic one, else the first seen (claims are kept in the order first seen
        under the name)."""
        if hostname == self.hostname:
            return self.nid
        first = None
        for nid in self._by_name.get(hostname, ()):
            if not self._live(nid, now):
                continue
            if is_cryptographic(nid):
                return nid
            if first is None:
                first = nid
        return first

    def _learn(self, loc: int, nid: int, hostname: str, now: int) -> bool:
        """Record a sighting; True when the table's content changed."""
        node = self._nodes.get(nid)
        changed = False
        if node is None:
            if len(self._nodes) >= self.max_hosts:  # on probation first, else least recently heard
                self._forget(next(iter(self._probation or self._nodes)))
                self.counters["hosts_evicted"] += 1
            node = self._nodes[nid] = _Node(hostname, now, first=now)
            self._probation[nid] = None
            self._claim(nid, hostname, now)
            changed = True
        elif node.hostname != hostname:  # the node was renamed: one NID, one name
            self._unname(nid, node.hostname)
            node.hostname = hostname
            self._claim(nid, hostname, now)
            changed = True
        if loc not in node.locs:
            changed = True
            if len(node.locs) >= MAX_LOCATORS_PER_HOST:
                oldest = min(node.locs, key=node.locs.__getitem__)
                del node.locs[oldest]
                del self._sightings[(nid, oldest)]
                self.counters["host_locators_evicted"] += 1
        self._see(nid, node, loc, now)
        return changed

    def _see(self, nid: int, node: _Node, loc: int, now: int) -> None:
        node.locs[loc] = now
        node.last = now
        self._nodes.move_to_end(nid)
        if nid in self._probation:
            if now - node.first >= PROMOTE_AFTER_MS:
                del self._probation[nid]
            else:
                self._probation.move_to_end(nid)
        key = (nid, loc)
        self._sightings[key] = now
        self._sightings.move_to_end(key)

    def _claim(self, nid: int, hostname: str, now: int) -> None:
        """`nid` claims `hostname` (last in the order first seen); a conflict if someone
        else live holds it, or if it is our own name."""
        claimants = self._by_name.setdefault(hostname, {})
        if hostname == self.hostname or any(self._live(other, now) for other in claimants):
            self.counters["name_conflicts"] += 1
        claimants[nid] = None

    def _expire(self, now: int) -> bool:
        changed = False
        sightings = self._sightings
        while sightings:
            (nid, loc), last = next(iter(sightings.items()))
            if now - last < self.expiry_ms:
                break
            del sightings[(nid, loc)]
            node = self._nodes[nid]
            del node.locs[loc]
            changed = True
            self.counters["host_entries_expired"] += 1
            if not node.locs:
                self._forget(nid)
        return changed

    def _forget(self, nid: int) -> None:
        node = self._nodes.pop(nid)
        self._probation.pop(nid, None)
        for loc in node.locs:
            del self._sightings[(nid, loc)]
        self._unname(nid, node.hostname)

    def _unname(self, nid: int, hostname: str) -> None:
        nids = self._by_name[hostname]
        del nids[nid]
        if not nids:
            del self._by_name[hostname]

    # -- publication rate --------------------------------------------------------------

    def _changed(self, now: int, actions: list[Action]) -> None:
        """The table changed: HostsChanged now if the bucket has a token, else hold the
        change back until it has one (on_timer); changes meanwhile ride along."""
        if self._publish_due is not None:
            self.counters["hosts_changes_coalesced"] += 1
            return
        self._refill(now)
        if self._credit_ms >= PUBLISH_INTERVAL_MS:
            self._publish(now, actions)
        else:
            self._publish_due = now + PUBLISH_INTERVAL_MS - self._credit_ms
            self.counters["hosts_changes_coalesced"] += 1

    def _refill(self, now: int) -> None:
        if now > self._credit_at:
            self._credit_ms = min(PUBLISH_BURST * PUBLISH_INTERVAL_MS, self._credit_ms + now - self._credit_at)
            self._credit_at = now

    def _publish(self, now: int, actions: list[Action]) -> None:
        self._refill(now)
        self._credit_ms -= PUBLISH_INTERVAL_MS
        self.counters["hosts_published"] += 1
        actions.append(HostsChanged())


def _ordered(node: _Node, seen: list[tuple[int, int]]) -> list[int]:
    """A node's locators from (last seen, loc) pairs, preferred first: newest first, as
    before, except that the locators of its last accepted update count as seen when the
    latest of them was and keep that update's order among themselves (a multihomed
    node's primary first, whatever discovery refreshed last). So a locator heard of after
    the update comes first (where it went without telling us), and one heard before the
    update's were last seen comes after them. Stable: ties keep table order."""
    rank = node.rank
    ranked_last = max((last for last, loc in seen if loc in rank), default=0)
    return [loc for _, loc in sorted(seen, key=lambda e: (-(ranked_last if e[1] in rank else e[0]),
                                                          rank.get(e[1], -1)))]
