"""The discovery actor: DiscoveryCore behind the bus.

ilnp.rx.43 -> core.receive; its Announce -> ilnp.tx (to ALL_NODES, NID 0, out on one
locator). Owns the host table: publishes state.hosts whole when the core says it
changed (the core limits the rate), answers `hosts`, `conflicts` and `resolve`.
Follows state.locators; applies mob.peer (accepted updates); solicits at once when the
router's forwarding table is new (state.forwarding), so a restarted router relearns
its routes in milliseconds.

A restarted discovery starts with an empty table: it publishes nothing for WARMUP_S
(its solicitations are answered meanwhile), so consumers keep their replicas instead of
being told for a moment that nobody exists (a sender resolving names would fail).
"""
from __future__ import annotations

import logging
import random

from bus.actor import CoreTimer, monotonic_ms
from bus.codec import FrameError, is_u64, u64_list
from bus.rundir import RunDir

from ..config import NodeConfig
from ..proto import topics
from ..proto.addr import format64
from ..proto.frames import RxItem
from ..ratelog import RateLimitedLog
from ..registry import open_actor
from .core import Announce, DiscoveryCore, HostsChanged

log = logging.getLogger("discovery")
WARMUP_S = 0.5
ratelog = RateLimitedLog(log, interval_s=10.0)


class DiscoveryShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.actor = actor = open_actor("discovery", run, requires=(topics.STATE_LOCATORS,))
        self.core = DiscoveryCore(config.hostname, config.nid, config.wait_time_ms, random.Random(),
                                  max_hosts=config.max_hosts)
        self.timer = CoreTimer(actor, self.core.next_deadline, lambda now: self.apply(self.core.on_timer(now)))
        self.forwarding_epoch = None
        actor.subscribe(topics.ILNP_RX_DISCOVERY, self.on_rx)
        actor.subscribe(topics.STATE_LOCATORS, self.on_locators)
        actor.subscribe(topics.MOB_PEER, self.on_peer_moved)
        actor.subscribe(topics.STATE_FORWARDING, self.on_forwarding)
        self.warm = False
        actor.call_later(WARMUP_S, self._warmed)
        actor.command("hosts", self.rows)
        actor.command("conflicts", self.cmd_conflicts)
        actor.command("resolve", self.cmd_resolve)
        self.locators_seen = {"joined": [], "leaving": []}  # what state.locators said last
        actor.status_extra = lambda: {"core": dict(self.core.counters), "locators": self.locators_seen,
                                      "forwarding_epoch": self.forwarding_epoch}

    def _warmed(self) -> None:
        self.warm = True
        self.actor.owns(topics.STATE_HOSTS, self.snapshot)
        self.actor.publish(topics.STATE_HOSTS, self.snapshot())

    def rows(self) -> list:
        """[[hostname, nid, [locs newest first], age_ms], ...] (the replica format)."""
        return [[r.hostname, r.nid, list(r.locs), r.age_ms] for r in self.core.hosts(monotonic_ms())]

    def snapshot(self) -> dict:
        return {"hosts": self.rows()}

    def cmd_conflicts(self) -> list:
        """[[hostname, nid it resolves to, [losing nid, ...], is it us], ...]"""
        return [[c.hostname, c.nid, list(c.losers), c.nid == self.core.nid]
                for c in self.core.conflicts(monotonic_ms())]

    def cmd_resolve(self, name: str) -> list:
        if not isinstance(name, str):
            raise ValueError(f"resolve: name {name!r:.40} is not a string")
        return [[format64(loc), format64(nid)] for loc, nid in self.core.resolve(name, monotonic_ms())]

    def apply(self, actions: list) -> None:
        changed = False
        for action in actions:
            if type(action) is Announce:
                self.actor.emit(topics.ILNP_TX, action.tx_item())
            elif type(action) is HostsChanged:
                changed = True
        if changed and self.warm:
            self.actor.publish(topics.STATE_HOSTS, self.snapshot())
        self.timer.arm()

    def on_rx(self, _topic: bytes, body: dict) -> None:
        now = monotonic_ms()
        actions = []
        conflicts = self.core.counters["name_conflicts"]
        for item in self.actor.items(body):
            try:
                rx = RxItem(*item)
                if not (is_u64(rx.src_loc) and is_u64(rx.src_nid) and is_u64(rx.arrival_loc)
                        and type(rx.payload) is bytes):
                    raise TypeError
            except TypeError:
                self.actor.counters["bad_items"] += 1  # this item only: the rest of the batch goes on
                continue
            try:
                actions.extend(self.core.receive(rx.src_loc, rx.src_nid, rx.arrival_loc, rx.payload, now))
            except Exception:
                self.actor.item_error(_topic)
        if self.core.counters["name_conflicts"] != conflicts:
            ratelog.warning("name_conflict", "event=name_conflict total=%d (ilnp-hosts shows them)",
                            self.core.counters["name_conflicts"])
        self.apply(actions)

    def on_locators(self, _topic: bytes, body: dict) -> None:
        try:
            joined, leaving = u64_list(body.get("joined")), u64_list(body.get("leaving"))
        except FrameError:
            self.actor.counters["bad_bodies"] += 1  # not the owner's state: dropped whole
            return
        self.apply(self.core.set_locators(joined, leaving, monotonic_ms()))
        self.locators_seen = {"joined": _fmt(joined), "leaving": _fmt(leaving)}

    def on_forwarding(self, _topic: bytes, body: dict) -> None:
        epoch = body.get("epoch")
        if type(epoch) is not int:
            self.actor.counters["bad_bodies"] += 1
            return
        if self.forwarding_epoch is not None and epoch != self.forwarding_epoch:
            self.apply(self.core.solicit_now(monotonic_ms()))  # the router restarted: empty table
        self.forwarding_epoch = epoch

    def on_peer_moved(self, _topic: bytes, body: dict) -> None:
        nid = body.get("nid")
        try:
            locs = u64_list(body.get("locs"))
            if not is_u64(nid):
                raise FrameError("nid")
        except FrameError:
            self.actor.counters["bad_bodies"] += 1
            return
        log.info("event=peer_moved nid=%s locs=%s", format64(nid), ",".join(format64(x) for x in locs))
        self.apply(self.core.peer_moved(nid, locs, monotonic_ms()))


def _fmt(locs) -> list[str]:
    return [format64(loc) for loc in sorted(set(locs))]


def main(config: NodeConfig, run: RunDir) -> None:
    DiscoveryShell(config, run).actor.run()
