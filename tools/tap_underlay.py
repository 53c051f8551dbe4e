"""Where a node's datagrams travel on its underlay, locator by locator, for the tap's
pcap (ilnp-tap --pcap): the IP addresses and ports a datagram has on the wire.

The rules are the link's (actors/link: each underlay's group or address), read from
the node's config the way the link reads it: a locator listed under
[underlay.locators."<loc>"] rides its own underlay, every other one the default
([underlay]). What the bus does not say is written as the unspecified address: who
sent a datagram we received (link.rx carries its arrival locator only).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from actors.config import ConfigError, NodeConfig, UnderlaySpec
from actors.link.ipv4_multicast import ipv4_multicast_group
from actors.link.ipv6_multicast import interface_addresses, multicast_group
from actors.link.sockets import ipv4_of

UNKNOWN_V6, UNKNOWN_V4 = "::", "0.0.0.0"
MULTICAST_HOPS = 1   # both multicast underlays send with hop limit / TTL 1
UNICAST_HOPS = 64    # the kernel's default for unicast and broadcast
MAX_ROUTES = 4096    # locators come from the bus: the cache stays bounded


@dataclass(frozen=True)
class Route:
    """One locator on the underlay. A datagram we send is each of `sends`: (our
    address, destination, destination port): its group, the broadcast address, or each
    unicast peer. One we receive came from `sender` (unknown: unspecified) to
    `arrival` (the group, the broadcast address, ours) on `port`."""
    sends: tuple[tuple[str, str, int], ...]
    sender: str
    arrival: str
    port: int
    hop_limit: int


def _ipv6_addresses(interface: str) -> list[str]:
    return sorted(interface_addresses(interface))


def _ipv4_addresses(interface: str, spec: UnderlaySpec, config: NodeConfig) -> tuple[str, str] | None:
    try:
        return ipv4_of(spec, config)
    except ConfigError:
        return None


class UnderlayView:
    """route(loc): how locator `loc` travels. The interfaces' addresses are looked up
    once each (ipv6_addresses, ipv4_addresses: the host's, unless a test gives others)."""

    def __init__(self, config: NodeConfig, ipv6_addresses=_ipv6_addresses, ipv4_addresses=_ipv4_addresses):
        self.config = config
        self._ipv6_addresses, self._ipv4_addresses = ipv6_addresses, ipv4_addresses
        self.tag = config.group_tag
        self._by_locator: dict[int, UnderlaySpec] = {}
        for spec in config.underlays:
            for loc in spec.locators:
                self._by_locator[loc] = spec
        self._default = UnderlaySpec(config.underlay_kind, config.interface, config.port, "underlay.interface",
                                     default=True)
        self._routes: dict[int, Route] = {}
        self._ipv4: dict[str, tuple[str, str]] = {}
        self._ipv6: dict[str, list[str]] = {}

    def route(self, loc: int) -> Route:
        found = self._routes.get(loc)
        if found is None:
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            found = self._routes[loc] = self._route(loc, self._by_locator.get(loc, self._default))
        return found

    def _route(self, loc: int, spec: UnderlaySpec) -> Route:
        port = spec.port
        if spec.kind == "ipv4-multicast":
            group = ipv4_multicast_group(loc, self.tag)
            return Route(((self._v4(spec)[0], group, port),), UNKNOWN_V4, group, port, MULTICAST_HOPS)
        if spec.kind == "ipv4-broadcast":
            own, broadcast = self._v4(spec)
            return Route(((own, broadcast, port),), UNKNOWN_V4, broadcast, port, UNICAST_HOPS)
        if spec.kind == "unicast":
            peers = [_plain(host, peer_port) for host, peer_port in dict(spec.peers).get(loc, ())]
            sends = tuple((self._own(spec, host), host, peer_port) for host, peer_port in peers)
            if not sends:
                return Route((), UNKNOWN_V6, self._own(spec, "::"), port, UNICAST_HOPS)
            v4 = ipaddress.ip_address(sends[0][1]).version == 4
            return Route(sends, UNKNOWN_V4 if v4 else UNKNOWN_V6, sends[0][0], port, UNICAST_HOPS)
        group = multicast_group(loc, self.tag)  # ipv6-multicast (and a kind this view does not know)
        return Route(((self._own(spec, group), group, port),), UNKNOWN_V6, group, port, MULTICAST_HOPS)

    def _own(self, spec: UnderlaySpec, towards: str) -> str:
        """Our address on the interface that the kernel would send from to `towards`."""
        if ipaddress.ip_address(towards).version == 4:
            return self._v4(spec)[0]
        found = self._ipv6.get(spec.interface)
        if found is None:
            found = self._ipv6[spec.interface] = list(self._ipv6_addresses(spec.interface))
        link_local = [a for a in found if ipaddress.IPv6Address(a).is_link_local]
        wider = [a for a in found if not ipaddress.IPv6Address(a).is_link_local]
        for address in (link_local + wider) if _link_scoped(towards) else (wider + link_local):
            return address
        return UNKNOWN_V6

    def _v4(self, spec: UnderlaySpec) -> tuple[str, str]:
        """The interface's IPv4 address and broadcast address (unspecified without one)."""
        found = self._ipv4.get(spec.interface)
        if found is None:
            found = self._ipv4_addresses(spec.interface, spec, self.config) or (UNKNOWN_V4, "255.255.255.255")
            self._ipv4[spec.interface] = found
        return found


def _link_scoped(address: str) -> bool:
    """A link-local address or group, or "::" (no destination known)."""
    ip = ipaddress.IPv6Address(address)
    return ip.is_unspecified or ip.is_link_local or (ip.is_multicast and (ip.packed[1] & 0x0F) <= 2)


def _plain(host: str, port: int) -> tuple[str, int]:
    """A peer as the link's dual-stack socket writes it (::ffff:a.b.c.d) as it is on the
    wire (a.b.c.d)."""
    ip = ipaddress.ip_address(host)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped), port
    return str(ip), port
