"""A rogue on the LAN: it hears every overlay packet (they are multicast in clear) and
sends whatever it likes to any locator's group. Built on the node's own IPv6 multicast
underlay, so its packets are exactly what a node would put on the wire."""
from __future__ import annotations

import select
import time
from typing import Callable, Iterator

from actors.link.ipv6_multicast import Ipv6MulticastUnderlay
from actors.proto import ilnp


class Rogue:
    def __init__(self, interface: str, port: int, tag: int):
        self.underlay = Ipv6MulticastUnderlay(interface, port, tag, loopback=False)
        self.sent = 0

    def listen(self, locs) -> None:
        for loc in locs:
            self.underlay.join(loc)

    def send(self, loc: int, datagram: bytes, copies: int = 1) -> None:
        for _ in range(copies):
            self.underlay.send(loc, datagram)
            self.sent += 1

    def sniff(self, timeout: float, keep: Callable[[ilnp.Packet, dict | None], bool]) -> Iterator[tuple]:
        """(arrival locator, datagram, packet, opts) of each packet `keep` likes, until timeout."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.underlay.fileno()], [], [], left)
            if not ready:
                continue
            for loc, datagram in self.underlay.recv_batch(256):
                try:
                    packet, opts = ilnp.decode_with_opts(datagram)
                except ilnp.WireError:
                    continue
                if keep(packet, opts):
                    yield loc, datagram, packet, opts

    def close(self) -> None:
        self.underlay.close()
