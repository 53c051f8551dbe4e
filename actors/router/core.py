"""The router's protocol core: forwarding, backwards learning, sessions, STP ports, [ext] nonces.

Pure: no I/O, no clock (`now` is int ms). Rules: PROTOCOL.md "Forwarding", "Locator update"
[ext] and DESIGN.md "Who owns what", "Arrival rule". Malformed input is counted, never raised.

Counters (drops unless said otherwise):
  own            our own transmission looped back by the underlay (silent)
  echo           a copy of a packet we forwarded or flooded, looped back by the underlay
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
  no_route, oversize, via_not_joined, bad_send     send refusals
  delivered, forwarded, flooded, sent, opts_dropped   (not drops)
"""
from __future__ import annotations

import os
import struct
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable

from actors.addr import ALL_NODES
from actors.router.wire import (
    HEADER_LEN, NH_DESTOPTS, NH_DISCOVERY, NH_LOCATOR_UPDATE, NH_STP, NONCE_LENGTHS,
    WireError, decode_destopts, encode, encode_destopts, set_hop_limit, unpack_header,
)

EPHEMERAL_FIRST = 49152
EPHEMERAL_LAST = 65535
_SENDABLE = frozenset((NH_STP, NH_DISCOVERY, NH_LOCATOR_UPDATE))


@dataclass(frozen=True, slots=True)
class Transmit:
    out_loc: int
    datagram: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    next_header: int
    port: int | None  # STP destination port for next header 42, else None
    item: list  # [src_loc, src_nid, dst_loc, dst_nid, arrival_loc, payload, opts]


@dataclass(frozen=True, slots=True)
class SessionsChanged:
    sessions: list  # [[loc, nid], ...] every active session, sorted


@dataclass(frozen=True, slots=True)
class Refused:
    """A send refused for a reason the sender should hear about (only "oversize")."""
    reason: str
    dst_nid: int
    size: int


class BindError(ValueError):
    """A port that cannot be bound (in use by a live owner, out of range, none free)."""


class RouterCore:
    def __init__(self, nid: int, hop_limit: int = 3, mtu: int = 1440,
                 route_lifetime_ms: int = 30000, session_lifetime_ms: int = 30000,
                 nonce_length: int = 12, rng_bytes: Callable[[int], bytes] = os.urandom,
                 nonce_packets: int = 3,
                 is_owner_alive: Callable[[Any], bool] | None = None,
                 echo_window_ms: int = 500):
        if nonce_length not in NONCE_LENGTHS:
            raise ValueError(f"nonce_length must be 4 or 12, not {nonce_length}")
        if not 0 <= hop_limit <= 255:
            raise ValueError(f"hop_limit {hop_limit} is not 0-255")
        if mtu < HEADER_LEN:
            raise ValueError(f"mtu {mtu} is smaller than the 40-byte header")
        self.nid = nid
        self.hop_limit = hop_limit
        self.mtu = mtu
        self.route_lifetime_ms = route_lifetime_ms
        self.session_lifetime_ms = session_lifetime_ms
        self.nonce_length = nonce_length
        self.nonce_packets = nonce_packets
        self._rng_bytes = rng_bytes
        self._is_owner_alive = is_owner_alive or (lambda owner: True)
        self.counters: Counter = Counter()

        self._joined: frozenset[int] = frozenset()   # interfaces, handoff ones included
        self._leaving: frozenset[int] = frozenset()
        self._current: frozenset[int] = frozenset()   # joined and not being left
        self._flood_to: tuple[int, ...] = ()          # the same, in a fixed order
        self._route_iface: dict[int, int] = {}        # learned: locator -> interface
        self._route_expires: dict[int, int] = {}      # learned: locator -> expiry ms
        self._sessions: dict[tuple[int, int], int] = {}   # (loc, nid) -> last packet ms
        self._stamped: dict[tuple[int, int], int] = {}    # (loc, nid) -> nonces sent this session
        self._ext: set[int] = set()                   # NIDs that sent version 6
        self._local_nonce: dict[int, bytes] = {}      # peer NID -> our nonce towards it
        self._remote_nonce: dict[int, bytes] = {}     # peer NID -> its nonce, first one seen
        self._ports: dict[int, Any] = {}              # STP port -> owner
        self._next_ephemeral = EPHEMERAL_FIRST
        self._deadline: int | None = None             # lower bound of the next expiry
        # Forwarded/flooded packets keep their sender's NID, so the NID test cannot spot
        # them when multicast loopback brings them back: remember their hashes briefly.
        self.echo_window_ms = echo_window_ms
        self._echo: dict[int, int] = {}               # hash(datagram) -> expiry ms
        self._echo_order: deque = deque()             # (expiry, hash), oldest first

    # --- locators ------------------------------------------------------------------

    def set_locators(self, joined: list[int], leaving: list[int], now: int) -> list:
        """`joined` includes the locators in handoff; `leaving` is the handoff subset.

        Learned routes through an interface no longer joined are dropped, and so are
        learned routes for locators now joined (they route to themselves)."""
        self._joined = frozenset(joined)
        self._leaving = self._joined.intersection(leaving)
        self._current = self._joined - self._leaving
        self._flood_to = tuple(sorted(self._current))
        for loc, iface in list(self._route_iface.items()):
            if iface not in self._joined or loc in self._current:
                del self._route_iface[loc]
                del self._route_expires[loc]
        return []

    def route_hint(self, locs, via: int, now: int) -> None:
        """An accepted locator update arrived on `via`: its new locators are reachable
        there (the ack goes that way too), before any data from them has taught us so.
        Only for locators we have no live route for."""
        if via not in self._current:
            return
        for loc in locs:
            if loc in self._joined or loc == ALL_NODES:
                continue
            if loc in self._route_iface and self._route_expires[loc] > now:
                continue
            self._learn(loc, via, now)

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
        if self._echo and self._echo.get(hash(datagram), now) > now:
            self.counters["echo"] += 1
            return []
        if vtf >> 28 == 6:
            self._ext.add(src_nid)
        joined = self._joined
        # Learn also source locators we are only leaving: once the handoff ends we need
        # a route to them (the peer may still be there), not a gap until it speaks again.
        if (src_loc not in self._current and src_loc != arrival_loc and arrival_loc in joined
                and src_loc != ALL_NODES):
            self._learn(src_loc, arrival_loc, now)
        if dst_nid == self.nid or dst_loc == ALL_NODES:
            return self._arrive(arrival_loc, datagram, now, nh, hop,
                                src_loc, src_nid, dst_loc, dst_nid)
        return self._forward(arrival_loc, datagram, now, hop, dst_loc)

    def _learn(self, src_loc: int, iface: int, now: int) -> None:
        if iface in self._leaving:
            # Don't let the network we are leaving steal a live route via one we keep.
            current = self._route_iface.get(src_loc)
            if (current is not None and current not in self._leaving
                    and self._route_expires[src_loc] > now):
                return
        expires = now + self.route_lifetime_ms
        self._route_iface[src_loc] = iface
        self._route_expires[src_loc] = expires
        if self._deadline is None or expires < self._deadline:
            self._deadline = expires

    def _arrive(self, arrival_loc, datagram, now, nh, hop, src_loc, src_nid, dst_loc, dst_nid):
        """A packet for us: our NID, or ALL_NODES."""
        if dst_loc != arrival_loc and dst_loc in self._joined:
            self.counters["dup_arrival"] += 1  # its own copy arrives on dst_loc
            return []
        payload = datagram[HEADER_LEN:]
        opts = None
        if nh == NH_DESTOPTS:
            try:
                nh, nonce, seq, payload = decode_destopts(payload)
            except WireError:
                self.counters["bad_options"] += 1
                return []
            opts = self._check_nonce(src_nid, nonce, seq)
        elif nh == NH_LOCATOR_UPDATE:
            # A missing nonce from a peer we hold a nonce for is a wrong one.
            opts = {"nonce": None, "seq": None,
                    "nonce_ok": False if src_nid in self._remote_nonce else None}

        port = None
        if nh == NH_STP:
            if len(payload) < 4:
                self.counters["stp_malformed"] += 1
                return []
            port = (payload[2] << 8) | payload[3]
            if port not in self._ports:
                self.counters["stp_unbound"] += 1
                return []
        elif nh != NH_DISCOVERY and nh != NH_LOCATOR_UPDATE:
            self.counters["unknown_nh"] += 1
            return []

        self.counters["delivered"] += 1
        actions = [Deliver(nh, port, [src_loc, src_nid, dst_loc, dst_nid, arrival_loc, payload, opts])]
        if dst_loc == ALL_NODES:
            if nh == NH_DISCOVERY and hop > 0 and arrival_loc in self._current:
                out = set_hop_limit(datagram, hop - 1)
                self._remember_echo(out, now)
                for loc in self._flood_to:
                    if loc != arrival_loc:
                        actions.append(Transmit(loc, out))
                        self.counters["flooded"] += 1
        elif nh != NH_DISCOVERY:
            changed = self._touch_session(src_loc, src_nid, now)
            if changed is not None:
                actions.append(changed)
        return actions

    def _check_nonce(self, src_nid: int, nonce: bytes | None, seq: int | None) -> dict:
        known = self._remote_nonce.get(src_nid)
        if nonce is None:
            ok = None if known is None else False
        elif known is None:
            self._remote_nonce[src_nid] = nonce  # first nonce seen from this NID: learn it
            ok = True
        else:
            ok = nonce == known
        return {"nonce": nonce, "seq": seq, "nonce_ok": ok}

    def _forward(self, arrival_loc, datagram, now, hop, dst_loc):
        """Not for us: forward towards dst_loc if it is reachable through another interface."""
        if dst_loc == arrival_loc:
            self.counters["not_ours"] += 1
            return []
        iface = self._route(dst_loc, now)
        if iface is None:
            self.counters["fwd_no_route"] += 1
            return []
        if iface == arrival_loc:
            self.counters["fwd_same_link"] += 1
            return []
        if hop == 0:
            self.counters["hop_limit"] += 1
            return []
        self.counters["forwarded"] += 1
        out = set_hop_limit(datagram, hop - 1)
        self._remember_echo(out, now)
        return [Transmit(iface, out)]

    def _remember_echo(self, datagram: bytes, now: int) -> None:
        if self.echo_window_ms <= 0:
            return
        expires = now + self.echo_window_ms
        key = hash(datagram)
        self._echo[key] = expires
        order = self._echo_order
        order.append((expires, key))
        while order[0][0] <= now:
            old_expires, old_key = order.popleft()
            if self._echo.get(old_key) == old_expires:
                del self._echo[old_key]

    def _route(self, loc: int, now: int) -> int | None:
        if loc in self._joined:
            return loc
        iface = self._route_iface.get(loc)
        if iface is not None and self._route_expires[loc] > now:
            return iface
        return None

    # --- send ----------------------------------------------------------------------

    def send(self, dst_nid: int, dst_locs: list[int], next_header: int, payload: bytes,
             via: int | None = None, opts: dict | None = None, now: int = 0) -> list:
        """An upper layer's packet (an `ilnp.tx` item). via=None: the first destination
        locator we have a route for; via=X: out on interface X to dst_locs[0]."""
        try:
            return self._send(dst_nid, dst_locs, next_header, payload, via, opts, now)
        except (TypeError, ValueError, OverflowError, AttributeError, struct.error):
            self.counters["bad_send"] += 1
            return []

    def _send(self, dst_nid, dst_locs, next_header, payload, via, opts, now):
        if next_header not in _SENDABLE or not isinstance(payload, (bytes, bytearray)):
            self.counters["bad_send"] += 1
            return []
        if via is None:
            for dst_loc in dst_locs:
                out_loc = self._route(dst_loc, now)
                if out_loc is not None:
                    break
            else:
                self.counters["no_route"] += 1
                return []
        else:
            if via not in self._joined:
                self.counters["via_not_joined"] += 1
                return []
            if not dst_locs:
                self.counters["no_route"] += 1
                return []
            out_loc, dst_loc = via, dst_locs[0]
        if HEADER_LEN + len(payload) > self.mtu:
            return self._oversize(dst_nid, HEADER_LEN + len(payload))

        unicast = dst_loc != ALL_NODES and next_header != NH_DISCOVERY
        key = (dst_loc, dst_nid)
        fresh = True
        if unicast:
            last = self._sessions.get(key)
            fresh = last is None or now - last >= self.session_lifetime_ms
        stamp = False
        if dst_nid in self._ext:
            nonce = None
            if next_header == NH_LOCATOR_UPDATE or (
                    unicast and (0 if fresh else self._stamped.get(key, 0)) < self.nonce_packets):
                nonce = self._local_nonce.get(dst_nid)
                if nonce is None:
                    nonce = self._local_nonce[dst_nid] = bytes(self._rng_bytes(self.nonce_length))
                stamp = unicast
            seq = opts.get("seq") if opts else None
            if nonce is not None or seq is not None:
                options = encode_destopts(next_header, nonce, seq)
                if (HEADER_LEN + len(options) + len(payload) > self.mtu
                        and next_header != NH_LOCATOR_UPDATE):
                    # A full-size data packet has no room for the nonce: send it plain
                    # (a data packet is never refused for an option); a later, smaller
                    # packet or the next locator update carries the nonce.
                    self.counters["nonce_no_room"] += 1
                    stamp = False
                else:
                    payload = options + payload
                    next_header = NH_DESTOPTS
                    if HEADER_LEN + len(payload) > self.mtu:
                        return self._oversize(dst_nid, HEADER_LEN + len(payload))
        elif opts:
            self.counters["opts_dropped"] += 1  # an original node drops next header 60
        datagram = encode(out_loc, self.nid, dst_loc, dst_nid, next_header, payload, self.hop_limit)

        actions = [Transmit(out_loc, datagram)]
        self.counters["sent"] += 1
        if unicast:
            if fresh:
                self._stamped.pop(key, None)
            if stamp:
                self._stamped[key] = self._stamped.get(key, 0) + 1
            changed = self._touch_session(dst_loc, dst_nid, now)
            if changed is not None:
                actions.append(changed)
        return actions

    def _oversize(self, dst_nid: int, size: int) -> list:
        self.counters["oversize"] += 1
        return [Refused("oversize", dst_nid, size)]

    # --- sessions and timers -------------------------------------------------------

    def _touch_session(self, loc: int, nid: int, now: int) -> SessionsChanged | None:
        key = (loc, nid)
        last = self._sessions.get(key)
        self._sessions[key] = now
        if last is not None and now - last < self.session_lifetime_ms:
            return None
        if last is not None:
            # Expired but not yet collected by on_timer: a new session, same published set.
            self._stamped.pop(key, None)
        expires = now + self.session_lifetime_ms
        if self._deadline is None or expires < self._deadline:
            self._deadline = expires
        return None if last is not None else SessionsChanged(self._session_list())

    def _session_list(self) -> list:
        return sorted([loc, nid] for loc, nid in self._sessions)

    def on_timer(self, now: int) -> list:
        """Expire sessions (SessionsChanged if any went) and learned routes."""
        lifetime = self.session_lifetime_ms
        gone = [key for key, last in self._sessions.items() if now - last >= lifetime]
        for key in gone:
            del self._sessions[key]
            self._stamped.pop(key, None)
        for loc in [loc for loc, exp in self._route_expires.items() if exp <= now]:
            del self._route_expires[loc]
            del self._route_iface[loc]
        deadlines = [last + lifetime for last in self._sessions.values()]
        deadlines.extend(self._route_expires.values())
        self._deadline = min(deadlines) if deadlines else None
        return [SessionsChanged(self._session_list())] if gone else []

    def next_deadline(self) -> int | None:
        """When on_timer should run next (may be early: on_timer then finds nothing)."""
        return self._deadline

    def sessions(self, now: int) -> list[tuple[int, int, int]]:
        lifetime = self.session_lifetime_ms
        return sorted((loc, nid, last) for (loc, nid), last in self._sessions.items()
                      if now - last < lifetime)

    def routes(self, now: int) -> list[tuple[int, int, int | None]]:
        """(locator, interface, expiry ms or None): joined locators first, then learned."""
        joined = [(loc, loc, None) for loc in sorted(self._joined)]
        learned = sorted((loc, iface, self._route_expires[loc])
                         for loc, iface in self._route_iface.items()
                         if self._route_expires[loc] > now)
        return joined + learned

    def peer_state(self) -> dict:
        """What a restarted router must remember of its peers: who speaks [ext], our
        nonce towards each and theirs (else peers refuse our updates, and we theirs)."""
        return {"ext": sorted(self._ext),
                "local": {str(n): v.hex() for n, v in self._local_nonce.items()},
                "remote": {str(n): v.hex() for n, v in self._remote_nonce.items()}}

    def peer_state_size(self) -> int:
        """Changes whenever peer_state() does (entries are only ever added)."""
        return len(self._ext) + len(self._local_nonce) + len(self._remote_nonce)

    def restore_peer_state(self, state: dict) -> None:
        """Load peer_state() of a previous incarnation; malformed entries are skipped."""
        try:
            self._ext.update(int(n) for n in state.get("ext", ()))
            for table, target in (("local", self._local_nonce), ("remote", self._remote_nonce)):
                for nid, value in state.get(table, {}).items():
                    target[int(nid)] = bytes.fromhex(value)
        except (TypeError, ValueError, AttributeError):
            self.counters["bad_peer_state"] += 1

    def is_ext(self, nid: int) -> bool:
        """Has this NID shown that it speaks [ext] (sent version 6)?"""
        return nid in self._ext

    # --- STP port registry ---------------------------------------------------------

    def bind(self, port: int, owner: Any) -> int:
        """Bind an STP port to an owner (e.g. a pid); port 0 picks a free ephemeral port.

        A port held by an owner that is no longer alive is reclaimed. Binding a port the
        same owner already holds is allowed (idempotent). Returns the port."""
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise BindError(f"port {port!r} is not 0-65535")
        if port == 0:
            return self._bind_ephemeral(owner)
        holder = self._ports.get(port, owner)
        if holder != owner:
            if self._is_owner_alive(holder):
                raise BindError(f"port {port} is already bound by {holder}")
            self.counters["stale_reclaimed"] += 1
        self._ports[port] = owner
        return port

    def _bind_ephemeral(self, owner: Any) -> int:
        size = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1
        start = self._next_ephemeral - EPHEMERAL_FIRST
        for stale_ok in (False, True):  # prefer a free port, then a dead owner's
            for i in range(size):
                port = EPHEMERAL_FIRST + (start + i) % size
                holder = self._ports.get(port)
                if holder is None or (stale_ok and not self._is_owner_alive(holder)):
                    if holder is not None:
                        self.counters["stale_reclaimed"] += 1
                    self._ports[port] = owner
                    self._next_ephemeral = EPHEMERAL_FIRST + (port + 1 - EPHEMERAL_FIRST) % size
                    return port
        raise BindError("no free ephemeral port (49152-65535)")

    def unbind(self, port: int) -> bool:
        """Release a port; False if it was not bound."""
        return self._ports.pop(port, None) is not None

    def unbind_owner(self, owner: Any) -> list[int]:
        """Release every port of an owner (it exited); returns them."""
        ports = sorted(p for p, o in self._ports.items() if o == owner)
        for port in ports:
            del self._ports[port]
        return ports

    def bindings(self) -> dict[int, Any]:
        """port -> owner, a copy."""
        return dict(self._ports)
