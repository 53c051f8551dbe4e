"""Local stream sockets of the relay (TCP, and the ilnp-connect Unix socket): non-blocking,
with a write queue, so a slow reader costs memory only up to what the core allows."""
from __future__ import annotations

import errno
import os
import socket
import struct
from collections import deque

READ_SIZE = 65536


class LocalConn:
    """One local connection. The shell reads it when readable and writes its queue when
    writable; `connecting` while an outgoing connect (serve side) is in progress."""

    def __init__(self, cid: int, sock: socket.socket, connecting: bool = False, status_line: bool = False):
        sock.setblocking(False)
        self.cid = cid
        self.sock = sock
        self.connecting = connecting
        self.status_line = status_line   # ilnp-connect: the first line says OK or ERR
        self.header = b""                # ilnp-connect: the CONNECT line being read
        self.queue: deque[memoryview] = deque()
        self.queued = 0
        self.shutdown_pending = False
        self.close_pending = False
        self.paused = False              # the core asked us to stop reading (back-pressure)
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def write(self, data: bytes) -> int:
        """Queue data and write what the socket takes now; returns the bytes written."""
        if data:
            self.queue.append(memoryview(data))
            self.queued += len(data)
        return self.flush()

    def flush(self) -> int:
        """Write queued data until the socket would block; returns the bytes written."""
        written = 0
        while self.queue and not self.connecting:
            head = self.queue[0]
            try:
                sent = self.sock.send(head)
            except BlockingIOError:
                break
            written += sent
            self.queued -= sent
            if sent == len(head):
                self.queue.popleft()
            else:
                self.queue[0] = head[sent:]
        if not self.queue and self.shutdown_pending and not self.connecting:
            self.shutdown_pending = False
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return written

    def wants_write(self) -> bool:
        return self.connecting or bool(self.queue)

    def read(self) -> bytes | None:
        """Up to READ_SIZE bytes; b"" at EOF; None if nothing is ready. OSError if reset."""
        try:
            return self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return None

    def connect_result(self) -> str | None:
        """After an outgoing connect became writable: None if up, else why not."""
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.connecting = False
        return None if err == 0 else _reason(err)

    def close(self, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if reset:
            try:  # an RST, so the application sees the failure, not a clean end
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.sock.close()


def _reason(err: int) -> str:
    return os.strerror(err).lower()


def connect_to(host: str, port: int) -> socket.socket:
    """A non-blocking connect in progress to host:port (IPv4 or IPv6). OSError at once if
    the address cannot even be tried."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    err = sock.connect_ex((host, port))
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(err, _reason(err))
    return sock


def listen_on(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {address}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock
