"""The underlay socket: one UDP/IPv6 socket joined to the multicast group of each locator."""
from __future__ import annotations

import socket
import struct

from ..proto.addr import multicast_group

IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)  # Linux; not in every Python
_PKTINFO = struct.Struct("16sI")
BUFFER = 16 * 1024 * 1024
OWN = (None, b"")  # what recv() returns for our own looped-back transmission


def set_buffer(sock: socket.socket, opt: int, force_opt: int) -> None:
    """A deep socket buffer absorbs bursts while the actor is descheduled: as root ask
    for it past net.core.rmem_max (…FORCE), else take what the limit allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_opt, BUFFER)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER)
        except OSError:
            pass


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


class UnderlaySocket:
    """Receives with the arrival group (IPV6_PKTINFO) and sends to a locator's group.

    Shares the port with other node instances on the host (SO_REUSEPORT; multicast is
    delivered to every member socket) and only sees the groups it joined itself
    (IPV6_MULTICAST_ALL off), so instances on one host do not see each other's networks.
    It sends from a socket of its own (an ephemeral port), so that what multicast
    loopback brings back of its own transmissions, forwarded packets included (they
    keep their sender's NID), is recognised by source address and port and dropped.
    """

    def __init__(self, interface: str, port: int, tag: int, loopback: bool = True):
        self.port = port
        self.tag = tag
        self.ifindex = socket.if_nametoindex(interface)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        set_buffer(sock, socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", 33))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        sock.bind(("::", port))
        sock.setblocking(False)
        self.sock = sock
        tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        set_buffer(tx, socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", 32))
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        # Other nodes on this host hear us only through loopback; a node alone on its
        # host can turn it off and save the kernel a copy of every datagram.
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loopback))
        tx.bind(("::", 0))
        self.tx = tx
        self.tx_port = tx.getsockname()[1]
        self.own_addresses = interface_addresses(interface)
        self.ancbufsize = socket.CMSG_SPACE(_PKTINFO.size)
        self.joined: dict[int, tuple] = {}  # locator -> destination address tuple
        self.group_to_loc: dict[bytes, int] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def _mreq(self, group: str) -> bytes:
        return socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", self.ifindex)

    def join(self, loc: int) -> None:
        group = multicast_group(loc, self.tag)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, self._mreq(group))
        self.joined[loc] = (group, self.port, 0, self.ifindex)
        self.group_to_loc[socket.inet_pton(socket.AF_INET6, group)] = loc

    def leave(self, loc: int) -> None:
        dest = self.joined.pop(loc, None)
        if dest is None:
            return
        packed = socket.inet_pton(socket.AF_INET6, dest[0])
        self.group_to_loc.pop(packed, None)
        try:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, self._mreq(dest[0]))
        except OSError:
            pass

    def recv(self) -> tuple[int | None, bytes] | None:
        """One datagram and its arrival locator (None if not a joined group); None if none
        ready; OWN for a looped-back transmission of our own."""
        try:
            data, anc, _flags, addr = self.sock.recvmsg(65535, self.ancbufsize)
        except BlockingIOError:
            return None
        if addr[1] == self.tx_port and addr[0].split("%")[0] in self.own_addresses:
            return OWN
        for level, kind, cdata in anc:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                return self.group_to_loc.get(cdata[:16]), data
        return None, data

    def send(self, loc: int, datagram: bytes) -> bool:
        dest = self.joined.get(loc)
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
