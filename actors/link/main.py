"""The link actor: joins the node's locators on their underlays and moves datagrams.

link.tx (from the router) -> the send of the underlay that carries the locator;
each underlay's recv_batch -> link.rx with the arrival locator. State it follows:
state.locators (mobility). The node config says which underlay carries which locator
(actors.config.UnderlaySpec: [underlay] for every locator not listed under
[underlay.locators."<loc>"]); the link opens one underlay per (kind, interface, port)
(kinds.py), polls them together and routes each send by its locator (one dict lookup).

A restart loses nothing that arrives meanwhile: each underlay's sockets are kept in the
node's fd store (bus/fdstore.py, its own program; one entry per underlay, store_name)
with the locators joined, so the kernel keeps the memberships and buffers what arrives
while no link runs; the next link takes them back at start (`fd_adopted`; `fd_fresh`
when there was nothing to adopt or it did not fit the config) and reads that backlog
first. What the router sends meanwhile waits in its queue towards our inbox
(bus/direct.py). Without a store (unit tests, a store that is down) the link works as
before, and stores its sockets once the store answers.
"""
from __future__ import annotations

import hashlib
import logging
import re
import sys
import time
from collections import Counter

from bus.actor import DRAIN_LIMIT
from bus.codec import FrameError, is_u64, u64_list
from bus.fdstore import FdStoreClient, StoreUnavailable
from bus.rundir import RunDir

from ..config import ConfigError, NodeConfig, UnderlaySpec
from ..proto import topics
from ..proto.addr import format64
from ..proto.frames import LinkItem
from ..ratelog import RateLimitedLog
from ..registry import open_actor
from .carrier import CarrierWatch, locators_by_interface
from .emulate import LinkEmulator
from .kinds import adopt_underlay, open_underlay
from .sockets import ORPHAN_RX_BUFFER
from .underlay import Underlay

log = logging.getLogger("link")

STORE_NAME = "link-underlay"  # the default underlay's entry in the fd store (the others: store_name)
STORE_GET_TIMEOUT_S = 1.0     # at start: the store's answer before we open a fresh socket
STORE_RETRY_S = 1.0           # the store is away (not started yet, restarting): try again
# An adopted socket's backlog (what arrived while no link ran) is read at BACKLOG_PPS, in
# slices, not at once: the link reads far faster than the router forwards, and the queue
# between them holds 25 ms (bus/direct.py), so a backlog read whole would be refused
# there. What waits stays in the deep buffer the store gave the socket. Once a slice
# finds the socket empty (or after BACKLOG_MAX_S) the socket is polled as usual and
# goes back to its paced buffer.
BACKLOG_PPS = 15_000
BACKLOG_SLICE = 64
BACKLOG_MAX_S = 3.0


def store_name(spec: UnderlaySpec) -> str:
    """The fd store entry of an underlay: STORE_NAME for the default, else one per
    (kind, interface, port) within the store's name rule ([A-Za-z0-9._-], 64)."""
    if spec.default:
        return STORE_NAME
    raw = f"{STORE_NAME}.{spec.kind}.{spec.port}.{spec.interface}"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", raw)
    return safe if safe == raw else f"{safe}.{hashlib.sha256(raw.encode()).hexdigest()[:8]}"


class LinkShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.mtu = config.mtu
        # first: a missing interface fails before the bus sees us
        self.store = FdStoreClient(run, timeout=STORE_GET_TIMEOUT_S)
        self.store.connect()
        self.attached: list[tuple[str, Underlay]] = []   # (fd store name, underlay), config order
        adopted: set[str] = set()
        try:
            for spec in config.underlays:
                name, underlay = store_name(spec), None
                handed = self._fetch(name)
                if handed is not None:
                    underlay = adopt_underlay(spec, config, *handed)
                    if underlay is None:
                        self._drop_handed(name)  # what did not fit must not keep its port bound
                if underlay is None:
                    underlay = open_underlay(spec, config)
                else:
                    adopted.add(name)
                self.attached.append((name, underlay))
        except BaseException:
            self.close_underlays()
            self.store.close()
            raise
        self._drop_stale()
        # sends are routed by locator: a listed one to its own underlay, any other to the
        # default (None when every locator of the schedule rides its own)
        self.route: dict[int, Underlay] = {}
        self.default: Underlay | None = None
        for spec, (_name, underlay) in zip(config.underlays, self.attached):
            self.route.update(dict.fromkeys(spec.locators, underlay))
            if spec.default:
                self.default = underlay
        self.underlay = self.default  # the one a single-underlay node has
        self.actor = open_actor("link", run, requires=(topics.STATE_LOCATORS,))
        em = config.emulate
        self.emulator = LinkEmulator(em.drop, em.duplicate, em.delay_ms)
        self.counters = self.actor.counters
        self.ratelog = RateLimitedLog(log)
        self.actor.subscribe(topics.STATE_LOCATORS, self.on_locators)
        self.actor.subscribe(topics.LINK_TX, self.on_tx)
        # adopted sockets keep the deep buffer the store gave them until their backlog is read
        self.backlog: set[Underlay] = {u for name, u in self.attached if name in adopted}
        for _name, underlay in self.attached:
            if underlay in self.backlog:
                self.actor.call_later(0, lambda u=underlay, end=time.monotonic() + BACKLOG_MAX_S:
                                      self._read_backlog(u, end))
            else:
                self._poll(underlay)
        self.actor.command("joined", self.joined)
        self.actor.status_extra = self.status
        # multihoming: the locators whose interface is down (a cable pulled), for mobility
        self.carrier = CarrierWatch(spec.interface for spec in config.underlays)
        self.carried = locators_by_interface(config)
        self.actor.owns(topics.STATE_LINKS, self.links)
        self.actor.add_reader(self.carrier, self.on_carrier)
        for name, underlay in self.attached:
            self.counters["fd_adopted" if name in adopted else "fd_fresh"] += 1
            log.info("event=underlay_%s kind=%s store=%s joined=%s", "adopted" if name in adopted else "opened",
                     underlay.kind, name, ",".join(map(format64, sorted(underlay.joined))))
        self._store_fd = -1
        self._store_retry_armed = False
        if self.store.connected:
            self._store_attached()
            for name, underlay in self.attached:
                # adopted: the store has these sockets already; what it lists may be
                # more than what is joined (see on_locators): make it exact
                self._store_send("meta" if name in adopted else "put", name, underlay)
        else:
            self._store_later()

    def status(self) -> dict:
        core: Counter = Counter()
        for _name, underlay in self.attached:
            core.update(underlay.counters)
        first = self.default or self.attached[0][1]
        return {"joined": self.joined(), "underlay": first.kind, "core": dict(core),
                "rcvbuf": getattr(first, "rcvbuf", None), "fd_store": self.store.connected,
                "down": sorted(self.carrier.down), "underlays": [self._underlay_status(name, underlay) for name, underlay in self.attached]}

    def _underlay_status(self, name: str, underlay: Underlay) -> dict:
        return {"kind": underlay.kind, "interface": getattr(underlay, "interface", None),
                "port": getattr(underlay, "port", None), "default": underlay is self.default,
                "store": name,
                "joined": {format64(loc): address for loc, address in sorted(underlay.addresses().items())},
                "core": dict(underlay.counters), "rcvbuf": getattr(underlay, "rcvbuf", None)}

    def close_underlays(self) -> None:
        for _name, underlay in self.attached:
            underlay.close()

    # ---- the fd store ----------------------------------------------------------

    def _fetch(self, name: str):
        """What the store keeps under `name` (metadata, descriptors), or None: nothing
        there, or no store (then we proceed without it and store our sockets when it is back)."""
        if not self.store.connected:
            return None
        try:
            return self.store.get(name)
        except StoreUnavailable as exc:
            log.warning("event=fdstore_unavailable error=%r", str(exc))
            return None

    def _drop_handed(self, name: str) -> None:
        try:
            self.store.request("drop", name)
        except StoreUnavailable as exc:
            log.warning("event=fdstore_unavailable error=%r", str(exc))

    def _drop_stale(self) -> None:
        """Entries of underlays the config no longer has (their sockets hold ports)."""
        if not self.store.connected:
            return
        ours = {name for name, _ in self.attached}
        try:
            names = self.store.request("stats")[0].get("names")
            for name in names if isinstance(names, dict) else ():
                if isinstance(name, str) and name.startswith(STORE_NAME) and name not in ours:
                    self.store.request("drop", name)
                    log.info("event=fdstore_dropped_stale name=%s", name)
        except StoreUnavailable as exc:
            log.warning("event=fdstore_unavailable error=%r", str(exc))

    def _store_attached(self) -> None:
        self._store_fd = self.store.fileno()
        self.actor.add_reader(self._store_fd, self.on_store)

    def _store_send(self, op: str, name: str, underlay: Underlay, joined=None) -> None:
        """Tell the store an underlay's descriptors (put) or the locators they have
        joined (meta), without waiting for its answer (on_store reads it)."""
        if not self.store.connected:
            return  # the retry puts everything when the store is back
        fds = underlay.handover_fds()
        if not fds:
            return  # nothing of it dies with the link
        meta = underlay.handover_meta(underlay.joined if joined is None else joined)
        try:
            # deepened by the store the moment we die (sockets.py): a put or a meta makes
            # this connection the one the store watches
            options = {"orphan_rcvbuf": ORPHAN_RX_BUFFER}
            if op == "put":
                self.store.send("put", name, meta, fds, options=options)
                self.counters["fd_stored"] += 1
            else:
                self.store.send("meta", name, meta, options=options)
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
        for name, underlay in self.attached:
            self._store_send("put", name, underlay)
        log.info("event=fdstore_put")

    def joined(self) -> list[str]:
        return [format64(loc) for loc in sorted(set().union(*(u.joined for _, u in self.attached)))]

    def on_locators(self, _topic: bytes, body: dict) -> None:
        try:
            wanted = set(u64_list(body.get("joined")))
            u64_list(body.get("leaving"))
        except FrameError:
            self.counters["bad_bodies"] += 1  # not the owner's state: dropped whole
            return
        by_underlay: dict[Underlay, set[int]] = {}
        for loc in wanted:
            underlay = self.route.get(loc, self.default)
            if underlay is None:
                self.counters["join_no_underlay"] += 1  # outside the schedule, and no default
                continue
            by_underlay.setdefault(underlay, set()).add(loc)
        for name, underlay in self.attached:
            self._follow(name, underlay, by_underlay.get(underlay, set()))

    def _follow(self, name: str, underlay: Underlay, wanted: set[int]) -> None:
        joined = underlay.joined
        if wanted - joined:
            # The store's list first, then the joins: a link killed in between leaves a
            # list that is longer than what was joined, never shorter (its successor joins
            # every listed locator again and leaves those state.locators does not want).
            self._store_send("meta", name, underlay, joined | wanted)
        for loc in wanted - joined:
            try:
                underlay.join(loc)
                log.info("event=join locator=%s underlay=%s", format64(loc), name)
            except (OSError, TypeError, ValueError) as exc:
                self.counters["join_errors"] += 1
                log.error("event=join_failed locator=%s underlay=%s error=%r", format64(loc), name, str(exc))
        for loc in joined - wanted:
            underlay.leave(loc)
            log.info("event=leave locator=%s underlay=%s", format64(loc), name)
        if wanted != joined:
            self._store_send("meta", name, underlay)

    def on_tx(self, _topic: bytes, body: dict) -> None:
        mtu, route, default, counters = self.mtu, self.route, self.default, self.counters
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
            underlay = route.get(loc, default)
            if underlay is None:
                counters["tx_no_underlay"] += 1  # a locator no underlay carries
                continue
            try:
                if underlay.send(loc, datagram):
                    counters["tx"] += 1
                else:
                    counters["tx_not_joined"] += 1  # sent all the same
            except OSError:
                counters["tx_errors"] += 1

    def _poll(self, underlay: Underlay) -> None:
        self.actor.add_reader(underlay, lambda: self.on_readable(underlay))

    def _read_backlog(self, underlay: Underlay, end: float) -> None:
        """One slice of an adopted socket's backlog; the next in BACKLOG_SLICE / BACKLOG_PPS."""
        got = self.on_readable(underlay, BACKLOG_SLICE)
        if got < BACKLOG_SLICE or time.monotonic() >= end:  # read (or it outlasts its time)
            self.backlog.discard(underlay)
            underlay.pace_receive()
            self.counters["backlogs_read"] += 1
            self._poll(underlay)
        else:
            self.actor.call_later(BACKLOG_SLICE / BACKLOG_PPS, lambda: self._read_backlog(underlay, end))

    def on_readable(self, underlay: Underlay, limit: int = DRAIN_LIMIT) -> int:
        batch = underlay.recv_batch(limit)
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

    def links(self) -> dict:
        """state.links: the schedule's locators on interfaces that are down, and those interfaces."""
        down = sorted(self.carrier.down)
        return {"down": [loc for iface in down for loc in self.carried.get(iface, ())], "interfaces": down}

    def on_carrier(self) -> None:
        if self.carrier.changed():
            self.counters["carrier_changes"] += 1
            log.info("event=carrier down=%s", ",".join(sorted(self.carrier.down)) or "-")
            self.actor.publish(topics.STATE_LINKS, self.links())

    def run(self) -> None:
        # A stop (SIGTERM) keeps the store's entry as a kill does: a restart
        # (`supervisorctl restart link`) adopts it; a node that shuts down stops its
        # store too. Closing our descriptors leaves the store's open.
        try:
            self.actor.run()
        finally:
            self.close_underlays()
            self.carrier.close()
            self.store.close()


def main(config: NodeConfig, run: RunDir) -> None:
    try:
        shell = LinkShell(config, run)
    except ConfigError as exc:  # an underlay cannot open as configured (a missing interface or address)
        print(f"ilnp-actor link: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    shell.run()
