"""The IPv6 multicast underlay (PROTOCOL.md "Underlay"): one group per locator.

The group of locator l1:l2:l3:l4 is ff12:0:TAG:0:l1:l2:l3:l4 (TAG keeps overlays of
different users apart); every node of an overlay uses one UDP port; hop limit 1.
"""
from __future__ import annotations

import socket
import struct
from typing import Any

from ..proto.addr import format64
from .handover import SocketHandover
from .sockets import DROPS as _DROPS
from .sockets import (IPV6_MULTICAST_ALL, SO_RXQ_OVFL, SO_SNDBUFFORCE, receive_buffer, ifindex_of,
                      join_error_is_joined, set_buffer)
from .underlay import Underlay

_PKTINFO = struct.Struct("16sI")
_IPV6_PKTINFO, _IPPROTO_IPV6, _SOL_SOCKET = socket.IPV6_PKTINFO, socket.IPPROTO_IPV6, socket.SOL_SOCKET


def multicast_group(loc: int, tag: int) -> str:
    """The IPv6 multicast group of a locator: ff12:0:TAG:0:l1:l2:l3:l4."""
    return f"ff12:0:{tag & 0xFFFF:x}:0:{format64(loc)}"


def interface_addresses(interface: str) -> set[str]:
    """The IPv6 addresses of an interface (from /proc/net/if_inet6), compressed form."""
    found = set()
    try:
        with open("/proc/net/if_inet6") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 6 and fields[5] == interface:
                    found.add(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[0])))
    except OSError:
        pass
    return found


class Ipv6MulticastUnderlay(SocketHandover, Underlay):
    """Receives with the arrival group (IPV6_PKTINFO) and sends to a locator's group.

    Shares the port with other node instances on the host (SO_REUSEPORT; multicast is
    delivered to every member socket) and only sees the groups it joined itself
    (IPV6_MULTICAST_ALL off), so instances on one host do not see each other's networks.
    It sends from a socket of its own (an ephemeral port), so that what multicast
    loopback brings back of its own transmissions, forwarded packets included (they
    keep their sender's NID), is recognised by source address and port and dropped.
    """

    kind = "ipv6-multicast"

    def __init__(self, interface: str, port: int, tag: int, loopback: bool = True,
                 adopted: tuple[socket.socket, socket.socket] | None = None):
        super().__init__()
        self.interface, self.port, self.tag = interface, port, tag
        self.ifindex = socket.if_nametoindex(interface)
        if adopted is None:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        else:
            sock, tx = adopted  # a predecessor's, bound already: its options are set again (idempotent)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        # what the kernel drops for want of buffer space is counted (rx_kernel_drops)
        self.rcvbuf = receive_buffer(sock)
        if adopted is None:
            # IPv6 only: an IPv4 underlay of this node (or another) may use the port too
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(("::", port))
        sock.setblocking(False)
        self.sock = sock
        set_buffer(tx, socket.SO_SNDBUF, SO_SNDBUFFORCE)
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        # Other nodes on this host hear us only through loopback; a node alone on its
        # host can turn it off and save the kernel a copy of every datagram.
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loopback))
        if adopted is None:
            tx.bind(("::", 0))
        # The send socket is handed over too: its port is how our own looped-back
        # datagrams are recognised, those buffered during a restart included.
        self.tx = tx
        self.tx_port = tx.getsockname()[1]
        self.own_addresses = interface_addresses(interface)
        self.ancbufsize = socket.CMSG_SPACE(_PKTINFO.size) + socket.CMSG_SPACE(_DROPS.size)
        self._dest: dict[int, tuple] = {}  # locator -> destination address tuple
        self._group_to_loc: dict[bytes, int] = {}

    @classmethod
    def from_config(cls, spec, config) -> "Ipv6MulticastUnderlay":
        """ConfigError (one line naming the file and the interface's key) when the
        interface is not there: this is where a missing one is first seen."""
        ifindex_of(spec, config)
        return cls(spec.interface, spec.port, config.group_tag, loopback=config.multicast_loop)

    # handover (handover.SocketHandover): the receive and send sockets; adopted when
    # port (getsockname), family, interface and group tag fit the config
    socket_families = (socket.AF_INET6, socket.AF_INET6)

    def sockets(self) -> list[socket.socket]:
        return [self.sock, self.tx]

    def identity(self) -> dict[str, Any]:
        return {"port": self.port, "tag": self.tag, "ifindex": self.ifindex}

    @classmethod
    def expected_identity(cls, spec, config) -> dict[str, Any]:
        return {"port": spec.port, "tag": config.group_tag, "ifindex": ifindex_of(spec, config)}

    @classmethod
    def reopen(cls, spec, config, socks: list[socket.socket]) -> "Ipv6MulticastUnderlay":
        return cls(spec.interface, spec.port, config.group_tag, loopback=config.multicast_loop,
                   adopted=(socks[0], socks[1]))

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def joined(self) -> frozenset[int]:
        return frozenset(self._dest)

    def _mreq(self, group: str) -> bytes:
        return socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", self.ifindex)

    def join(self, loc: int) -> None:
        group = multicast_group(loc, self.tag)
        try:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, self._mreq(group))
        except OSError as exc:
            if not join_error_is_joined(exc):  # joined already (an adopted socket)
                raise
        self._dest[loc] = (group, self.port, 0, self.ifindex)
        self._group_to_loc[socket.inet_pton(socket.AF_INET6, group)] = loc

    def leave(self, loc: int) -> None:
        dest = self._dest.pop(loc, None)
        if dest is None:
            return
        self._group_to_loc.pop(socket.inet_pton(socket.AF_INET6, dest[0]), None)
        try:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, self._mreq(dest[0]))
        except OSError:
            pass

    def recv_batch(self, limit: int) -> list[tuple[int, bytes]]:
        recvmsg, ancbufsize, counters = self.sock.recvmsg, self.ancbufsize, self.counters
        tx_port, own, group_to_loc = self.tx_port, self.own_addresses, self._group_to_loc
        out = []
        drops = None
        for _ in range(limit):
            try:
                data, anc, _flags, addr = recvmsg(65535, ancbufsize)
            except BlockingIOError:
                break
            loc = None
            for level, kind, cdata in anc:
                if kind == _IPV6_PKTINFO and level == _IPPROTO_IPV6:
                    loc = group_to_loc.get(cdata[:16])
                elif kind == SO_RXQ_OVFL and level == _SOL_SOCKET and len(cdata) >= _DROPS.size:
                    drops = cdata  # the kernel's count so far: the last one says it all
            if addr[1] == tx_port and addr[0].split("%")[0] in own:
                counters["rx_own"] += 1  # multicast loopback of what we sent: never costs a bus hop
                continue
            if loc is None:
                counters["rx_unknown_group"] += 1
                continue
            out.append((loc, data))
        if drops is not None:
            counters["rx_kernel_drops"] = _DROPS.unpack_from(drops)[0]
        return out

    def send(self, loc: int, datagram: bytes) -> bool:
        dest = self._dest.get(loc)
        if dest is None:
            # Left a moment ago (the router had not heard yet): membership only governs
            # receiving, so the frame still goes out; the caller counts it.
            self.tx.sendto(datagram, (multicast_group(loc, self.tag), self.port, 0, self.ifindex))
            return False
        self.tx.sendto(datagram, dest)
        return True

    def close(self) -> None:
        self.sock.close()
        self.tx.close()

    def addresses(self) -> dict[int, str]:
        return {loc: dest[0] for loc, dest in self._dest.items()}

