"""The IPv6 multicast underlay (PROTOCOL.md "Underlay"): one group per locator.

The group of locator l1:l2:l3:l4 is ff12:0:TAG:0:l1:l2:l3:l4 (TAG keeps overlays of
different users apart); every node of an overlay uses one UDP port; hop limit 1.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from typing import Any, Iterable

from ..config import ConfigError
from ..proto.addr import format64
from .underlay import Underlay

IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)  # Linux; not in every Python
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux: the socket's drop count with each datagram
_PKTINFO = struct.Struct("16sI")
_DROPS = struct.Struct("=I")
# The receive buffer also holds what arrives while the link restarts (the socket is kept
# in the fd store meanwhile): 16 MB asked, which the kernel doubles for its bookkeeping.
# A 1440-byte datagram is charged its skb's truesize (2,304 bytes measured on lo, up to
# ~4.6 KB with other drivers), so 32 MB hold 7,000-14,000 datagrams: several seconds at
# 2,000/s each way, against the ~0.5-1 s a restart takes under load (a 0.5 s restart
# needs ~2-5 MB). As root SO_RCVBUFFORCE goes past net.core.rmem_max;
# without the privilege the limit applies (default 208 KB: well under 0.1 s at that
# rate). The size the kernel granted is in the link's status (`rcvbuf`).
BUFFER = 16 * 1024 * 1024
MAX_ADOPTED_LOCATORS = 256  # a handed-over joined list longer than this is not ours
log = logging.getLogger("link")
_IPV6_PKTINFO, _IPPROTO_IPV6, _SOL_SOCKET = socket.IPV6_PKTINFO, socket.IPPROTO_IPV6, socket.SOL_SOCKET


def multicast_group(loc: int, tag: int) -> str:
    """The IPv6 multicast group of a locator: ff12:0:TAG:0:l1:l2:l3:l4."""
    return f"ff12:0:{tag & 0xFFFF:x}:0:{format64(loc)}"


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


class Ipv6MulticastUnderlay(Underlay):
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
        self.port = port
        self.tag = tag
        self.ifindex = socket.if_nametoindex(interface)
        if adopted is None:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        else:
            sock, tx = adopted  # a predecessor's, bound already: its options are set again (idempotent)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        set_buffer(sock, socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", 33))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        try:
            # what the kernel drops for want of buffer space is counted (rx_kernel_drops):
            # each datagram then carries the socket's drop count so far
            sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        except OSError:
            pass
        if adopted is None:
            sock.bind(("::", port))
        sock.setblocking(False)
        self.sock = sock
        self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # what the kernel granted
        set_buffer(tx, socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", 32))
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
    def from_config(cls, config) -> "Ipv6MulticastUnderlay":
        """ConfigError (one line naming the file and underlay.interface) when the
        interface is not there: this is where a missing one is first seen."""
        _ifindex(config)
        return cls(config.interface, config.port, config.group_tag, loopback=config.multicast_loop)

    def handover_fds(self) -> list[int]:
        return [self.sock.fileno(), self.tx.fileno()]

    def handover_meta(self, joined: Iterable[int]) -> dict[str, Any]:
        return {"kind": self.kind, "port": self.port, "tag": self.tag, "ifindex": self.ifindex,
                "joined": sorted(joined)}

    @classmethod
    def adopt(cls, config, fds: list[int], meta: Any) -> "Ipv6MulticastUnderlay | None":
        """The predecessor's receive and send sockets, if they are what `config` would
        open: same port (getsockname), family and type, interface, group tag. Then every
        locator it listed is joined again: one joined already stays joined (the list may
        be longer than what was joined, never shorter: the link sends it before joining)."""
        socks: list[socket.socket] = []
        try:
            ifindex = _ifindex(config)  # a missing interface is a ConfigError, as for a fresh one
            why = _refuse(config, ifindex, fds, meta)
            if why is None:
                for fd in fds:
                    socks.append(socket.socket(fileno=fd))
                why = _refuse_sockets(socks[0], socks[1], config.port)
            if why is None:
                underlay = cls(config.interface, config.port, config.group_tag, loopback=config.multicast_loop,
                               adopted=(socks[0], socks[1]))
        except OSError as exc:  # not a socket, an option refused: open a fresh one instead
            why = f"{type(exc).__name__}: {exc}"
        except BaseException:
            _close(fds, socks)
            raise
        if why is not None:
            log.warning("event=fd_not_adopted reason=%r", why)
            _close(fds, socks)
            return None
        for loc in meta["joined"]:
            try:
                underlay.join(loc)
            except OSError as exc:  # the link will try again when state.locators wants it
                underlay.counters["adopt_join_errors"] += 1
                log.error("event=adopt_join_failed locator=%s error=%r", format64(loc), str(exc))
        return underlay

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
            if exc.errno != errno.EADDRINUSE:  # EADDRINUSE: joined already (an adopted socket)
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


def _ifindex(config) -> int:
    try:
        return socket.if_nametoindex(config.interface)
    except OSError:
        raise ConfigError(f"{config.path}: underlay.interface: no interface {config.interface!r}"
                          f" in this network namespace (`ip link` lists them)") from None


def _refuse(config, ifindex: int, fds: list[int], meta: Any) -> str | None:
    """Why a handed-over entry does not fit `config` (None: it does, as far as its
    metadata says)."""
    if not isinstance(meta, dict) or meta.get("kind") != Ipv6MulticastUnderlay.kind:
        return "not an ipv6-multicast underlay"
    if len(fds) != 2:
        return f"{len(fds)} descriptors, not 2"
    for key, want in (("port", config.port), ("tag", config.group_tag), ("ifindex", ifindex)):
        if meta.get(key) != want or type(meta.get(key)) is not int:
            return f"{key} {meta.get(key)!r}, configured {want!r}"
    joined = meta.get("joined")
    if (not isinstance(joined, list) or len(joined) > MAX_ADOPTED_LOCATORS
            or not all(type(loc) is int and 0 <= loc < 1 << 64 for loc in joined)):
        return "joined is not a list of locators"
    return None


def _refuse_sockets(rx: socket.socket, tx: socket.socket, port: int) -> str | None:
    """Why the two sockets are not an underlay's receive and send sockets on `port`."""
    for what, sock in (("receive", rx), ("send", tx)):
        if sock.family != socket.AF_INET6 or sock.type != socket.SOCK_DGRAM:
            return f"{what} socket is {sock.family!r} {sock.type!r}, not UDP/IPv6"
    try:
        bound = rx.getsockname()[1]
    except (OSError, IndexError):
        return "receive socket has no address"
    if bound != port:
        return f"receive socket on port {bound}, configured {port}"
    return None


def _close(fds: list[int], socks: list[socket.socket]) -> None:
    """Close handed-over descriptors: through their socket object where one was made."""
    for sock in socks:
        sock.close()
    for fd in fds[len(socks):]:
        try:
            os.close(fd)
        except OSError:
            pass
