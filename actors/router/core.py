"""The router's protocol core: what to do with each packet received or to send.

Pure: no I/O, no clock (`now` is int ms). Rules: PROTOCOL.md "Forwarding", "Locator
update" [ext] and DESIGN.md "Who owns what", "Arrival rule". It composes four small
tables, each owning one piece of state: the forwarding table (forwarding.py), active
sessions (sessions.py), [ext] peer state (peers.py) and STP ports (ports.py).
Malformed input is counted, never raised.

Counters (drops unless said otherwise):
  own            our own transmission looped back by the underlay (silent)
  malformed      not a valid ILNPv6 header
  bad_options    destination options header that must be dropped (RFC 8200)
  dup_arrival    addressed to a joined locator but arrived on another (arrival rule)
  unknown_nh     next header not 42/43/44 (after destination options)
  stp_malformed  STP segment shorter than 4 bytes
  stp_unbound    STP to a port nothing has bound
  not_ours       unicast for another node on the link it arrived on (normal on a broadcast link)
  fwd_no_route   not for us, no route for its destination locator
  fwd_same_link  not for us, the route points back where it came from (its next hop heard it)
  hop_limit      not for us and arrived with hop limit 0
  duplicate      a copy of a packet we forwarded or flooded within the hold time (DPD)
  hop_clamped    arrived with a hop limit above ours, treated as ours (not a drop)
  no_route, oversize, via_not_joined, bad_send     send refusals (no_route: after waiting
                 ROUTE_WAIT_MS for one, or at once when ROUTE_WAIT_MAX packets wait already)
  route_wait     a packet to send waited for a route (not a drop: sent when one is learned,
                 counted route_waited; or no_route when the wait ends)
  path_switch_held  a send to a peer was held back because its path just got shorter
                 (not a drop: sent when the hold ends; path_switch_holds counts the holds,
                 path_switch_overflow the holds cut short at PATH_HOLD_MAX packets)
  routes_evicted, sessions_evicted   a table at its cap dropped its least recently used entry
  nonce_no_room  a full-size packet sent without the nonce it was due (not a drop)
  delivered, forwarded, flooded, sent, opts_dropped   (not drops)
"""
from __future__ import annotations

import os
import struct
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable

from ..proto.addr import ALL_NODES
from ..proto.frames import LinkItem, RxItem
from ..proto.ilnp import HEADER_LEN, WireError, decode_destopts, encode, set_hop_limit, unpack_header
from ..proto.numbers import NH_DESTOPTS, NH_DISCOVERY, NH_LOCATOR_UPDATE, NH_STP, UPPER_LAYERS
from .duplicates import DuplicateFilter, digest
from .forwarding import ForwardingTable
from .peers import PeerTable
from .ports import PortRegistry
from .sessions import SessionTable

_SENDABLE = frozenset(UPPER_LAYERS)

# A packet to send with no route yet waits for one, as a packet waits for ARP: right after
# the router starts (kill -9: its routes are gone until the peer's next packet or
# discovery's answer teaches them again) or when an idle route lapsed. Bounded by time
# and by count: a wait longer than this would be a queue, not a resolution.
ROUTE_WAIT_MS = 500
ROUTE_WAIT_MAX = 1024

# When the path to a peer gets shorter (it moved into one of our networks, or we into one
# of its: a route through a router becomes a direct send), packets on the new path would
# overtake those still queued on the old one. Sends to that peer are held until
# `path_switch_hold_ms` after the last one on the old path, in order, as a bridge holds
# a moved MAC's frames. Bounded: past PATH_HOLD_MAX held packets the hold ends early.
PATH_HOLD_MAX = 4096
PATHS_MAX = 4096  # peers whose last path is remembered (the first remembered goes first)


@dataclass(frozen=True, slots=True)
class Deliver:
    """A packet for an upper layer (`ilnp.rx.<nh>`, or `ilnp.rx.42.<port>` for STP)."""
    next_header: int
    port: int | None  # STP destination port for next header 42, else None
    item: RxItem


@dataclass(frozen=True, slots=True)
class SessionsChanged:
    """The set of sessions changed: `session_keys()` has the new one. The shell publishes
    it at a bounded rate, so the core never lists the table per change."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A send refused for a reason the sender should hear about (only "oversize")."""
    reason: str
    dst_nid: int
    size: int


_SESSIONS_CHANGED = SessionsChanged()

# What receive() and send() return: LinkItem (a datagram for the link to send out on
# an interface), Deliver, SessionsChanged, Refused.


class RouterCore:
    def __init__(self, nid: int, hop_limit: int = 3, mtu: int = 1440,
                 route_lifetime_ms: int = 30000, session_lifetime_ms: int = 30000,
                 nonce_length: int = 12, rng_bytes: Callable[[int], bytes] = os.urandom,
                 nonce_packets: int = 3, is_owner_alive: Callable[[Any], bool] | None = None,
                 duplicate_hold_ms: int = 500, signer=None, nonce_key: bytes | None = None,
                 path_switch_hold_ms: int = 50):
        if not 0 <= hop_limit <= 255:
            raise ValueError(f"hop_limit {hop_limit} is not 0-255")
        if mtu < HEADER_LEN:
            raise ValueError(f"mtu {mtu} is smaller than the 40-byte header")
        self.nid = nid
        self.hop_limit = hop_limit
        self.mtu = mtu
        self.nonce_packets = nonce_packets
        self.counters: Counter = Counter()
        self.table = ForwardingTable(route_lifetime_ms, counters=self.counters)
        self.sessions_table = SessionTable(session_lifetime_ms, counters=self.counters)
        self.peers = PeerTable(nonce_length, rng_bytes, session_lifetime_ms, signer, nid, nonce_key=nonce_key)
        self.ports = PortRegistry(is_owner_alive)
        self.duplicates = DuplicateFilter(duplicate_hold_ms)
        self._deadline: int | None = None  # lower bound of the next expiry
        # packets waiting for a route, oldest first: (expires, send() arguments)
        self._route_wait: deque = deque()
        self._route_wait_version = -1  # the table version they were last tried at
        self.path_switch_hold_ms = path_switch_hold_ms
        # dst NID -> (interface, destination locator, last send ms) of its latest send
        self._paths: dict[int, tuple[int, int, int]] = {}
        # dst NID -> [release ms, deque of send() arguments] while its path switch is held
        self._held: dict[int, list] = {}

    # --- locators ------------------------------------------------------------------

    def set_locators(self, joined: list[int], leaving: list[int], now: int) -> list:
        self.table.set_locators(joined, leaving)
        return []

    def route_hint(self, locs, via: int, now: int) -> None:
        """An accepted locator update arrived on `via` (see ForwardingTable.hint)."""
        for expires in self.table.hint(locs, via, now):
            self._due(expires)

    def _due(self, when: int) -> None:
        if self._deadline is None or when < self._deadline:
            self._deadline = when

    # --- receive -------------------------------------------------------------------

    def receive(self, arrival_loc: int, datagram: bytes, now: int) -> list:
        try:
            vtf, _plen, nh, hop, src_loc, src_nid, dst_loc, dst_nid = unpack_header(datagram)
        except (WireError, TypeError):
            self.counters["malformed"] += 1
            return []
        if src_nid == self.nid:
            self.counters["own"] += 1
            return []
        if hop > self.hop_limit:
            hop = self.hop_limit  # a forged 255 must not buy an unbounded flood
            self.counters["hop_clamped"] += 1
        if dst_nid == self.nid or dst_loc == ALL_NODES:
            self.peers.heard(src_nid, vtf >> 28)
            return self._arrive(arrival_loc, datagram, now, nh, hop,
                                src_loc, src_nid, dst_loc, dst_nid)
        return self._forward(arrival_loc, datagram, now, hop, src_loc, dst_loc)

    def _learn(self, src_loc: int, arrival_loc: int, now: int) -> None:
        """Backwards learning, from a packet we deliver or forward only (what anyone
        could send past us teaches nothing: strangers must not fill the table). Learn
        also source locators we are only leaving: once the handoff ends we need a route
        to them (the peer may still be there), not a gap until it speaks again."""
        table = self.table
        if (src_loc not in table.current and src_loc != arrival_loc and arrival_loc in table.joined
                and src_loc != ALL_NODES):
            expires = table.learn(src_loc, arrival_loc, now)
            if expires is not None:
                self._due(expires)

    def _arrive(self, arrival_loc, datagram, now, nh, hop, src_loc, src_nid, dst_loc, dst_nid):
        """A packet for us: our NID, or ALL_NODES."""
        if dst_loc != arrival_loc and dst_loc in self.table.joined:
            self.counters["dup_arrival"] += 1  # its own copy arrives on dst_loc
            return []
        payload = datagram[HEADER_LEN:]
        opts = None
        if nh == NH_DESTOPTS:
            try:
                nh, nonce, seq, sig, payload = decode_destopts(payload)
            except WireError:
                self.counters["bad_options"] += 1
                return []
            opts = self.peers.check(src_nid, nonce, seq, sig, dst_loc != ALL_NODES, now)
        elif nh == NH_LOCATOR_UPDATE:
            opts = self.peers.plain_update(src_nid, now)
        elif dst_loc != ALL_NODES:
            self.peers.touch(src_nid, now)

        port = None
        if nh == NH_STP:
            if len(payload) < 4:
                self.counters["stp_malformed"] += 1
                return []
            port = (payload[2] << 8) | payload[3]
            if port not in self.ports:
                self.counters["stp_unbound"] += 1
                return []
        elif nh != NH_DISCOVERY and nh != NH_LOCATOR_UPDATE:
            self.counters["unknown_nh"] += 1
            return []

        flood = dst_loc == ALL_NODES and nh == NH_DISCOVERY and hop > 0 and arrival_loc in self.table.current
        if flood:
            key = digest(datagram)
            if self.duplicates.seen(key, now):
                self.counters["duplicate"] += 1  # flooded already: another path brought it again
                return []
            self.duplicates.remember(key, now)
        self.counters["delivered"] += 1
        self._learn(src_loc, arrival_loc, now)
        actions = [Deliver(nh, port, RxItem(src_loc, src_nid, dst_loc, dst_nid, arrival_loc, payload, opts))]
        if dst_loc == ALL_NODES:
            if flood:
                out = set_hop_limit(datagram, hop - 1)
                for loc in self.table.flood_to:
                    if loc != arrival_loc:
                        actions.append(LinkItem(loc, out))
                        self.counters["flooded"] += 1
        elif nh == NH_STP:  # data: a locator update must not make a stranger a session
            changed = self._touch_session((src_loc, src_nid), now)
            if changed is not None:
                actions.append(changed)
        return actions

    def _forward(self, arrival_loc, datagram, now, hop, src_loc, dst_loc):
        """Not for us: forward towards dst_loc if it is reachable through another interface."""
        if dst_loc == arrival_loc:
            self.counters["not_ours"] += 1
            return []
        iface = self.table.route(dst_loc, now)
        if iface is None:
            self.counters["fwd_no_route"] += 1
            return []
        if iface == arrival_loc:
            self.counters["fwd_same_link"] += 1
            return []
        if hop == 0:
            self.counters["hop_limit"] += 1
            return []
        key = digest(datagram)
        if self.duplicates.seen(key, now):
            self.counters["duplicate"] += 1  # forwarded already (another forwarder sent it too)
            return []
        self.duplicates.remember(key, now)
        self.counters["forwarded"] += 1
        self._learn(src_loc, arrival_loc, now)  # the way back
        return [LinkItem(iface, set_hop_limit(datagram, hop - 1))]

    # --- send ----------------------------------------------------------------------

    def send(self, dst_nid: int, dst_locs: list[int], next_header: int, payload: bytes,
             via: int | None = None, opts: dict | None = None, now: int = 0) -> list:
        """An upper layer's packet (an `ilnp.tx` item, frames.TxItem). via=None: locator
        selection (ForwardingTable.select: one we joined, else the first we have a route
        to); via=X: out on interface X, to X if the peer holds it, else to dst_locs[0]."""
        try:
            return self._send(dst_nid, dst_locs, next_header, payload, via, opts, now)
        except (TypeError, ValueError, OverflowError, AttributeError, struct.error):
            self.counters["bad_send"] += 1
            return []

    def _send(self, dst_nid, dst_locs, next_header, payload, via, opts, now, may_wait=True):
        if next_header not in _SENDABLE or not isinstance(payload, (bytes, bytearray)):
            self.counters["bad_send"] += 1
            return []
        before = []
        if self._route_wait and may_wait:
            # those waiting go first, if a route came meanwhile (order kept per peer);
            # if not, this one waits behind them
            before = self.retry_waiting(now)
        may_wait = may_wait and via is None and bool(dst_locs) and ALL_NODES not in dst_locs
        out_loc, dst_loc = self._out_interface(dst_locs, via, now, count=not may_wait)
        if out_loc is None:
            if may_wait:
                self._wait_for_route(now, (dst_nid, list(dst_locs), next_header, payload, opts))
            return before
        if via is None and dst_loc != ALL_NODES and self.path_switch_hold_ms:
            if self._hold_for_path(dst_nid, out_loc, dst_loc, now,
                                   (dst_nid, list(dst_locs), next_header, payload, opts)):
                return before + self._release_overflow(dst_nid, now)
        if before:
            return before + self._packet(dst_nid, next_header, payload, opts, now, out_loc, dst_loc)
        return self._packet(dst_nid, next_header, payload, opts, now, out_loc, dst_loc)

    def _packet(self, dst_nid, next_header, payload, opts, now, out_loc, dst_loc):
        if HEADER_LEN + len(payload) > self.mtu:
            return self._oversize(dst_nid, HEADER_LEN + len(payload))

        # Control packets (discovery, locator updates and acks) start no session: a
        # stranger's update must not make itself a peer with a session.
        unicast = dst_loc != ALL_NODES and next_header != NH_DISCOVERY and next_header != NH_LOCATOR_UPDATE
        key = (dst_loc, dst_nid)
        nonce_due = unicast and self.sessions_table.stamps(key, now) < self.nonce_packets
        options = self.peers.options(dst_nid, next_header, nonce_due, opts, payload)
        stamped = False
        if options is not None:
            if HEADER_LEN + len(options) + len(payload) > self.mtu and next_header != NH_LOCATOR_UPDATE:
                # A full-size data packet has no room for the nonce: send it plain (a data
                # packet is never refused for an option); a later, smaller packet or the
                # next locator update carries the nonce.
                self.counters["nonce_no_room"] += 1
            else:
                payload = options + payload
                next_header = NH_DESTOPTS
                stamped = nonce_due
                if HEADER_LEN + len(payload) > self.mtu:
                    return self._oversize(dst_nid, HEADER_LEN + len(payload))
        datagram = encode(out_loc, self.nid, dst_loc, dst_nid, next_header, payload, self.hop_limit)

        actions = [LinkItem(out_loc, datagram)]
        self.counters["sent"] += 1
        if unicast:
            changed = self._touch_session(key, now, stamped)
            if changed is not None:
                actions.append(changed)
        return actions

    def _out_interface(self, dst_locs, via, now, count=True) -> tuple[int | None, int | None]:
        """(interface, destination locator), or (None, None) counted as a refusal (a packet
        that may wait for a route is counted by the wait)."""
        if via is None:
            chosen = self.table.select(dst_locs, now)
            if chosen is None:
                if count or not dst_locs:
                    self.counters["no_route"] += 1
                return None, None
            return chosen
        if via not in self.table.joined:
            self.counters["via_not_joined"] += 1
            return None, None
        if not dst_locs:
            self.counters["no_route"] += 1
            return None, None
        # a peer on `via` hears the copy there: it must be addressed to `via`, or the
        # peer's arrival rule drops it
        return via, (via if via in dst_locs else dst_locs[0])

    # --- holding a peer's packets while its path gets shorter ------------------------

    def _hold_for_path(self, dst_nid: int, out_loc: int, dst_loc: int, now: int, args: tuple) -> bool:
        """True when this send is held (the peer's path just got shorter, or earlier sends
        to it are held); else remembers the path it takes."""
        held = self._held.get(dst_nid)
        if held is not None:
            held[1].append(args)
            self.counters["path_switch_held"] += 1
            return True
        paths = self._paths
        last = paths.get(dst_nid)
        if last is not None and (last[0] != out_loc or last[1] != dst_loc):
            # routed before (sent to a router on last[0]), direct now: the new path is shorter
            if last[0] != last[1] and out_loc == dst_loc and now - last[2] < self.path_switch_hold_ms:
                release = last[2] + self.path_switch_hold_ms
                self._held[dst_nid] = [release, deque((args,))]
                self.counters["path_switch_holds"] += 1
                self.counters["path_switch_held"] += 1
                self._due(release)
                return True
        paths[dst_nid] = (out_loc, dst_loc, now)  # per packet: one store, no reordering of the dict
        if len(paths) > PATHS_MAX:  # the oldest peer first out (at worst one missed hold)
            del paths[next(iter(paths))]
        return False

    def _release_overflow(self, dst_nid: int, now: int) -> list:
        held = self._held.get(dst_nid)
        if held is None or len(held[1]) < PATH_HOLD_MAX:
            return []
        self.counters["path_switch_overflow"] += 1
        return self._release(dst_nid, now)

    def _release(self, dst_nid: int, now: int) -> list:
        """Send a peer's held packets, in order, on the path they take now."""
        _release_at, queue = self._held.pop(dst_nid)
        self._paths.pop(dst_nid, None)  # the switch is over: no hold for these
        actions = []
        for args in queue:
            dst, locs, nh, payload, opts = args
            actions.extend(self._send(dst, locs, nh, payload, None, opts, now, may_wait=True))
        return actions

    def _release_due(self, now: int) -> list:
        actions = []
        for nid in [n for n, (release, _q) in self._held.items() if release <= now]:
            actions.extend(self._release(nid, now))
        return actions

    @property
    def held(self) -> int:
        """How many packets are held for a path switch."""
        return sum(len(q) for _r, q in self._held.values())

    # --- packets waiting for a route ---------------------------------------------

    @property
    def waiting(self) -> int:
        """How many packets wait for a route."""
        return len(self._route_wait)

    def _wait_for_route(self, now: int, args: tuple) -> None:
        wait = self._route_wait
        if len(wait) >= ROUTE_WAIT_MAX:
            self.counters["no_route"] += 1
            return
        expires = now + ROUTE_WAIT_MS
        wait.append((expires, args))
        self.counters["route_wait"] += 1
        self._route_wait_version = self.table.version
        self._due(expires)

    def retry_waiting(self, now: int) -> list:
        """Send what waits for a route, in order, if the table changed since the last try;
        a packet whose wait is over is no_route. The shell calls it after whatever may
        teach a route (a batch received, new locators, a route hint)."""
        wait = self._route_wait
        if not wait or self._route_wait_version == self.table.version:
            self._expire_waiting(now)
            return []
        self._route_wait_version = self.table.version
        actions, still = [], deque()
        for expires, args in wait:
            if expires <= now:
                self.counters["no_route"] += 1
                continue
            if self.table.select(args[1], now) is None:
                still.append((expires, args))
                continue
            dst_nid, dst_locs, nh, payload, opts = args
            try:
                sent = self._send(dst_nid, dst_locs, nh, payload, None, opts, now, may_wait=False)
            except (TypeError, ValueError, OverflowError, AttributeError, struct.error):
                self.counters["bad_send"] += 1
                continue
            if sent:
                self.counters["route_waited"] += 1
            actions.extend(sent)
        self._route_wait = still
        return actions

    def _expire_waiting(self, now: int) -> None:
        wait = self._route_wait
        while wait and wait[0][0] <= now:
            wait.popleft()
            self.counters["no_route"] += 1

    def _oversize(self, dst_nid: int, size: int) -> list:
        self.counters["oversize"] += 1
        return [Refused("oversize", dst_nid, size)]

    # --- sessions and timers -------------------------------------------------------

    def _touch_session(self, key: tuple[int, int], now: int, stamped: bool = False) -> SessionsChanged | None:
        fresh, new = self.sessions_table.touch(key, now, stamped)
        if fresh:
            self._due(now + self.sessions_table.lifetime_ms)
        return _SESSIONS_CHANGED if new else None

    def on_timer(self, now: int) -> list:
        """Expire sessions (SessionsChanged if any went) and learned routes: each table
        gives up what is due from its front, so this costs what expires."""
        gone, next_session = self.sessions_table.expire(now)
        next_route = self.table.expire(now)
        self._expire_waiting(now)
        released = self._release_due(now) if self._held else []
        next_wait = self._route_wait[0][0] if self._route_wait else None
        next_hold = min((r for r, _q in self._held.values()), default=None)
        deadlines = [d for d in (next_session, next_route, next_wait, next_hold) if d is not None]
        self._deadline = min(deadlines) if deadlines else None
        return released + [_SESSIONS_CHANGED] if gone else released

    def next_deadline(self) -> int | None:
        """When on_timer should run next (may be early: on_timer then finds nothing)."""
        return self._deadline

    def sessions(self, now: int) -> list[tuple[int, int, int]]:
        return self.sessions_table.active(now)

    def session_keys(self) -> list[list[int]]:
        """[[loc, nid], ...] sorted: what state.sessions carries (O(table): on publication only)."""
        return self.sessions_table.keys()

    def routes(self, now: int) -> list[tuple[int, int, int | None]]:
        return self.table.routes(now)
