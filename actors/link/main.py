"""The link actor: joins the node's locators on its underlay and moves datagrams.

link.tx (from the router) -> Underlay.send on the locator's network;
Underlay.recv_batch -> link.rx with the arrival locator. State it follows:
state.locators (mobility). The underlay (underlay.kind) is chosen in kinds.py.
"""
from __future__ import annotations

import logging
import sys

from bus.actor import DRAIN_LIMIT
from bus.codec import FrameError, is_u64, u64_list
from bus.rundir import RunDir

from ..config import ConfigError, NodeConfig
from ..proto import topics
from ..proto.addr import format64
from ..proto.frames import LinkItem
from ..ratelog import RateLimitedLog
from ..registry import open_actor
from .emulate import LinkEmulator
from .kinds import open_underlay

log = logging.getLogger("link")


class LinkShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.mtu = config.mtu
        self.underlay = open_underlay(config)  # first: a missing interface fails before the bus sees us
        self.actor = open_actor("link", run, requires=(topics.STATE_LOCATORS,))
        em = config.emulate
        self.emulator = LinkEmulator(em.drop, em.duplicate, em.delay_ms)
        self.counters = self.actor.counters
        self.ratelog = RateLimitedLog(log)
        self.actor.subscribe(topics.STATE_LOCATORS, self.on_locators)
        self.actor.subscribe(topics.LINK_TX, self.on_tx)
        self.actor.add_reader(self.underlay, self.on_readable)
        self.actor.command("joined", self.joined)
        self.actor.status_extra = lambda: {"joined": self.joined(), "underlay": self.underlay.kind,
                                           "core": dict(self.underlay.counters)}

    def joined(self) -> list[str]:
        return [format64(loc) for loc in sorted(self.underlay.joined)]

    def on_locators(self, _topic: bytes, body: dict) -> None:
        try:
            wanted = set(u64_list(body.get("joined")))
            u64_list(body.get("leaving"))
        except FrameError:
            self.counters["bad_bodies"] += 1  # not the owner's state: dropped whole
            return
        joined = self.underlay.joined
        for loc in wanted - joined:
            try:
                self.underlay.join(loc)
                log.info("event=join locator=%s", format64(loc))
            except (OSError, TypeError, ValueError) as exc:
                self.counters["join_errors"] += 1
                log.error("event=join_failed locator=%r error=%r", loc, str(exc))
        for loc in joined - wanted:
            self.underlay.leave(loc)
            log.info("event=leave locator=%s", format64(loc))

    def on_tx(self, _topic: bytes, body: dict) -> None:
        mtu, send, counters = self.mtu, self.underlay.send, self.counters
        for item in self.actor.items(body):
            try:
                loc, datagram = item  # frames.LinkItem
                if type(datagram) is not bytes or not is_u64(loc):
                    raise TypeError
            except (TypeError, ValueError):
                counters["bad_items"] += 1  # this item only: the rest of the batch goes on
                continue
            if len(datagram) > mtu:
                counters["tx_oversize"] += 1
                self.ratelog.warning("oversize", "event=tx_oversize size=%d mtu=%d total=%d",
                                     len(datagram), mtu, counters["tx_oversize"])
                continue
            try:
                if send(loc, datagram):
                    counters["tx"] += 1
                else:
                    counters["tx_not_joined"] += 1  # sent all the same
            except OSError:
                counters["tx_errors"] += 1

    def on_readable(self) -> int:
        batch = self.underlay.recv_batch(DRAIN_LIMIT)
        emit, counters, mtu = self.actor.emit, self.counters, self.mtu
        for loc, data in batch:
            if len(data) > mtu:  # the link's MTU holds both ways: bigger is not an overlay frame
                counters["rx_oversize"] += 1
                continue
            counters["rx"] += 1
            if self.emulator.active:
                self._emulate(loc, data)
            else:
                emit(topics.LINK_RX, LinkItem(loc, data))
        return len(batch)

    def _emulate(self, loc: int, data: bytes) -> None:
        copies = self.emulator.copies()
        self.counters["emulated_drop" if copies == 0 else "emulated_dup" if copies == 2 else "emulated_pass"] += 1
        for _ in range(copies):
            if self.emulator.delay_ms:
                self.actor.call_later(self.emulator.delay_ms / 1000,
                                      lambda: self.actor.emit(topics.LINK_RX, LinkItem(loc, data)))
            else:
                self.actor.emit(topics.LINK_RX, LinkItem(loc, data))

    def run(self) -> None:
        try:
            self.actor.run()
        finally:
            self.underlay.close()


def main(config: NodeConfig, run: RunDir) -> None:
    try:
        shell = LinkShell(config, run)
    except ConfigError as exc:  # the underlay cannot open as configured (a missing interface)
        print(f"ilnp-actor link: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    shell.run()
