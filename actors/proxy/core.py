"""The UDP proxy's core: the mapping table, its rules, and what to do with each datagram.

PROTOCOL.md "UDP proxy": a mapping LOCAL_PORT -> (HOST, REMOTE_PORT) sends a datagram
that reached the proxy port from local source port LOCAL_PORT over STP from port
LOCAL_PORT to HOST:REMOTE_PORT, and hands an STP segment for port LOCAL_PORT to the
local UDP port LOCAL_PORT. STP ports are the UDP ports, 1 to 1.

Pure: no sockets, no clock. Hostnames resolve through a HostReplica; the (nid, locators,
STP header) of every mapping is worked out once per host-table change or mapping change,
so a datagram costs one dict lookup. Bad commands raise MappingError (one line); bad
datagrams are counted and dropped, never raised.

Counters (drops unless said otherwise):
  oversize      a local datagram larger than the largest STP payload (mtu - 40 - 4)
  unmapped      a local datagram from a source port no mapping has
  host_unknown  a mapping's host is not (yet) discovered
  stp_unmapped  an STP segment for a port no mapping has (e.g. just unmapped)
  stp_malformed an STP segment shorter than its header
  bad_saved     an unusable entry in the saved mappings
  to_overlay, to_local   datagrams passed on (not drops)
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..proto.frames import TxItem
from ..proto.ilnp import HEADER_LEN as ILNP_HEADER_LEN
from ..proto.numbers import NH_STP
from ..proto.stp import HEADER_LEN as STP_HEADER_LEN
from ..proto.stp import StpError, decode, encode
from ..stp.replica import HostReplica

SAVED_VERSION = 1


class MappingError(ValueError):
    """A mapping command that cannot be done (bad port or host, conflict): one line."""


@dataclass(frozen=True, slots=True)
class Mapping:
    local_port: int
    host: str
    remote_port: int

    def as_dict(self) -> dict:
        return {"local_port": self.local_port, "remote_host": self.host, "remote_port": self.remote_port}

    def __str__(self) -> str:
        return f"{self.local_port} -> {self.host}:{self.remote_port}"


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
    """A local datagram dropped for a reason worth a (rate-limited) log line."""
    reason: str  # "oversize", "unmapped" or "host_unknown"
    port: int
    size: int


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


def max_payload(mtu: int) -> int:
    """The largest datagram one STP segment carries: mtu - ILNPv6 header - STP header."""
    return mtu - ILNP_HEADER_LEN - STP_HEADER_LEN


class ProxyCore:
    def __init__(self, proxy_port: int, mtu: int = 1440):
        self.proxy_port = proxy_port
        self.max_payload = max_payload(mtu)
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

    def check_map(self, local_port, host, remote_port, replace: bool = False) -> Mapping:
        """The mapping a `map` command asks for, checked against the rules (no change yet).

        Mapping a port again to the same place is fine; to another place needs `replace`."""
        local_port = check_port(local_port, "local port")
        host = check_host(host)
        remote_port = check_port(remote_port, "remote port")
        if local_port == self.proxy_port:
            raise MappingError(f"local port {local_port} is the proxy port itself")
        wanted = Mapping(local_port, host, remote_port)
        old = self._maps.get(local_port)
        if old is not None and old != wanted and not replace:
            raise MappingError(f"local port {local_port} is already mapped to {old.host}:{old.remote_port}"
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
    def from_local(self, src_port: int, data) -> list:
        """A datagram that reached the proxy port from local UDP port `src_port`."""
        size = len(data)
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

    def from_overlay(self, segment) -> list:
        """An STP segment the router delivered to one of our ports."""
        try:
            _src, dst, data = decode(segment)
        except StpError:
            self.counters["stp_malformed"] += 1
            return []
        if dst not in self._maps:
            self.counters["stp_unmapped"] += 1
            return []
        self.counters["to_local"] += 1
        return [DeliverLocal(dst, data)]

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
                mapping = self.check_map(entry["local_port"], entry["remote_host"], entry["remote_port"])
            except (MappingError, KeyError, TypeError):
                self.counters["bad_saved"] += 1
                continue
            if mapping.local_port in self._maps:
                self.counters["bad_saved"] += 1  # a second entry for one port: the first wins
                continue
            self.put(mapping)
            restored.append(mapping)
        return restored
