"""What the underlays share about their sockets: buffers sized by time, the kernel's drop count,
Linux option numbers Python 3.11 lacks, and the interface lookups whose failure is a
one-line config error naming the key that chose the interface."""
from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import socket
import struct

from ..config import ConfigError

log = logging.getLogger("link")

SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux: the socket's drop count with each datagram
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
DROPS = struct.Struct("=I")
IN_PKTINFO = struct.Struct("=i4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr (the header's destination)
_SIOCGIFADDR, _SIOCGIFBRDADDR, _SIOCGIFNETMASK = 0x8915, 0x8919, 0x891B
# Receive buffers are sized by time (issue 13): a deep one is a queue, and a link that
# falls behind would delay every packet by all of it (32 MB held ~2 s at 12,000/s) where
# dropping, counted, is the network's right. RX_QUEUE_S of datagrams at the rate the node
# is built for: the kernel charges a 1440-byte datagram its skb's truesize (2,304 bytes
# measured on lo, up to ~4.6 KB with other drivers) and doubles the size asked for its
# bookkeeping. 25 ms at 40,000/s is 1,000 datagrams: 50 ms at 20,000/s, 0.5 s at 2,000/s.
RX_QUEUE_S = 0.025
RX_DESIGN_PPS = 40_000
DATAGRAM_TRUESIZE = 2_304
RX_BUFFER = int(RX_QUEUE_S * RX_DESIGN_PPS * DATAGRAM_TRUESIZE) // 2
# While the link restarts nobody reads: the fd store deepens the kept sockets the moment
# the link's connection to it closes (orphan_rcvbuf, bus/fdstore.py) so they hold what
# arrives meanwhile: 16 MB asked (32 MB granted, 7,000-14,000 datagrams: several seconds
# at 2,000/s each way, against the ~0.5-1 s a restart takes under load). The next link
# reads that backlog, then sets RX_BUFFER again (Underlay.pace_receive).
ORPHAN_RX_BUFFER = 16 * 1024 * 1024
# Sends go straight to the driver (veth has no queue): a deep send buffer only absorbs a
# burst, and what does not fit is a counted tx error.
TX_BUFFER = 16 * 1024 * 1024
# As root SO_*BUFFORCE goes past net.core.rmem_max / wmem_max; without the privilege the
# limit applies (default 208 KB). The size the kernel granted is in the link's status
# (`rcvbuf`).


def set_buffer(sock: socket.socket, opt: int, force_opt: int, size: int = TX_BUFFER) -> None:
    """Ask for a socket buffer of `size`: as root past net.core.rmem_max (…FORCE), else
    take what the limit allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_opt, size)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
        except OSError:
            pass


def pace_receive(sock: socket.socket) -> int:
    """Set the receive buffer to RX_BUFFER (shrinking an adopted socket's deep one once
    its backlog is read); the size the kernel granted."""
    set_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, RX_BUFFER)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def receive_buffer(sock: socket.socket) -> int:
    """A receive buffer of RX_BUFFER and the kernel's drop count with each datagram
    (rx_kernel_drops); the buffer size the kernel granted. It never shrinks one: an
    adopted socket keeps the deep buffer the fd store gave it until the link has read
    its backlog (pace_receive then)."""
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < 2 * RX_BUFFER:
        set_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, RX_BUFFER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    except OSError:
        pass
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def bind_to_device(sock: socket.socket, interface: str, counters) -> None:
    """Receive only what comes in on `interface` (SO_BINDTODEVICE, root): a unicast
    datagram reaches this socket before a wildcard one on the port, and a SO_REUSEPORT
    group of our sockets on several interfaces does not hand one interface's datagrams to
    another's socket. Without the privilege the socket stays unbound (counted, logged):
    the underlays' own checks (arrival group, interface, peer) still hold."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    except PermissionError:
        if not counters["bind_to_device_refused"]:
            log.warning("event=bind_to_device_refused interface=%s (not root: this socket sees every"
                        " interface's datagrams to its port)", interface)
        counters["bind_to_device_refused"] = 1


def ifindex_of(spec, config) -> int:
    """The index of the spec's interface; ConfigError naming the key that chose it."""
    try:
        return socket.if_nametoindex(spec.interface)
    except OSError:
        raise ConfigError(f"{config.path}: {spec.interface_key}: no interface {spec.interface!r}"
                          f" in this network namespace (`ip link` lists them)") from None


def _ioctl_ipv4(sock: socket.socket, request: int, interface: str) -> str:
    ifreq = fcntl.ioctl(sock.fileno(), request, struct.pack("256s", interface.encode()))
    return socket.inet_ntoa(ifreq[20:24])


def ipv4_of(spec, config) -> tuple[str, str]:
    """The interface's (primary IPv4 address, its broadcast address); ConfigError
    naming the key when the interface is missing or has no IPv4 address."""
    ifindex_of(spec, config)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            address = _ioctl_ipv4(sock, _SIOCGIFADDR, spec.interface)
            netmask = _ioctl_ipv4(sock, _SIOCGIFNETMASK, spec.interface)
            broadcast = _ioctl_ipv4(sock, _SIOCGIFBRDADDR, spec.interface)
        except OSError:
            raise ConfigError(f"{config.path}: {spec.interface_key}: interface {spec.interface!r} has no IPv4"
                              f" address ({spec.kind} needs one: `ip -4 addr` lists them)") from None
    if broadcast == "0.0.0.0":  # none configured (lo): the subnet's, as the local route table has it
        net = ipaddress.IPv4Network(f"{address}/{netmask}", strict=False)
        broadcast = str(net.broadcast_address)
    return address, broadcast


def join_error_is_joined(exc: OSError) -> bool:
    """EADDRINUSE from a join: the socket is a member already (an adopted socket)."""
    return exc.errno == errno.EADDRINUSE
