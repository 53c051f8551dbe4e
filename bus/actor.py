"""The actor runtime every actor process uses.

One loop per process: zmq SUB (bus), a ROUTER (requests), any extra file descriptors
(UDP sockets), and timers. Handlers append output with `emit`; after each pass of the
loop the runtime flushes every topic's items as ONE frame (opportunistic batching: at
low rates a batch is one packet, at high rates it is whatever was ready).
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import signal
import struct
import time
from collections import Counter
from typing import Any, Callable

import zmq

from .codec import HELLO, FrameError, FrameStamper, pack, unpack
from .direct import BAD_ENDPOINT, HELD, MAX_ITEMS, NO_CONSUMER, REFUSED, DirectOut, bind_inbox, unlink_inbox
from .latency import StageClock
from .rundir import RunDir

log = logging.getLogger("actor")

HWM = 50_000
DRAIN_LIMIT = 128  # frames or datagrams taken from one source before looking at others
HELLO_RETRY_S = 0.1
RESYNC_MIN_S = 1.0      # a gap in a frame from the broker: at most one hello per this
REPUBLISH_MIN_S = 0.05  # others' hellos: at most one republication per this (the last one answered)
MAX_SENDERS = 4096      # (publisher, topic) pairs whose sequence numbers we follow
HOLD_RETRY_MS = 20      # while frames are held for a consumer that is down: how often to try it
INBOX_HOLD_MAX_S = 1.0  # the longest a (re)started actor leaves its inbox unread for missing state
_EVENTS, _POLLIN, _POLLOUT = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.POLLOUT)  # plain ints: no enum wrapping per packet
_EVENT_ID = struct.Struct("=H")


Handler = Callable[[bytes, dict], None]
ReplyCallback = Callable[[bool | None, Any], None]


class Reply:
    """The answer to a request whose command was registered with deferred=True: the
    handler keeps this and calls ok(result) or error(message) once, when it knows."""

    def __init__(self, actor: "Actor", ident: bytes, rid: Any):
        self._actor, self._ident, self._rid = actor, ident, rid

    def ok(self, result: Any = None) -> None:
        self._send({"ok": True, "result": result})

    def error(self, message: str) -> None:
        self._send({"ok": False, "error": message})

    def _send(self, reply: dict) -> None:
        if self._actor is None:
            return  # answered already
        self._actor._send_reply(self._ident, self._rid, reply)
        self._actor = None


class _Stop(Exception):
    """Raised by the signal handler to end a poll early on SIGTERM/SIGINT."""


def event_kind(frames: list[bytes]) -> int:
    """The event of a zmq monitor message (its first frame: u16 event, u32 value).
    Decoded here: pyzmq's parse_monitor_message lives in a module that imports asyncio
    and ssl, megabytes in every actor for two integers."""
    return _EVENT_ID.unpack_from(frames[0])[0]


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Actor:
    """Connects to the node's bus and runs a loop of handlers, timers and requests.

    `requires`: state topics this actor needs before it is in sync; it says hello
    (repeatedly, until each has arrived) so their owners republish them.
    `consumes`: the data topics whose one consumer this actor is (the registry says
    which): their publishers push them straight into our inbox.
    """

    def __init__(self, name: str, run_dir: RunDir | str, requires: tuple[bytes, ...] = (),
                 serve_requests: bool = True, consumes: tuple[bytes, ...] = ()):
        self.name = name
        self.consumes = tuple(consumes)
        self.run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.counters: Counter = Counter()
        self.started = time.time()
        self._ctx = zmq.Context.instance()
        self.pub = self._ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, HWM)
        self.pub.setsockopt(zmq.LINGER, 200)
        self.sub = self._ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, HWM)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.poller = zmq.Poller()
        # Each (re)connection of our bus sockets is an event: after the first, the broker
        # restarted and what we published or it held meanwhile may be lost (see _on_bus_event).
        self._monitors: dict[zmq.Socket, list] = {}
        for sock in (self.pub, self.sub):
            monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
            self._monitors[monitor] = [sock, 0]  # the socket, its connections so far
            self.poller.register(monitor, zmq.POLLIN)
        self.pub.connect(self.run_dir.bus_in)
        self.sub.connect(self.run_dir.bus_out)
        self.inbox = bind_inbox(self.run_dir, name, self.consumes)
        self.direct = DirectOut(self.run_dir)
        self.poller.register(self.sub, zmq.POLLIN)
        # A restarted actor leaves its inbox unread until the state it requires is in:
        # frames held for it meanwhile (its publishers kept them, or they wait in the
        # connections) would meet a core that knows nothing yet (a router with no
        # locators drops them all). Watched from the end of __init__ otherwise.
        self._inbox_held = bool(requires)
        self.ctl = None
        if serve_requests:
            path = self.run_dir.ctl_path(name)
            try:
                path.unlink()  # a stale endpoint of our previous incarnation
            except FileNotFoundError:
                pass
            self.ctl = self._ctx.socket(zmq.ROUTER)
            self.ctl.setsockopt(zmq.LINGER, 0)
            self.ctl.bind(self.run_dir.ctl(name))
            self.poller.register(self.ctl, zmq.POLLIN)
        self._handlers: list[tuple[bytes, Handler]] = []
        self.stages = StageClock()
        self._commands: dict[str, Callable[..., Any]] = {
            "status": self._cmd_status, "ping": lambda: "pong",
            "latency_reset": self.stages.reset}
        self._deferred: set[str] = set()
        self._askers: dict[str, zmq.Socket] = {}           # actor -> DEALER to its requests
        self._asker_socks: dict[zmq.Socket, str] = {}
        self._asked: dict[int, ReplyCallback] = {}        # request id -> who waits
        self._rids = itertools.count(1)
        self._readers: dict[int, Callable[[], None]] = {}
        self._writers: dict[int, Callable[[], None]] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._stamp = FrameStamper(name)  # our name and per-topic sequence on every frame
        self._last_seen: dict[tuple[str, bytes], int] = {}
        self._out: dict[bytes, list] = {}
        self._owned: list[tuple[bytes, Callable[[], dict]]] = []
        self._requires = frozenset(requires)
        self._missing = set(requires)
        self._announced = False  # our own hello came back: the broker has our publisher
        self._republished_at = -math.inf
        self._republish_pending = False
        self._resync_due = False    # a gap was seen: a hello is scheduled
        self._resync_at = -math.inf
        self._item_error_logged = -math.inf
        self._stopping = False
        self._sleeping = False
        self.status_extra: Callable[[], dict] | None = None
        self.subscribe(HELLO, self._on_hello)
        self._hello_sent_at = 0.0
        if not self._inbox_held:
            self._watch_inbox()

    # ---- wiring -------------------------------------------------------------
    def subscribe(self, prefix: bytes, handler: Handler, direct: bool = False) -> None:
        """Handle frames whose topic starts with `prefix`. Topics we consume, and those
        routed to our inbox at run time (direct=True, e.g. our STP port), are pushed into
        our inbox; the rest come through the broker."""
        self._handlers.append((prefix, handler))
        if not direct and prefix not in self.consumes:
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix)

    def unsubscribe(self, prefix: bytes, direct: bool = False) -> None:
        """Stop receiving `prefix` (its handlers are dropped too)."""
        self._handlers = [(p, h) for p, h in self._handlers if p != prefix]
        if not direct and prefix not in self.consumes:
            self.sub.setsockopt(zmq.UNSUBSCRIBE, prefix)

    def command(self, name: str, fn: Callable[..., Any], deferred: bool = False) -> None:
        """Serve request `name`; fn(**args) returns the result or raises ValueError.
        deferred=True: fn(reply, **args) answers later through reply (a Reply), so a
        command that must hear from another actor never blocks the loop."""
        self._commands[name] = fn
        if deferred:
            self._deferred.add(name)
        else:
            self._deferred.discard(name)

    def ask(self, actor: str, cmd: str, on_reply: ReplyCallback, timeout_s: float = 1.0,
            **args: Any) -> None:
        """A request to another actor that does not block. on_reply comes later from the
        loop: (True, result); (False, "actor: its one-line error"); or (None, "actor X
        does not answer") after timeout_s (the request waits in a queue meanwhile, so an
        actor that is restarting still gets it)."""
        sock = self._askers.get(actor)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 1000)
            sock.connect(self.run_dir.ctl(actor))
            self._askers[actor] = sock
            self._asker_socks[sock] = actor
            self.poller.register(sock, zmq.POLLIN)
        rid = next(self._rids)
        self._asked[rid] = on_reply
        try:
            sock.send_multipart([b"", pack({"cmd": cmd, "rid": rid, **args})], zmq.NOBLOCK)
        except zmq.Again:
            pass  # our queue towards it is full: the timeout answers
        self.call_later(timeout_s, lambda: self._answer(
            rid, None, f"actor {actor} does not answer (timeout {timeout_s:g}s)"))

    def _answer(self, rid: Any, ok: bool | None, result: Any) -> None:
        callback = self._asked.pop(rid, None) if isinstance(rid, int) else None
        if callback is not None:  # else answered already, or timed out
            callback(ok, result)

    def _take_answers(self, sock: zmq.Socket) -> None:
        actor = self._asker_socks[sock]
        for _ in range(DRAIN_LIMIT):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = unpack(parts[-1])
            except FrameError:
                self.counters["bad_replies"] += 1
                continue
            ok = reply.get("ok") is True
            error = reply.get("error", "failed")
            try:
                self._answer(reply.get("rid"), ok, reply.get("result") if ok else f"{actor}: {error}")
            except Exception:  # the waiting callback failed on what came back: not fatal
                self.counters["answer_errors"] += 1
                log.exception("event=answer_error actor=%s asked=%s", self.name, actor)

    def owns(self, topic: bytes, snapshot: Callable[[], dict]) -> None:
        """This actor owns `topic`: republish snapshot() whenever someone says hello."""
        self._owned.append((topic, snapshot))

    def add_reader(self, fileobj, callback: Callable[[], int | None]) -> None:
        """callback() reads what is ready without blocking (the loop polls for it)."""
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        self._readers[fd] = callback
        self._repoll(fd)

    def remove_reader(self, fileobj) -> None:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if self._readers.pop(fd, None) is not None:
            self._repoll(fd)

    def add_writer(self, fileobj, callback: Callable[[], None]) -> None:
        """callback() when the fd can be written (e.g. a socket whose buffer was full)."""
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        self._writers[fd] = callback
        self._repoll(fd)

    def remove_writer(self, fileobj) -> None:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if self._writers.pop(fd, None) is not None:
            self._repoll(fd)

    def _repoll(self, fd: int) -> None:
        flags = (zmq.POLLIN if fd in self._readers else 0) | (zmq.POLLOUT if fd in self._writers else 0)
        if flags:
            self.poller.register(fd, flags)  # registering again modifies
        else:
            try:
                self.poller.unregister(fd)
            except KeyError:
                pass

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._timer_seq), fn))

    def stop(self) -> None:
        self._stopping = True

    # ---- output -------------------------------------------------------------
    def publish(self, topic: bytes, body: dict) -> bytes:
        """Send one frame through the broker now (state, control); returns it packed.
        Data goes with emit()."""
        frame = self._stamp.pack(topic, body)
        # Copying beats zero-copy bookkeeping at these sizes. The broker copy costs
        # nothing unless someone (the tap) subscribes to the topic.
        self.pub.send_multipart((topic, frame))
        self.counters["frames_out"] += 1
        return frame

    def _publish_data(self, topic: bytes, items: list) -> None:
        """Data frames of at most MAX_ITEMS each (a message on the direct path is bounded:
        bus/direct.py), pushed to the topic's consumer, then to the broker for the tap
        (the consumer first: the copy is nobody's wait)."""
        if len(items) > MAX_ITEMS:
            for i in range(0, len(items), MAX_ITEMS):
                self._publish_data(topic, items[i:i + MAX_ITEMS])
            return
        frame = self._stamp.pack(topic, {"p": items, "t": time.monotonic_ns()})
        sent = self.direct.send(topic, frame)
        self.pub.send_multipart((topic, frame))
        self.counters["frames_out"] += 1
        if sent is not True:
            if sent is REFUSED:
                self.counters["direct_drops"] += len(items)
            elif sent is NO_CONSUMER:
                self.counters["no_consumer"] += len(items)
            elif sent is HELD:
                self.counters["direct_held"] += len(items)
            elif sent is BAD_ENDPOINT:
                self.counters["bad_endpoint"] += len(items)

    def emit(self, topic: bytes, item: Any) -> None:
        """Queue one data item; all items of a topic leave as one frame per loop pass."""
        batch = self._out.get(topic)
        if batch is None:
            self._out[topic] = [item]
        else:
            batch.append(item)

    def flush(self) -> None:
        if not self._out:
            return
        out, self._out = self._out, {}
        for topic, items in out.items():
            self._publish_data(topic, items)
            self.counters["items_out"] += len(items)

    # ---- resync -------------------------------------------------------------
    # An owner publishes what it owns (1) when its own hello comes back, after its start
    # and after every reconnection to the broker (what it published before may be lost);
    # (2) after anyone else's hello, at most once per REPUBLISH_MIN_S (a hello in between
    # is answered at the end of the interval, with the state as it is then). A consumer
    # says hello (1) at start and after each reconnection, every HELLO_RETRY_S until its
    # own hello is back and every state it requires has arrived again, and (2) when a
    # frame from the broker shows a gap in its publisher's numbering (at most once per
    # RESYNC_MIN_S).
    def _on_hello(self, _topic: bytes, body: dict) -> None:
        if body.get("a") == self.name:
            if not self._announced:
                self._announced = True
                self._republish()
            return
        if self._owned and not self._republish_pending:
            wait = self._republished_at + REPUBLISH_MIN_S - time.monotonic()
            if wait <= 0:
                self._republish()
            else:
                self._republish_pending = True
                self.call_later(wait, self._republish)

    def _republish(self) -> None:
        self._republish_pending = False
        self._republished_at = time.monotonic()
        for topic, snapshot in self._owned:
            try:
                body = snapshot()
            except Exception:  # one owner's bug must not keep the others' state back
                self.counters["snapshot_errors"] += 1
                log.exception("event=snapshot_error actor=%s topic=%s", self.name, topic)
                continue
            self.publish(topic, body)
            self.counters["republished"] += 1

    # ---- what handlers use to drop and count ---------------------------------
    def items(self, body: dict) -> list:
        """The items `p` of a data frame; a `p` that is not a list: counted (bad_bodies),
        no items. A handler then counts each item it cannot use (bad_items) and goes on
        with the rest of the batch."""
        items = body.get("p", ())
        if type(items) is list:
            return items
        if items != ():
            self.counters["bad_bodies"] += 1
        return []

    def item_error(self, topic: bytes | str) -> None:
        """A well-formed item a core failed on (a bug, not bad input): counted
        (item_errors), logged with its traceback at most once a second; the caller goes
        on with the rest of the batch."""
        self.counters["item_errors"] += 1
        now = time.monotonic()
        if now - self._item_error_logged >= 1.0:
            self._item_error_logged = now
            log.exception("event=item_error actor=%s topic=%s total=%d", self.name, topic,
                          self.counters["item_errors"])

    def state_received(self, topic: bytes) -> None:
        self._missing.discard(topic)

    def _say_hello_if_needed(self) -> None:
        if ((self._missing or not self._announced)
                and time.monotonic() - self._hello_sent_at >= HELLO_RETRY_S):
            self._hello_sent_at = time.monotonic()
            self.publish(HELLO, {})

    def _gap_seen(self) -> None:
        """A frame through the broker after a lost one: ask the owners again (they
        republish on hello); rate-limited, so a flood of numbered garbage costs little."""
        if self._resync_due:
            return
        self._resync_due = True
        self.call_later(max(0.0, self._resync_at + RESYNC_MIN_S - time.monotonic()), self._resync)

    def _resync(self) -> None:
        self._resync_due = False
        self._resync_at = time.monotonic()
        self._hello_sent_at = time.monotonic()
        self.counters["resync_hellos"] += 1
        self.publish(HELLO, {})

    def _on_bus_event(self, monitor: zmq.Socket) -> None:
        """Our PUB or SUB (re)connected to the broker, or lost it. A connection after the
        first is a new broker (or the same one after a hiccup): frames it held, and those
        we published while it was away, are gone. Say hello until ours comes back (then
        republish what we own) and until every required state has arrived again."""
        entry = self._monitors[monitor]
        for _ in range(DRAIN_LIMIT):
            try:
                kind = event_kind(monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            except Exception:  # not a monitor message: cannot happen on an inproc PAIR
                self.counters["bad_monitor_events"] += 1
                continue
            if kind == zmq.EVENT_DISCONNECTED:
                self.counters["bus_disconnects"] += 1
                continue
            entry[1] += 1
            if entry[1] > 1:
                self.counters["bus_reconnects"] += 1
                log.info("event=bus_reconnected actor=%s", self.name)
                self._announced = False
                self._missing |= self._requires
                self._hello_sent_at = 0.0

    # ---- loop ---------------------------------------------------------------
    def _dispatch(self, parts: list[bytes], from_broker: bool = True) -> None:
        """One frame to its handlers. from_broker: it came through the broker (state and
        control; data comes to the inbox), so a gap before it is worth a resync."""
        if len(parts) != 2:
            self.counters["bad_frames"] += 1
            return
        topic, raw = parts
        try:
            body = unpack(raw)
        except FrameError:
            self.counters["bad_frames"] += 1
            return
        self.counters["frames_in"] += 1
        sender, q = body.get("a"), body.get("q")
        if sender is not None and not isinstance(sender, str):
            self.counters["bad_senders"] += 1  # not a name: no gap bookkeeping for it
        elif type(q) is int and sender is not None:
            key = (sender, topic)
            last_seen = self._last_seen
            last = last_seen.get(key)
            if last is None and len(last_seen) >= MAX_SENDERS:  # invented senders must not grow us
                del last_seen[next(iter(last_seen))]
                self.counters["senders_forgotten"] += 1
            if last is not None and q > last + 1:
                self.counters["bus_gaps"] += q - last - 1  # frames dropped at a high-water mark
                if from_broker and topic != HELLO:
                    self._gap_seen()
            last_seen[key] = q
        if self._missing and topic in self._missing:
            self._missing.discard(topic)
            if not self._missing and self._inbox_held:
                self._release_inbox()
        sent_ns = body.get("t") if not from_broker else None
        if type(sent_ns) is int:
            got_ns = time.monotonic_ns()
        handled = False
        for prefix, handler in self._handlers:
            if topic.startswith(prefix):
                handled = True
                try:
                    handler(topic, body)
                except Exception:  # one bad frame must not take the actor down
                    self.counters["handler_errors"] += 1
                    log.exception("event=handler_error actor=%s topic=%s", self.name, topic)
        if not handled:
            self.counters["unhandled"] += 1  # pushed to our inbox on a topic we do not take
        elif type(sent_ns) is int:
            self.stages.record(topic, sent_ns, got_ns, time.monotonic_ns())

    def _watch_inbox(self) -> None:
        for listener in self.inbox.listeners:
            self.add_reader(listener, lambda listener=listener: self._accept(listener))
        for conn in list(self.inbox.conns.values()):
            self.add_reader(conn, lambda conn=conn: self._read_inbox(conn))

    def _accept(self, listener) -> None:
        for conn in self.inbox.accept(listener):
            self.add_reader(conn, lambda conn=conn: self._read_inbox(conn))

    def _read_inbox(self, conn) -> int:
        frames, gone = self.inbox.read(conn, DRAIN_LIMIT)
        dispatch = self._dispatch
        for parts in frames:
            dispatch(parts, False)
        if gone:
            self.remove_reader(conn)
            self.inbox.drop(conn)
        return len(frames)

    def _release_inbox(self, timed_out: bool = False) -> None:
        if self._inbox_held:
            self._inbox_held = False
            self._watch_inbox()
            if timed_out:
                self.counters["inbox_hold_timeout"] += 1  # an owner is down: go on without it
                log.warning("event=inbox_released actor=%s missing=%s", self.name,
                            ",".join(sorted(t.decode(errors="replace") for t in self._missing)))

    def _serve_request(self) -> int:
        served = 0
        for _ in range(DRAIN_LIMIT):
            try:
                parts = self.ctl.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            ident, body = parts[0], parts[-1]
            rid, reply = self._handle_request(ident, body)
            if reply is not None:
                self._send_reply(ident, rid, reply)
            served += 1
        return served

    def _send_reply(self, ident: bytes, rid: Any, reply: dict) -> None:
        if rid is not None:
            reply["rid"] = rid  # an asking actor matches answers by it
        try:
            data = pack(reply)
        except Exception:  # a result msgpack cannot carry (a command's bug): say so, one line
            self.counters["request_errors"] += 1
            log.exception("event=unpackable_reply actor=%s", self.name)
            data = pack({"ok": False, "error": "internal error: unpackable result",
                         **({} if rid is None else {"rid": rid})})
        try:
            self.ctl.send_multipart([ident, b"", data], zmq.NOBLOCK)
        except zmq.ZMQError:
            self.counters["replies_lost"] += 1  # the asker went away

    def _handle_request(self, ident: bytes, raw: bytes) -> tuple[Any, dict | None]:
        """(request id, reply); reply None: a deferred command answers later. Whatever
        a local process sends gets an answer, and each refusal is counted: undecodable or
        without a command (bad_requests), an unknown command (unknown_commands), arguments
        the command refuses (requests_refused), a command's failure (request_errors)."""
        try:
            req = unpack(raw)
            cmd = req.pop("cmd")
            rid = req.pop("rid", None)
        except (FrameError, KeyError):
            self.counters["bad_requests"] += 1
            return None, {"ok": False, "error": "malformed request"}
        if not (rid is None or type(rid) is int):
            rid = None  # only an int rid is ours to echo (an asking actor's)
        fn = self._commands.get(cmd) if isinstance(cmd, str) else None
        if fn is None:
            self.counters["unknown_commands"] += 1
            return rid, {"ok": False, "error": f"{self.name} has no command {_short(cmd)}"}
        if not all(isinstance(key, str) for key in req):
            self.counters["requests_refused"] += 1
            return rid, {"ok": False, "error": f"{cmd}: argument names must be strings"}
        return rid, self._call(cmd, fn, req, ident, rid)

    def _call(self, cmd: str, fn: Callable[..., Any], req: dict, ident: bytes, rid: Any) -> dict | None:
        reply = None
        try:
            if cmd in self._deferred:
                reply = Reply(self, ident, rid)
                fn(reply, **req)
                return None
            return {"ok": True, "result": fn(**req)}
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            self.counters["requests_refused"] += 1
            error = {"ok": False, "error": _one_line(str(exc) or exc.__class__.__name__)}
        except Exception as exc:
            self.counters["request_errors"] += 1
            log.exception("event=request_error actor=%s cmd=%s", self.name, cmd)
            error = {"ok": False, "error": _one_line(f"internal error: {exc}")}
        if reply is not None:
            if reply._actor is None:
                return None  # it answered before it failed: that answer stands
            reply._actor = None  # answered here: a later ok()/error() is ignored
        return error

    def _cmd_status(self) -> dict:
        status = {"actor": self.name, "pid": os.getpid(),
                  "uptime_s": round(time.time() - self.started, 3),
                  "in_sync": not self._missing,
                  "counters": dict(self.counters),
                  "latency": self.stages.snapshot()}
        if self.status_extra:
            status.update(self.status_extra())
        return status

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            try:
                fn()
            except Exception:
                self.counters["timer_errors"] += 1
                log.exception("event=timer_error actor=%s", self.name)

    def _drain_sub(self) -> None:
        """Take up to DRAIN_LIMIT frames from the broker; the first is there (poll said so)."""
        dispatch, sub = self._dispatch, self.sub
        for _ in range(DRAIN_LIMIT):
            try:
                parts = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            dispatch(parts)
            if not sub.getsockopt(_EVENTS) & _POLLIN:  # cheaper than raising Again
                return

    def _on_signal(self, _signum, _frame) -> None:
        self._stopping = True
        if self._sleeping:
            raise _Stop  # break out of the poll at once (pyzmq retries it on EINTR)

    def run(self) -> None:
        self._sleeping = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("event=start actor=%s pid=%d", self.name, os.getpid())
        self.publish(HELLO, {})
        self._hello_sent_at = time.monotonic()
        if self._inbox_held:
            self.call_later(INBOX_HOLD_MAX_S, lambda: self._release_inbox(timed_out=True))
        try:
            self._loop()
        except _Stop:
            pass  # SIGTERM landed just as a poll returned: stop all the same
        finally:
            self.flush()
            log.info("event=stop actor=%s", self.name)
            self.close()

    def _loop(self) -> None:
        sub, ctl, readers, poll = self.sub, self.ctl, self._readers, self.poller.poll
        busy = False
        while not self._stopping:
            self._say_hello_if_needed()
            if busy:
                ready = poll(0)  # under load: no sleep, just see what is ready
            else:
                timeout = 1000
                if self._timers:  # whole ms, rounded up: pyzmq truncates, 0.9 would spin
                    timeout = math.ceil(max(0.0, (self._timers[0][0] - time.monotonic()) * 1000))
                if self._missing or not self._announced:
                    timeout = min(timeout, int(HELLO_RETRY_S * 1000))
                if self.direct.holding:  # frames wait for a consumer to come back
                    timeout = min(timeout, HOLD_RETRY_MS)
                self._sleeping = True
                if self._stopping:  # a signal landed after the loop's check: no long poll
                    self._sleeping = False
                    break
                try:
                    ready = poll(timeout)
                except _Stop:
                    break
                except zmq.ZMQError as exc:
                    if exc.errno != getattr(zmq, "EINTR", 4):
                        raise
                    ready = []
                finally:
                    self._sleeping = False
            busy = bool(ready)
            for sock, events in ready:
                if sock is sub:
                    self._drain_sub()
                elif sock is ctl:
                    self._serve_request()
                elif sock in self._asker_socks:
                    self._take_answers(sock)
                elif sock in self._monitors:
                    self._on_bus_event(sock)
                else:
                    try:
                        if events & _POLLOUT:
                            callback = self._writers.get(sock)
                            if callback is not None:
                                callback()
                        if events & ~_POLLOUT:
                            callback = readers.get(sock)
                            if callback is not None:
                                callback()
                    except Exception:  # what a socket brought must not take the actor down
                        self.counters["reader_errors"] += 1
                        log.exception("event=reader_error actor=%s fd=%s", self.name, sock)
            if self._timers:
                self._run_timers()
            self.flush()
            if self.direct.holding:
                self.direct.retry()

    def close(self) -> None:
        self.direct.close()
        for monitor, (sock, _count) in self._monitors.items():
            try:
                sock.disable_monitor()
            except zmq.ZMQError:
                pass
            monitor.close()
        self._monitors.clear()
        for sock in (self.pub, self.sub, self.ctl, *self._askers.values()):
            if sock is not None:
                sock.close()
        self.inbox.close()
        unlink_inbox(self.run_dir, self.name, self.consumes)
        if self.ctl is not None:
            try:
                self.run_dir.ctl_path(self.name).unlink()
            except FileNotFoundError:
                pass


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit] + "..."


class CoreTimer:
    """Runs a protocol core's timer: calls `fire(now_ms)` when `next_deadline()` comes.

    Call arm() after every event given to the core; a deadline that moved later
    just makes one early, harmless fire. A deadline that moved earlier is armed anew,
    and the call armed for the later one is ignored when it comes (a core whose
    deadline moves often, like QUIC's, would otherwise fire once per move).
    """

    def __init__(self, actor: Actor, next_deadline: Callable[[], int | None],
                 fire: Callable[[int], None]):
        self.actor = actor
        self.next_deadline = next_deadline
        self.fire = fire
        self._armed_at: int | None = None

    def arm(self) -> None:
        deadline = self.next_deadline()
        if deadline is None or (self._armed_at is not None and self._armed_at <= deadline):
            return
        self._armed_at = deadline
        self.actor.call_later(max(0, deadline - monotonic_ms()) / 1000, lambda: self._expired(deadline))

    def _expired(self, armed_for: int) -> None:
        if armed_for != self._armed_at:
            return  # superseded by an earlier deadline, which has fired or will
        self._armed_at = None
        self.fire(monotonic_ms())
        self.arm()
