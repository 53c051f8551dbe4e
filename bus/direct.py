"""The direct data path: frames of data topics go straight to their consumer's inbox.

A consumer binds a PULL socket at RUN_DIR/in-<name>.sock; a publisher keeps one PUSH
socket per consumer endpoint. Unlike PUB/SUB there is no subscription to wait for (a
PUSH queues until its peer is there) and nothing is dropped silently: a full queue is
a refused send, which the publisher counts. See topics.DIRECT_PREFIXES.
"""
from __future__ import annotations

import os

import zmq

from . import topics
from .rundir import RunDir

HWM = 50_000        # inbox: frames waiting to be read
PUSH_HWM = 2_000    # per consumer: a dead consumer must not grow our memory


def bind_inbox(ctx: zmq.Context, run: RunDir, name: str) -> zmq.Socket:
    """The PULL socket where `name` receives its data frames."""
    path = run.inbox_path(name)
    try:
        os.unlink(path)  # a stale endpoint of a previous incarnation
    except FileNotFoundError:
        pass
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(run.inbox(name))
    return sock


class DirectOut:
    """PUSH sockets towards consumers' inboxes, created on first use."""

    def __init__(self, ctx: zmq.Context, run: RunDir):
        self.ctx = ctx
        self.run = run
        self._socks: dict[str, zmq.Socket] = {}
        self._routes: dict[bytes, str] = {}  # topic -> endpoint, set at run time
        self._fixed: dict[bytes, str | None] = {}  # cache of the static consumer table

    def route(self, topic: bytes, endpoint: str) -> None:
        """Frames of `topic` go to `endpoint` (e.g. an application's inbox for its STP port)."""
        self._routes[topic] = endpoint

    def unroute(self, topic: bytes) -> None:
        self._routes.pop(topic, None)

    def endpoint(self, topic: bytes) -> str | None:
        found = self._routes.get(topic)
        if found is not None:
            return found
        if topic not in self._fixed:
            name = topics.consumer(topic)
            self._fixed[topic] = self.run.inbox(name) if name else None
        return self._fixed[topic]

    def send(self, topic: bytes, frame: bytes) -> bool | None:
        """True sent, False refused (queue full), None: no consumer for this topic."""
        endpoint = self.endpoint(topic)
        if endpoint is None:
            return None
        sock = self._socks.get(endpoint)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, PUSH_HWM)
            sock.setsockopt(zmq.LINGER, 200)
            sock.connect(endpoint)
            self._socks[endpoint] = sock
        try:
            sock.send_multipart((topic, frame), zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()
