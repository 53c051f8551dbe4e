"""The link actor: joins the groups of the node's locators and moves datagrams.

link.tx (from the router) -> UDP multicast on the locator's group;
UDP -> link.rx with the arrival locator. State it follows: state.locators (mobility).
"""
from __future__ import annotations

import logging
import time

from ..proto import topics
from bus.actor import DRAIN_LIMIT, Actor
from bus.rundir import RunDir

from ..proto.addr import format64
from ..config import NodeConfig
from .emulate import LinkEmulator
from .socket import OWN, UnderlaySocket

log = logging.getLogger("link")


class LinkShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.config = config
        self.actor = Actor("link", run, requires=(topics.STATE_LOCATORS,))
        self.sock = UnderlaySocket(config.interface, config.port, config.group_tag,
                                   loopback=config.multicast_loop)
        em = config.emulate
        self.emulator = LinkEmulator(em.drop, em.duplicate, em.delay_ms)
        self.counters = self.actor.counters
        self._last_oversize_log = 0.0
        self.actor.subscribe(topics.STATE_LOCATORS, self.on_locators)
        self.actor.subscribe(topics.LINK_TX, self.on_tx)
        self.actor.add_reader(self.sock, self.on_readable)
        self.actor.command("joined", lambda: [format64(loc) for loc in sorted(self.sock.joined)])
        self.actor.status_extra = lambda: {"joined": [format64(x) for x in sorted(self.sock.joined)]}

    def on_locators(self, _topic: bytes, body: dict) -> None:
        wanted = set(body.get("joined", ()))
        for loc in wanted - set(self.sock.joined):
            self.sock.join(loc)
            log.info("event=join locator=%s", format64(loc))
        for loc in set(self.sock.joined) - wanted:
            self.sock.leave(loc)
            log.info("event=leave locator=%s", format64(loc))

    def on_tx(self, _topic: bytes, body: dict) -> None:
        mtu, send, counters = self.config.mtu, self.sock.send, self.counters
        for loc, datagram in body.get("p", ()):
            if len(datagram) > mtu:
                counters["tx_oversize"] += 1
                self._log_oversize(len(datagram))
                continue
            try:
                if send(loc, datagram):
                    counters["tx"] += 1
                else:
                    counters["tx_not_joined"] += 1  # sent all the same
            except OSError:
                counters["tx_errors"] += 1

    def _log_oversize(self, size: int) -> None:
        now = time.monotonic()
        if now - self._last_oversize_log > 1.0:  # a log line per second at most, not per packet
            self._last_oversize_log = now
            log.warning("event=tx_oversize size=%d mtu=%d total=%d", size, self.config.mtu,
                        self.counters["tx_oversize"])

    def on_readable(self) -> int:
        recv, emit, counters = self.sock.recv, self.actor.emit, self.counters
        emulating, mtu = self.emulator.active, self.config.mtu
        for taken in range(DRAIN_LIMIT):
            got = recv()
            if got is None:
                return taken
            if got is OWN:  # multicast loopback of what we sent: never costs a bus hop
                counters["rx_own"] += 1
                continue
            loc, data = got
            if loc is None:
                counters["rx_unknown_group"] += 1
                continue
            if len(data) > mtu:  # the link's MTU holds both ways: bigger is not an overlay frame
                counters["rx_oversize"] += 1
                continue
            counters["rx"] += 1
            if emulating:
                self._emulate(loc, data)
            else:
                emit(topics.LINK_RX, [loc, data])
        return DRAIN_LIMIT

    def _emulate(self, loc: int, data: bytes) -> None:
        copies = self.emulator.copies()
        self.counters["emulated_drop" if copies == 0 else "emulated_dup" if copies == 2 else "emulated_pass"] += 1
        for _ in range(copies):
            if self.emulator.delay_ms:
                self.actor.call_later(self.emulator.delay_ms / 1000,
                                      lambda: self.actor.emit(topics.LINK_RX, [loc, data]))
            else:
                self.actor.emit(topics.LINK_RX, [loc, data])

    def run(self) -> None:
        try:
            self.actor.run()
        finally:
            self.sock.close()


def main(config: NodeConfig, run: RunDir) -> None:
    LinkShell(config, run).run()
