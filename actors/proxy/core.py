"""The UDP proxy's core: the mapping table, its rules, and what to do with each datagram.

PROTOCOL.md "UDP proxy": a mapping LOCAL_PORT -> (HOST, REMOTE_PORT) sends a datagram
that reached the proxy port from local source port LOCAL_PORT over STP from port
LOCAL_PORT to HOST:REMOTE_PORT, and hands an STP segment for port LOCAL_PORT to the
local UDP port LOCAL_PORT. STP ports are the UDP ports, 1 to 1.

Who may use a mapping (issue 11):
- into the overlay: only datagrams from a loopback source (127.0.0.0/8, ::1, or either
  v4-mapped), or, when the proxy is bound to an address that is not loopback (nor a
  wildcard), from that very address (this host). Anything else is `from_foreign_source`.
- out of the overlay: a segment for LOCAL_PORT is delivered only if it comes from the
  NID that HOST resolves to now (the host replica; a new NID for the name replaces the
  old one at once) and from STP port REMOTE_PORT (where the remote's service, or its own
  proxy mapping, sends from). While HOST is not discovered nothing can be checked, so
  nothing is delivered (fail closed). A mapping made with any_remote (`ilnp-map
  --any-remote`, for servers) delivers from every NID and port; its own datagrams still
  go to HOST:REMOTE_PORT only.

Pure: no sockets, no clock. Hostnames resolve through a HostReplica; the (nid, locators,
STP header) of every mapping is worked out once per host-table change or mapping change,
so a datagram costs a dict lookup, plus one for its source address's remembered verdict.
Bad commands raise MappingError (one line); bad datagrams are counted and dropped, never
raised.

Counters (drops unless said otherwise):
  oversize      a local datagram larger than the largest STP payload (mtu - 40 - 4)
  unmapped      a local datagram from a source port no mapping has
  host_unknown  a mapping's host is not (yet) discovered
  from_foreign_source  a local datagram from an address that is not loopback (nor the
                the bind address's own host); checked before anything else
  stp_unmapped  an STP segment for a port no mapping has (e.g. just unmapped)
  stp_malformed an STP segment shorter than its header
  from_unmapped_remote   an STP segment for a mapped port from another NID than the
                mapping's host's, or from another STP port than its REMOTE_PORT
  from_unresolved_remote an STP segment for a mapped port whose host is not (yet)
                discovered (nothing to check the source against)
  bad_saved     an unusable entry in the saved mappings
  to_overlay, to_local   datagrams passed on (not drops)
"""
from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

from ..proto.addr import format64
from ..proto.frames import TxItem
from ..proto.ilnp import HEADER_LEN as ILNP_HEADER_LEN
from ..proto.numbers import NH_STP
from ..proto.stp import HEADER_LEN as STP_HEADER_LEN
from ..proto.stp import StpError, decode, encode
from ..stp.replica import HostReplica

SAVED_VERSION = 1
SOURCE_CACHE = 1024        # source addresses whose verdict is remembered (then forgotten at once)


class MappingError(ValueError):
    """A mapping command that cannot be done (bad port or host, conflict): one line."""


@dataclass(frozen=True, slots=True)
class Mapping:
    local_port: int
    host: str
    remote_port: int
    any_remote: bool = False   # deliver from every overlay host and port, not only host:remote_port

    def as_dict(self) -> dict:
        return {"local_port": self.local_port, "remote_host": self.host, "remote_port": self.remote_port,
                "any_remote": self.any_remote}

    def __str__(self) -> str:
        return f"{self.local_port} -> {self.host}:{self.remote_port}{' (any remote)' if self.any_remote else ''}"


@dataclass(frozen=True, slots=True)
class SendStp:
    """Send `segment` (a whole STP segment) over the overlay to NID `nid` at `locs`."""
    nid: int
    locs: list
    segment: bytes

    def tx_item(self) -> TxItem:
        return TxItem(self.nid, self.locs, NH_STP, self.segment)


@dataclass(frozen=True, slots=True)
class DeliverLocal:
    """Send `data` from the proxy port to the local UDP port `port`."""
    port: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Dropped:
    """A datagram dropped for a reason worth a (rate-limited) log line.

    Local datagrams ("oversize", "unmapped", "host_unknown", "from_foreign_source"): port
    is their source port, source (for the last) their source address. STP segments
    ("from_unmapped_remote", "from_unresolved_remote"): port is the mapped port they
    were for, source "[nid]:stp_port" where they came from."""
    reason: str
    port: int
    size: int
    source: str = ""


def check_port(value, what: str) -> int:
    """A port number 1-65535 (0 is not a port an application sends from or to)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise MappingError(f"bad {what} {value!r}: must be 1-65535")
    return value


def check_host(value) -> str:
    """A hostname as discovery carries it (the rule of the node config's hostname)."""
    if not isinstance(value, str) or not 0 < len(value.encode()) <= 255 or not value.isprintable():
        raise MappingError(f"bad remote host {value!r}: must be 1-255 printable characters")
    return value


def check_flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise MappingError(f"bad {what} {value!r}: must be true or false")
    return value


def check_saved(saved) -> None:
    """The shape of proxy-mappings.json (what saved() writes); ValueError: the reason.
    Files written before `any_remote` existed have none (false)."""
    if not isinstance(saved, dict) or saved.get("version") != SAVED_VERSION:
        raise ValueError(f"not an object with \"version\": {SAVED_VERSION}")
    if not isinstance(saved.get("mappings"), list):
        raise ValueError("mappings: not a list")
    seen = set()
    for entry in saved["mappings"]:
        if not isinstance(entry, dict):
            raise ValueError(f"mapping {entry!r:.60} is not an object")
        port = check_port(entry.get("local_port"), "local port")
        check_host(entry.get("remote_host"))
        check_port(entry.get("remote_port"), "remote port")
        check_flag(entry.get("any_remote", False), "any_remote")
        if port in seen:
            raise ValueError(f"local port {port} is mapped twice")
        seen.add(port)


def _ip(text: str):
    """An address as ipaddress sees it, v4-mapped IPv6 as the IPv4 it carries; None if not one."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def local_host_ip(bind: str):
    """The one non-loopback address the proxy also accepts datagrams from: its bind address
    when that is a specific address of this host; None for loopback or a wildcard."""
    ip = _ip(bind)
    return None if ip is None or ip.is_loopback or ip.is_unspecified else ip


def max_payload(mtu: int) -> int:
    """The largest datagram one STP segment carries: mtu - ILNPv6 header - STP header."""
    return mtu - ILNP_HEADER_LEN - STP_HEADER_LEN


class ProxyCore:
    def __init__(self, proxy_port: int, mtu: int = 1440, bind: str = "127.0.0.1"):
        """bind: the address the proxy socket is bound to (an IP address)."""
        self.proxy_port = proxy_port
        self.max_payload = max_payload(mtu)
        self._bind_ip = local_host_ip(bind)
        self._source_ok: dict[str, bool] = {}   # source address -> may it send (bounded)
        self.counters: Counter = Counter()
        self.hosts = HostReplica()
        self._maps: dict[int, Mapping] = {}
        # local port -> (nid, locs, STP header) or None while the host is unknown
        self._routes: dict[int, tuple[int, list, bytes] | None] = {}

    # ---- the table ----------------------------------------------------------
    def get(self, local_port: int) -> Mapping | None:
        return self._maps.get(local_port)

    def mappings(self) -> list[Mapping]:
        return [self._maps[p] for p in sorted(self._maps)]

    def ports(self) -> list[int]:
        return sorted(self._maps)

    def resolved(self, local_port: int) -> bool:
        return self._routes.get(local_port) is not None

    def check_map(self, local_port, host, remote_port, replace: bool = False,
                  any_remote: bool = False) -> Mapping:
        """The mapping a `map` command asks for, checked against the rules (no change yet).

        Mapping a port again to the same place is fine; to another place, or with the
        other any_remote setting, needs `replace`."""
        local_port = check_port(local_port, "local port")
        host = check_host(host)
        remote_port = check_port(remote_port, "remote port")
        any_remote = check_flag(any_remote, "any_remote")
        if local_port == self.proxy_port:
            raise MappingError(f"local port {local_port} is the proxy port itself")
        wanted = Mapping(local_port, host, remote_port, any_remote)
        old = self._maps.get(local_port)
        if old is not None and old != wanted and not replace:
            flag = " with --any-remote" if old.any_remote else \
                " without --any-remote" if any_remote and (old.host, old.remote_port) == (host, remote_port) else ""
            raise MappingError(f"local port {local_port} is already mapped to {old.host}:{old.remote_port}{flag}"
                               f" (replace it explicitly: ilnp-map --replace)")
        return wanted

    def put(self, mapping: Mapping) -> Mapping | None:
        """Add or replace a checked mapping; returns the one it replaced."""
        old = self._maps.get(mapping.local_port)
        self._maps[mapping.local_port] = mapping
        self._routes[mapping.local_port] = self._route(mapping)
        return old

    def remove(self, local_port) -> Mapping:
        local_port = check_port(local_port, "local port")
        old = self._maps.pop(local_port, None)
        if old is None:
            raise MappingError(f"local port {local_port} is not mapped")
        del self._routes[local_port]
        return old

    def load_hosts(self, rows) -> None:
        """A new host table (state.hosts rows): every mapping's route is worked out again."""
        self.hosts.load(rows)
        for port, mapping in self._maps.items():
            self._routes[port] = self._route(mapping)

    def _route(self, mapping: Mapping) -> tuple[int, list, bytes] | None:
        found = self.hosts.resolve(mapping.host)
        if found is None:
            return None
        nid, locs = found
        return nid, locs, encode(mapping.local_port, mapping.remote_port, b"")

    # ---- the data path --------------------------------------------------------
    def source_allowed(self, src_host: str) -> bool:
        """May a datagram from this address go into the overlay? (loopback, or the bind
        address when that is this host's non-loopback address)"""
        ok = self._source_ok.get(src_host)
        if ok is None:
            ip = _ip(src_host)
            ok = ip is not None and (ip.is_loopback or ip == self._bind_ip)
            if len(self._source_ok) >= SOURCE_CACHE:
                self._source_ok.clear()
            self._source_ok[src_host] = ok
        return ok

    def from_local(self, src_host: str, src_port: int, data) -> list:
        """A datagram that reached the proxy port from `src_host` (the address recvfrom
        gives), UDP port `src_port`."""
        size = len(data)
        if not self.source_allowed(src_host):
            self.counters["from_foreign_source"] += 1
            return [Dropped("from_foreign_source", src_port, size, src_host)]
        if size > self.max_payload:
            self.counters["oversize"] += 1
            return [Dropped("oversize", src_port, size)]
        route = self._routes.get(src_port, False)
        if route is False:
            self.counters["unmapped"] += 1
            return [Dropped("unmapped", src_port, size)]
        if route is None:
            self.counters["host_unknown"] += 1
            return [Dropped("host_unknown", src_port, size)]
        nid, locs, header = route
        self.counters["to_overlay"] += 1
        return [SendStp(nid, locs, header + data)]

    def from_overlay(self, src_nid: int, segment) -> list:
        """An STP segment the router delivered to one of our ports, from NID `src_nid`
        (the packet's source identifier, RxItem.src_nid)."""
        try:
            src, dst, data = decode(segment)
        except StpError:
            self.counters["stp_malformed"] += 1
            return []
        mapping = self._maps.get(dst)
        if mapping is None:
            self.counters["stp_unmapped"] += 1
            return []
        if not mapping.any_remote:
            route = self._routes[dst]
            if route is None:
                return self._refuse("from_unresolved_remote", dst, src_nid, src, data)
            if src_nid != route[0] or src != mapping.remote_port:
                return self._refuse("from_unmapped_remote", dst, src_nid, src, data)
        self.counters["to_local"] += 1
        return [DeliverLocal(dst, data)]

    def _refuse(self, reason: str, port: int, src_nid, src_port: int, data) -> list:
        self.counters[reason] += 1
        nid = format64(src_nid) if isinstance(src_nid, int) and 0 <= src_nid < 1 << 64 else repr(src_nid)
        return [Dropped(reason, port, len(data), f"[{nid}]:{src_port}")]

    # ---- persistence ----------------------------------------------------------
    def saved(self) -> dict:
        """What goes to disk (JSON-able)."""
        return {"version": SAVED_VERSION, "mappings": [m.as_dict() for m in self.mappings()]}

    def restore(self, saved) -> list[Mapping]:
        """Put back what saved() gave (after a restart); unusable entries are counted and skipped."""
        if not isinstance(saved, dict) or saved.get("version") != SAVED_VERSION \
                or not isinstance(saved.get("mappings"), list):
            self.counters["bad_saved"] += 1
            return []
        restored = []
        for entry in saved["mappings"]:
            try:
                mapping = self.check_map(entry["local_port"], entry["remote_host"], entry["remote_port"],
                                         any_remote=entry.get("any_remote", False))  # absent: an older file
            except (MappingError, KeyError, TypeError, AttributeError):
                self.counters["bad_saved"] += 1
                continue
            if mapping.local_port in self._maps:
                self.counters["bad_saved"] += 1  # a second entry for one port: the first wins
                continue
            self.put(mapping)
            restored.append(mapping)
        return restored
