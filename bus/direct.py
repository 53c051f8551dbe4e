"""The direct data path: frames of data topics go straight to their consumer's inbox.

A consumer listens on an AF_UNIX SEQPACKET socket at RUN_DIR/in-<name>.sock and, for
each data topic it consumes, at the topic's endpoint RUN_DIR/in-t-<topic>.sock as well
(who consumes what is the caller's business: the bus names no actor and no topic). A
publisher keeps one connection per consumer endpoint; a message is one frame:
[topic length: 1 byte][topic][frame].

Why not zmq, as the broker: a zmq message between processes wakes four threads (the
sender's I/O thread, the receiver's, then the receiving application through its
mailbox); a Unix socket wakes the receiver alone. One hop costs 53 us round trip
instead of 179-309 (docs/PERFORMANCE.md), and a ping through a router crosses twelve.
SEQPACKET keeps message boundaries, has no per-receiver queue limit for a connected
pair (SOCK_DGRAM's max_dgram_qlen is 10) and is flow-controlled by the sender's buffer:
the queue towards a consumer is bounded in bytes, and a full one is a refused send.

What a publisher can count (nothing is dropped silently):
- SENT: in the consumer's queue.
- REFUSED: the queue is full (the consumer is behind), or the backlog below is.
- NO_CONSUMER: nobody has ever listened at the topic's endpoint.
- HELD: the consumer is down (its connection broke, or it is not listening again yet):
  the frame waits in our backlog (at most HOLD_BYTES, HOLD_FRAMES frames) and goes, in order, as
  soon as a new incarnation listens (tried at each send and whenever the caller runs
  retry(), which the actor loop does while anything is held). For CATCH_UP_S after it
  is back, a full queue towards it holds too: it is not reading yet, not behind.
- BAD_ENDPOINT: a route that is not an endpoint of ours (a bad `inbox` in a bind).
What it cannot count: frames already in the queue of a consumer that died (SENT for us;
its next incarnation does not know them).
"""
from __future__ import annotations

import errno
import os
import socket
import time
from collections import deque

from .rundir import RunDir

MAX_ITEMS = 128          # items a publisher puts in one data frame (128 full datagrams: ~185 KB)
MAX_FRAME = 1 << 20      # the largest message read; a larger one is dropped and counted
# Per connection, what a consumer may fall behind by, sized by time (issue 13): a full one
# refuses (counted) rather than queue. 25 ms at 40,000 full datagrams/s is ~1.5 MB of
# messages; the kernel doubles what is asked for its bookkeeping. (4 MB asked held about
# 5,600 datagrams: ilnp-bench --quick saw pair-1way's p50 at 80% load at 288 ms.)
SNDBUF = 768 << 10
# A connection routed to an application's own inbox (an STP port's socket) is that
# application's receive buffer, as SO_RCVBUF is a UDP socket's: how far a bursty reader
# may fall behind is its business, not the forwarding path's (the proxy's UDP sockets
# ask 4 MB too). A restart's backlog reaches the application in a burst.
APP_SNDBUF = 4 << 20
# Per consumer that is down (restarting), what we keep for it: bounded in bytes, so a dead
# consumer cannot grow our memory, and deep enough for a restart (~1 s) at the rates a
# node carries: 8 MB is ~5,600 full datagrams, or 2,000/s of them each way for 1.4 s.
# Frames count too (a frame of one small item costs more than its bytes).
HOLD_BYTES = 8 << 20
HOLD_FRAMES = 20_000
# A consumer back from a restart reads its inbox only once the state it requires has
# arrived (bus/actor.py, up to 1 s): for that long a full queue towards it holds frames
# (within the bounds above) instead of refusing them.
CATCH_UP_S = 2.0
LISTEN_BACKLOG = 128

SENT, REFUSED, NO_CONSUMER = True, False, None


class _Status(str):
    """A send result besides SENT/REFUSED/NO_CONSUMER (compare with `is`)."""


HELD = _Status("held")                  # queued for a consumer that is down
BAD_ENDPOINT = _Status("bad endpoint")  # an endpoint that is not ours (a bad route)
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNREFUSED, errno.ENOENT)


def _unlink(path) -> None:
    try:
        os.unlink(path)  # a stale endpoint of a previous incarnation
    except FileNotFoundError:
        pass


def _path_of(endpoint) -> str | None:
    """The socket path of an `ipc://PATH` endpoint (RunDir.inbox's form), else None."""
    if isinstance(endpoint, str) and endpoint.startswith("ipc://") and len(endpoint) > 6:
        path = endpoint[6:]
        return path if "\x00" not in path and len(path.encode()) < 108 else None
    return None


class Inbox:
    """Where a consumer receives: listening sockets (its own inbox, one per consumed
    topic) and a connection per publisher. The caller polls `listeners` and the
    connections accept() gives, and calls read() on a connection that is readable."""

    def __init__(self, run: RunDir, name: str, consumes=()):
        self.paths = [run.inbox_path(name), *(run.topic_inbox_path(t) for t in consumes)]
        self.listeners: list[socket.socket] = []
        self.conns: dict[int, socket.socket] = {}
        self._buf = bytearray(MAX_FRAME)
        self._view = memoryview(self._buf)
        try:
            for path in self.paths:
                _unlink(path)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                self.listeners.append(sock)
                sock.bind(str(path))
                sock.listen(LISTEN_BACKLOG)
                sock.setblocking(False)
        except OSError:
            self.close()
            raise

    def accept(self, listener: socket.socket) -> list[socket.socket]:
        """The publishers waiting to connect (non-blocking)."""
        new = []
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return new
            except OSError:
                return new  # too many files, a connection that went meanwhile: next time
            conn.setblocking(False)
            self.conns[conn.fileno()] = conn
            new.append(conn)

    def read(self, conn: socket.socket, limit: int) -> tuple[list[list[bytes]], bool]:
        """Up to `limit` frames as [topic, frame]; and whether the publisher has gone
        (then the caller stops polling it and calls drop())."""
        frames, buf, view = [], self._buf, self._view
        for _ in range(limit):
            try:
                n = conn.recv_into(buf, 0, socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                return frames, False
            except OSError:
                return frames, True
            if n == 0:
                return frames, True  # the publisher closed (we never send an empty message)
            if n > MAX_FRAME or 1 + buf[0] > n:  # too big, or its topic runs past its end
                frames.append([b"", b""])  # the caller counts it as a bad frame
                continue
            end = 1 + buf[0]
            frames.append([bytes(view[1:end]), bytes(view[end:n])])
        return frames, False

    def drop(self, conn: socket.socket) -> None:
        self.conns.pop(conn.fileno(), None)
        conn.close()

    def close(self) -> None:
        for conn in list(self.conns.values()):
            conn.close()
        self.conns.clear()
        for sock in self.listeners:
            sock.close()
        self.listeners.clear()


def bind_inbox(run: RunDir, name: str, consumes=()) -> Inbox:
    """`name`'s inbox: its own endpoint (for routes made at run time, e.g. an STP port)
    and the endpoint of every topic in `consumes`."""
    return Inbox(run, name, consumes)


def unlink_inbox(run: RunDir, name: str, consumes=()) -> None:
    _unlink(run.inbox_path(name))
    for topic in consumes:
        _unlink(run.topic_inbox_path(topic))


class _Conn:
    """Our connection to one consumer endpoint, and what waits for it while it is down."""

    __slots__ = ("path", "sock", "down", "held", "held_bytes", "sndbuf", "catch_up_until")

    def __init__(self, path: str, sndbuf: int = SNDBUF):
        self.path = path
        self.sndbuf = sndbuf
        self.sock: socket.socket | None = None
        self.down = False
        self.held: deque = deque()
        self.held_bytes = 0
        self.catch_up_until = 0.0  # monotonic time: a restarted consumer may be slow to read until then

    def open(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            try:  # as root (the lab) past net.core.wmem_max; otherwise what the kernel allows
                sock.setsockopt(socket.SOL_SOCKET, 32, self.sndbuf)  # SO_SNDBUFFORCE
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
            sock.setblocking(False)
            sock.connect(self.path)
        except OSError:
            sock.close()
            return False
        if self.down:  # a new incarnation of a consumer that was down
            self.catch_up_until = time.monotonic() + CATCH_UP_S
        self.sock, self.down = sock, False
        return True

    def lost(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.down = True

    def push(self, parts) -> bool | None:
        """True sent, False full, None the consumer is gone."""
        try:
            self.sock.sendmsg(parts)
            return True
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in _GONE:
                self.lost()
                return None
            return False  # EMSGSIZE, ENOBUFS: this frame only

    def flush_held(self) -> bool:
        """Send what was held, in order; True when nothing is left."""
        while self.held:
            sent = self.push(self.held[0])
            if not sent:
                return False
            self.held_bytes -= len(self.held.popleft()[1])
        return True

    def hold(self, parts) -> bool | _Status:
        size = len(parts[1])
        if len(self.held) >= HOLD_FRAMES or self.held_bytes + size > HOLD_BYTES:
            return REFUSED
        self.held.append(parts)
        self.held_bytes += size
        return HELD

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class DirectOut:
    """Connections towards consumers' inboxes, made on first use."""

    def __init__(self, run: RunDir):
        self.run = run
        self._conns: dict[str, _Conn] = {}
        self._routes: dict[bytes, str] = {}  # topic -> endpoint, set at run time
        self._by_topic: dict[bytes, _Conn | _Status] = {}  # what send() found for each topic
        self.holding = 0  # connections with frames held (the caller retries while > 0)

    def route(self, topic: bytes, endpoint: str) -> None:
        """Frames of `topic` go to `endpoint` (e.g. an application's inbox for its STP port)."""
        self._routes[topic] = endpoint
        self._by_topic.pop(topic, None)

    def unroute(self, topic: bytes) -> None:
        self._routes.pop(topic, None)
        self._by_topic.pop(topic, None)

    def _connect(self, topic: bytes) -> _Conn | None | _Status:
        endpoint = self._routes.get(topic)
        if endpoint is None:
            # A topic's consumer listens at its endpoint; until one has, there is nobody to
            # hold frames for. Once reached, frames are held while it restarts.
            path = str(self.run.topic_inbox_path(topic))
            if not os.path.exists(path):
                return None
        else:
            path = _path_of(endpoint)
            if path is None:
                return BAD_ENDPOINT
        conn = self._conns.get(path)
        if conn is None:
            conn = _Conn(path, SNDBUF if endpoint is None else APP_SNDBUF)
            if not conn.open():
                return BAD_ENDPOINT if endpoint is not None else None
            self._conns[path] = conn
        return conn

    def send(self, topic: bytes, frame: bytes) -> bool | None | _Status:
        """SENT (True), REFUSED (False), NO_CONSUMER (None), HELD or BAD_ENDPOINT."""
        conn = self._by_topic.get(topic)
        if conn is None:
            conn = self._connect(topic)
            if conn is None:
                return NO_CONSUMER
            self._by_topic[topic] = conn  # a bad endpoint too: refused again until rerouted
        if conn is BAD_ENDPOINT:
            return BAD_ENDPOINT
        parts = (bytes((len(topic),)) + topic, frame)
        if conn.sock is None and not self._reopen(conn):
            return self._hold(conn, parts)
        if conn.held and not self._flush(conn):
            return self._hold(conn, parts)
        sent = conn.push(parts)
        if sent is None:  # it died since: a new one may listen already
            if self._reopen(conn) and conn.push(parts):
                return SENT
            return self._hold(conn, parts)
        if sent is False and conn.catch_up_until and time.monotonic() < conn.catch_up_until:
            return self._hold(conn, parts)  # a consumer just back: not behind, not reading yet
        return SENT if sent else REFUSED

    def _reopen(self, conn: _Conn) -> bool:
        return conn.open() and self._flush(conn)

    def _flush(self, conn: _Conn) -> bool:
        had = bool(conn.held)
        done = conn.flush_held()
        if had and done:
            self.holding -= 1
        return done

    def _hold(self, conn: _Conn, parts) -> bool | _Status:
        if not conn.held:
            self.holding += 1
        return conn.hold(parts)

    def retry(self) -> None:
        """Try again to deliver what is held for consumers that were down."""
        if not self.holding:
            return
        for conn in self._conns.values():
            if conn.held and (conn.sock is not None or conn.open()):
                self._flush(conn)

    def is_down(self, topic: bytes) -> bool:
        """Whether the consumer of `topic` (once reached) is known to be down now."""
        conn = self._by_topic.get(topic)
        if conn is None or conn is BAD_ENDPOINT:
            return False
        if conn.sock is not None:
            try:  # a consumer that closed makes our end readable, at EOF
                if conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    conn.lost()
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                conn.lost()
        return conn.down

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        self._by_topic.clear()
        self.holding = 0
