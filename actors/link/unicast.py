"""The unicast underlay (PROTOCOL.md "Underlay" [ext]): a locator backed by a static
list of peer underlay addresses (IPv4 or IPv6 host:port, from the config).

Each frame on a locator goes to every peer of that locator (the iproxy "send on every
path" approach); a datagram from a peer is taken as arriving on the locator the peer
is listed for. A datagram from any other address is dropped and counted
(rx_unknown_peer): a stranger cannot inject. A peer of a locator not joined now is
counted too (rx_not_joined). Several locators may share the socket (one interface and
port); the config refuses a peer listed for two of them.

One dual-stack IPv6 socket (IPv4 peers are ::ffff:a.b.c.d) sends and receives, so the
source port of what we send is our configured port: the port our peers list for us.
It is bound to its interface (SO_BINDTODEVICE, root): a unicast datagram arriving there
reaches it before any wildcard socket of another underlay on the same port.
"""
from __future__ import annotations

import socket
from typing import Any

from .handover import SocketHandover
from .sockets import (DROPS, IP_MULTICAST_ALL, IPV6_MULTICAST_ALL, SO_RXQ_OVFL, SO_SNDBUFFORCE, bind_to_device,
                      receive_buffer, ifindex_of, set_buffer)
from .underlay import Underlay

_SOL_SOCKET = socket.SOL_SOCKET
Peer = tuple[str, int]


def peer_text(peer: Peer) -> str:
    host, port = peer
    return f"{host[7:]}:{port}" if host.startswith("::ffff:") else f"[{host}]:{port}"


class UnicastUnderlay(SocketHandover, Underlay):
    kind = "unicast"

    def __init__(self, interface: str, port: int, peers: dict[int, tuple[Peer, ...]],
                 adopted: socket.socket | None = None):
        super().__init__()
        self.interface, self.port = interface, port
        self.ifindex = socket.if_nametoindex(interface)
        sock = adopted if adopted is not None else socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        # the port may be another underlay's too, on another interface (a wildcard socket):
        # bound to our device we are the better match for what arrives here
        sock.setsockopt(_SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bind_to_device(sock, interface, self.counters)
        # groups are not ours: IPv6 and IPv4 multicast on the port stay with their underlays
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        self.rcvbuf = receive_buffer(sock)
        set_buffer(sock, socket.SO_SNDBUF, SO_SNDBUFFORCE)
        if adopted is None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        sock.setblocking(False)
        self.sock = sock
        self.ancbufsize = socket.CMSG_SPACE(DROPS.size)
        self._peers = {loc: tuple(listed) for loc, listed in peers.items()}
        self._listed = {peer: loc for loc, listed in self._peers.items() for peer in listed}
        self._live: dict[Peer, int] = {}  # the peers of the joined locators -> their locator

    @classmethod
    def from_config(cls, spec, config) -> "UnicastUnderlay":
        ifindex_of(spec, config)
        return cls(spec.interface, spec.port, dict(spec.peers))

    # handover (handover.SocketHandover): the one socket; adopted when the port and
    # interface fit (the peers come from the config, not from the predecessor)
    socket_families = (socket.AF_INET6,)

    def sockets(self) -> list[socket.socket]:
        return [self.sock]

    def identity(self) -> dict[str, Any]:
        return {"port": self.port, "ifindex": self.ifindex}

    @classmethod
    def expected_identity(cls, spec, config) -> dict[str, Any]:
        return {"port": spec.port, "ifindex": ifindex_of(spec, config)}

    @classmethod
    def refuse_sockets(cls, socks: list[socket.socket], expected: dict[str, Any]) -> str | None:
        if socks[0].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
            return "socket is IPv6 only: IPv4 peers would not reach it"
        return None

    @classmethod
    def reopen(cls, spec, config, socks: list[socket.socket]) -> "UnicastUnderlay":
        return cls(spec.interface, spec.port, dict(spec.peers), adopted=socks[0])

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def joined(self) -> frozenset[int]:
        return frozenset(self._live.values())

    def join(self, loc: int) -> None:
        if loc not in self._peers:
            raise OSError(f"unicast on {self.interface} port {self.port} has no peers for this locator")
        for peer in self._peers[loc]:
            self._live[peer] = loc

    def leave(self, loc: int) -> None:
        for peer in self._peers.get(loc, ()):
            self._live.pop(peer, None)

    def recv_batch(self, limit: int) -> list[tuple[int, bytes]]:
        recvmsg, ancbufsize, counters, live = self.sock.recvmsg, self.ancbufsize, self.counters, self._live
        out = []
        drops = None
        for _ in range(limit):
            try:
                data, anc, _flags, addr = recvmsg(65535, ancbufsize)
            except BlockingIOError:
                break
            for level, kind, cdata in anc:
                if kind == SO_RXQ_OVFL and level == _SOL_SOCKET and len(cdata) >= DROPS.size:
                    drops = cdata
            loc = live.get(addr[:2])
            if loc is not None:
                out.append((loc, data))
            elif addr[:2] in self._listed:
                counters["rx_not_joined"] += 1
            else:
                counters["rx_unknown_peer"] += 1  # a stranger: never taken for a peer
        if drops is not None:
            counters["rx_kernel_drops"] = DROPS.unpack_from(drops)[0]
        return out

    def send(self, loc: int, datagram: bytes) -> bool:
        """To every peer of `loc`; one peer the system refuses (unreachable) costs that
        peer only (tx_peer_errors); OSError when none took it."""
        peers = self._peers.get(loc)
        if not peers:
            self.counters["tx_no_peers"] += 1
            return False
        sendto, errors, last = self.sock.sendto, 0, None
        for peer in peers:
            try:
                sendto(datagram, peer)
            except OSError as exc:
                errors, last = errors + 1, exc
        if errors == len(peers):
            raise last
        if errors:
            self.counters["tx_peer_errors"] += errors
        return peers[0] in self._live

    def close(self) -> None:
        self.sock.close()

    def addresses(self) -> dict[int, str]:
        return {loc: " ".join(peer_text(p) for p in self._peers[loc]) for loc in self.joined}
