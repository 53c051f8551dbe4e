"""STP sockets for applications: bind a port on the node, send to (hostname, port).

Any process on the host can open one; it attaches to the node's bus, binds its port
with the router (a port held by another live process is a clear error), resolves names
through a replica of discovery's host table, and receives (data, (hostname, port)).

    from actors.stp.api import StpSocket
    with StpSocket(port=5000) as sock:
        sock.sendto(b"hello", ("bob", 5000))
        data, (host, port) = sock.recvfrom(timeout=5)
"""
from __future__ import annotations

import os
import time
from collections import deque

from bus.client import BusClient, RequestError, RequestRefused, request
from bus.rundir import RunDir, find_run_dir

from ..proto import topics
from ..proto.frames import RxItem, TxItem
from ..proto.numbers import NH_STP
from ..proto.stp import StpError, decode, encode
from .binding import AskBind, AskUnbind, Bound, PortBinder
from .replica import HostReplica

__all__ = ["StpSocket", "StpSocketError", "HostNotFound", "Ilv"]


class Ilv(tuple):
    """Where a datagram travelled: (src_loc, dst_loc, arrival_loc), locators as ints."""
    __slots__ = ()

    def __new__(cls, src_loc: int, dst_loc: int, arrival_loc: int):
        return tuple.__new__(cls, (src_loc, dst_loc, arrival_loc))

    src_loc = property(lambda self: self[0])
    dst_loc = property(lambda self: self[1])
    arrival_loc = property(lambda self: self[2])


class _Received(tuple):
    """An inbox entry: the (data, (host, port)) pair recvfrom returns, plus `.ilv`."""


class StpSocketError(RuntimeError):
    """Binding failed, the node is not running, or a send could not be made."""


class HostNotFound(StpSocketError):
    """The hostname is not (yet) known to the node's discovery."""


class StpSocket:
    def __init__(self, port: int = 0, run_dir: str | RunDir | None = None, timeout: float = 5.0):
        try:
            self.run = run_dir if isinstance(run_dir, RunDir) else find_run_dir(run_dir)
            self.bus = BusClient(self.run, name=f"stp{port}")
        except (RequestError, RuntimeError) as exc:
            raise StpSocketError(str(exc)) from None
        self.port = None
        self.timeout = timeout
        self.binder = PortBinder(os.getpid())
        failure = self._bind(self.binder.want(port, _now_ms()))
        if self.port is None:
            self.bus.close()
            raise StpSocketError(failure or f"port {port} could not be bound")
        self.hosts = HostReplica()
        self.bus.subscribe(topics.stp_rx(self.port), direct=True)
        self.bus.subscribe(topics.STATE_HOSTS)
        self.bus.subscribe(topics.STATE_PORTS)
        self._inbox: deque = deque()
        self.dropped_malformed = 0
        try:
            self.bus.wait_ready(timeout)
            self.hosts.load(request(self.run, "discovery", "hosts", timeout=timeout))
        except RequestError as exc:
            self.close()
            raise StpSocketError(str(exc)) from None

    def _bind(self, actions: list) -> str | None:
        """Carry out the port binder's requests (blocking: we are an application, not an
        actor); the router pushes our port's segments straight into our inbox. Returns
        why the last wish failed, if it did."""
        failure = None
        while actions:
            action = actions.pop(0)
            kind = type(action)
            if kind is AskBind:
                try:
                    ok, result = True, request(self.run, "router", "bind", port=action.port, pid=os.getpid(),
                                               inbox=self.bus.inbox_endpoint, timeout=self.timeout)
                except RequestRefused as exc:
                    ok, result = False, str(exc)
                except RequestError as exc:
                    ok, result = None, str(exc)
                actions.extend(self.binder.on_bind_reply(action.port, ok, result, _now_ms()))
                failure = None if ok else result
            elif kind is AskUnbind:
                try:
                    request(self.run, "router", "unbind", port=action.port, pid=os.getpid(), timeout=1.0)
                except RequestError:
                    pass  # the router reclaims a dead owner's port anyway
            elif kind is Bound:
                self.port = action.port
        return failure

    # ---- sending ------------------------------------------------------------
    def _resolve(self, host: str) -> tuple[int, list[int]]:
        self._pump(0)
        found = self.hosts.resolve(host)
        if found is None:
            raise HostNotFound(f"host {host!r} is not known to the node (not discovered yet?)")
        return found

    def wait_for_host(self, host: str, timeout: float) -> None:
        """Return once `host` resolves; wakes on each host-table update (no polling).
        HostNotFound after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.hosts.resolve(host) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HostNotFound(f"host {host!r} was not discovered within {timeout:g}s")
            self._pump(left)

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        self.sendmany([data], address)

    def sendmany(self, datas, address: tuple[str, int]) -> None:
        """Send several datagrams to one address as one bus frame (fast path for bulk)."""
        host, dst_port = address
        nid, locs = self._resolve(host)
        src = self.port
        self.bus.send(topics.ILNP_TX, [TxItem(nid, locs, NH_STP, encode(src, dst_port, data)) for data in datas])

    # ---- receiving ----------------------------------------------------------
    def _pump(self, timeout: float | None) -> None:
        """Move whatever frames are ready (waiting up to timeout for the first) into the inbox."""
        frame = self.bus.recv(timeout)
        while frame is not None:
            topic, body = frame
            if not isinstance(body, dict):  # any local process can publish: drop, count
                self.dropped_malformed += 1
            elif topic == topics.STATE_HOSTS:
                self.hosts.load(body.get("hosts"))
            elif topic == topics.STATE_PORTS:
                if isinstance(body.get("ports"), dict):  # the router restarted and forgot us?
                    self._bind(self.binder.on_router_ports(body["ports"], _now_ms()))
            else:
                items = body.get("p", ())
                if not isinstance(items, (list, tuple)):
                    self.dropped_malformed += 1
                    items = ()
                for item in items:
                    try:
                        rx = RxItem(*item)
                        src_port, _dst, data = decode(rx.payload)
                    except (StpError, TypeError):
                        self.dropped_malformed += 1
                        continue
                    entry = _Received((data, (self.hosts.name_of(rx.src_loc, rx.src_nid), src_port)))
                    entry.ilv = Ilv(rx.src_loc, rx.dst_loc, rx.arrival_loc)
                    self._inbox.append(entry)
            frame = self.bus.recv(0)

    def recvfrom(self, timeout: float | None = None) -> tuple[bytes, tuple[str, int]]:
        """Next datagram and its sender (hostname, port); TimeoutError if none in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._inbox:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("no datagram within the timeout")
            self._pump(left)
        return self._inbox.popleft()

    def recvfrom_ilv(self, timeout: float | None = None) -> tuple[bytes, tuple[str, int], Ilv]:
        """Like recvfrom, plus the locators it travelled with: (data, (host, port), Ilv).

        Ilv = (src_loc, dst_loc, arrival_loc): the sender's locator, the one it addressed
        us at, and the network it arrived on (what an experiment plots across a move)."""
        data, address = entry = self.recvfrom(timeout)
        return data, address, entry.ilv

    def pending(self) -> int:
        self._pump(0)
        return len(self._inbox)

    # ---- lifetime -----------------------------------------------------------
    def close(self) -> None:
        if self.port is not None:
            self._bind(self.binder.release(self.port, _now_ms()))
            self.port = None
        self.bus.close()

    def __enter__(self) -> "StpSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000
