"""The IPv4 broadcast underlay (PROTOCOL.md "Underlay" [ext]): one locator per
(interface, port), carried by the interface's IPv4 broadcast address.

A broadcast cannot tell locators apart, so the socket carries one locator (the config
refuses a second on the same interface and port; a second join is refused). What is
received is taken as arriving on it when it was sent to the interface's broadcast
address and came in on that interface (IP_PKTINFO): a unicast datagram to the port,
or a broadcast on another interface, is dropped and counted (rx_not_broadcast).
"""
from __future__ import annotations

import errno
import socket
from typing import Any

from ..proto.addr import format64
from .handover import SocketHandover
from .sockets import (DROPS, IN_PKTINFO, IP_MULTICAST_ALL, IP_PKTINFO, SO_RXQ_OVFL, SO_SNDBUFFORCE, bind_to_device,
                      receive_buffer, ifindex_of, ipv4_of, set_buffer)
from .underlay import Underlay

_SOL_IP, _SOL_SOCKET = socket.IPPROTO_IP, socket.SOL_SOCKET


class Ipv4BroadcastUnderlay(SocketHandover, Underlay):
    """Receives on the port (SO_REUSEPORT: nodes on one host share it; broadcasts reach
    every socket) and sends to the broadcast address from a socket bound to the
    interface's address, whose address and port mark our own looped-back broadcasts."""

    kind = "ipv4-broadcast"

    def __init__(self, interface: str, port: int, source: str, broadcast: str,
                 adopted: tuple[socket.socket, socket.socket] | None = None):
        super().__init__()
        self.interface, self.port, self.source, self.broadcast = interface, port, source, broadcast
        self.ifindex = socket.if_nametoindex(interface)
        if adopted is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        else:
            sock, tx = adopted
        sock.setsockopt(_SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(_SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(_SOL_IP, IP_PKTINFO, 1)
        sock.setsockopt(_SOL_IP, IP_MULTICAST_ALL, 0)  # no group's traffic: broadcasts only
        # Bound to its interface: our IPv4 sockets on one port form a SO_REUSEPORT group,
        # and the kernel handed a multicast datagram to one member, not to every socket
        # that joined it (a broadcast socket on lan2 took lan1's multicast: measured in the lab)
        bind_to_device(sock, interface, self.counters)
        self.rcvbuf = receive_buffer(sock)
        if adopted is None:
            sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
        self.sock = sock
        set_buffer(tx, socket.SO_SNDBUF, SO_SNDBUFFORCE)
        tx.setsockopt(_SOL_SOCKET, socket.SO_BROADCAST, 1)
        if adopted is None:
            tx.bind((source, 0))
        self.tx = tx
        self.own = tx.getsockname()
        self.dest = (broadcast, port)
        # IP_PKTINFO of a datagram for us: ipi_ifindex and ipi_addr (spec_dst between them varies)
        self._arrival = IN_PKTINFO.pack(self.ifindex, b"\0" * 4, socket.inet_aton(broadcast))
        self.ancbufsize = socket.CMSG_SPACE(IN_PKTINFO.size) + socket.CMSG_SPACE(DROPS.size)
        self._loc: int | None = None
        self._left: int | None = None  # the last one left: what the router may still send on

    @classmethod
    def from_config(cls, spec, config) -> "Ipv4BroadcastUnderlay":
        source, broadcast = ipv4_of(spec, config)
        return cls(spec.interface, spec.port, source, broadcast)

    # handover (handover.SocketHandover)
    socket_families = (socket.AF_INET, socket.AF_INET)

    def sockets(self) -> list[socket.socket]:
        return [self.sock, self.tx]

    def identity(self) -> dict[str, Any]:
        return {"port": self.port, "ifindex": self.ifindex, "source": self.source, "broadcast": self.broadcast}

    @classmethod
    def expected_identity(cls, spec, config) -> dict[str, Any]:
        source, broadcast = ipv4_of(spec, config)
        return {"port": spec.port, "ifindex": ifindex_of(spec, config), "source": source, "broadcast": broadcast}

    @classmethod
    def refuse_sockets(cls, socks: list[socket.socket], expected: dict[str, Any]) -> str | None:
        if socks[1].getsockname()[0] != expected["source"]:
            return f"send socket on {socks[1].getsockname()[0]}, the interface has {expected['source']}"
        return None

    @classmethod
    def reopen(cls, spec, config, socks: list[socket.socket]) -> "Ipv4BroadcastUnderlay":
        source, broadcast = ipv4_of(spec, config)
        return cls(spec.interface, spec.port, source, broadcast, adopted=(socks[0], socks[1]))

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def joined(self) -> frozenset[int]:
        return frozenset() if self._loc is None else frozenset((self._loc,))

    def join(self, loc: int) -> None:
        if self._loc is not None and self._loc != loc:
            raise OSError(errno.EBUSY, f"ipv4-broadcast on {self.interface} port {self.port} carries"
                                       f" {format64(self._loc)} already (one locator per broadcast port)")
        self._loc = loc

    def leave(self, loc: int) -> None:
        if self._loc == loc:
            self._loc, self._left = None, loc

    def recv_batch(self, limit: int) -> list[tuple[int, bytes]]:
        recvmsg, ancbufsize, counters = self.sock.recvmsg, self.ancbufsize, self.counters
        own, ifindex_bytes, dest_bytes = self.own, self._arrival[:4], self._arrival[8:]
        loc = self._loc
        out = []
        drops = None
        for _ in range(limit):
            try:
                data, anc, _flags, addr = recvmsg(65535, ancbufsize)
            except BlockingIOError:
                break
            ours = False
            for level, kind, cdata in anc:
                if kind == IP_PKTINFO and level == _SOL_IP:
                    ours = cdata[8:12] == dest_bytes and cdata[:4] == ifindex_bytes
                elif kind == SO_RXQ_OVFL and level == _SOL_SOCKET and len(cdata) >= DROPS.size:
                    drops = cdata
            if addr == own:
                counters["rx_own"] += 1  # the loopback of our own broadcast
            elif not ours:
                counters["rx_not_broadcast"] += 1
            elif loc is None:
                counters["rx_not_joined"] += 1
            else:
                out.append((loc, data))
        if drops is not None:
            counters["rx_kernel_drops"] = DROPS.unpack_from(drops)[0]
        return out

    def send(self, loc: int, datagram: bytes) -> bool:
        """Only for the locator it carries (or left a moment ago: the router had not
        heard yet): on this port any other locator's frames would arrive as its."""
        if loc == self._loc:
            self.tx.sendto(datagram, self.dest)
            return True
        if loc == self._left and self._loc is None:
            self.tx.sendto(datagram, self.dest)
        else:
            self.counters["tx_other_locator"] += 1
        return False

    def close(self) -> None:
        self.sock.close()
        self.tx.close()

    def addresses(self) -> dict[int, str]:
        return {} if self._loc is None else {self._loc: f"{self.broadcast}:{self.port}"}
