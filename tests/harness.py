"""An in-memory overlay: the pure cores of several nodes, fake links, one fake clock.

The pattern of aioquic's client-and-server-in-memory tests: each Node is a RouterCore,
a DiscoveryCore and a MobilityCore configured as their shells configure them (from a
NodeConfig, so the defaults are the deployed ones), and the harness does with every
action exactly what the shells and the link do with it. Multi-node scenarios then run
without root, sockets or processes, in milliseconds, and the same seed gives the same
bytes on the wire (nonces and discovery jitter come from random.Random(seed)).

Time is a discrete event queue: bus messages between a node's actors are handled at
the current instant, in FIFO order; a datagram put on a virtual network reaches every
OTHER node joined to it `latency_ms` later (the deployed link drops its own frames:
own-frame filter, multicast loopback off), if it is still joined then. Nothing
recurses, so a flood terminates. At one instant the due timers fire first, but what
they cause queues behind the events already due (a frame arriving at the instant of a
move still arrives on the old network).
"""
from __future__ import annotations

import heapq
import random
from collections import Counter
from typing import Callable, NamedTuple

from actors.config import NodeConfig
from actors.discovery.core import Announce, DiscoveryCore, HostsChanged
from actors.mobility.core import MobilityCore, PeerMoved, PublishLocators, SendUpdate
from actors.proto import ilnp, stp
from actors.proto.frames import LinkItem, RxItem, TxItem
from actors.proto.numbers import NH_DISCOVERY, NH_LOCATOR_UPDATE, NH_STP
from actors.router.core import Deliver, Refused, RouterCore, SessionsChanged
from actors.stp.replica import HostReplica


class Frame(NamedTuple):
    """One transmission on a virtual network (what a capture on that network shows)."""
    t: int
    sender: str
    loc: int
    datagram: bytes

    def packet(self) -> tuple[ilnp.Packet, dict | None]:
        """(packet with the inner next header and payload, destination options or None)."""
        return ilnp.decode_with_opts(self.datagram)


class Received(NamedTuple):
    """An STP segment delivered to a bound port (what StpSocket.recvfrom_ilv gives)."""
    t: int
    data: bytes
    src_nid: int
    src_port: int
    ilv: tuple[int, int, int]  # (src_loc, dst_loc, arrival_loc)


def config(hostname: str, nid: int, schedule, **settings) -> NodeConfig:
    """A NodeConfig with the deployed defaults (conf/*.toml) except what `settings` says."""
    return NodeConfig(path=f"<harness {hostname}>", hostname=hostname, nid=nid,
                      schedule=[list(s) for s in schedule], **settings)


class Net:
    """The virtual networks (locator -> joined nodes), the clock and the event queue."""

    def __init__(self, seed: int = 0, latency_ms: int = 1):
        self.seed = seed
        self.latency_ms = latency_ms
        self.now = 0
        self.nodes: dict[str, Node] = {}
        self.members: dict[int, set[str]] = {}
        self.log: list[Frame] = []       # every transmission, in order
        self.lose: Callable[[Frame, str], bool] | None = None  # (frame, receiver) -> drop it?
        self.counters: Counter = Counter()  # link drops: "lost" (by `lose`), "left" (see link_rx)
        self._events: list = []          # heap of (time, seq, fn, args)
        self._seq = 0

    def add(self, cfg: NodeConfig) -> Node:
        node = self.nodes[cfg.hostname] = Node(self, cfg, f"{self.seed}/{cfg.hostname}")
        return node

    def start(self) -> None:
        """What each mobility shell does when it starts: publish the first locator set."""
        for node in self.nodes.values():
            node.apply(node.mobility.start(self.now))
        self.drain()

    # -- the event queue ---------------------------------------------------------------

    def post(self, fn, *args, delay: int = 0) -> None:
        heapq.heappush(self._events, (self.now + delay, self._seq, fn, args))
        self._seq += 1

    def drain(self) -> None:
        """Handle every event due now (and those they cause now), in FIFO order."""
        while self._events and self._events[0][0] <= self.now:
            _, _, fn, args = heapq.heappop(self._events)
            fn(*args)

    def transmit(self, sender: Node, loc: int, datagram: bytes) -> None:
        frame = Frame(self.now, sender.name, loc, datagram)
        self.log.append(frame)
        for name in sorted(self.members.get(loc, ())):
            if name == sender.name:
                continue  # the own-frame filter
            if self.lose and self.lose(frame, name):
                self.counters["lost"] += 1
            else:
                self.post(self.nodes[name].link_rx, loc, datagram, delay=self.latency_ms)

    def inject(self, node: Node, loc: int, datagram: bytes) -> None:
        """A frame from outside the harness (a capture) arrives at `node` on `loc` now."""
        self.post(node.link_rx, loc, datagram)
        self.drain()

    def join(self, node: Node, joined) -> None:
        """The link follows state.locators: member of exactly the joined networks."""
        for names in self.members.values():
            names.discard(node.name)
        for loc in joined:
            self.members.setdefault(loc, set()).add(node.name)

    # -- time --------------------------------------------------------------------------

    def next_time(self) -> int | None:
        times = [t for n in self.nodes.values() for t in n.deadlines()]
        if self._events:
            times.append(self._events[0][0])
        return min(times, default=None)

    def step(self, until: int) -> bool:
        """Move to the next timer or event (if not after `until`), fire and drain it."""
        self.drain()
        t = self.next_time()
        if t is None or t > until:
            return False
        self.now = max(self.now, t)
        for node in self.nodes.values():
            node.fire(self.now)
        self.drain()
        return True

    def run(self, until: int) -> None:
        fired_at, spins = None, 0
        while self.step(until):
            spins = spins + 1 if fired_at == self.now else 0
            fired_at = self.now
            if spins > 10_000:
                raise RuntimeError(f"a timer does not advance at {self.now} ms")
        self.now = max(self.now, until)

    def advance(self, ms: int) -> None:
        self.run(self.now + ms)

    def run_until(self, predicate: Callable[[], bool], limit_ms: int) -> bool:
        """Run until `predicate()` holds (True) or `limit_ms` from now (False)."""
        until = self.now + limit_ms
        self.drain()
        while not predicate():
            if not self.step(until):
                self.now = until
                return predicate()
        return True


class Node:
    """One node: its three cores, wired as the shells wire them, and an STP application."""

    def __init__(self, net: Net, cfg: NodeConfig, seed: str):
        self.net, self.cfg, self.name, self.nid = net, cfg, cfg.hostname, cfg.nid
        # One seeded rng per core (the shells use os.urandom and random.Random()), so a
        # nonce drawn in one core never shifts another core's draws. Application owners
        # never die here (the shell asks pid_alive).
        self.router = RouterCore(
            cfg.nid, hop_limit=cfg.hop_limit, mtu=cfg.mtu, route_lifetime_ms=cfg.route_lifetime_ms,
            session_lifetime_ms=cfg.session_lifetime_ms, nonce_length=cfg.nonce_length,
            rng_bytes=random.Random(f"{seed}/nonces").randbytes, is_owner_alive=lambda owner: True,
            duplicate_hold_ms=cfg.duplicate_hold_ms)
        self.discovery = DiscoveryCore(cfg.hostname, cfg.nid, cfg.wait_time_ms, random.Random(f"{seed}/jitter"))
        # The shell seeds first_seq from the wall clock; a seeded draw plays that part.
        self.mobility = MobilityCore(
            cfg.nid, cfg.schedule, cfg.move_time_ms, cfg.handoff_time_ms,
            retries=cfg.update_retries, retry_interval_ms=cfg.update_interval_ms,
            accept_without_nonce=cfg.accept_updates_without_nonce,
            first_seq=random.Random(f"{seed}/seq").randrange(1 << 32))
        self.hosts = HostReplica()                # the application's copy of state.hosts
        self.inbox: dict[int, list[Received]] = {}  # bound STP port -> segments
        self.refused: list[Refused] = []
        self.peer_moves: list[PeerMoved] = []       # accepted locator updates (mob.peer)

    @property
    def counters(self) -> dict[str, Counter]:
        r = self.router
        return {"router": r.counters + r.peers.counters + r.ports.counters,
                "discovery": self.discovery.counters, "mobility": self.mobility.counters}

    def deadlines(self) -> list[int]:
        return [t for core in (self.router, self.discovery, self.mobility)
                if (t := core.next_deadline()) is not None]

    def fire(self, now: int) -> None:
        for core in (self.router, self.discovery, self.mobility):
            t = core.next_deadline()
            if t is not None and t <= now:
                self.apply(core.on_timer(now))

    def link_rx(self, loc: int, datagram: bytes) -> None:
        """A frame arrived from the network `loc` (link.rx); a node that left that network
        while the frame was on its way no longer hears it (the link left the group)."""
        if self.name not in self.net.members.get(loc, ()):
            self.net.counters["left"] += 1
            return
        self.apply(self.router.receive(loc, datagram, self.net.now))

    # -- what each shell does with each action --------------------------------------------

    def apply(self, actions: list) -> None:
        net, post = self.net, self.net.post
        hosts_changed = False
        for a in actions:
            kind = type(a)
            if kind is LinkItem:                               # router -> link.tx
                net.transmit(self, a.loc, a.datagram)
            elif kind is Deliver:                              # router -> ilnp.rx.*
                post(self._deliver, a)
            elif kind is SessionsChanged:                      # router -> state.sessions
                post(self.mobility.set_sessions, self.router.session_keys())
            elif kind is Refused:
                self.refused.append(a)
            elif kind is Announce or kind is SendUpdate:        # discovery, mobility -> ilnp.tx
                post(self.tx, a.tx_item())
            elif kind is HostsChanged:                         # discovery -> state.hosts
                hosts_changed = True                           # (once per batch, as the shell)
            elif kind is PublishLocators:                      # mobility -> state.locators
                post(self.router.set_locators, list(a.joined), list(a.leaving), net.now)
                post(self._discovery_do, "set_locators", list(a.joined), list(a.leaving))
                post(net.join, self, a.joined)
            elif kind is PeerMoved:                            # mobility -> mob.peer
                self.peer_moves.append(a)
                post(self._discovery_do, "peer_moved", a.nid, list(a.locs))
                if isinstance(a.via, int):
                    post(self.router.route_hint, list(a.locs), a.via, net.now)
            else:
                raise TypeError(f"the harness does not know action {a!r}")
        if hosts_changed:
            rows = self.rows()
            post(self.mobility.set_hosts, rows)
            post(self.hosts.load, rows)

    def rows(self) -> list:
        """DiscoveryShell.rows: [[hostname, nid, [locs newest first], age_ms], ...]."""
        return [[r.hostname, r.nid, list(r.locs), r.age_ms] for r in self.discovery.hosts(self.net.now)]

    def _discovery_do(self, method: str, *args) -> None:
        self.apply(getattr(self.discovery, method)(*args, self.net.now))

    def tx(self, item: TxItem) -> None:
        self.apply(self.router.send(*item, now=self.net.now))

    def _deliver(self, d: Deliver) -> None:
        it: RxItem = d.item
        now = self.net.now
        if d.next_header == NH_DISCOVERY:
            self.apply(self.discovery.receive(it.src_loc, it.src_nid, it.arrival_loc, it.payload, now))
        elif d.next_header == NH_LOCATOR_UPDATE:
            self.apply(self.mobility.receive(it.src_loc, it.src_nid, it.arrival_loc, it.payload, it.opts, now))
        elif d.next_header == NH_STP and d.port in self.inbox:
            src_port, _dst, data = stp.decode(it.payload)
            self.inbox[d.port].append(Received(now, data, it.src_nid, src_port,
                                               (it.src_loc, it.dst_loc, it.arrival_loc)))

    # -- the application (StpSocket) ---------------------------------------------------

    def bind(self, port: int) -> int:
        port = self.router.ports.bind(port, f"{self.name}:{port}")
        self.inbox[port] = []
        return port

    def send_stp(self, dst_hostname: str, src_port: int, dst_port: int, data: bytes) -> None:
        """StpSocket.sendto: resolve through the host table replica, ilnp.tx via=None."""
        found = self.hosts.resolve(dst_hostname)
        if found is None:
            raise LookupError(f"{self.name}: host {dst_hostname!r} not discovered yet")
        nid, locs = found
        self.net.post(self.tx, TxItem(nid, locs, NH_STP, stp.encode(src_port, dst_port, data)))
        self.net.drain()

    def received(self, port: int) -> list[Received]:
        return self.inbox[port]

