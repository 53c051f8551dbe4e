"""The link actor: joins the node's locators on its underlay and moves datagrams.

link.tx (from the router) -> Underlay.send on the locator's network;
Underlay.recv_batch -> link.rx with the arrival locator. State it follows:
state.locators (mobility). The underlay (underlay.kind) is chosen in kinds.py.

A restart loses nothing that arrives meanwhile: the underlay's sockets are kept in the
node's fd store (bus/fdstore.py, its own program) with the locators joined, so the
kernel keeps the memberships and buffers what arrives while no link runs; the next
link takes them back at start (`fd_adopted`; `fd_fresh` when there was nothing to
adopt or it did not fit the config) and reads that backlog first. What the router
sends meanwhile waits in its PUSH queue towards our inbox (bus/direct.py). Without a
store (unit tests, a store that is down) the link works as before, and stores its
sockets once the store answers.
"""
from __future__ import annotations

import logging
import sys

from bus.actor import DRAIN_LIMIT
from bus.codec import FrameError, is_u64, u64_list
from bus.fdstore import FdStoreClient, StoreUnavailable
from bus.rundir import RunDir

from ..config import ConfigError, NodeConfig
from ..proto import topics
from ..proto.addr import format64
from ..proto.frames import LinkItem
from ..ratelog import RateLimitedLog
from ..registry import open_actor
from .emulate import LinkEmulator
from .kinds import adopt_underlay, open_underlay

log = logging.getLogger("link")

STORE_NAME = "link-underlay"  # our entry in the fd store
STORE_GET_TIMEOUT_S = 1.0     # at start: the store's answer before we open a fresh socket
STORE_RETRY_S = 1.0           # the store is away (not started yet, restarting): try again


class LinkShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.mtu = config.mtu
        # first: a missing interface fails before the bus sees us
        self.store = FdStoreClient(run, timeout=STORE_GET_TIMEOUT_S)
        handed = self._fetch()
        self.underlay = adopt_underlay(config, *handed) if handed is not None else None
        adopted = self.underlay is not None
        if not adopted:
            if handed is not None:
                self._drop_handed()  # what did not fit must not keep its port bound
            self.underlay = open_underlay(config)
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
                                           "core": dict(self.underlay.counters),
                                           "rcvbuf": getattr(self.underlay, "rcvbuf", None),
                                           "fd_store": self.store.connected}
        self.counters["fd_adopted" if adopted else "fd_fresh"] += 1
        log.info("event=underlay_%s joined=%s", "adopted" if adopted else "opened", ",".join(self.joined()))
        self._store_fd = -1
        self._store_retry_armed = False
        if self.underlay.handover_fds():
            if self.store.connected:
                self._store_attached()
                # adopted: the store has these sockets already; what it lists may be
                # more than what is joined (see on_locators): make it exact
                self._store_send("meta" if adopted else "put")
            else:
                self._store_later()

    # ---- the fd store ----------------------------------------------------------

    def _fetch(self):
        """What the store keeps for us (metadata, descriptors), or None: nothing there,
        or no store (then we proceed without it and store our sockets when it is back)."""
        if not self.store.connect():
            return None
        try:
            return self.store.get(STORE_NAME)
        except StoreUnavailable as exc:
            log.warning("event=fdstore_unavailable error=%r", str(exc))
            return None

    def _drop_handed(self) -> None:
        try:
            self.store.request("drop", STORE_NAME)
        except StoreUnavailable as exc:
            log.warning("event=fdstore_unavailable error=%r", str(exc))

    def _store_attached(self) -> None:
        self._store_fd = self.store.fileno()
        self.actor.add_reader(self._store_fd, self.on_store)

    def _store_send(self, op: str, joined=None) -> None:
        """Tell the store our descriptors (put) or the locators they have joined (meta),
        without waiting for its answer (on_store reads it)."""
        if not self.store.connected:
            return  # the retry puts everything when the store is back
        meta = self.underlay.handover_meta(self.underlay.joined if joined is None else joined)
        try:
            if op == "put":
                self.store.send("put", STORE_NAME, meta, self.underlay.handover_fds())
                self.counters["fd_stored"] += 1
            else:
                self.store.send("meta", STORE_NAME, meta)
        except StoreUnavailable as exc:
            self._store_lost(str(exc))

    def on_store(self) -> None:
        try:
            for reply in self.store.replies():
                if not reply.get("ok"):
                    self.counters["fdstore_errors"] += 1
                    self.ratelog.warning("fdstore", "event=fdstore_refused error=%r total=%d",
                                         str(reply.get("error")), self.counters["fdstore_errors"])
        except StoreUnavailable as exc:
            self._store_lost(str(exc))

    def _store_lost(self, why: str) -> None:
        """The store went away (killed, restarting): what it kept for us is gone with it,
        so everything is put again once it is back."""
        if self._store_fd >= 0:
            self.actor.remove_reader(self._store_fd)
            self._store_fd = -1
        self.store.close()
        self.counters["fdstore_lost"] += 1
        log.warning("event=fdstore_lost error=%r", why)
        self._store_later()

    def _store_later(self) -> None:
        if not self._store_retry_armed:
            self._store_retry_armed = True
            self.actor.call_later(STORE_RETRY_S, self._store_retry)

    def _store_retry(self) -> None:
        self._store_retry_armed = False
        if self.store.connected:
            return
        if not self.store.connect():
            self._store_later()
            return
        self._store_attached()
        self._store_send("put")
        log.info("event=fdstore_put")

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
        if wanted - joined:
            # The store's list first, then the joins: a link killed in between leaves a
            # list that is longer than what was joined, never shorter (its successor joins
            # every listed locator again and leaves those state.locators does not want).
            self._store_send("meta", joined | wanted)
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
        if wanted != joined:
            self._store_send("meta")

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
        # A stop (SIGTERM) keeps the store's entry as a kill does: a restart
        # (`supervisorctl restart link`) adopts it; a node that shuts down stops its
        # store too. Closing our descriptors leaves the store's open.
        try:
            self.actor.run()
        finally:
            self.underlay.close()
            self.store.close()


def main(config: NodeConfig, run: RunDir) -> None:
    try:
        shell = LinkShell(config, run)
    except ConfigError as exc:  # the underlay cannot open as configured (a missing interface)
        print(f"ilnp-actor link: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    shell.run()
