"""Talking to a running node from outside its actors: requests and bus attachment."""
from __future__ import annotations

import math
import os
import time
from collections import deque
from typing import Any, Iterator

import zmq

from .codec import HELLO, FrameError, FrameStamper, pack, unpack
from .direct import HELD, MAX_ITEMS, NO_CONSUMER, DirectOut, bind_inbox
from .latency import StageClock
from .rundir import RunDir, find_run_dir

DEFAULT_TIMEOUT = 3.0
MAX_SENDERS = 4096  # (publisher, topic) pairs whose sequence numbers are followed


class RequestError(RuntimeError):
    """The node or actor did not answer, or answered with an error (one line)."""


class RequestRefused(RequestError):
    """The actor answered, with an error (one line, prefixed with the actor's name)."""


def request(run: RunDir | str | None, actor: str, cmd: str, timeout: float = DEFAULT_TIMEOUT,
            **args: Any) -> Any:
    """Send one request to `actor` and return its result; RequestError on any failure."""
    run = run if isinstance(run, RunDir) else find_run_dir(run)
    if not run.broker_running():
        raise RequestError(f"node not running at {run.path}")
    if not run.ctl_path(actor).exists():
        raise RequestError(f"actor {actor} is not running on the node at {run.path}")
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    try:
        sock.connect(run.ctl(actor))
        sock.send(pack({"cmd": cmd, **args}))
        try:
            reply = unpack(sock.recv())
        except zmq.Again:
            raise RequestError(f"actor {actor} does not answer (timeout {timeout:g}s)") from None
        except FrameError as exc:
            raise RequestError(f"bad reply from {actor}: {exc}") from None
    finally:
        sock.close()
    if not reply.get("ok"):
        raise RequestRefused(f"{actor}: {reply.get('error', 'failed')}")
    return reply.get("result")


class BusClient:
    """A pub/sub attachment to a node's bus for tools and applications (no loop of its own).

    `wait_ready()` returns once a hello of ours came back through the broker: from then
    on our publisher knows every subscription, so nothing we publish is lost to the
    slow-joiner race.
    """

    def __init__(self, run: RunDir | str | None = None, name: str = "client"):
        self.run = run if isinstance(run, RunDir) else find_run_dir(run)
        if not self.run.broker_running():
            raise RequestError(f"node not running at {self.run.path}")
        self.name = f"{name}.{os.getpid()}.{id(self):x}"
        ctx = zmq.Context.instance()
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 50_000)
        self.pub.setsockopt(zmq.LINGER, 500)
        self.pub.connect(self.run.bus_in)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, 50_000)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(self.run.bus_out)
        # data frames for us (e.g. our STP port) are pushed here, not sent via the broker
        self.inbox = bind_inbox(self.run, self.name)
        self.inbox_endpoint = self.run.inbox(self.name)
        self.direct = DirectOut(self.run)
        self.poller = zmq.Poller()
        self.poller.register(self.sub, zmq.POLLIN)
        self._listeners = {sock.fileno(): sock for sock in self.inbox.listeners}
        for fd in self._listeners:
            self.poller.register(fd, zmq.POLLIN)
        self._inbox_frames: deque = deque()  # read from a connection, not returned yet
        self.direct_drops = 0   # data items not handed over (queue full, no consumer, bad route)
        self.no_consumer = 0
        self.direct_held = 0    # data items queued for a consumer that is down (see bus/direct.py)
        self.bad_frames = 0     # frames received that are not [topic, msgpack map]: dropped
        self._stamp = FrameStamper(self.name)
        self._last_seen: dict[tuple[str, bytes], int] = {}
        self._subscribed: set[bytes] = set()
        self._held: deque = deque()  # frames received while waiting for our hello
        self.gaps = 0
        self.stages = StageClock()  # what our inbox frames waited (bus/latency.py)

    def subscribe(self, prefix: bytes, direct: bool = False) -> None:
        """Receive `prefix` through the broker, or (direct=True, for a data topic routed
        to our inbox, e.g. our STP port) only in our inbox."""
        self._subscribed.add(prefix)
        if not direct:
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix)

    def unsubscribe(self, prefix: bytes) -> None:
        self._subscribed.discard(prefix)
        self.sub.setsockopt(zmq.UNSUBSCRIBE, prefix)

    def _wanted(self, topic: bytes) -> bool:
        return any(topic.startswith(prefix) for prefix in self._subscribed)

    def publish(self, topic: bytes, body: dict) -> bytes:
        """One frame through the broker (state, control); returns it packed."""
        frame = self._stamp.pack(topic, body)
        self.pub.send_multipart((topic, frame))
        return frame

    def send(self, topic: bytes, items: list) -> bool:
        if len(items) > MAX_ITEMS:  # a message on the direct path is bounded (bus/direct.py)
            results = [self.send(topic, items[i:i + MAX_ITEMS]) for i in range(0, len(items), MAX_ITEMS)]
            return all(results)
        return self._send(topic, items)

    def _send(self, topic: bytes, items: list) -> bool:
        """A data frame of `items`: pushed to the topic's consumer (and to the broker for
        the tap). False, and counted in direct_drops, if it could not be handed over."""
        frame = self._stamp.pack(topic, {"p": items, "t": time.monotonic_ns()})
        sent = self.direct.send(topic, frame)  # the consumer first; the tap's copy after
        self.pub.send_multipart((topic, frame))
        if sent is HELD:
            self.direct_held += len(items)  # handed over: its consumer gets it when back
            return True
        if sent is not True:
            self.direct_drops += len(items)
            if sent is NO_CONSUMER:
                self.no_consumer += len(items)
        return sent is True

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Say hello until it comes back; frames that arrive meanwhile are kept for recv()."""
        watching_hello = HELLO in self._subscribed
        if not watching_hello:  # zmq counts subscriptions: one of ours is enough
            self.sub.setsockopt(zmq.SUBSCRIBE, HELLO)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.publish(HELLO, {})
                end = min(deadline, time.monotonic() + 0.1)
                while (left := end - time.monotonic()) > 0:
                    if not self.sub.poll(math.ceil(left * 1000)):
                        break
                    topic, body = self._recv_raw(self.sub)
                    if body is None:
                        continue
                    if topic == HELLO and body.get("a") == self.name:
                        return
                    if self._wanted(topic) and (topic != HELLO or watching_hello):
                        self._held.append((topic, body))
        finally:
            if not watching_hello:
                self.sub.setsockopt(zmq.UNSUBSCRIBE, HELLO)
        raise RequestError(f"bus of the node at {self.run.path} does not answer")

    def _recv_raw(self, sock: zmq.Socket) -> tuple[bytes, dict | None]:
        return self._decode(sock.recv_multipart())

    def _decode(self, parts: list[bytes]) -> tuple[bytes, dict | None]:
        if len(parts) != 2:
            self.bad_frames += 1
            return b"", None
        try:
            body = unpack(parts[1])
        except FrameError:
            self.bad_frames += 1
            return parts[0], None
        if "p" in body and type(body["p"]) is not list:
            self.bad_frames += 1  # a data frame's batch is a list: this is not a frame of ours
            return parts[0], None
        sender, q = body.get("a"), body.get("q")
        if isinstance(q, int) and isinstance(sender, str):
            key = (sender, parts[0])
            last = self._last_seen.get(key)
            if last is None and len(self._last_seen) >= MAX_SENDERS:  # invented senders: bounded
                del self._last_seen[next(iter(self._last_seen))]
            if last is not None and q > last + 1:
                self.gaps += q - last - 1
            self._last_seen[key] = q
        return parts[0], body

    def recv(self, timeout: float | None = None) -> tuple[bytes, dict] | None:
        """Next decodable frame, or None on timeout."""
        if self._held:
            return self._held.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._inbox_frames:  # data first: it waits on nothing else
                topic, body = self._decode(self._inbox_frames.popleft())
                if body is not None:
                    sent_ns = body.get("t")
                    if type(sent_ns) is int:
                        now = time.monotonic_ns()  # the application's handling is its own
                        self.stages.record(topic, sent_ns, now, now)
                    return topic, body
            # whole milliseconds, rounded up: pyzmq truncates, and poll(0.9) would spin
            wait = None if deadline is None else math.ceil(max(0.0, deadline - time.monotonic()) * 1000)
            if self.direct.holding:
                self.direct.retry()
                wait = 20 if wait is None else min(wait, 20)
            ready = self.poller.poll(wait)
            if not ready and (deadline is not None and time.monotonic() >= deadline):
                return None
            for sock, _ in ready:
                if sock is self.sub:
                    topic, body = self._recv_raw(sock)
                    if body is not None:
                        return topic, body
                elif sock in self._listeners:
                    for conn in self.inbox.accept(self._listeners[sock]):
                        self.poller.register(conn.fileno(), zmq.POLLIN)
                else:
                    conn = self.inbox.conns.get(sock)
                    if conn is None:
                        continue
                    frames, gone = self.inbox.read(conn, 128)
                    self._inbox_frames.extend(frames)
                    if gone:
                        self.poller.unregister(sock)
                        self.inbox.drop(conn)

    def frames(self, timeout: float | None = None) -> Iterator[tuple[bytes, dict]]:
        while (frame := self.recv(timeout)) is not None:
            yield frame

    def close(self) -> None:
        self.direct.close()
        self.pub.close()
        self.sub.close()
        self.inbox.close()
        try:
            self.run.inbox_path(self.name).unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "BusClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
