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
import time
from collections import Counter
from typing import Any, Callable

import zmq

from . import topics
from .codec import FrameError, pack, unpack
from .direct import DirectOut, bind_inbox
from .rundir import RunDir

log = logging.getLogger("actor")

HWM = 50_000
DRAIN_LIMIT = 128  # frames or datagrams taken from one source before looking at others
HELLO_RETRY_S = 0.1
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # plain ints: no enum wrapping per packet


Handler = Callable[[bytes, dict], None]


class _Stop(Exception):
    """Raised by the signal handler to end a poll early on SIGTERM/SIGINT."""


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Actor:
    """Connects to the node's bus and runs a loop of handlers, timers and requests.

    `requires`: state topics this actor needs before it is in sync; it says hello
    (repeatedly, until each has arrived) so their owners republish them.
    """

    def __init__(self, name: str, run_dir: RunDir | str, requires: tuple[bytes, ...] = (),
                 serve_requests: bool = True):
        self.name = name
        self.run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.counters: Counter = Counter()
        self.started = time.time()
        self._ctx = zmq.Context.instance()
        self.pub = self._ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, HWM)
        self.pub.setsockopt(zmq.LINGER, 200)
        self.pub.connect(self.run_dir.bus_in)
        self.sub = self._ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, HWM)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(self.run_dir.bus_out)
        self.inbox = bind_inbox(self._ctx, self.run_dir, name)
        self.direct = DirectOut(self._ctx, self.run_dir)
        self.poller = zmq.Poller()
        self.poller.register(self.sub, zmq.POLLIN)
        self.poller.register(self.inbox, zmq.POLLIN)
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
        self._commands: dict[str, Callable[..., Any]] = {
            "status": self._cmd_status, "ping": lambda: "pong"}
        self._readers: dict[int, Callable[[], None]] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._seq: dict[bytes, int] = {}
        self._last_seen: dict[tuple[str, bytes], int] = {}
        self._out: dict[bytes, list] = {}
        self._owned: list[tuple[bytes, Callable[[], dict]]] = []
        self._missing = set(requires)
        self._stopping = False
        self._sleeping = False
        self.status_extra: Callable[[], dict] | None = None
        self.subscribe(topics.HELLO, self._on_hello)
        self._hello_sent_at = 0.0

    # ---- wiring -------------------------------------------------------------
    def subscribe(self, prefix: bytes, handler: Handler) -> None:
        """Handle frames whose topic starts with `prefix`. Data topics arrive in our
        inbox (their publishers push them here), the rest through the broker."""
        self._handlers.append((prefix, handler))
        if not topics.is_direct(prefix):
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix)

    def unsubscribe(self, prefix: bytes) -> None:
        """Stop receiving `prefix` (its handlers are dropped too)."""
        self._handlers = [(p, h) for p, h in self._handlers if p != prefix]
        if not topics.is_direct(prefix):
            self.sub.setsockopt(zmq.UNSUBSCRIBE, prefix)

    def command(self, name: str, fn: Callable[..., Any]) -> None:
        """Serve request `name`; fn(**args) returns the result or raises ValueError."""
        self._commands[name] = fn

    def owns(self, topic: bytes, snapshot: Callable[[], dict]) -> None:
        """This actor owns `topic`: republish snapshot() whenever someone says hello."""
        self._owned.append((topic, snapshot))

    def add_reader(self, fileobj, callback: Callable[[], int | None]) -> None:
        """callback() reads what is ready without blocking (the loop polls for it)."""
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        self._readers[fd] = callback
        self.poller.register(fd, zmq.POLLIN)

    def remove_reader(self, fileobj) -> None:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if self._readers.pop(fd, None) is not None:
            self.poller.unregister(fd)

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._timer_seq), fn))

    def stop(self) -> None:
        self._stopping = True

    # ---- output -------------------------------------------------------------
    def publish(self, topic: bytes, body: dict) -> None:
        """Send one frame now (state, control). Data should use emit()."""
        q = self._seq.get(topic, 0) + 1
        self._seq[topic] = q
        body["a"] = self.name
        body["q"] = q
        frame = pack(body)
        # Copying beats zero-copy bookkeeping at these sizes. The broker copy costs
        # nothing unless someone (the tap) subscribes to the topic.
        self.pub.send_multipart((topic, frame))
        self.counters["frames_out"] += 1
        if topics.is_direct(topic) and self.direct.send(topic, frame) is False:
            self.counters["direct_drops"] += len(body.get("p", ())) or 1

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
            self.publish(topic, {"p": items})
            self.counters["items_out"] += len(items)

    # ---- resync -------------------------------------------------------------
    def _on_hello(self, _topic: bytes, body: dict) -> None:
        if body.get("a") == self.name:
            return
        for topic, snapshot in self._owned:
            self.publish(topic, snapshot())

    def state_received(self, topic: bytes) -> None:
        self._missing.discard(topic)

    def _say_hello_if_needed(self) -> None:
        if self._missing and time.monotonic() - self._hello_sent_at >= HELLO_RETRY_S:
            self._hello_sent_at = time.monotonic()
            self.publish(topics.HELLO, {})

    # ---- loop ---------------------------------------------------------------
    def _dispatch(self, parts: list[bytes]) -> None:
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
        if isinstance(q, int) and sender is not None:
            key = (sender, topic)
            last = self._last_seen.get(key)
            if last is not None and q > last + 1:
                self.counters["bus_gaps"] += q - last - 1  # frames dropped at a high-water mark
            self._last_seen[key] = q
        if self._missing and topic in self._missing:
            self._missing.discard(topic)
        for prefix, handler in self._handlers:
            if topic.startswith(prefix):
                try:
                    handler(topic, body)
                except Exception:  # one bad frame must not take the actor down
                    self.counters["handler_errors"] += 1
                    log.exception("event=handler_error actor=%s topic=%s", self.name, topic)

    def _serve_request(self) -> int:
        served = 0
        for _ in range(DRAIN_LIMIT):
            try:
                parts = self.ctl.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            ident, body = parts[0], parts[-1]
            reply = self._handle_request(body)
            self.ctl.send_multipart([ident, b"", pack(reply)])
            served += 1
        return served

    def _handle_request(self, raw: bytes) -> dict:
        try:
            req = unpack(raw)
            cmd = req.pop("cmd")
        except (FrameError, KeyError):
            return {"ok": False, "error": "malformed request"}
        fn = self._commands.get(cmd)
        if fn is None:
            return {"ok": False, "error": f"{self.name} has no command {cmd!r}"}
        try:
            return {"ok": True, "result": fn(**req)}
        except (ValueError, TypeError, KeyError) as exc:
            return {"ok": False, "error": str(exc) or exc.__class__.__name__}
        except Exception as exc:
            log.exception("event=request_error actor=%s cmd=%s", self.name, cmd)
            return {"ok": False, "error": f"internal error: {exc}"}

    def _cmd_status(self) -> dict:
        status = {"actor": self.name, "pid": os.getpid(),
                  "uptime_s": round(time.time() - self.started, 3),
                  "in_sync": not self._missing,
                  "counters": dict(self.counters)}
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

    def _drain_sub(self, sub: zmq.Socket) -> None:
        """Take up to DRAIN_LIMIT frames; the first is there (poll said so)."""
        dispatch = self._dispatch
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
        self.publish(topics.HELLO, {})
        self._hello_sent_at = time.monotonic()
        try:
            self._loop()
        except _Stop:
            pass  # SIGTERM landed just as a poll returned: stop all the same
        finally:
            self.flush()
            log.info("event=stop actor=%s", self.name)
            self.close()

    def _loop(self) -> None:
        sub, inbox, ctl, readers, poll = self.sub, self.inbox, self.ctl, self._readers, self.poller.poll
        busy = False
        while not self._stopping:
            self._say_hello_if_needed()
            if busy:
                ready = poll(0)  # under load: no sleep, just see what is ready
            else:
                timeout = 1000
                if self._timers:  # whole ms, rounded up: pyzmq truncates, 0.9 would spin
                    timeout = math.ceil(max(0.0, (self._timers[0][0] - time.monotonic()) * 1000))
                if self._missing:
                    timeout = min(timeout, int(HELLO_RETRY_S * 1000))
                self._sleeping = True
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
            for sock, _ in ready:
                if sock is inbox or sock is sub:
                    self._drain_sub(sock)
                elif sock is ctl:
                    self._serve_request()
                else:
                    callback = readers.get(sock)
                    if callback is not None:
                        callback()
            if self._timers:
                self._run_timers()
            self.flush()

    def close(self) -> None:
        self.direct.close()
        for sock in (self.pub, self.sub, self.inbox, self.ctl):
            if sock is not None:
                sock.close()
        try:
            self.run_dir.inbox_path(self.name).unlink()
        except FileNotFoundError:
            pass
        if self.ctl is not None:
            try:
                self.run_dir.ctl_path(self.name).unlink()
            except FileNotFoundError:
                pass


class CoreTimer:
    """Runs a protocol core's timer: calls `fire(now_ms)` when `next_deadline()` comes.

    Call arm() after every event given to the core; a deadline that moved later
    just makes one early, harmless fire.
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
        self.actor.call_later(max(0, deadline - monotonic_ms()) / 1000, self._expired)

    def _expired(self) -> None:
        self._armed_at = None
        self.fire(monotonic_ms())
        self.arm()
