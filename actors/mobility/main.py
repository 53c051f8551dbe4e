"""The mobility actor: MobilityCore behind the bus.

Owns the node's locator set (state.locators, also kept on disk so a restart resumes
where it was), runs the move schedule and moves on command (`move`), sends locator
updates to the router's active sessions (where discovery's host table, state.hosts,
says those peers are now) and answers peers' updates (mob.peer for discovery, acks back).
Records what each move cost (core.handoffs, the `moves` request): while a move's window
is open it asks the router's `status` every few hundred ms for its drop counters and its
arrival log, so no per-packet work comes here.
"""
from __future__ import annotations

import json
import logging
import time

from ..proto import topics
from bus.actor import CoreTimer, monotonic_ms
from bus.codec import FrameError, digest, is_u64, u64_list
from bus.rundir import RunDir, write_atomic

from ..config import NodeConfig
from ..proto.addr import AddressError, format64, parse_locator_set
from ..proto.frames import RxItem
from ..registry import open_actor
from ..proto.ilnp import NONCE_LENGTHS
from ..statefile import StateFile, is_hex, is_int, need
from .core import SEQ_MOD, MobilityCore, PeerMoved, PublishLocators, SendUpdate, locator_set

log = logging.getLogger("mobility")
STATE_FILE = "locators.json"
SEEN_FILE = "update-seqs.json"
SEEN_SAVE_INTERVAL_S = 1.0  # accepted updates reach the disk at most this often (and at once when idle)


class MobilityShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.run = run
        self.actor = actor = open_actor("mobility", run, requires=(topics.STATE_SESSIONS,))
        # Peers remember our last update sequence number: start above any earlier run's.
        first_seq = (time.time_ns() // 10_000_000) % (1 << 32)
        self.core = MobilityCore(
            config.nid, config.schedule, config.move_time_ms, config.handoff_time_ms,
            retries=config.update_retries, retry_interval_ms=config.update_interval_ms,
            accept_without_nonce=config.accept_updates_without_nonce, first_seq=first_seq)
        self.seen_file = StateFile(run.path / SEEN_FILE, log, "update_seqs", check_seen_file, actor.counters)
        self.core.restore_seen(self.seen_file.load() or {})
        self._seen_saved = self.core.seen_version
        self._seen_save_due = False
        self._seen_last_save = 0.0
        self.timer = CoreTimer(actor, self.core.next_deadline, lambda now: self.apply(self.core.on_timer(now)))
        self.handoff_timer = CoreTimer(actor, self.core.handoffs.next_deadline, self._handoff_tick)
        actor.subscribe(topics.STATE_SESSIONS, self.on_sessions)
        actor.subscribe(topics.STATE_HOSTS, self.on_hosts)
        actor.subscribe(topics.STATE_LINKS, self.on_links)
        actor.subscribe(topics.ILNP_RX_LOCATOR_UPDATE, self.on_rx)
        actor.owns(topics.STATE_LOCATORS, lambda: self.core.locators().body())
        actor.command("locators", self.cmd_locators)
        actor.command("move", self.cmd_move)
        actor.command("moves", self.cmd_moves)
        self.sessions_seen: list = []  # state.sessions as the router last published it
        actor.status_extra = lambda: {"core": dict(self.core.counters + self.core.handoffs.counters),
                                      "pending_updates": len(self.core.pending()),
                                      "sessions_digest": digest(self.sessions_seen)}
        self.apply(self.core.start(monotonic_ms(), current=self._load_current()))

    def apply(self, actions: list) -> None:
        for action in actions:
            kind = type(action)
            if kind is SendUpdate:
                self.actor.emit(topics.ILNP_TX, action.tx_item())
            elif kind is PublishLocators:
                self.actor.publish(topics.STATE_LOCATORS, action.body())
                self._save_current()
                log.info("event=locators cur=%s leaving=%s", _fmt(action.cur), _fmt(action.leaving))
            elif kind is PeerMoved:
                self.actor.publish(topics.MOB_PEER, action.body())
        if self.core.seen_version != self._seen_saved:
            self._save_seen_soon()
        self.timer.arm()
        self.handoff_timer.arm()

    def _handoff_tick(self, now: int) -> None:
        if self.core.handoffs.on_timer(now):
            self.actor.ask("router", "status", self._on_router_status, timeout_s=1.0)

    def _on_router_status(self, ok, result) -> None:
        """The router's counters and arrival log, for the open moves' windows (a router
        that does not answer leaves the figures as of the last look)."""
        if ok is True and isinstance(result, dict):
            self.core.handoffs.router_seen(monotonic_ms(), result.get("core"), result.get("arrivals"))
        else:
            self.actor.counters["router_unanswered"] += 1
        self.handoff_timer.arm()

    def _save_seen_soon(self) -> None:
        """Keep the last accepted sequence numbers on disk: at once when the last write is
        a second old, else once at the end of that second (a flood of signed updates from
        invented keys must not become a flood of fsyncs)."""
        if self._seen_save_due:
            return
        wait = self._seen_last_save + SEEN_SAVE_INTERVAL_S - time.monotonic()
        if wait <= 0:
            self._save_seen()
        else:
            self._seen_save_due = True
            self.actor.call_later(wait, self._save_seen)

    def _save_seen(self) -> None:
        self._seen_save_due = False
        self._seen_last_save = time.monotonic()
        self._seen_saved = self.core.seen_version
        try:
            self.seen_file.save(self.core.seen_state())
        except OSError as exc:
            log.error("event=update_seqs_unwritable error=%r", exc.strerror)

    def on_sessions(self, _topic: bytes, body: dict) -> None:
        sessions = body.get("sessions")
        if type(sessions) is not list:
            self.actor.counters["bad_bodies"] += 1
            return
        # counts the entries it cannot use (bad_session_entry); a multihomed node tells new peers its order
        self.apply(self.core.set_sessions(sessions, monotonic_ms()))
        self.sessions_seen = sessions

    def on_links(self, _topic: bytes, body: dict) -> None:
        """The link's word on which locators' interfaces are down (multihoming: withdraw them)."""
        try:
            down = u64_list(body.get("down"))
        except FrameError:
            self.actor.counters["bad_bodies"] += 1
            return
        actions = self.core.set_links(down, monotonic_ms())
        if actions:
            log.info("event=links down=%s live=%s", _fmt(sorted(down)), _fmt(self.core.live))
        self.apply(actions)

    def on_hosts(self, _topic: bytes, body: dict) -> None:
        hosts = body.get("hosts")
        if type(hosts) is not list:
            self.actor.counters["bad_bodies"] += 1
            return
        self.core.set_hosts(hosts)  # counts the rows it cannot use (bad_host_entry)

    def on_rx(self, _topic: bytes, body: dict) -> None:
        now = monotonic_ms()
        actions = []
        for item in self.actor.items(body):
            try:
                rx = RxItem(*item)
                if not (is_u64(rx.src_loc) and is_u64(rx.src_nid) and is_u64(rx.arrival_loc)
                        and type(rx.payload) is bytes and (rx.opts is None or type(rx.opts) is dict)):
                    raise TypeError
            except TypeError:
                self.actor.counters["bad_items"] += 1  # this item only: the rest of the batch goes on
                continue
            try:
                actions.extend(self.core.receive(rx.src_loc, rx.src_nid, rx.arrival_loc, rx.payload, rx.opts, now))
            except Exception:
                self.actor.item_error(_topic)
        self.apply(actions)

    def cmd_locators(self) -> dict:
        state = self.core.locators()
        return {"cur": [format64(x) for x in state.cur], "joined": [format64(x) for x in state.joined],
                "leaving": [format64(x) for x in state.leaving]}

    def cmd_move(self, locs) -> dict:
        """locs: "0:0:0:b" / "0:0:0:b,0:0:0:c" or a list of ints."""
        try:
            new = parse_locator_set(locs) if isinstance(locs, str) else u64_list(locs)
        except (AddressError, FrameError) as exc:
            raise ValueError(f"move: {exc}") from None
        self.apply(self.core.move(new, monotonic_ms()))
        return self.cmd_locators()

    def cmd_moves(self) -> list[dict]:
        """The last moves, oldest first: locators and NIDs as text, `started_at` wall time
        (s), the other times in ms after the start (actors/mobility/handoffs.py)."""
        return [move_view(m, monotonic_ms(), time.time()) for m in self.core.handoffs.records()]

    def _load_current(self) -> list[int] | None:
        """Where a previous incarnation was (a file of another shape is set aside, counted)."""
        self.cur_file = StateFile(self.run.path / STATE_FILE, log, "locators", check_locators_file,
                                  self.actor.counters)
        saved = self.cur_file.load()
        return None if saved is None else saved["cur"]

    def _save_current(self) -> None:
        write_atomic(self.run.path / STATE_FILE, json.dumps({"cur": list(self.core.cur)}).encode())


def check_locators_file(saved) -> None:
    """locators.json: {"cur": [locator...]}, a set a node can be on."""
    need(isinstance(saved, dict) and "cur" in saved, "not an object with \"cur\"")
    need(isinstance(saved["cur"], list), "cur: not a list")
    locator_set(saved["cur"])  # ValueError: the reason


def check_seen_file(saved) -> None:
    """update-seqs.json: {"seen": [[NID, nonce hex or null, seq, [locator...]], ...]}."""
    need(isinstance(saved, dict) and isinstance(saved.get("seen"), list), "not an object with a \"seen\" list")
    for row in saved["seen"]:
        need(isinstance(row, list) and len(row) == 4, f"entry {row!r:.60}: not [nid, nonce, seq, locators]")
        nid, nonce, seq, locs = row
        need(is_int(nid, 0, (1 << 64) - 1), f"NID {nid!r:.40} is not 64 bits")
        need(nonce is None or is_hex(nonce, NONCE_LENGTHS), f"nonce {nonce!r:.40} of {nid} is not 4 or 12 bytes of hex")
        need(is_int(seq, 0, SEQ_MOD - 1), f"seq {seq!r:.40} of {nid} is not 32 bits")
        need(isinstance(locs, list) and all(is_int(x, 0, (1 << 64) - 1) for x in locs),
             f"locators of {nid}: not a list of 64-bit locators")


def move_view(move: dict, now_ms: int, now_s: float) -> dict:
    """A HandoffLog record for a request's answer (text addresses, wall-clock start)."""
    out = dict(move)
    out["started_at"] = round(now_s - (now_ms - move["started"]) / 1000, 3)
    del out["started"]  # a monotonic time: meaningless to another host
    out["old"], out["new"] = [format64(x) for x in move["old"]], [format64(x) for x in move["new"]]
    if move["first_packet_loc"] is not None:
        out["first_packet_loc"] = format64(move["first_packet_loc"])
    out["updates"] = [{**u, "peer": format64(u["peer"])} for u in move["updates"]]
    return out


def _fmt(locs) -> str:
    return ",".join(format64(x) for x in locs) or "-"


def main(config: NodeConfig, run: RunDir) -> None:
    MobilityShell(config, run).actor.run()
