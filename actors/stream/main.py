"""The stream relay actor: StreamCore behind local sockets and the bus.

Forwards (served with `serve`, `listen`, `forwards`, `delete`; saved in
RUN_DIR/stream-forwards.json so they survive kill -9 and a node restart):
- serve STP_PORT -> HOST:PORT: the port is bound with the router; each stream a peer
  opens there becomes a TCP connection to HOST:PORT.
- listen LOCAL_PORT -> REMOTE_HOST:STP_PORT: a local TCP listener; each connection
  becomes a stream to the remote's served port.
ilnp-connect talks to RUN_DIR/stream.sock: `CONNECT HOST STP_PORT\\n`, then `OK\\n` or
`ERR reason\\n`, then the raw bytes both ways.
"""
from __future__ import annotations

import logging
import socket

from bus.actor import CoreTimer, Reply, monotonic_ms
from bus.codec import is_u64
from bus.rundir import RunDir

from ..config import NodeConfig
from ..nodekey import load_or_create
from ..proto.addr import is_cryptographic
from ..proto import stp, topics
from ..proto.frames import RxItem, TxItem
from ..proto.numbers import NH_STP
from ..registry import open_actor
from ..statefile import StateFile
from ..stp.binding import Bound, Refused, Unanswered
from ..stp.bound_ports import BoundPorts
from .core import (
    Forward, Opened, PauseReading, ResumeReading, SendStp, StreamCore, TcpClose, TcpConnect, TcpShutdown,
    TcpWrite,
)
from .forwards import ForwardTable, ForwardError, Listen, check_saved
from .quic import QuicLink, Settings, make_certificate
from .tcp import LocalConn, connect_to, listen_on

log = logging.getLogger("stream")
FORWARDS_FILE = "stream-forwards.json"
CONNECT_SOCKET = "stream.sock"


class StreamShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.actor = actor = open_actor("stream", run, requires=(topics.STATE_HOSTS,))
        cert = make_certificate(load_or_create(run.path))
        self.authenticated = is_cryptographic(config.nid)  # others can check our certificate
        settings = Settings(max_datagram=config.mtu - 44, idle_timeout_s=config.stream_idle_timeout_ms / 1000)
        self.core = StreamCore(config.nid, lambda peer, client, original_cid=None: QuicLink(
            settings, peer, cert=None if client else cert, original_cid=original_cid),
            keepalive_ms=config.stream_keepalive_ms)
        self.bind_addr = config.stream_bind
        self.ports = BoundPorts(actor, self.on_binding)
        self.timer = CoreTimer(actor, self.core.next_deadline, lambda now: self.apply(self.core.on_timer(now)))
        self.conns: dict[int, LocalConn] = {}
        self._waiting: dict[int, list] = {}  # STP port -> `serve` replies awaiting the router
        self.listeners: dict[int, socket.socket] = {}  # local port -> listening socket
        self._cids = iter(range(1, 1 << 40))
        self.table = ForwardTable(StateFile(run.path / FORWARDS_FILE, log, "forwards", check_saved, actor.counters))
        actor.subscribe(topics.STATE_HOSTS, self.on_hosts)
        actor.command("serve", self.cmd_serve, deferred=True)
        actor.command("listen", self.cmd_listen)
        actor.command("forwards", self.cmd_forwards)
        actor.command("delete", self.cmd_delete)
        actor.status_extra = lambda: {"core": dict(self.core.counters), "connections": self.core.connections(),
                                      "local": len(self.conns),
                                      "authenticated": self.authenticated}
        self.connect_sock = self._unix_listener(run.path / CONNECT_SOCKET)
        actor.add_reader(self.connect_sock, lambda: self._accept(self.connect_sock, None))
        self.ports.want(0)  # our client port: every stream we open leaves from it
        for forward in self.table.serves():
            self._serve(forward)
        for entry in self.table.listens():
            try:
                self._listen(entry)
            except OSError as exc:
                log.error("event=listen_failed forward=%s error=%r", entry, str(exc))

    # ---- forwards ----------------------------------------------------------------
    def cmd_serve(self, reply: Reply, stp_port, host, port) -> None:
        """Answers once the router has bound the port (or refused it: then nothing is
        saved), never blocking the loop; a router that does not answer: served, retried."""
        new = stp_port not in self.table.served_ports()
        forward = self.table.add_serve(stp_port, host, port)
        if self.ports.is_bound(forward.stp_port):
            reply.ok(self.table.describe_serve(forward, bound=True))
            return
        self._waiting.setdefault(forward.stp_port, []).append((reply, new))
        self._serve(forward)
        log.info("event=serve stp_port=%d to=%s:%d", forward.stp_port, forward.host, forward.port)

    def cmd_listen(self, local_port, host, stp_port, bind=None) -> dict:
        entry = self.table.check_listen(local_port, host, stp_port, bind or self.bind_addr)
        self._listen(entry)  # OSError (port in use) -> a one-line error, nothing saved
        self.table.add_listen(entry)
        log.info("event=listen local=%s:%d to=%s:%d", entry.bind, entry.local_port, entry.host, entry.stp_port)
        return self.table.describe_listen(entry)

    def cmd_forwards(self) -> dict:
        return {"serve": [self.table.describe_serve(f, bound=self.ports.is_bound(f.stp_port))
                          for f in self.table.serves()],
                "listen": [self.table.describe_listen(e) for e in self.table.listens()],
                "authenticated": self.authenticated}

    def cmd_delete(self, serve=None, listen=None) -> dict:
        if (serve is None) == (listen is None):
            raise ForwardError("delete one forward: serve STP_PORT or listen LOCAL_PORT")
        if serve is not None:
            forward = self.table.remove_serve(serve)
            self.core.unserve(forward.stp_port)
            self.actor.unsubscribe(topics.stp_rx(forward.stp_port), direct=True)
            self.ports.release(forward.stp_port)
            return self.table.describe_serve(forward, bound=False)
        entry = self.table.remove_listen(listen)
        sock = self.listeners.pop(entry.local_port, None)
        if sock is not None:
            self.actor.remove_reader(sock)
            sock.close()
        return self.table.describe_listen(entry)

    def _serve(self, forward: Forward) -> None:
        self.core.serve(forward)
        self._follow(forward.stp_port)
        self.ports.want(forward.stp_port)

    def _listen(self, entry: Listen) -> None:
        sock = listen_on(entry.bind, entry.local_port)
        self.listeners[entry.local_port] = sock
        self.actor.add_reader(sock, lambda: self._accept(sock, entry))

    def _follow(self, port: int) -> None:
        self.actor.unsubscribe(topics.stp_rx(port), direct=True)
        self.actor.subscribe(topics.stp_rx(port), self.on_stp, direct=True)

    def on_binding(self, event) -> None:
        waiting = self._waiting.pop(event.port, ()) if type(event) in (Bound, Refused, Unanswered) else ()
        for reply, new in waiting:
            if type(event) is Refused:
                if new:  # a new forward on a port another process holds: undo it
                    self.cmd_delete(serve=event.port)
                reply.error(f"STP port {event.port} is in use on this node ({event.reason})")
            else:
                forward = next(f for f in self.table.serves() if f.stp_port == event.port)
                reply.ok(self.table.describe_serve(forward, bound=type(event) is Bound))
        if type(event) is Bound:
            if self.core.client_port is None and event.port not in self.table.served_ports():
                self._follow(event.port)
                log.info("event=client_port port=%d", event.port)
                self.apply(self.core.set_client_port(event.port, monotonic_ms()))
        elif type(event) is Refused:
            log.warning("event=bind_refused port=%d reason=%r", event.port, event.reason)

    # ---- the overlay side ----------------------------------------------------------
    def on_hosts(self, _topic: bytes, body: dict) -> None:
        rows = body.get("hosts")
        if not _host_rows(rows):
            self.actor.counters["bad_bodies"] += 1
            return
        self.core.hosts.load(rows)

    def on_stp(self, _topic: bytes, body: dict) -> None:
        now = monotonic_ms()
        for item in self.actor.items(body):
            try:
                rx = RxItem(*item)
                if not (is_u64(rx.src_nid) and is_u64(rx.src_loc) and type(rx.payload) is bytes):
                    raise TypeError
            except TypeError:
                self.actor.counters["bad_items"] += 1  # this item only: the rest of the batch goes on
                continue
            try:
                src_port, dst_port, data = stp.decode(rx.payload)
            except ValueError:
                self.actor.counters["malformed"] += 1
                continue
            try:
                actions = self.core.stp_received(rx.src_nid, rx.src_loc, src_port, dst_port, data, now)
            except Exception:
                self.actor.item_error(_topic)
                continue
            self.apply(actions)

    # ---- local sockets ----------------------------------------------------------------
    def _unix_listener(self, path) -> socket.socket:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        path.chmod(0o600)  # only the node's user may open streams through it
        sock.listen(64)
        sock.setblocking(False)
        return sock

    def _accept(self, listener: socket.socket, entry: Listen | None) -> None:
        for _ in range(64):
            try:
                sock, _addr = listener.accept()
            except BlockingIOError:
                return
            except OSError:
                self.actor.counters["accept_errors"] += 1
                return
            cid = next(self._cids)
            conn = self.conns[cid] = LocalConn(cid, sock, status_line=entry is None)
            self.actor.add_reader(conn, lambda conn=conn: self.on_readable(conn))
            if entry is not None:
                self.apply(self.core.tcp_opened(cid, entry.host, entry.stp_port, monotonic_ms()))

    def on_readable(self, conn: LocalConn) -> None:
        now = monotonic_ms()
        for _ in range(16):
            try:
                data = conn.read()
            except OSError:
                self._drop(conn)
                self.apply(self.core.tcp_reset(conn.cid, now))
                return
            if data is None:
                return
            if not data:
                self.actor.remove_reader(conn)
                if conn.status_line and conn.header is not None:
                    self._drop(conn)  # ilnp-connect went away before saying where to
                    return
                self.apply(self.core.tcp_eof(conn.cid, now))
                return
            if conn.status_line and conn.header is not None:
                data = self._connect_header(conn, data, now)
                if conn.closed:
                    return
                if not data:
                    continue
            self.apply(self.core.tcp_data(conn.cid, data, now))
            if conn.paused or conn.closed:
                return  # its stream is backed up: read no more until ResumeReading

    def _connect_header(self, conn: LocalConn, data: bytes, now: int) -> bytes:
        """ilnp-connect's `CONNECT HOST STP_PORT` line; returns what follows it."""
        conn.header += data
        line, found, rest = conn.header.partition(b"\n")
        if not found:
            if len(conn.header) > 512:
                self._fail(conn, "bad request: expected CONNECT HOST STP_PORT")
            return b""
        conn.header = None
        words = line.decode("utf-8", "replace").split()
        if len(words) != 3 or words[0] != "CONNECT" or not words[2].isdigit() or not 0 < int(words[2]) < 65536:
            self._fail(conn, "bad request: expected CONNECT HOST STP_PORT")
            return b""
        self.apply(self.core.tcp_opened(conn.cid, words[1], int(words[2]), now))
        return rest

    def _fail(self, conn: LocalConn, reason: str) -> None:
        conn.write(f"ERR {reason}\n".encode())
        self._drop(conn)

    def on_writable(self, conn: LocalConn) -> None:
        now = monotonic_ms()
        if conn.connecting:
            error = conn.connect_result()
            if error is not None:
                self._drop(conn)
                self.apply(self.core.tcp_failed(conn.cid, error, now))
                return
            self.actor.add_reader(conn, lambda: self.on_readable(conn))
            self.apply(self.core.tcp_connected(conn.cid, now))
        written = conn.flush()
        if not conn.wants_write():
            self.actor.remove_writer(conn)
            if conn.close_pending:
                self._drop(conn)
        if written:
            self.apply(self.core.tcp_written(conn.cid, written, now))

    def _drop(self, conn: LocalConn, reset: bool = False) -> None:
        if conn.queued:
            self.actor.counters["local_bytes_lost"] += conn.queued
            log.warning("event=local_closed_with_data cid=%d queued=%d reset=%s", conn.cid, conn.queued, reset)
        self.conns.pop(conn.cid, None)
        self.actor.remove_reader(conn)
        self.actor.remove_writer(conn)
        conn.close(reset)

    # ---- actions --------------------------------------------------------------------------
    def apply(self, actions: list) -> None:
        for action in actions:
            kind = type(action)
            if kind is SendStp:
                if not action.locs:
                    self.actor.counters["no_locators"] += 1
                    continue
                self.actor.emit(topics.ILNP_TX, TxItem(action.nid, action.locs, NH_STP,
                                                       stp.encode(action.src_port, action.dst_port, action.data)))
                continue
            conn = self.conns.get(action.cid)
            if kind is TcpConnect:
                self._connect(action)
            elif conn is None:
                continue
            elif kind is TcpWrite or kind is Opened:
                data = action.data if kind is TcpWrite else b"OK\n" if conn.status_line else b""
                written = conn.write(data)
                if conn.wants_write():
                    self.actor.add_writer(conn, lambda conn=conn: self.on_writable(conn))
                if written:
                    self.apply(self.core.tcp_written(conn.cid, written, monotonic_ms()))
            elif kind is TcpShutdown:
                conn.shutdown_pending = True
                conn.flush()
            elif kind is TcpClose:
                self._close(conn, action.error)
            elif kind is PauseReading:
                conn.paused = True
                self.actor.remove_reader(conn)
            elif kind is ResumeReading:
                conn.paused = False
                self.actor.add_reader(conn, lambda conn=conn: self.on_readable(conn))
        self.timer.arm()

    def _connect(self, action: TcpConnect) -> None:
        try:
            sock = connect_to(action.host, action.port)
        except OSError as exc:
            self.apply(self.core.tcp_failed(action.cid, exc.strerror or str(exc), monotonic_ms()))
            return
        conn = self.conns[action.cid] = LocalConn(action.cid, sock, connecting=True)
        self.actor.add_writer(conn, lambda: self.on_writable(conn))

    def _close(self, conn: LocalConn, error: str | None) -> None:
        if error is not None:
            log.info("event=stream_failed cid=%d reason=%r", conn.cid, error)
            if conn.status_line:
                conn.write(f"ERR {error}\n".encode())
        conn.shutdown_pending = True
        conn.flush()
        if error is None and conn.wants_write():
            conn.close_pending = True  # a clean end: what is queued is still written first
            self.actor.remove_reader(conn)
            return
        self._drop(conn, reset=error is not None and not conn.status_line)

    def run(self) -> None:
        try:
            self.actor.run()
        finally:
            for conn in list(self.conns.values()):
                conn.close()
            self.connect_sock.close()


def _host_rows(rows) -> bool:
    """Whether `rows` are state.hosts rows, [[hostname, nid, [loc, ...], ...], ...]: the
    whole table from discovery, so one bad row means it is not discovery's (dropped whole)."""
    return type(rows) is list and all(
        type(row) is list and len(row) >= 3 and type(row[0]) is str and is_u64(row[1])
        and type(row[2]) is list and all(is_u64(loc) for loc in row[2]) for row in rows)


def main(config: NodeConfig, run: RunDir) -> None:
    StreamShell(config, run).run()
