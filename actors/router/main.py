"""The router actor: RouterCore behind the bus.

link.rx -> core.receive -> link.tx (forwarding, flood) and ilnp.rx.* (delivery);
ilnp.tx -> core.send -> link.tx. Owns state.sessions, state.ports (the STP port
bindings, kept on disk too, so bound applications survive a restart of this actor),
state.forwarding (the epoch of its forwarding table: a new one means it starts empty)
and the [ext] peer state (peers.json: a restart must not change our nonces).

What it publishes and writes costs in proportion to what changed, not per packet:
state.sessions goes out at most once per SESSIONS_INTERVAL_MS (the first change at
once, later ones together at the end of the interval; the whole set on every hello),
and peers.json is written at most once per PEERS_INTERVAL_MS, and at exit.
"""
from __future__ import annotations

import json
import logging
import time

from bus.actor import CoreTimer, monotonic_ms
from bus.codec import FrameError, digest, is_u64, u64_list
from bus.rundir import RunDir, pid_alive, write_atomic

from ..config import NodeConfig
from ..nodekey import node_signer, nonce_key
from ..proto import topics
from ..proto.addr import format64
from ..proto.frames import LinkItem
from ..proto.ilnp import NONCE_LENGTHS
from ..ratelog import RateLimitedLog
from ..registry import open_actor
from ..statefile import StateFile, is_hex, is_int, is_int_string, need
from .arrivals import ArrivalLog
from .core import Deliver, Refused, RouterCore, SessionsChanged
from .ports import BindError, check_inbox, check_owner

log = logging.getLogger("router")
PORTS_FILE = "stp-ports.json"
PEERS_FILE = "peers.json"
SESSIONS_INTERVAL_MS = 150   # state.sessions: at most one publication per interval
PEERS_INTERVAL_MS = 1000     # peers.json: at most one write per interval


class Pace:
    """At most one write per `interval_ms`: the first change goes out at once, the
    changes after it wait for the end of the interval and go out together."""

    def __init__(self, interval_ms: int):
        self.interval_ms = interval_ms
        self.last: int | None = None  # when the last write went out
        self.pending = False          # a write is scheduled

    def change(self, now: int) -> int | None:
        """Something changed at `now`: 0 = write it now; n > 0 = schedule one write in n
        ms; None = one is scheduled already (it will carry this change too)."""
        if self.pending:
            return None
        if self.last is None or now - self.last >= self.interval_ms:
            return 0
        self.pending = True
        return self.last + self.interval_ms - now

    def wrote(self, now: int) -> None:
        self.last = now
        self.pending = False


class RouterShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.run = run
        self.actor = actor = open_actor("router", run, requires=(topics.STATE_LOCATORS,))
        self.core = RouterCore(
            config.nid, hop_limit=config.hop_limit, mtu=config.mtu,
            route_lifetime_ms=config.route_lifetime_ms,
            session_lifetime_ms=config.session_lifetime_ms,
            nonce_length=config.nonce_length, duplicate_hold_ms=config.duplicate_hold_ms,
            path_switch_hold_ms=config.path_switch_hold_ms,
            signer=node_signer(config, run.path), nonce_key=nonce_key(run.path),
            is_owner_alive=lambda owner: pid_alive(int(owner)))
        self.epoch = time.time_ns()  # this incarnation's forwarding table
        self.sessions_pace = Pace(SESSIONS_INTERVAL_MS)
        self.peers_pace = Pace(PEERS_INTERVAL_MS)
        self.inboxes: dict[int, str] = {}  # STP port -> the binder's inbox endpoint
        self.arrivals = ArrivalLog()  # data delivered per arrival locator (mobility's handoff figures)
        self.timer = CoreTimer(actor, self.core.next_deadline,
                               lambda now: self.apply(self.core.on_timer(now)))
        self.ratelog = RateLimitedLog(log)
        self._load_ports()
        self._load_peers()
        actor.subscribe(topics.LINK_RX, self.on_link_rx)
        actor.subscribe(topics.ILNP_TX, self.on_tx)
        actor.subscribe(topics.STATE_LOCATORS, self.on_locators)
        actor.subscribe(topics.MOB_PEER, self.on_peer_moved)
        actor.owns(topics.STATE_SESSIONS, lambda: {"sessions": self.core.session_keys()})
        actor.owns(topics.STATE_PORTS, self.ports_body)
        actor.owns(topics.STATE_FORWARDING, lambda: {"epoch": self.epoch})
        actor.command("sessions", self.cmd_sessions)
        actor.command("routes", self.cmd_routes)
        actor.command("bind", self.cmd_bind)
        actor.command("unbind", self.cmd_unbind)
        actor.command("ports", lambda: {str(p): o for p, o in self.core.ports.bindings().items()})
        actor.status_extra = lambda: {"core": dict(self.core.counters + self.core.peers.counters
                                                   + self.core.ports.counters),
                                      "locators": {"joined": _fmt(self.core.table.joined),
                                                   "leaving": _fmt(self.core.table.leaving)},
                                      "epoch": self.epoch,
                                      "sessions_digest": digest(self.core.session_keys()),
                                      "duplicate_digests": len(self.core.duplicates),
                                      "duplicate_evicted": self.core.duplicates.evicted,
                                      "tables": {"routes": len(self.core.table),
                                                 "sessions": len(self.core.sessions_table),
                                                 "ports": len(self.core.ports),
                                                 "route_waiting": self.core.waiting,
                                                 "path_switch_held": self.core.held,
                                                 **self.core.peers.sizes()},
                                      "arrivals": self.arrivals.view()}

    # ---- data path ----------------------------------------------------------
    def on_link_rx(self, _topic: bytes, body: dict) -> None:
        now = self.arrivals.now = monotonic_ms()
        receive, apply, counters = self.core.receive, self.apply, self.actor.counters
        for item in self.actor.items(body):
            try:
                arrival, datagram = item  # frames.LinkItem
                if type(datagram) is not bytes or not is_u64(arrival):
                    raise TypeError
            except (TypeError, ValueError):
                counters["bad_items"] += 1  # this item only: the rest of the batch goes on
                continue
            try:
                actions = receive(arrival, datagram, now)
            except Exception:
                self.actor.item_error(_topic)
                continue
            if actions:
                apply(actions)
        if self.core.waiting:  # the batch may have taught the route they wait for
            apply(self.core.retry_waiting(now))
        self.timer.arm()
        self._save_peers_if_changed()

    def on_tx(self, _topic: bytes, body: dict) -> None:
        now = monotonic_ms()
        send, apply, counters = self.core.send, self.apply, self.actor.counters
        for item in self.actor.items(body):
            try:
                dst_nid, dst_locs, nh, payload, via, opts = item  # frames.TxItem
                if not (is_u64(dst_nid) and type(nh) is int and type(payload) is bytes
                        and (via is None or is_u64(via)) and (opts is None or type(opts) is dict)):
                    raise TypeError
                u64_list(dst_locs)
            except (TypeError, ValueError):
                counters["bad_items"] += 1
                continue
            try:
                actions = send(dst_nid, dst_locs, nh, payload, via, opts, now)
            except Exception:
                self.actor.item_error(_topic)
                continue
            if actions:
                apply(actions)
        self.timer.arm()
        self._save_peers_if_changed()

    def apply(self, actions: list) -> None:
        emit = self.actor.emit
        for action in actions:
            kind = type(action)
            if kind is LinkItem:
                emit(topics.LINK_TX, action)
            elif kind is Deliver:
                if action.port is not None:  # STP: data
                    emit(topics.stp_rx(action.port), action.item)
                    self.arrivals.note(action.item.arrival_loc)
                else:
                    emit(topics.ilnp_rx(action.next_header), action.item)
            elif kind is SessionsChanged:
                self._sessions_changed()
            elif kind is Refused:
                self._log_refused(action)

    def _sessions_changed(self) -> None:
        wait = self.sessions_pace.change(monotonic_ms())
        if wait == 0:
            self._publish_sessions()
        elif wait is not None:
            self.actor.call_later(wait / 1000, self._publish_sessions)

    def _publish_sessions(self) -> None:
        self.sessions_pace.wrote(monotonic_ms())
        self.actor.publish(topics.STATE_SESSIONS, {"sessions": self.core.session_keys()})
        self.actor.counters["sessions_published"] += 1

    def _log_refused(self, action: Refused) -> None:
        self.ratelog.warning(action.reason, "event=send_refused reason=%s size=%d mtu=%d dst_nid=%s total=%d",
                             action.reason, action.size, self.core.mtu, format64(action.dst_nid),
                             self.core.counters[action.reason])

    # ---- state -------------------------------------------------------------
    def on_locators(self, _topic: bytes, body: dict) -> None:
        try:
            joined, leaving = u64_list(body.get("joined")), u64_list(body.get("leaving"))
        except FrameError:
            self.actor.counters["bad_bodies"] += 1  # not the owner's state: dropped whole
            return
        now = monotonic_ms()
        self.arrivals.joined(joined)
        self.apply(self.core.set_locators(joined, leaving, now))
        if self.core.waiting:
            self.apply(self.core.retry_waiting(now))
            self.timer.arm()

    def on_peer_moved(self, _topic: bytes, body: dict) -> None:
        via = body.get("via")
        if via is None:
            return  # an update that came on no interface of ours: no hint
        try:
            locs = u64_list(body.get("locs"))
            if not is_u64(via):
                raise FrameError("via")
        except FrameError:
            self.actor.counters["bad_bodies"] += 1
            return
        now = monotonic_ms()
        self.core.route_hint(locs, via, now)
        if self.core.waiting:
            self.apply(self.core.retry_waiting(now))
        self.timer.arm()

    def ports_body(self) -> dict:
        return {"ports": self.core.ports.bindings()}

    # ---- requests -----------------------------------------------------------
    def cmd_sessions(self) -> list:
        return [[format64(loc), format64(nid), last] for loc, nid, last in self.core.sessions(monotonic_ms())]

    def cmd_routes(self) -> list:
        now = monotonic_ms()
        return [[format64(loc), format64(iface), None if exp is None else exp - now]
                for loc, iface, exp in self.core.routes(now)]

    def cmd_bind(self, port: int, pid: int, inbox: str | None = None) -> int:
        """Bind an STP port for process `pid`; its segments are pushed to `inbox`."""
        bound = self._bind(port, pid, inbox)
        self._ports_changed()
        return bound

    def _bind(self, port, pid, inbox) -> int:
        try:
            pid = check_owner(pid)
            inbox = check_inbox(inbox, self.run.is_inbox)
            bound = self.core.ports.bind(port, pid)
        except BindError as exc:
            raise ValueError(str(exc)) from None
        if inbox:
            self.inboxes[bound] = inbox
            self.actor.direct.route(topics.stp_rx(bound), inbox)
        return bound

    def cmd_unbind(self, port: int, pid: int | None = None) -> bool:
        """Release an STP port (only if process `pid` holds it, when given)."""
        if type(port) is not int or not 0 <= port <= 65535 or not (pid is None or type(pid) is int):
            raise ValueError(f"unbind: port {port!r:.40} is not 0-65535 or pid {pid!r:.40} not an integer")
        released = self.core.ports.unbind(port, pid)
        if released:
            if self.inboxes.pop(port, None):
                self.actor.direct.unroute(topics.stp_rx(port))
            self._ports_changed()
        return released

    def _ports_changed(self) -> None:
        data = {str(p): [o, self.inboxes.get(p)] for p, o in self.core.ports.bindings().items()}
        write_atomic(self.run.path / PORTS_FILE, json.dumps(data).encode())
        self.actor.publish(topics.STATE_PORTS, self.ports_body())

    def _load_ports(self) -> None:
        """Bindings of a previous incarnation whose owners still live: {port: [pid, inbox]}
        (a file of any other shape is set aside and counted: actors/statefile.py)."""
        self.ports_file = StateFile(self.run.path / PORTS_FILE, log, "ports",
                                    lambda saved: check_ports_file(saved, self.run), self.actor.counters)
        for port, (pid, inbox) in (self.ports_file.load() or {}).items():
            if not pid_alive(pid):
                continue
            try:
                self._bind(int(port), pid, inbox)
            except ValueError as exc:  # e.g. the registry is full
                log.error("event=port_not_restored port=%s pid=%d error=%r", port, pid, str(exc))

    def _load_peers(self) -> None:
        self.peers_file = StateFile(self.run.path / PEERS_FILE, log, "peers", check_peers_file,
                                    self.actor.counters)
        saved = self.peers_file.load()
        if saved is not None:
            self.core.peers.restore(saved, monotonic_ms())
        self._peers_saved = self.core.peers.size()

    def _save_peers_if_changed(self) -> None:
        """Once per batch, one integer compare; a write at most once per PEERS_INTERVAL_MS."""
        if self.core.peers.size() == self._peers_saved:
            return
        wait = self.peers_pace.change(monotonic_ms())
        if wait == 0:
            self.save_peers()
        elif wait is not None:
            self.actor.call_later(wait / 1000, self.save_peers)

    def save_peers(self) -> None:
        """Write peers.json if the peer state changed since it was last written (also
        at exit)."""
        self.peers_pace.wrote(monotonic_ms())
        version = self.core.peers.size()
        if version == self._peers_saved:
            return
        self._peers_saved = version
        write_atomic(self.run.path / PEERS_FILE, json.dumps(self.core.peers.state()).encode())
        self.actor.counters["peers_saved"] += 1


def check_ports_file(saved, run: RunDir) -> None:
    """stp-ports.json: {"PORT": [PID, INBOX or null]}, INBOX one of this node's inboxes
    (pushing to anything else would fail at the first datagram). ValueError: the reason."""
    need(isinstance(saved, dict), f"not an object but a {type(saved).__name__}")
    for port, entry in saved.items():
        need(is_int_string(port, 1, 65535), f"port {port!r} is not 1-65535")
        need(isinstance(entry, list) and len(entry) == 2, f"port {port}: not [pid, inbox]")
        need(is_int(entry[0], 1), f"port {port}: pid {entry[0]!r} is not a process id")
        need(entry[1] is None or run.is_inbox(entry[1]), f"port {port}: inbox {entry[1]!r} is not an inbox here")


def check_peers_file(saved) -> None:
    """peers.json: {"ext": [NID...], "local": {"NID": nonce hex}, "remote": {"NID": nonce hex}}."""
    need(isinstance(saved, dict), f"not an object but a {type(saved).__name__}")
    unknown = set(saved) - {"ext", "local", "remote"}
    need(not unknown, f"unknown keys {sorted(unknown)}")
    ext = saved.get("ext", [])
    need(isinstance(ext, list) and all(is_int(n, 0, (1 << 64) - 1) for n in ext), "ext: not a list of NIDs")
    for key in ("local", "remote"):
        table = saved.get(key, {})
        need(isinstance(table, dict), f"{key}: not an object")
        for nid, nonce in table.items():
            need(is_int_string(nid, 0, (1 << 64) - 1), f"{key}: {nid!r} is not a NID")
            need(is_hex(nonce, NONCE_LENGTHS), f"{key}: nonce of {nid} is not 4 or 12 bytes of hex")


def _fmt(locs) -> list[str]:
    return [format64(loc) for loc in sorted(locs)]


def main(config: NodeConfig, run: RunDir) -> None:
    shell = RouterShell(config, run)
    try:
        shell.actor.run()
    finally:
        shell.save_peers()  # what the last interval held back
