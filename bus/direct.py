"""The direct data path: frames of data topics go straight to their consumer's inbox.

A consumer binds a PULL socket at RUN_DIR/in-<name>.sock and, for each data topic it
consumes, the topic's endpoint RUN_DIR/in-t-<topic>.sock as well (who consumes what is
the caller's business: the bus names no actor and no topic). A publisher keeps one PUSH
socket per consumer endpoint. Unlike PUB/SUB there is no subscription to wait for (a
PUSH queues until its peer is back) and nothing is dropped silently: a full queue is
a refused send, and a topic whose endpoint nobody has bound has no consumer; the
publisher counts both. Once connected, a PUSH queues while its consumer restarts, from
the moment zmq has noticed the disconnect: the few frames sent just as the consumer
died are lost, and the new consumer counts them as gaps in the sequence numbers.
"""
from __future__ import annotations

import os

import zmq

from .rundir import RunDir

HWM = 50_000        # inbox: frames waiting to be read
PUSH_HWM = 2_000    # per consumer: a dead consumer must not grow our memory

SENT, REFUSED, NO_CONSUMER = True, False, None


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
        self._socks: dict[str, zmq.Socket] = {}
        self._routes: dict[bytes, str] = {}  # topic -> endpoint, set at run time
        self._by_topic: dict[bytes, zmq.Socket] = {}  # what send() found for each topic

    def route(self, topic: bytes, endpoint: str) -> None:
        """Frames of `topic` go to `endpoint` (e.g. an application's inbox for its STP port)."""
        self._routes[topic] = endpoint
        self._by_topic.pop(topic, None)

    def unroute(self, topic: bytes) -> None:
        self._routes.pop(topic, None)
        self._by_topic.pop(topic, None)

    def _connect(self, topic: bytes) -> zmq.Socket | None:
        endpoint = self._routes.get(topic)
        if endpoint is None:
            # A topic's consumer binds its endpoint; until one has, there is nobody to
            # queue for. Once connected, a PUSH queues across a restart of its consumer.
            if not self.run.topic_inbox_path(topic).exists():
                return None
            endpoint = self.run.topic_inbox(topic)
        sock = self._socks.get(endpoint)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, PUSH_HWM)
            sock.setsockopt(zmq.LINGER, 200)
            sock.connect(endpoint)
            self._socks[endpoint] = sock
        return sock

    def send(self, topic: bytes, frame: bytes) -> bool | None:
        """SENT (True), REFUSED (False: the consumer's queue is full) or NO_CONSUMER (None)."""
        sock = self._by_topic.get(topic)
        if sock is None:
            sock = self._connect(topic)
            if sock is None:
                return NO_CONSUMER
            self._by_topic[topic] = sock
        try:
            sock.send_multipart((topic, frame), zmq.NOBLOCK)
        except zmq.Again:
            return REFUSED
        return SENT

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()
        self._by_topic.clear()
