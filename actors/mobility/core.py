"""Mobility core: the locator set, the move schedule, soft handoff, locator updates and acks.

PROTOCOL.md "Locator update (next header 44)" and "Mobility (soft handoff)"; DESIGN.md
"Who owns what". Pure: time comes in as int milliseconds, actions go out as frozen
dataclasses, the shell does the bus I/O.

Decisions worth knowing:
- A move publishes cur = new, joined = new + (old - new), leaving = old - new, and after
  handoff_time publishes joined = cur, leaving = [] (the router then drops routes via the
  old interfaces and the link leaves their groups). handoff_time 0 = hard handoff.
- A move during a handoff finishes the old handoff at once (its leaving set is dropped,
  the set we are moving away from becomes the new leaving set) and supersedes the
  unacknowledged updates of the old move: the new update carries the newer locators.
- Updates go with via=None: the router owns the forwarding table, and during the handoff
  its route to the peer is still the one the session used before the move (learned
  routes via the old interface are only dropped at the end of the handoff); if the peer's
  locator is now one we joined, the router sends there directly, which is shorter. Unlike
  the original (always the old interface), this also works in a hard handoff.
- The update body names the new set `cur`, not joined: that is what the original sends.
- Where an update goes: the router's state.sessions says which peers are active but not
  where they are now (it lists every (loc, NID) used in the last 30 s, sorted, so a peer
  that moved has several, stale ones included). Discovery's host table (state.hosts, with
  accepted updates applied) knows: its locators for the peer come first, then the session
  ones it does not name. The lab showed why: with both nodes mobile, an update sent to a
  locator the peer had left was retried there until it gave up.
- Each update carries a fresh sequence number (retries reuse it). It is 32 bits on the
  wire (router destination options), so it wraps and is compared as a serial number
  (RFC 1982). The shell should seed `first_seq` from a wall clock so that a restarted
  mobility actor keeps counting upwards (peers remember our last seq per nonce).
- Receiving: an update whose seq equals the last accepted one from that peer, with the
  same locators, is a retry after a lost ack: it is acked again, not applied again
  (counted update_duplicate). An older seq (or equal seq with other locators) is a
  replay: dropped without an ack (update_replay). A peer that proved its nonce
  (nonce_ok True) must send a seq, or the update is refused (update_missing_seq): a
  replayer could strip the seq option otherwise.
- [ext] A cryptographic source NID (3xxx:...) is judged by its signature alone
  (proto/signature.py: key hashes to the NID, signature verifies, counted
  update_sig_* / ack_sig_* by reason) and its seq must be newer than the last accepted
  one whatever the nonce: every node on the LAN sees the nonces, none can sign. The
  last accepted seq per peer is `seen_state()`, which the shell keeps on disk, so a
  restart does not reopen the door to a captured update.
- A plain NID that never sent a nonce is judged by policy (accept_without_nonce), and
  then only when we have a session with it: the original sends updates to its active
  sessions, and nobody else needs to tell us where they went.
- Every per-peer table is capped (least recently used evicted, counted): strangers can
  send updates from any number of invented NIDs.
- Multihoming (issue 15): a set of several locators is held at once, in order: the
  first is the primary. Peers are told the order (an update to each new session peer
  while we hold several; discovery ranks a peer's locators in its last update's order),
  so they send to the primary. The link says which locators' interfaces are down
  (state.links, `set_links`): those are withdrawn from what we publish and announce at
  once, without a handoff (nothing arrives on a dead link), and offered again in their
  place when the link is back; peers are updated either way (cause link_down, link_up).
  `cur` stays the set we hold (the schedule's, kept on disk); `live` is what is used.
- Each move is recorded (handoffs.py, `self.handoffs`): when it started, each update's
  sending, retries, ack or end; the shell adds what the router saw (first data packet on
  the new locators, drops and late arrivals in the move's window). The log has its own
  deadlines (its looks at the router), so the core's timer is not woken for it.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import ClassVar

from ..proto import signature
from ..proto.addr import ALL_NODES, is_cryptographic
from ..proto.frames import TxItem
from ..proto.locator_update import Ack, LocatorUpdateWireError, decode, encode_ack, encode_update
from ..proto.numbers import NH_LOCATOR_UPDATE
from .handoffs import SUPERSEDED, UNACKED, HandoffLog

_U64 = 1 << 64
SEQ_MOD = 1 << 32  # the sequence option is 32 bits
MAX_PEERS = 4096   # peers whose last update we remember (least recently used evicted)


def seq_newer(a: int, b: int) -> bool:
    """RFC 1982 serial number comparison: is `a` after `b`?"""
    return 0 < (a - b) % SEQ_MOD < SEQ_MOD // 2


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class PublishLocators:
    """Publish `state.locators`: joined = cur + leaving."""
    cur: tuple[int, ...]
    joined: tuple[int, ...]
    leaving: tuple[int, ...]

    def body(self) -> dict:
        return {"cur": list(self.cur), "joined": list(self.joined), "leaving": list(self.leaving)}


@dataclass(frozen=True)
class SendUpdate:
    """A next-header-44 packet for the router (`ilnp.tx`); the router stamps the nonce."""
    dst_nid: int
    dst_locs: tuple[int, ...]
    via: int | None
    body: bytes
    seq: int | None = None

    next_header: ClassVar[int] = NH_LOCATOR_UPDATE

    @property
    def opts(self) -> dict | None:
        return None if self.seq is None else {"seq": self.seq}

    def tx_item(self) -> TxItem:
        """The `ilnp.tx` item."""
        return TxItem(self.dst_nid, list(self.dst_locs), NH_LOCATOR_UPDATE, self.body, self.via, self.opts)


@dataclass(frozen=True)
class PeerMoved:
    """Publish `mob.peer`: an accepted locator update (discovery rewrites its host table)."""
    nid: int
    locs: tuple[int, ...]
    via: int | None = None  # the interface the update arrived on: the new locators are reachable there

    def body(self) -> dict:
        return {"nid": self.nid, "locs": list(self.locs), "via": self.via}


Action = PublishLocators | SendUpdate | PeerMoved


# ---------------------------------------------------------------- helpers


@dataclass
class _Pending:
    """An update to one peer NID waiting for its ack."""
    seq: int
    dst_locs: tuple[int, ...]
    body: bytes
    retries_left: int
    deadline: int
    move_id: int = 0  # the move whose record (handoffs.py) it belongs to
    via: int | None = None  # out on this interface (a withdrawal's: see set_links)


def locator_set(locs) -> tuple[int, ...]:
    """Validate one step of a schedule (or a commanded move): ordered, no duplicates."""
    out: list[int] = []
    for loc in locs:
        if not isinstance(loc, int) or isinstance(loc, bool) or not 0 <= loc < _U64:
            raise ValueError(f"locator {loc!r} is not a 64-bit unsigned int")
        if loc == ALL_NODES:
            raise ValueError("ALL_NODES is not a locator a node can move to")
        if loc not in out:
            out.append(loc)
    if not out:
        raise ValueError("a locator set holds at least one locator")
    return tuple(out)


class _Opts:
    """The router's receive opts, checked: nonce, seq, nonce_ok, sig."""
    __slots__ = ("nonce", "seq", "nonce_ok", "sig")

    def __init__(self, nonce=None, seq=None, nonce_ok=None, sig=None):
        self.nonce, self.seq, self.nonce_ok, self.sig = nonce, seq, nonce_ok, sig


def _parse_opts(opts) -> _Opts | None:
    """The router's receive opts, or None when malformed."""
    if opts is None:
        return _Opts()
    if not isinstance(opts, dict):
        return None
    seq, nonce, sig = opts.get("seq"), opts.get("nonce"), opts.get("sig")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < SEQ_MOD):
        return None
    if nonce is not None and not isinstance(nonce, bytes) or sig is not None and not isinstance(sig, bytes):
        return None
    ok = opts.get("nonce_ok")
    # Anything but an explicit True/None is a failed nonce check.
    return _Opts(nonce, seq, True if ok is True else None if ok is None else False, sig)


# ---------------------------------------------------------------- the core


class MobilityCore:
    def __init__(
        self,
        nid: int,
        schedule: list[list[int]],
        move_time_ms: int,
        handoff_time_ms: int,
        *,
        retries: int = 3,
        retry_interval_ms: int = 1000,
        accept_without_nonce: bool = True,
        first_seq: int = 1,
    ) -> None:
        if not schedule:
            raise ValueError("the schedule holds at least one locator set")
        self.schedule = [locator_set(s) for s in schedule]
        if len(self.schedule) > 1 and move_time_ms <= 0:
            raise ValueError("move_time must be positive when the schedule has several sets")
        if handoff_time_ms < 0 or retries < 0 or retry_interval_ms <= 0:
            raise ValueError("handoff_time >= 0, retries >= 0 and retry_interval > 0 required")
        self.nid = nid
        self.move_time = move_time_ms
        self.handoff_time = handoff_time_ms
        self.retries = retries
        self.retry_interval = retry_interval_ms
        self.accept_without_nonce = accept_without_nonce
        self.counters: Counter = Counter()

        self.cur: tuple[int, ...] = ()
        self.leaving: tuple[int, ...] = ()
        self.down: frozenset[int] = frozenset()  # locators whose link is down (state.links)
        self._step = 0                      # index in schedule of the last scheduled set
        self._next_move: int | None = None
        self._handoff_end: int | None = None
        self._next_seq = first_seq % SEQ_MOD
        self._sessions: dict[int, tuple[int, ...]] = {}   # peer NID -> locs, newest first
        self._hosts: dict[int, tuple[int, ...]] = {}      # peer NID -> locs, host table order
        self._pending: dict[int, _Pending] = {}           # peer NID -> unacked update
        # NID -> (nonce, last accepted seq, its locs); kept on disk by the shell (seen_state)
        self._seen: OrderedDict[int, tuple[bytes | None, int, tuple[int, ...]]] = OrderedDict()
        self.seen_version = 0  # changes whenever seen_state() does
        self.handoffs = HandoffLog()  # what each move cost (the `moves` request, the metrics)

    # ------------------------------------------------------------ state

    @property
    def live(self) -> tuple[int, ...]:
        """The set we use: cur without the locators whose link is down, in cur's order
        (all of cur when every one is down: there is nothing better to offer)."""
        live = tuple(loc for loc in self.cur if loc not in self.down)
        return live or self.cur

    @property
    def joined(self) -> tuple[int, ...]:
        return self.live + self._leaving_live

    @property
    def _leaving_live(self) -> tuple[int, ...]:
        return tuple(loc for loc in self.leaving if loc not in self.down)

    def locators(self) -> PublishLocators:
        """The current `state.locators` (also for republishing on `hello`)."""
        return PublishLocators(self.live, self.joined, self._leaving_live)

    def pending(self) -> dict[int, tuple[int, int]]:
        """Unacknowledged updates: peer NID -> (seq, retries left)."""
        return {nid: (p.seq, p.retries_left) for nid, p in self._pending.items()}

    def next_deadline(self) -> int | None:
        times = [t for t in (self._handoff_end, self._next_move) if t is not None]
        times += [p.deadline for p in self._pending.values()]
        return min(times, default=None)

    # ------------------------------------------------------------ events

    def start(self, now: int, current=None) -> list[Action]:
        """Publish the first set (or `current`, to resume after a restart) and arm the schedule."""
        self.cur = self.schedule[0] if current is None else locator_set(current)
        self._step = self.schedule.index(self.cur) if self.cur in self.schedule else 0
        self.leaving = ()
        self._handoff_end = None
        self._next_move = now + self.move_time if len(self.schedule) > 1 else None
        return [self.locators()]

    def move(self, new_set, now: int) -> list[Action]:
        """Move on command (`ilnp-move`). Raises ValueError on a bad set (a command error).

        The schedule goes on from the commanded set when it is one of its steps, else
        from where it was; the next scheduled move is a full move_time later.
        """
        new = locator_set(new_set)
        if new == self.cur:
            self.counters["move_same_set"] += 1
            return []
        if new in self.schedule:
            self._step = self.schedule.index(new)
        if self._next_move is not None:
            self._next_move = now + self.move_time
        return self._move(new, now, "command")

    def set_links(self, down, now: int) -> list[Action]:
        """The link's `state.links`: the locators whose interface is down now. Ours among
        them are withdrawn at once, those back are offered again; peers are updated."""
        down = frozenset(down)
        if down == self.down:
            return []
        before, before_joined = self.live, self.joined
        self.down = down
        if self.live == before and self.joined == before_joined:
            return []  # none of the locators we use
        lost = [loc for loc in before if loc not in self.live]
        back = [loc for loc in self.live if loc not in before]
        self.counters["locators_withdrawn"] += len(lost)
        self.counters["locators_restored"] += len(back)
        actions: list[Action] = [self.locators()]
        if self.live != before:
            move_id = self.handoffs.started(now, before, self.live, "link_down" if lost else "link_up", 0)
            # A withdrawal's update goes out on the primary of those left: the router's
            # routes through the dead interface went with it, and it may know no other
            # way to the peer yet (a router on the network we still have does)
            actions += self._send_updates(now, move_id, via=self.live[0] if lost else None)
        return actions

    def set_sessions(self, sessions, now: int | None = None) -> list[Action]:
        """Replica of the router's `state.sessions`: [[loc, nid], ...], later = more recent.
        While we hold several locators, each new session peer is told their order (with
        `now`; returns the updates)."""
        peers: dict[int, list[int]] = {}
        for entry in reversed(list(sessions)):
            try:
                loc, nid = entry
            except (TypeError, ValueError):
                self.counters["bad_session_entry"] += 1
                continue
            if not isinstance(loc, int) or not isinstance(nid, int):
                self.counters["bad_session_entry"] += 1
                continue
            if nid in (0, self.nid) or loc == ALL_NODES:
                continue  # discovery broadcast or ourselves: nobody to update
            locs = peers.setdefault(nid, [])
            if loc not in locs:
                locs.append(loc)
        new = [nid for nid in peers if nid not in self._sessions and nid not in self._pending]
        self._sessions = {nid: tuple(locs) for nid, locs in peers.items()}
        if now is None or len(self.live) < 2 or not new:
            return []
        self.counters["order_updates"] += len(new)
        return self._update_peers(now, 0, new)

    def set_hosts(self, rows) -> None:
        """Replica of discovery's `state.hosts`: [[hostname, nid, [loc...], age], ...],
        locators preferred first. Unacknowledged updates to a peer whose locators changed
        are retried towards the new ones."""
        hosts: dict[int, tuple[int, ...]] = {}
        for row in rows or ():
            try:
                nid, locs = row[1], row[2]
                locs = tuple(loc for loc in locs if isinstance(loc, int) and loc != ALL_NODES)
            except (TypeError, IndexError, KeyError):
                self.counters["bad_host_entry"] += 1
                continue
            if not isinstance(nid, int) or isinstance(nid, bool):
                self.counters["bad_host_entry"] += 1
                continue
            if locs:
                hosts[nid] = locs
        for nid, p in self._pending.items():
            if nid in hosts and hosts[nid] != self._hosts.get(nid):
                p.dst_locs = self._destination(nid, p.dst_locs, hosts)
        self._hosts = hosts

    def _destination(self, nid: int, session_locs: tuple[int, ...], hosts=None) -> tuple[int, ...]:
        """Where an update to `nid` goes: the host table's locators, then the sessions' others."""
        known = (self._hosts if hosts is None else hosts).get(nid, ())
        return known + tuple(loc for loc in session_locs if loc not in known)

    def receive(self, src_loc: int, src_nid: int, arrival_loc: int, body, opts, now: int) -> list[Action]:
        """A next-header-44 packet from the router (`ilnp.rx.44`)."""
        try:
            msg = decode(body)
        except LocatorUpdateWireError:
            self.counters["malformed"] += 1
            return []
        parsed = _parse_opts(opts)
        if parsed is None:
            self.counters["malformed_opts"] += 1
            return []
        if is_cryptographic(src_nid):
            reason = signature.check(src_nid, self.nid, parsed.seq, parsed.nonce, bytes(body), parsed.sig)
            if reason is not None:
                self.counters[("ack_" if isinstance(msg, Ack) else "update_") + reason] += 1
                return []
            parsed.nonce_ok = True  # the signature covers the nonce; a nonce proves nothing more
        if isinstance(msg, Ack):
            return self._on_ack(src_nid, parsed.seq, parsed.nonce_ok, now)
        return self._on_update(src_nid, arrival_loc, msg.locs, parsed)

    def on_timer(self, now: int) -> list[Action]:
        actions: list[Action] = []
        move_due = self._next_move is not None and now >= self._next_move
        if self._handoff_end is not None and now >= self._handoff_end:
            self.leaving = ()
            self._handoff_end = None
            self.counters["handoffs_done"] += 1
            if not move_due:  # a move now publishes the full state anyway
                actions.append(self.locators())
        if move_due:
            while self._next_move <= now:  # late timer: catch up without a burst of moves
                self._next_move += self.move_time
            self._step = (self._step + 1) % len(self.schedule)
            actions += self._move(self.schedule[self._step], now)
        for nid, p in list(self._pending.items()):
            if now < p.deadline:
                continue
            if p.retries_left == 0:
                del self._pending[nid]
                self.counters["updates_unacked"] += 1
                self.handoffs.update_ended(p.move_id, nid, UNACKED)
                continue
            p.retries_left -= 1
            p.deadline = now + self.retry_interval
            self.counters["update_retries"] += 1
            self.handoffs.update_retried(p.move_id, nid)
            actions.append(SendUpdate(nid, p.dst_locs, p.via, p.body, p.seq))
        return actions

    # ------------------------------------------------------------ moving

    def _move(self, new: tuple[int, ...], now: int, cause: str = "schedule") -> list[Action]:
        if new == self.cur:
            self.counters["move_same_set"] += 1
            return []
        self.counters["moves"] += 1
        if self._handoff_end is not None:
            self.counters["handoffs_cut_short"] += 1  # its leaving set is dropped right now
        old = self.cur
        self.cur = new
        self.leaving = tuple(loc for loc in old if loc not in new) if self.handoff_time else ()
        self._handoff_end = now + self.handoff_time if self.leaving else None
        move_id = self.handoffs.started(now, old, new, cause, self.handoff_time)
        return [self.locators(), *self._send_updates(now, move_id)]

    def _send_updates(self, now: int, move_id: int, via: int | None = None) -> list[Action]:
        if self._pending:  # the previous move's updates name locators we no longer prefer
            self.counters["updates_superseded"] += len(self._pending)
            for nid, p in self._pending.items():
                self.handoffs.update_ended(p.move_id, nid, SUPERSEDED)
            self._pending.clear()
        return self._update_peers(now, move_id, list(self._sessions), via)

    def _update_peers(self, now: int, move_id: int, nids: list[int], via: int | None = None) -> list[Action]:
        body = encode_update(self.live)
        actions: list[Action] = []
        for nid in nids:
            locs = self._destination(nid, self._sessions[nid])
            seq = self._next_seq
            self._next_seq = (seq + 1) % SEQ_MOD
            self._pending[nid] = _Pending(seq, locs, body, self.retries, now + self.retry_interval, move_id, via)
            self.counters["updates_sent"] += 1
            self.handoffs.update_sent(move_id, nid, seq, now)
            actions.append(SendUpdate(nid, locs, via, body, seq))
        return actions

    # ------------------------------------------------------------ receiving

    def _on_update(self, src_nid, arrival_loc, locs, opts: _Opts) -> list[Action]:
        nonce, seq, nonce_ok = opts.nonce, opts.seq, opts.nonce_ok
        self.counters["updates_in"] += 1
        if src_nid == self.nid or src_nid == 0:
            self.counters["update_bad_sender"] += 1
            return []
        if nonce_ok is False:
            self.counters["update_bad_nonce"] += 1
            return []
        if nonce_ok is None:
            if not self.accept_without_nonce:
                self.counters["update_no_nonce_refused"] += 1
                return []
            if src_nid not in self._sessions:
                self.counters["update_no_session"] += 1  # a stranger has nothing to tell us
                return []
            self.counters["update_no_nonce_accepted"] += 1
        elif seq is None:
            self.counters["update_missing_seq"] += 1
            return []
        if ALL_NODES in locs:
            self.counters["update_bad_locator"] += 1
            return []
        ack = SendUpdate(src_nid, (locs[0],), arrival_loc, encode_ack(), seq)
        if seq is not None:
            crypto = is_cryptographic(src_nid)
            if crypto:
                nonce = None  # one sequence space per key, whatever nonce the session has
            seen = self._seen.get(src_nid)
            if seen is not None and seen[0] == nonce:  # a plain peer's new nonce = a new sequence space
                _, last_seq, last_locs = seen
                if seq == last_seq and locs == last_locs:
                    self.counters["update_duplicate"] += 1  # our ack was lost: ack again
                    return [ack]
                if not seq_newer(seq, last_seq):
                    self.counters["update_replay"] += 1
                    return []
            self._seen[src_nid] = (nonce, seq, locs)
            self._seen.move_to_end(src_nid)
            if len(self._seen) > MAX_PEERS:
                self._seen.popitem(last=False)
                self.counters["seen_evicted"] += 1
            self.seen_version += 1
        self.counters["updates_accepted"] += 1
        self._hosts[src_nid] = locs  # discovery's table will say the same shortly
        pending = self._pending.get(src_nid)
        if pending is not None:
            pending.dst_locs = locs  # our own retries follow the peer
        return [PeerMoved(src_nid, locs, arrival_loc), ack]

    def _on_ack(self, src_nid, seq, nonce_ok, now: int) -> list[Action]:
        self.counters["acks_in"] += 1
        if nonce_ok is False:
            self.counters["ack_bad_nonce"] += 1  # a forged ack would silence our retries
            return []
        pending = self._pending.get(src_nid)
        if pending is None or (seq is not None and seq != pending.seq):
            self.counters["acks_unexpected"] += 1
            return []
        del self._pending[src_nid]
        self.counters["updates_acked"] += 1
        self.handoffs.update_acked(pending.move_id, src_nid, now)
        return []

    # ------------------------------------------------------------ what a restart keeps

    def seen_state(self) -> dict:
        """The last accepted update per peer, for the shell to keep on disk."""
        return {"seen": [[nid, None if n is None else n.hex(), seq, list(locs)]
                         for nid, (n, seq, locs) in self._seen.items()]}

    def restore_seen(self, state) -> None:
        """Load seen_state() of a previous incarnation; malformed entries are counted."""
        rows = state.get("seen") if isinstance(state, dict) else None
        for row in rows if isinstance(rows, list) else ():
            try:
                nid, nonce, seq, locs = row
                entry = (None if nonce is None else bytes.fromhex(nonce), int(seq) % SEQ_MOD,
                         tuple(int(x) for x in locs))
                self._seen[int(nid)] = entry
            except (TypeError, ValueError):
                self.counters["bad_seen_entry"] += 1
        while len(self._seen) > MAX_PEERS:
            self._seen.popitem(last=False)
