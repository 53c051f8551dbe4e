"""The fd store: keeps file descriptors of a node's programs across their restarts.

Like systemd's FDSTORE. Some things die with the last descriptor that refers to them:
a UDP socket takes its kernel receive buffer and its multicast memberships with it,
so whatever arrives between a program's death and its successor's new socket is
dropped by the kernel. A program hands such descriptors to this tiny long-lived
process (it does nothing else, so it does not crash with the program), and the next
incarnation takes them back and finds what arrived meanwhile in the kernel's buffer.
The store knows nothing of what it keeps: a name, up to MAX_FDS_PER_NAME descriptors
and a small msgpack metadata blob per name (the bus names no actor and no protocol).

Endpoint: an AF_UNIX SOCK_SEQPACKET socket, `RunDir.fdstore` (0600, in the 0700 run
directory). Each request is one message, a msgpack map; each gets one reply message:

    {"op": "put", "name": N, "meta": M} + fds (SCM_RIGHTS)  -> {"ok": true, "fds": n}     (replaces N)
        optional "orphan_rcvbuf": B (bytes): when the connection that put N closes (its
        program died), the store sets each of N's sockets' receive buffer to B; a "meta"
        with it makes its connection the one watched (a successor that adopted N)
    {"op": "get", "name": N}                                -> {"ok": true, "found": true, "meta": M, "fds": n}
                                                               + the fds, or {"ok": true, "found": false}
    {"op": "meta", "name": N, "meta": M}                    -> {"ok": true}                (N must exist)
    {"op": "drop", "name": N}                               -> {"ok": true, "dropped": bool}
    {"op": "stats"}                                         -> {"ok": true, "names": {N: n}, "counters": {...}}
    anything else                                           -> {"ok": false, "error": "one line"}

Why orphan_rcvbuf: a program's receive buffer is sized for its own pace (a deep one is a
queue that delays every packet when the program falls behind), but while it restarts
nobody reads, and what arrives meanwhile must fit. The store sees the death first (its
connection closes) and deepens the kept sockets at once; the successor, having read the
backlog, sets its own size again.

What `get` sends are duplicates (SCM_RIGHTS installs new descriptors in the receiver):
the store keeps its own until `put` replaces them or `drop` closes them. A client may
keep its connection and send several requests; replies come in order.

Local input is hostile: every request is checked, and a malformed one (not a map, an
unknown op, a bad name, truncated, descriptors where none belong) is answered with an
error and counted (`bad_requests`), one beyond the bounds (names, descriptors, metadata
size) refused and counted (`requests_refused`); descriptors that came with a request
not kept are closed. A client that does not read its replies is disconnected. Nothing
a client sends ends the store.

The client side (FdStoreClient, store_fds, fetch_fds, ...) uses short timeouts and
gives up quietly when the store is not running: a caller then simply proceeds without
it (its descriptors die with it, as they would have anyway).
"""
from __future__ import annotations

import array
import logging
import os
import re
import selectors
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack

from .rundir import RunDir

log = logging.getLogger("fdstore")

MAX_NAMES = 16          # names kept at once
MAX_FDS_PER_NAME = 8    # descriptors under one name
MAX_FDS = 64            # descriptors kept in all
MAX_META = 4096         # bytes of one name's metadata, packed
MAX_ORPHAN_RCVBUF = 64 << 20  # the deepest receive buffer a put may ask for an orphan
MAX_MESSAGE = MAX_META + 512   # one request or reply, packed
MAX_CLIENTS = 32        # connections at once (one more is closed at once, counted)
PER_WAKEUP = 16         # requests taken from one client before looking at the others
TIMEOUT = 0.5           # client: seconds to wait for the store's reply
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
OPS = ("put", "get", "meta", "drop", "stats")
_FD = array.array("i").itemsize
_ANC_SPACE = socket.CMSG_SPACE(MAX_FDS_PER_NAME * _FD)
_NO_META = object()
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def store_path(where: RunDir | str | os.PathLike) -> Path:
    """The store's endpoint: from a RunDir, or the socket's own path."""
    return where.fdstore if isinstance(where, RunDir) else Path(where)


def _fds_of(ancdata) -> list[int]:
    """The descriptors of SCM_RIGHTS messages (whole ints only)."""
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % _FD])
    return list(fds)


def _close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class RequestRejected(Exception):
    """A request the store answers with an error (reason: the one-line error)."""

    def __init__(self, reason: str, counter: str):
        super().__init__(reason)
        self.counter = counter


# ---------------------------------------------------------------------- the store


class FdStore:
    """The table and its rules, without sockets: `handle` takes one request as it came
    off the socket and gives the reply and the descriptors to send with it."""

    def __init__(self, max_names: int = MAX_NAMES, max_fds: int = MAX_FDS,
                 max_fds_per_name: int = MAX_FDS_PER_NAME, max_meta: int = MAX_META):
        self.max_names, self.max_fds = max_names, max_fds
        self.max_fds_per_name, self.max_meta = max_fds_per_name, max_meta
        self.entries: dict[str, tuple[list[int], Any]] = {}   # name -> (our descriptors, metadata)
        self.owners: dict[str, tuple[Any, int]] = {}  # name -> (the connection that put it, orphan_rcvbuf)
        self.counters: Counter = Counter()

    @property
    def fds_held(self) -> int:
        return sum(len(fds) for fds, _ in self.entries.values())

    def handle(self, data: bytes, fds: list[int], truncated: bool = False, owner: Any = None) -> tuple[dict, list[int]]:
        """One request -> (reply, descriptors to send with it). Takes `fds`: keeps them
        (a put) or closes them. `owner` names the connection it came on. Never raises."""
        self.counters["requests"] += 1
        try:
            result, keep = self._handle(data, fds, truncated, owner)
        except RequestRejected as exc:
            self.counters[exc.counter] += 1
            _close_all(fds)
            return {"ok": False, "error": str(exc)}, []
        except Exception as exc:  # a bug must not end the store: answered and counted all the same
            self.counters["request_errors"] += 1
            _close_all(fds)
            log.exception("event=request_error")
            return {"ok": False, "error": f"store error: {type(exc).__name__}"}, []
        if not keep:
            _close_all(fds)
        return result

    def _handle(self, data: bytes, fds: list[int], truncated: bool, owner: Any = None) -> tuple[tuple[dict, list[int]], bool]:
        if truncated:
            raise RequestRejected("request truncated (too long, or too many descriptors)", "bad_requests")
        if len(data) > MAX_MESSAGE:
            raise RequestRejected(f"request longer than {MAX_MESSAGE} bytes", "bad_requests")
        try:
            req = msgpack.unpackb(data, raw=False)
        except Exception:  # msgpack raises several kinds (ExtraData, StackError, ValueError...)
            raise RequestRejected("request is not msgpack", "bad_requests") from None
        if not isinstance(req, dict):
            raise RequestRejected("request is not a map", "bad_requests")
        op = req.get("op")
        if op not in OPS:
            raise RequestRejected(f"unknown op {str(op)[:20]!r}", "bad_requests")
        if fds and op != "put":
            raise RequestRejected(f"descriptors sent with {op}", "bad_requests")
        if op == "stats":
            self.counters["stats"] += 1
            return ({"ok": True, "names": {n: len(e[0]) for n, e in self.entries.items()},
                     "counters": dict(self.counters), "fds": self.fds_held}, []), False
        name = req.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise RequestRejected("name must be 1-64 of A-Z a-z 0-9 . _ -", "bad_requests")
        if op in ("put", "meta"):
            meta = req.get("meta")
            if len(msgpack.packb(meta)) > self.max_meta:
                raise RequestRejected(f"metadata larger than {self.max_meta} bytes", "requests_refused")
        orphan_rcvbuf = req.get("orphan_rcvbuf", 0)
        if type(orphan_rcvbuf) is not int or not 0 <= orphan_rcvbuf <= MAX_ORPHAN_RCVBUF:
            raise RequestRejected(f"orphan_rcvbuf must be 0-{MAX_ORPHAN_RCVBUF} bytes", "bad_requests")
        if op == "put":
            result = self._put(name, fds, meta)
            self.owners[name] = (owner, orphan_rcvbuf)
            return result, True
        if op == "get":
            entry = self.entries.get(name)
            self.counters["gets" if entry else "gets_missing"] += 1
            if entry is None:
                return ({"ok": True, "found": False}, []), False
            return ({"ok": True, "found": True, "meta": entry[1], "fds": len(entry[0])}, list(entry[0])), False
        if op == "meta":
            entry = self.entries.get(name)
            if entry is None:
                raise RequestRejected(f"no name {name!r} in the store", "requests_refused")
            self.entries[name] = (entry[0], meta)
            if "orphan_rcvbuf" in req:  # the adopter watched from now on
                self.owners[name] = (owner, orphan_rcvbuf)
            self.counters["metas"] += 1
            return ({"ok": True}, []), False
        # drop
        self.owners.pop(name, None)
        entry = self.entries.pop(name, None)
        if entry is not None:
            _close_all(entry[0])
            self.counters["drops"] += 1
        return ({"ok": True, "dropped": entry is not None}, []), False

    def _put(self, name: str, fds: list[int], meta: Any) -> tuple[dict, list[int]]:
        if not fds:
            raise RequestRejected("put without descriptors", "bad_requests")
        if len(fds) > self.max_fds_per_name:
            raise RequestRejected(f"more than {self.max_fds_per_name} descriptors", "requests_refused")
        old = self.entries.get(name)
        if old is None and len(self.entries) >= self.max_names:
            raise RequestRejected(f"store full ({self.max_names} names)", "requests_refused")
        if self.fds_held - (len(old[0]) if old else 0) + len(fds) > self.max_fds:
            raise RequestRejected(f"store full ({self.max_fds} descriptors)", "requests_refused")
        self.entries[name] = (list(fds), meta)
        if old is not None:
            _close_all(old[0])   # replaced: ours only; the client keeps its own
        self.counters["puts"] += 1
        return {"ok": True, "fds": len(fds)}, []

    def orphaned(self, owner: Any) -> None:
        """The connection `owner` closed: its program died or ended. The sockets it put with
        an orphan_rcvbuf get that receive buffer, so they hold what arrives until the
        program's successor takes them (counted orphans_deepened, or orphan_errors)."""
        for name, (who, size) in list(self.owners.items()):
            if who is not owner:
                continue
            self.owners[name] = (None, size)
            if not size or name not in self.entries:
                continue
            for fd in self.entries[name][0]:
                try:
                    with socket.socket(fileno=os.dup(fd)) as sock:
                        try:  # as root past net.core.rmem_max
                            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
                        except PermissionError:
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
                    self.counters["orphans_deepened"] += 1
                except OSError:  # not a socket, or the option refused
                    self.counters["orphan_errors"] += 1

    def close(self) -> None:
        for fds, _ in self.entries.values():
            _close_all(fds)
        self.entries.clear()
        self.owners.clear()


class FdStoreServer:
    """The store on its socket: one selector loop, non-blocking throughout."""

    def __init__(self, path: str | os.PathLike, store: FdStore | None = None, max_clients: int = MAX_CLIENTS):
        self.path = Path(path)
        self.store = store or FdStore()
        self.counters = self.store.counters
        self.max_clients = max_clients
        self.sel = selectors.DefaultSelector()
        self.clients: set[socket.socket] = set()
        self.listener: socket.socket | None = None
        self._logged_at = 0.0

    def open(self) -> None:
        try:
            os.unlink(self.path)  # a stale endpoint of a killed store
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        umask = os.umask(0o177)
        try:
            listener.bind(str(self.path))   # 0600 from the start: no window with a wider mode
        finally:
            os.umask(umask)
        listener.listen(16)
        listener.setblocking(False)
        self.listener = listener
        self.sel.register(listener, selectors.EVENT_READ)

    def serve(self, stop: threading.Event | None = None) -> None:
        """Until `stop` is set (or SystemExit from a signal handler)."""
        while stop is None or not stop.is_set():
            self.poll(0.2 if stop is not None else None)

    def poll(self, timeout: float | None) -> None:
        for key, _ in self.sel.select(timeout):
            if key.fileobj is self.listener:
                self._accept()
            else:
                self._serve_client(key.fileobj)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and the like: try again at the next wakeup
                self.counters["accept_errors"] += 1
                return
            if len(self.clients) >= self.max_clients:
                self.counters["clients_refused"] += 1
                conn.close()
                continue
            conn.setblocking(False)
            self.clients.add(conn)
            self.sel.register(conn, selectors.EVENT_READ)
            self.counters["clients"] += 1

    def _serve_client(self, conn: socket.socket) -> None:
        for _ in range(PER_WAKEUP):
            try:
                data, anc, flags, _ = conn.recvmsg(MAX_MESSAGE + 1, _ANC_SPACE, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop_client(conn)
                return
            fds = _fds_of(anc)
            if not data and not fds and not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                self._drop_client(conn)  # EOF (a zero-length message reads the same: goodbye)
                return
            truncated = bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC)) or len(data) > MAX_MESSAGE
            before = self.counters["bad_requests"] + self.counters["requests_refused"]
            reply, send = self.store.handle(data, fds, truncated, owner=conn)
            if self.counters["bad_requests"] + self.counters["requests_refused"] != before:
                self._log_rejected(reply.get("error"))
            if not self._reply(conn, reply, send):
                return

    def _reply(self, conn: socket.socket, reply: dict, fds: list[int]) -> bool:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            conn.sendmsg([msgpack.packb(reply)], anc, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            return True
        except BlockingIOError:
            self.counters["clients_dropped"] += 1  # it does not read its replies: not our problem to hold them
        except OSError:
            pass
        self._drop_client(conn)
        return False

    def _drop_client(self, conn: socket.socket) -> None:
        self.store.orphaned(conn)
        if conn in self.clients:
            self.counters["clients_closed"] += 1
        self.clients.discard(conn)
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _log_rejected(self, error: Any) -> None:
        now = time.monotonic()
        if now - self._logged_at >= 1.0:  # a flood of bad requests: one line a second
            self._logged_at = now
            log.warning("event=request_rejected error=%r bad_requests=%d requests_refused=%d", error,
                        self.counters["bad_requests"], self.counters["requests_refused"])

    def close(self) -> None:
        for conn in list(self.clients):
            self._drop_client(conn)
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self.sel.close()
        self.store.close()


def serve(path: str | os.PathLike) -> None:
    """The store's process (main thread): serve until SIGTERM or SIGINT."""
    server = FdStoreServer(path)

    def stop(_signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.open()
    log.info("event=fdstore_up path=%s pid=%d", server.path, os.getpid())
    try:
        server.serve()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        log.info("event=fdstore_down counters=%s", dict(server.counters))
        server.close()


# ---------------------------------------------------------------------- clients


class StoreUnavailable(Exception):
    """The store is not running, did not answer in time, or went away."""


class FdStoreClient:
    """One connection to the store. `request` waits for its reply (up to `timeout`);
    `send` does not (a loop reads the replies later with `replies`, when `fileno()`
    is readable: readable with nothing to read means the store has gone)."""

    def __init__(self, where: RunDir | str | os.PathLike, timeout: float = TIMEOUT):
        self.path = store_path(where)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.pending = 0   # replies owed to send()s

    def __enter__(self) -> "FdStoreClient":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def connect(self) -> bool:
        """False (quietly) when the store is not there; never blocks."""
        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            sock.connect(str(self.path))
        except OSError:   # no such file, refused (a stale endpoint), backlog full (EAGAIN)
            sock.close()
            return False
        self.sock = sock
        return True

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.pending = 0

    @staticmethod
    def _message(op: str, name: str | None, meta: Any, options: dict | None = None) -> bytes:
        req: dict[str, Any] = dict(options or {}, op=op)
        if name is not None:
            req["name"] = name
        if meta is not _NO_META:
            req["meta"] = meta
        return msgpack.packb(req)

    def _send(self, data: bytes, fds) -> None:
        if self.sock is None:
            raise StoreUnavailable("not connected")
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            self.sock.sendmsg([data], anc, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except OSError as exc:   # EAGAIN: the store does not keep up; EPIPE: it is gone
            self.close()
            raise StoreUnavailable(f"send: {exc}") from None

    def _receive(self) -> tuple[dict, list[int]] | None:
        """One reply if one is ready (None if not); StoreUnavailable at EOF."""
        try:
            data, anc, flags, _ = self.sock.recvmsg(MAX_MESSAGE, _ANC_SPACE, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            self.close()
            raise StoreUnavailable(f"receive: {exc}") from None
        fds = _fds_of(anc)
        if not data:
            _close_all(fds)
            self.close()
            raise StoreUnavailable("the store closed the connection")
        try:
            reply = msgpack.unpackb(data, raw=False)
        except Exception:
            reply = None
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or not isinstance(reply, dict):
            _close_all(fds)
            self.close()
            raise StoreUnavailable("a reply that is not the store's")
        return reply, fds

    def request(self, op: str, name: str | None = None, meta: Any = _NO_META, fds=(),
                options: dict | None = None) -> tuple[dict, list[int]]:
        """The store's reply to one request and the descriptors that came with it
        (the caller owns them). StoreUnavailable: not connected, no reply in time, gone."""
        self._send(self._message(op, name, meta, options), fds)
        deadline = time.monotonic() + self.timeout
        owed = self.pending + 1
        while True:
            got = self._receive()
            if got is not None:
                owed -= 1
                if owed == 0:
                    self.pending = 0
                    return got
                _close_all(got[1])   # the answer to an earlier send(): nobody waits for it
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()   # a late reply must not be taken for the next request's
                raise StoreUnavailable(f"no reply within {self.timeout:g} s")
            ready = selectors.DefaultSelector()
            try:
                ready.register(self.sock, selectors.EVENT_READ)
                ready.select(left)
            finally:
                ready.close()

    def send(self, op: str, name: str | None = None, meta: Any = _NO_META, fds=(),
             options: dict | None = None) -> None:
        """A request whose reply is read later (replies()); StoreUnavailable if it cannot go.
        `options`: more keys of the request (a put's orphan_rcvbuf)."""
        self._send(self._message(op, name, meta, options), fds)
        self.pending += 1

    def replies(self) -> list[dict]:
        """The replies ready now to earlier send()s; StoreUnavailable when the store has gone."""
        out = []
        while self.sock is not None:
            got = self._receive()
            if got is None:
                break
            _close_all(got[1])
            self.pending = max(0, self.pending - 1)
            out.append(got[0])
        return out

    # the requests, each waiting for its reply
    def put(self, name: str, fds, meta: Any = None, orphan_rcvbuf: int = 0) -> dict:
        options = {"orphan_rcvbuf": orphan_rcvbuf} if orphan_rcvbuf else None
        return self.request("put", name, meta, fds, options)[0]

    def get(self, name: str) -> tuple[Any, list[int]] | None:
        """(metadata, descriptors) kept under `name`, or None when nothing is."""
        reply, fds = self.request("get", name)
        if not reply.get("ok") or not reply.get("found"):
            _close_all(fds)
            return None
        return reply.get("meta"), fds


def _once(where, timeout: float, op: str, name: str | None = None, meta: Any = _NO_META, fds=()):
    with FdStoreClient(where, timeout) as client:
        if not client.connect():
            return None
        try:
            return client.request(op, name, meta, fds)
        except StoreUnavailable:
            return None


def store_fds(where, name: str, fds, meta: Any = None, timeout: float = TIMEOUT) -> bool:
    """Keep `fds` (duplicated by the kernel: the caller's stay open) under `name`,
    replacing what was there. False when the store is not running or refused."""
    got = _once(where, timeout, "put", name, meta, fds)
    return bool(got and got[0].get("ok"))


def fetch_fds(where, name: str, timeout: float = TIMEOUT) -> tuple[Any, list[int]] | None:
    """(metadata, descriptors) kept under `name` (the caller owns the descriptors), or
    None when nothing is kept there or the store is not running."""
    got = _once(where, timeout, "get", name)
    if got is None:
        return None
    reply, fds = got
    if not reply.get("ok") or not reply.get("found"):
        _close_all(fds)
        return None
    return reply.get("meta"), fds


def set_meta(where, name: str, meta: Any, timeout: float = TIMEOUT) -> bool:
    got = _once(where, timeout, "meta", name, meta)
    return bool(got and got[0].get("ok"))


def drop_fds(where, name: str, timeout: float = TIMEOUT) -> bool:
    """Close what the store keeps under `name`; True if there was something."""
    got = _once(where, timeout, "drop", name)
    return bool(got and got[0].get("ok") and got[0].get("dropped"))


def store_stats(where, timeout: float = TIMEOUT) -> dict | None:
    """{"names": {name: n_fds}, "counters": {...}, "fds": n}, or None when not running."""
    got = _once(where, timeout, "stats")
    return got[0] if got and got[0].get("ok") else None
