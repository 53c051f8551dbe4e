"""The stream relay's core: TCP connections as QUIC streams over STP (PROTOCOL.md
"[ext] Stream relay").

Pure: no sockets, no clock (`now` is int ms); QUIC connections are sans-I/O objects
(quic.QuicLink) made by a factory the shell gives. Local TCP connections are named by
a connection id (`cid`) the shell chooses.

- A *serve* forward listens on one of our STP ports: each QUIC stream a peer opens to
  it becomes a TCP connection to the forward's target (TcpConnect).
- A client connection (a TCP client of a *listen* forward, or ilnp-connect) to (host,
  STP port) is one bidirectional stream on the one QUIC connection we keep per (peer
  NID, STP port), from our client STP port (an ephemeral one the shell binds).
- ilnp-stream/1: each direction of a stream begins with one byte. The client's is 0
  (open: the stream exists even before the client has anything to say, so a service
  that speaks first works); the server's is its status, 0 = connected to the far
  service. A refused far service is a stream reset (RESET_REFUSED), which closes the
  client's TCP connection at once. A TCP half-close is a stream FIN.
- Back-pressure both ways: a stream whose QUIC send queue is over HIGH_WATER pauses
  reading its TCP socket until it is under LOW_WATER; a connection one of whose TCP
  sockets has more than HIGH_WATER unwritten bytes holds its incoming datagrams (ACKs
  wait, so the sender slows) and drops them past MAX_HELD (counted; QUIC resends).
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

from ..stp.replica import HostReplica
from .quic import Closed, Connected, QuicLink, StreamData, StreamReset, initial_cid, peer_address

STATUS_CONNECTED = b"\x00"
OPEN = b"\x00"
RESET_REFUSED = 1      # the far service refused or could not be reached
RESET_ABORTED = 2      # a TCP end closed abruptly
RESET_NO_FORWARD = 3   # nothing is served on that STP port
HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10
MAX_HELD = 4096        # datagrams held per connection while its reader is slow

RESET_REASONS = {RESET_REFUSED: "the far service refused the connection",
                 RESET_ABORTED: "the connection was reset by the other end",
                 RESET_NO_FORWARD: "nothing is served on that STP port"}


# ---- actions --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SendStp:
    nid: int
    locs: list
    src_port: int
    dst_port: int
    data: bytes


@dataclass(frozen=True, slots=True)
class TcpConnect:
    cid: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class TcpWrite:
    cid: int
    data: bytes


@dataclass(frozen=True, slots=True)
class TcpShutdown:
    """Half-close: no more data towards this TCP connection (FIN)."""
    cid: int


@dataclass(frozen=True, slots=True)
class TcpClose:
    cid: int
    error: str | None = None  # None: a clean end; else why (reset the connection)


@dataclass(frozen=True, slots=True)
class Opened:
    """A client stream reached the far service."""
    cid: int


@dataclass(frozen=True, slots=True)
class PauseReading:
    cid: int


@dataclass(frozen=True, slots=True)
class ResumeReading:
    cid: int


@dataclass(frozen=True)
class Forward:
    """Serve: STP port -> a TCP service (host, port) reachable from this node."""
    stp_port: int
    host: str
    port: int


# ---- state ----------------------------------------------------------------------

@dataclass
class _Stream:
    cid: int
    conn: "_Conn"
    sid: int
    client: bool
    status_pending: bool      # the peer's first byte (status or open) has not come yet
    fin_out: bool = False     # we sent FIN (the local TCP end half-closed)
    fin_in: bool = False      # the peer sent FIN
    paused: bool = False
    unwritten: int = 0        # bytes given to TcpWrite and not yet written by the shell


@dataclass
class _Conn:
    link: QuicLink
    peer_nid: int
    peer_port: int
    local_port: int
    client: bool
    streams: dict[int, _Stream] = field(default_factory=dict)   # sid -> stream
    held: deque = field(default_factory=deque)                   # datagrams held (slow reader)
    connected: bool = False
    last_ping_ms: int = 0


LinkFactory = Callable[..., QuicLink]


class StreamCore:
    def __init__(self, nid: int, new_link: LinkFactory, keepalive_ms: int = 10_000):
        self.nid = nid
        self.new_link = new_link          # new_link(peer, client: bool, original_cid=None)
        self.keepalive_ms = keepalive_ms
        self.hosts = HostReplica()
        self.counters: Counter = Counter()
        self.client_port: int | None = None
        self._forwards: dict[int, Forward] = {}
        self._conns: dict[tuple, _Conn] = {}        # (client?, peer_nid, peer_port, local_port)
        self._streams: dict[int, _Stream] = {}      # cid -> stream
        self._waiting: list[tuple[int, str, int]] = []  # client opens before our port is bound
        self._last_loc: dict[int, int] = {}         # peer NID -> locator it last sent from
        self._next_cid = 1 << 40                    # server-side cids (the shell's are small)

    # ---- forwards ------------------------------------------------------------------
    def serve(self, forward: Forward) -> None:
        self._forwards[forward.stp_port] = forward

    def unserve(self, stp_port: int) -> None:
        self._forwards.pop(stp_port, None)

    def forwards(self) -> list[Forward]:
        return [self._forwards[p] for p in sorted(self._forwards)]

    def set_client_port(self, port: int, now: int) -> list:
        self.client_port = port
        waiting, self._waiting = self._waiting, []
        actions: list = []
        for cid, host, stp_port in waiting:
            actions.extend(self.tcp_opened(cid, host, stp_port, now))
        return actions

    # ---- the local TCP side ------------------------------------------------------------
    def tcp_opened(self, cid: int, host: str, stp_port: int, now: int) -> list:
        """A local client wants (host, stp_port): a new stream (resolved now, so a
        connection follows a peer that moved)."""
        if self.client_port is None:
            self._waiting.append((cid, host, stp_port))
            return []
        found = self.hosts.resolve(host)
        if found is None:
            self.counters["host_unknown"] += 1
            return [TcpClose(cid, f"host {host!r} is not known to the node (not discovered yet?)")]
        nid = found[0]
        if nid == self.nid:
            return [TcpClose(cid, f"host {host!r} is this node")]
        key = (True, nid, stp_port, self.client_port)
        conn = self._conns.get(key)
        if conn is None:
            conn = self._conns[key] = _Conn(self.new_link(peer_address(nid, stp_port), True),
                                           nid, stp_port, self.client_port, client=True)
            conn.link.connect(now / 1000)
            self.counters["connections_opened"] += 1
        sid = conn.link.open_stream()
        stream = _Stream(cid, conn, sid, client=True, status_pending=True)
        conn.streams[sid] = self._streams[cid] = stream
        conn.link.send(sid, OPEN)  # the stream exists at once: the server connects on it
        self.counters["streams_opened"] += 1
        return self._flush(conn, now)

    def tcp_connected(self, cid: int, now: int) -> list:
        """Server side: the connection to the far service is up: tell the client."""
        stream = self._streams.get(cid)
        if stream is None:
            return []
        stream.conn.link.send(stream.sid, STATUS_CONNECTED)
        return self._flush(stream.conn, now)

    def tcp_failed(self, cid: int, reason: str, now: int) -> list:
        """Server side: the far service refused or could not be reached."""
        stream = self._streams.get(cid)
        if stream is None:
            return []
        self.counters["far_refused"] += 1
        stream.conn.link.reset(stream.sid, RESET_REFUSED)
        return self._end(stream, None) + self._flush(stream.conn, now)

    def tcp_data(self, cid: int, data: bytes, now: int) -> list:
        stream = self._streams.get(cid)
        if stream is None or stream.fin_out:
            return []
        link = stream.conn.link
        link.send(stream.sid, data)
        self.counters["bytes_out"] += len(data)
        actions = self._flush(stream.conn, now)
        if not stream.paused and link.backlog(stream.sid) > HIGH_WATER:
            stream.paused = True
            self.counters["paused"] += 1
            actions.append(PauseReading(cid))
        return actions

    def tcp_eof(self, cid: int, now: int) -> list:
        """The local end half-closed: FIN on the stream."""
        stream = self._streams.get(cid)
        if stream is None or stream.fin_out:
            return []
        stream.fin_out = True
        stream.conn.link.send(stream.sid, b"", end=True)
        actions = self._flush(stream.conn, now)
        if stream.fin_in:
            actions.extend(self._end(stream, None))
        return actions

    def tcp_reset(self, cid: int, now: int) -> list:
        """The local end went away abruptly (or the shell gave up on it)."""
        stream = self._streams.get(cid)
        if stream is None:
            return []
        stream.conn.link.reset(stream.sid, RESET_ABORTED)
        self._forget(stream)
        return self._flush(stream.conn, now)

    def tcp_written(self, cid: int, count: int, now: int) -> list:
        """The shell wrote `count` bytes of TcpWrite data to the socket."""
        stream = self._streams.get(cid)
        if stream is None:
            return []
        stream.unwritten = max(0, stream.unwritten - count)
        conn = stream.conn
        if conn.held and not self._slow(conn):
            return self._release_held(conn, now)
        return []

    # ---- the overlay side ----------------------------------------------------------------
    def stp_received(self, src_nid: int, src_loc: int, src_port: int, dst_port: int, data: bytes,
                     now: int) -> list:
        self._last_loc[src_nid] = src_loc
        client = dst_port == self.client_port and dst_port not in self._forwards
        conn = self._conns.get((client, src_nid, src_port, dst_port))
        if conn is None:
            if client:
                self.counters["stray_datagrams"] += 1
                return []
            original = initial_cid(data)
            if original is None:
                self.counters["stray_datagrams"] += 1
                return []
            conn = self._conns[(False, src_nid, src_port, dst_port)] = _Conn(
                self.new_link(peer_address(src_nid, src_port), False, original), src_nid, src_port,
                dst_port, client=False)
            self.counters["connections_accepted"] += 1
        if self._slow(conn):
            if len(conn.held) >= MAX_HELD:
                self.counters["held_dropped"] += 1
            else:
                self.counters["held"] += 1
                conn.held.append(data)
            return []
        conn.link.receive(data, now / 1000)
        return self._flush(conn, now)

    def _slow(self, conn: _Conn) -> bool:
        return any(s.unwritten > HIGH_WATER for s in conn.streams.values())

    def _release_held(self, conn: _Conn, now: int) -> list:
        actions: list = []
        while conn.held and not self._slow(conn):
            conn.link.receive(conn.held.popleft(), now / 1000)
            actions.extend(self._handle_events(conn, now))  # writes may make it slow again
        return actions + self._flush(conn, now)

    # ---- QUIC events and output ------------------------------------------------------------
    def _flush(self, conn: _Conn, now: int) -> list:
        actions = self._handle_events(conn, now)
        for datagram in conn.link.datagrams(now / 1000):
            actions.append(SendStp(conn.peer_nid, self._locators(conn.peer_nid), conn.local_port,
                                   conn.peer_port, datagram))
        for stream in list(conn.streams.values()):
            if stream.paused and conn.link.backlog(stream.sid) < LOW_WATER:
                stream.paused = False
                actions.append(ResumeReading(stream.cid))
        return actions

    def _handle_events(self, conn: _Conn, now: int) -> list:
        actions: list = []
        for event in conn.link.events():
            kind = type(event)
            if kind is StreamData:
                actions.extend(self._stream_data(conn, event))
            elif kind is StreamReset:
                stream = conn.streams.get(event.stream_id)
                if stream is not None:
                    actions.extend(self._end(stream, RESET_REASONS.get(event.code, f"stream reset ({event.code})")))
            elif kind is Connected:
                conn.connected = True
                conn.last_ping_ms = now
                if conn.client:  # what the client knows of the server it reached
                    self.counters["authenticated" if event.authenticated else "unauthenticated"] += 1
            elif kind is Closed:
                actions.extend(self._closed(conn, event.reason))
        return actions

    def _stream_data(self, conn: _Conn, event: StreamData) -> list:
        stream = conn.streams.get(event.stream_id)
        data = event.data
        if stream is None:
            if conn.client or event.stream_id % 4 != 0:
                return []  # not a stream a client may open towards us, or one we ended
            forward = self._forwards.get(conn.local_port)
            if forward is None:
                conn.link.reset(event.stream_id, RESET_NO_FORWARD)
                self.counters["no_forward"] += 1
                return []
            cid, self._next_cid = self._next_cid, self._next_cid + 1
            stream = _Stream(cid, conn, event.stream_id, client=False, status_pending=True)
            conn.streams[event.stream_id] = self._streams[cid] = stream
            self.counters["streams_accepted"] += 1
            actions: list = [TcpConnect(cid, forward.host, forward.port)]
        else:
            actions = []
        if stream.status_pending and data:
            stream.status_pending = False
            if data[:1] != (STATUS_CONNECTED if stream.client else OPEN):
                stream.conn.link.reset(stream.sid, RESET_ABORTED)
                return actions + self._end(stream, "the far relay does not speak ilnp-stream/1")
            data = data[1:]
            if stream.client:
                actions.append(Opened(stream.cid))
        if data:
            stream.unwritten += len(data)
            self.counters["bytes_in"] += len(data)
            actions.append(TcpWrite(stream.cid, data))
        if event.end and not stream.fin_in:
            stream.fin_in = True
            if stream.status_pending:  # FIN before any status: the far relay gave up
                return actions + self._end(stream, "the far relay closed the stream")
            actions.append(TcpShutdown(stream.cid))
            if stream.fin_out:
                actions.extend(self._end(stream, None))
        return actions

    def _end(self, stream: _Stream, error: str | None) -> list:
        """The stream is over (both FINs, or a reset): close the TCP connection."""
        self._forget(stream)
        if error is not None:
            self.counters["streams_failed"] += 1
        return [TcpClose(stream.cid, error)]

    def _forget(self, stream: _Stream) -> None:
        self._streams.pop(stream.cid, None)
        stream.conn.streams.pop(stream.sid, None)

    def _closed(self, conn: _Conn, reason: str) -> list:
        """The QUIC connection is gone (idle timeout, handshake failure, closed by the peer)."""
        for key, known in list(self._conns.items()):
            if known is conn:
                del self._conns[key]
        actions: list = []
        for stream in list(conn.streams.values()):
            actions.extend(self._end(stream, f"connection to the far relay lost: {reason}"))
        self.counters["connections_closed"] += 1
        return actions

    def _locators(self, nid: int) -> list:
        """Where the peer is now: discovery's host table, else where it last sent from."""
        locs = self.hosts.locators_of(nid)
        if locs:
            return locs
        last = self._last_loc.get(nid)
        return [last] if last is not None else []

    # ---- time ------------------------------------------------------------------------
    def on_timer(self, now: int) -> list:
        actions: list = []
        for conn in list(self._conns.values()):
            timer = conn.link.timer()
            if timer is not None and timer * 1000 <= now:
                conn.link.on_timer(now / 1000)
            if conn.streams and conn.connected and now - conn.last_ping_ms >= self.keepalive_ms:
                conn.last_ping_ms = now
                conn.link.ping(now)
            actions.extend(self._flush(conn, now))
        return actions

    def next_deadline(self) -> int | None:
        times = []
        for conn in self._conns.values():
            timer = conn.link.timer()
            if timer is not None:
                times.append(int(timer * 1000) + 1)
            if conn.streams and conn.connected:
                times.append(conn.last_ping_ms + self.keepalive_ms)
        return min(times) if times else None

    # ---- reading --------------------------------------------------------------------------
    def connections(self) -> list[dict]:
        return [{"peer_nid": c.peer_nid, "peer_port": c.peer_port, "local_port": c.local_port,
                 "client": c.client, "connected": c.connected, "streams": len(c.streams),
                 "held": len(c.held)} for c in self._conns.values()]
