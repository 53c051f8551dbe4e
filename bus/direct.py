"""The direct data path: frames of data topics go straight to their consumer's inbox.

A consumer binds a PULL socket at RUN_DIR/in-<name>.sock and, for each data topic it
consumes, the topic's endpoint RUN_DIR/in-t-<topic>.sock as well (who consumes what is
the caller's business: the bus names no actor and no topic). A publisher keeps one PUSH
socket per consumer endpoint. Unlike PUB/SUB there is no subscription to wait for (a
PUSH queues until its peer is back) and nothing is dropped silently: a full queue is
a refused send, and a topic whose endpoint nobody has bound has no consumer; the
publisher counts both. Once connected, a PUSH queues while its consumer restarts.

What a publisher can count about a consumer that died (each PUSH has a monitor: zmq
tells it when its consumer connects and disconnects):
- a frame pushed while the consumer is known to be down is HELD: it waits in our queue
  (at most PUSH_HWM frames) and its next incarnation gets it; once the queue is full,
  REFUSED. Held frames of a consumer that never comes back stay queued, counted as held.
- a route to an endpoint zmq cannot use (a bad `inbox` in a bind) is BAD_ENDPOINT.
What it cannot count: the frames pushed in the moment between the consumer's death and
zmq noticing it (monitor events come from zmq's I/O thread), and those already in the
dead consumer's socket buffers or its queue: SENT for us, and its next incarnation does
not know the numbers its predecessor saw, so they are lost without a count anywhere.
"""
from __future__ import annotations

import os
import struct

import zmq

from .rundir import RunDir

HWM = 50_000        # inbox: frames waiting to be read
PUSH_HWM = 2_000    # per consumer: a dead consumer must not grow our memory

SENT, REFUSED, NO_CONSUMER = True, False, None


class _Status(str):
    """A send result besides SENT/REFUSED/NO_CONSUMER (compare with `is`)."""


HELD = _Status("held")                  # queued for a consumer that is down
BAD_ENDPOINT = _Status("bad endpoint")  # an endpoint zmq refuses (a bad route)
_MONITORED = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
_EVENT_ID = struct.Struct("=H")


def event_kind(frames: list[bytes]) -> int:
    """The event of a zmq monitor message (its first frame: u16 event, u32 value).
    Decoded here: pyzmq's parse_monitor_message lives in a module that imports asyncio
    and ssl, megabytes in every actor for two integers."""
    return _EVENT_ID.unpack_from(frames[0])[0]


class _Push:
    """One PUSH socket towards one consumer endpoint, and what its monitor said."""

    __slots__ = ("sock", "monitor", "down")

    def __init__(self, sock: zmq.Socket):
        self.sock = sock
        self.monitor = sock.get_monitor_socket(_MONITORED)
        self.down = False  # the consumer disconnected and has not come back (yet)

    def events(self) -> None:
        """Take what the monitor has said (cheap when nothing: one getsockopt)."""
        monitor = self.monitor
        while monitor.getsockopt(_EVENTS) & _POLLIN:
            kind = event_kind(monitor.recv_multipart())
            if kind == zmq.EVENT_DISCONNECTED:
                self.down = True
            elif kind == zmq.EVENT_CONNECTED:
                self.down = False

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close()
        self.sock.close()


def _unlink(path) -> None:
    try:
        os.unlink(path)  # a stale endpoint of a previous incarnation
    except FileNotFoundError:
        pass


def bind_inbox(ctx: zmq.Context, run: RunDir, name: str, consumes=()) -> zmq.Socket:
    """The PULL socket where `name` receives its data frames: its own inbox (for routes
    made at run time, e.g. an STP port) and the endpoint of every topic in `consumes`."""
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.setsockopt(zmq.LINGER, 0)
    _unlink(run.inbox_path(name))
    sock.bind(run.inbox(name))
    for topic in consumes:
        _unlink(run.topic_inbox_path(topic))
        sock.bind(run.topic_inbox(topic))
    return sock


def unlink_inbox(run: RunDir, name: str, consumes=()) -> None:
    _unlink(run.inbox_path(name))
    for topic in consumes:
        _unlink(run.topic_inbox_path(topic))


class DirectOut:
    """PUSH sockets towards consumers' inboxes, created on first use."""

    def __init__(self, ctx: zmq.Context, run: RunDir):
        self.ctx = ctx
        self.run = run
        self._socks: dict[str, _Push] = {}
        self._routes: dict[bytes, str] = {}  # topic -> endpoint, set at run time
        self._by_topic: dict[bytes, _Push | _Status] = {}  # what send() found for each topic

    def route(self, topic: bytes, endpoint: str) -> None:
        """Frames of `topic` go to `endpoint` (e.g. an application's inbox for its STP port)."""
        self._routes[topic] = endpoint
        self._by_topic.pop(topic, None)

    def unroute(self, topic: bytes) -> None:
        self._routes.pop(topic, None)
        self._by_topic.pop(topic, None)

    def _connect(self, topic: bytes) -> _Push | None | _Status:
        endpoint = self._routes.get(topic)
        if endpoint is None:
            # A topic's consumer binds its endpoint; until one has, there is nobody to
            # queue for. Once connected, a PUSH queues across a restart of its consumer.
            if not self.run.topic_inbox_path(topic).exists():
                return None
            endpoint = self.run.topic_inbox(topic)
        push = self._socks.get(endpoint)
        if push is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, PUSH_HWM)
            sock.setsockopt(zmq.LINGER, 200)
            try:
                push = _Push(sock)
                sock.connect(endpoint)
            except (zmq.ZMQError, TypeError, ValueError):
                if push is not None:
                    push.close()
                else:
                    sock.close()
                return BAD_ENDPOINT
            self._socks[endpoint] = push
        return push

    def send(self, topic: bytes, frame: bytes) -> bool | None | _Status:
        """SENT (True), REFUSED (False: the consumer's queue is full), NO_CONSUMER (None),
        HELD (queued for a consumer that is down) or BAD_ENDPOINT."""
        push = self._by_topic.get(topic)
        if push is None:
            push = self._connect(topic)
            if push is None:
                return NO_CONSUMER
            self._by_topic[topic] = push  # a bad endpoint too: refused again until rerouted
        if push is BAD_ENDPOINT:
            return BAD_ENDPOINT
        push.events()
        try:
            push.sock.send_multipart((topic, frame), zmq.NOBLOCK)
        except zmq.Again:
            return REFUSED
        return HELD if push.down else SENT

    def is_down(self, topic: bytes) -> bool:
        """Whether the consumer of `topic` (once reached) is known to be down now."""
        push = self._by_topic.get(topic)
        if push is None or push is BAD_ENDPOINT:
            return False
        push.events()
        return push.down

    def close(self) -> None:
        for push in self._socks.values():
            push.close()
        self._socks.clear()
        self._by_topic.clear()
