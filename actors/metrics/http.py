"""A minimal HTTP server on the actor's loop, for scrapes (`GET /metrics`).

No thread: listening and connected sockets are non-blocking readers and writers of the
actor's poll loop. Each connection is one request and one answer (HTTP/1.0 style,
`Connection: close`). A local process is hostile until checked, so everything is
bounded and counted: MAX_CONNECTIONS at once (more are closed at once: http_refused), a
request head of at most MAX_REQUEST bytes (http_bad_requests), IDLE_S to send it
(http_timeouts); a method other than GET/HEAD is 405, a path other than /metrics (or /)
404. The answer's body comes from `scrape(done)`, which calls `done(body)` later (the
figures are gathered from the other actors without blocking the loop).
"""
from __future__ import annotations

import errno
import socket
import time
from collections import Counter
from typing import Callable

MAX_CONNECTIONS = 32
MAX_REQUEST = 8192
IDLE_S = 5.0
PATHS = ("/metrics", "/")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def listen(port: int) -> list[socket.socket]:
    """Listening sockets on 127.0.0.1 and ::1 (loopback only, whatever the config says).
    OSError when neither can be bound; one family missing (no IPv6) is fine."""
    socks, errors = [], []
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            errors.append(exc)
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
            sock.listen(16)
            sock.setblocking(False)
            socks.append(sock)
        except OSError as exc:
            sock.close()
            errors.append(exc)
    if not socks:
        raise errors[0]
    return socks


class _Conn:
    __slots__ = ("sock", "buf", "out", "deadline", "answering")

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.buf, self.out, self.deadline, self.answering = sock, b"", b"", deadline, False


class HttpServer:
    def __init__(self, actor, listeners: list[socket.socket], scrape: Callable[[Callable[[bytes], None]], None],
                 content_type: str, counters: Counter | None = None):
        self.actor = actor
        self.listeners = listeners
        self.scrape = scrape
        self.content_type = content_type
        self.counters = counters if counters is not None else Counter()
        self.conns: dict[int, _Conn] = {}
        self._sweeping = False
        for sock in listeners:
            actor.add_reader(sock, lambda sock=sock: self._accept(sock))

    def close(self) -> None:
        for fd in list(self.conns):
            self._close(fd)
        for sock in self.listeners:
            self.actor.remove_reader(sock)
            sock.close()

    # ---- connections --------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        for _ in range(MAX_CONNECTIONS):
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.counters["http_accept_errors"] += 1
                    return
                raise
            if len(self.conns) >= MAX_CONNECTIONS:
                self.counters["http_refused"] += 1
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic() + IDLE_S)
            self.conns[sock.fileno()] = conn
            self.actor.add_reader(sock, lambda fd=sock.fileno(): self._read(fd))
            self._sweep_later()

    def _read(self, fd: int) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(fd)
            return
        if not data:  # the client went away (or half-closed before its request was whole)
            if not conn.answering:
                self._close(fd)
            else:
                self.actor.remove_reader(fd)
            return
        if conn.answering:
            return  # a pipelined request or trailing bytes: one request per connection
        conn.buf += data
        end = conn.buf.find(b"\r\n\r\n")
        if end < 0:
            end = conn.buf.find(b"\n\n")
        if end < 0:
            if len(conn.buf) > MAX_REQUEST:
                self._answer(fd, 400, b"request too long\n", count="http_bad_requests")
            return
        self._request(fd, conn, conn.buf[:end])

    def _request(self, fd: int, conn: _Conn, head: bytes) -> None:
        line = head.split(b"\n", 1)[0].strip()
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._answer(fd, 400, b"not an HTTP request\n", count="http_bad_requests")
            return
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            self._answer(fd, 405, b"GET /metrics\n", count="http_bad_requests")
            return
        if target.decode("latin-1") not in PATHS:
            self._answer(fd, 404, b"GET /metrics\n", count="http_not_found")
            return
        conn.answering = True
        self.counters["http_scrapes"] += 1
        head_only = method == b"HEAD"
        self.scrape(lambda body: self._answer(fd, 200, body, head_only=head_only, conn=conn))

    def _answer(self, fd: int, status: int, body: bytes, head_only: bool = False, count: str | None = None,
                conn: _Conn | None = None) -> None:
        current = self.conns.get(fd)
        if current is None or (conn is not None and current is not conn):
            return  # it went away (timed out) while the figures were gathered
        if count:
            self.counters[count] += 1
        content_type = self.content_type if status == 200 else "text/plain; charset=utf-8"
        head = (f"HTTP/1.0 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        current.answering = True
        current.out = head + (b"" if head_only else body)
        current.deadline = time.monotonic() + IDLE_S
        self._write(fd)

    def _write(self, fd: int) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(fd)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._close(fd)
        else:
            self.actor.add_writer(fd, lambda: self._write(fd))

    def _close(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        if conn is None:
            return
        self.actor.remove_reader(fd)
        self.actor.remove_writer(fd)
        conn.sock.close()

    # ---- idle connections ---------------------------------------------------------
    def _sweep_later(self) -> None:
        if not self._sweeping:
            self._sweeping = True
            self.actor.call_later(1.0, self._sweep)

    def _sweep(self) -> None:
        self._sweeping = False
        now = time.monotonic()
        for fd, conn in list(self.conns.items()):
            if now >= conn.deadline:
                self.counters["http_timeouts"] += 1
                self._close(fd)
        if self.conns:
            self._sweep_later()
