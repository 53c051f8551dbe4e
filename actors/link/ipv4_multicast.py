"""The IPv4 multicast underlay (PROTOCOL.md "Underlay" [ext]): one group per locator.

IPv4 has no room for a 64-bit locator in a group address, so the group is derived:
239.X.Y.Z where X.Y.Z are the first three bytes of SHA-256 over the group tag (2 bytes)
and the locator (8 bytes), big-endian (239/8: administratively scoped). Two locators a
node joins on one socket that map to one group would be indistinguishable: the second
join is refused (join_errors), never guessed. Every node of an overlay uses one UDP
port; TTL 1; the same tag as the IPv6 groups.
"""
from __future__ import annotations

import errno
import hashlib
import socket
import struct
from typing import Any

from ..proto.addr import format64
from .handover import SocketHandover
from .sockets import (DROPS, IP_MULTICAST_ALL, IP_PKTINFO, SO_RXQ_OVFL, SO_SNDBUFFORCE, bind_to_device,
                      receive_buffer, ifindex_of, ipv4_of, join_error_is_joined, set_buffer)
from .underlay import Underlay

_IN_PKTINFO_SIZE = 12
_SOL_IP, _SOL_SOCKET = socket.IPPROTO_IP, socket.SOL_SOCKET


def ipv4_multicast_group(loc: int, tag: int) -> str:
    """The IPv4 multicast group of a locator: 239.X.Y.Z, X.Y.Z = SHA-256(tag, locator)[:3]."""
    digest = hashlib.sha256(struct.pack(">HQ", tag & 0xFFFF, loc)).digest()
    return "239.%d.%d.%d" % tuple(digest[:3])


def _mreqn(group: str, ifindex: int) -> bytes:
    """struct ip_mreqn: the group, no local address, the interface by index."""
    return socket.inet_aton(group) + b"\0\0\0\0" + struct.pack("@i", ifindex)


class Ipv4MulticastUnderlay(SocketHandover, Underlay):
    """Receives with the arrival group (IP_PKTINFO's header destination) and sends to a
    locator's group from a socket bound to the interface's IPv4 address (so the source
    is that address, not one the kernel picks on another interface), whose address and
    port mark our own looped-back datagrams. Shares the port with other nodes on the
    host (SO_REUSEPORT) and sees only the groups it joined (IP_MULTICAST_ALL off)."""

    kind = "ipv4-multicast"

    def __init__(self, interface: str, port: int, tag: int, source: str, loopback: bool = True,
                 adopted: tuple[socket.socket, socket.socket] | None = None):
        super().__init__()
        self.interface, self.port, self.tag, self.source = interface, port, tag, source
        self.ifindex = socket.if_nametoindex(interface)
        if adopted is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        else:
            sock, tx = adopted  # a predecessor's, bound already: its options are set again (idempotent)
        sock.setsockopt(_SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(_SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(_SOL_IP, IP_PKTINFO, 1)
        sock.setsockopt(_SOL_IP, IP_MULTICAST_ALL, 0)
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
        tx.setsockopt(_SOL_IP, socket.IP_MULTICAST_IF, _mreqn("0.0.0.0", self.ifindex))
        tx.setsockopt(_SOL_IP, socket.IP_MULTICAST_TTL, 1)
        tx.setsockopt(_SOL_IP, socket.IP_MULTICAST_LOOP, int(loopback))
        if adopted is None:
            tx.bind((source, 0))
        self.tx = tx
        self.own = tx.getsockname()  # (source, port): what our looped-back datagrams come from
        self.ancbufsize = socket.CMSG_SPACE(_IN_PKTINFO_SIZE) + socket.CMSG_SPACE(DROPS.size)
        self._dest: dict[int, tuple[str, int]] = {}
        self._group_to_loc: dict[bytes, int] = {}

    @classmethod
    def from_config(cls, spec, config) -> "Ipv4MulticastUnderlay":
        source, _broadcast = ipv4_of(spec, config)
        return cls(spec.interface, spec.port, config.group_tag, source, loopback=config.multicast_loop)

    # handover (handover.SocketHandover)
    socket_families = (socket.AF_INET, socket.AF_INET)

    def sockets(self) -> list[socket.socket]:
        return [self.sock, self.tx]

    def identity(self) -> dict[str, Any]:
        return {"port": self.port, "tag": self.tag, "ifindex": self.ifindex, "source": self.source}

    @classmethod
    def expected_identity(cls, spec, config) -> dict[str, Any]:
        return {"port": spec.port, "tag": config.group_tag, "ifindex": ifindex_of(spec, config),
                "source": ipv4_of(spec, config)[0]}

    @classmethod
    def refuse_sockets(cls, socks: list[socket.socket], expected: dict[str, Any]) -> str | None:
        if socks[1].getsockname()[0] != expected["source"]:
            return f"send socket on {socks[1].getsockname()[0]}, the interface has {expected['source']}"
        return None

    @classmethod
    def reopen(cls, spec, config, socks: list[socket.socket]) -> "Ipv4MulticastUnderlay":
        return cls(spec.interface, spec.port, config.group_tag, ipv4_of(spec, config)[0],
                   loopback=config.multicast_loop, adopted=(socks[0], socks[1]))

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def joined(self) -> frozenset[int]:
        return frozenset(self._dest)

    def join(self, loc: int) -> None:
        if loc in self._dest:
            return
        group = ipv4_multicast_group(loc, self.tag)
        packed = socket.inet_aton(group)
        other = self._group_to_loc.get(packed)
        if other is not None:
            raise OSError(errno.EADDRINUSE, f"group {group} is also the group of {format64(other)}, joined already")
        try:
            self.sock.setsockopt(_SOL_IP, socket.IP_ADD_MEMBERSHIP, _mreqn(group, self.ifindex))
        except OSError as exc:
            if not join_error_is_joined(exc):  # joined already (an adopted socket)
                raise
        self._dest[loc] = (group, self.port)
        self._group_to_loc[packed] = loc

    def leave(self, loc: int) -> None:
        dest = self._dest.pop(loc, None)
        if dest is None:
            return
        self._group_to_loc.pop(socket.inet_aton(dest[0]), None)
        try:
            self.sock.setsockopt(_SOL_IP, socket.IP_DROP_MEMBERSHIP, _mreqn(dest[0], self.ifindex))
        except OSError:
            pass

    def recv_batch(self, limit: int) -> list[tuple[int, bytes]]:
        recvmsg, ancbufsize, counters = self.sock.recvmsg, self.ancbufsize, self.counters
        own, group_to_loc = self.own, self._group_to_loc
        out = []
        drops = None
        for _ in range(limit):
            try:
                data, anc, _flags, addr = recvmsg(65535, ancbufsize)
            except BlockingIOError:
                break
            loc = None
            for level, kind, cdata in anc:
                if kind == IP_PKTINFO and level == _SOL_IP:
                    loc = group_to_loc.get(cdata[8:12])  # ipi_addr: the group it was sent to
                elif kind == SO_RXQ_OVFL and level == _SOL_SOCKET and len(cdata) >= DROPS.size:
                    drops = cdata
            if addr == own:
                counters["rx_own"] += 1  # multicast loopback of what we sent
                continue
            if loc is None:
                counters["rx_unknown_group"] += 1
                continue
            out.append((loc, data))
        if drops is not None:
            counters["rx_kernel_drops"] = DROPS.unpack_from(drops)[0]
        return out

    def send(self, loc: int, datagram: bytes) -> bool:
        dest = self._dest.get(loc)
        if dest is None:  # left a moment ago: membership governs receiving only
            self.tx.sendto(datagram, (ipv4_multicast_group(loc, self.tag), self.port))
            return False
        self.tx.sendto(datagram, dest)
        return True

    def close(self) -> None:
        self.sock.close()
        self.tx.close()

    def addresses(self) -> dict[int, str]:
        return {loc: dest[0] for loc, dest in self._dest.items()}
