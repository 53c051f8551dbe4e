"""The proxy actor: ProxyCore behind one local UDP socket and the bus.

UDP from local port P (mapped) -> ilnp.tx (STP from P); ilnp.rx.42.P -> UDP from the
proxy port to the local port P. Owns the mappings: served by `map`, `unmap`, `list`,
written to RUN_DIR/proxy-mappings.json atomically on every change and read at start,
so they survive kill -9 of this actor and a restart of the node. Every mapped port is
bound with the router (owner = our pid): at start, when the router says hello, and
again later while a bind did not succeed.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time


from bus import topics
from bus.actor import DRAIN_LIMIT, Actor
from bus.client import RequestError, request
from bus.rundir import RunDir, write_atomic

from ..config import NodeConfig
from .core import DeliverLocal, Dropped, Mapping, MappingError, ProxyCore, SendStp

log = logging.getLogger("proxy")

MAPPINGS_FILE = "proxy-mappings.json"
SOCKET_BUFFER = 4 << 20        # bytes; the kernel caps it at rmem_max / wmem_max
ROUTER_TIMEOUT_S = 1.0
REBIND_DEBOUNCE_S = 0.2        # the router says hello repeatedly until it is in sync
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0
LOG_INTERVAL_S = 1.0


def open_proxy_socket(bind: str, port: int) -> tuple[socket.socket, str]:
    """The proxy's UDP socket (non-blocking) and the loopback address replies go to."""
    family = socket.getaddrinfo(bind, port, type=socket.SOCK_DGRAM)[0][0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass
    try:
        sock.bind((bind, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind the proxy port {bind}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock, "::1" if family == socket.AF_INET6 else "127.0.0.1"


class ProxyShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.run_dir = run
        self.pid = os.getpid()
        self.bind_addr = config.proxy_bind
        # the socket first: a proxy port in use fails the start before anything else is made
        self.sock, self.local_host = open_proxy_socket(config.proxy_bind, config.proxy_port)
        self.actor = actor = Actor("proxy", run, requires=(topics.STATE_HOSTS,))
        self.counters = actor.counters
        self.core = ProxyCore(config.proxy_port, config.mtu)
        self.path = run.path / MAPPINGS_FILE
        self._buf = bytearray(65536)           # any UDP datagram fits; oversize ones are seen whole
        self._view = memoryview(self._buf)
        self._bound: set[int] = set()           # ports the router has given us
        self._conflicts: dict[int, str] = {}    # port -> why the router refused it
        self._release: set[int] = set()         # unmapped ports the router did not hear about yet
        self._subscribed: set[int] = set()      # ports with a live SUB subscription
        self._bind_pending = False
        self._retry_s = RETRY_FIRST_S
        self._last_log: dict[str, float] = {}

        for mapping in self._load():
            self._subscribe(mapping.local_port)
        actor.subscribe(topics.STATE_HOSTS, self.on_hosts)
        actor.subscribe(topics.HELLO, self.on_hello)
        actor.add_reader(self.sock, self.on_readable)
        actor.command("map", self.cmd_map)
        actor.command("unmap", self.cmd_unmap)
        actor.command("list", self.cmd_list)
        actor.status_extra = lambda: {"core": dict(self.core.counters), "proxy_port": self.core.proxy_port,
                                      "mappings": len(self.core.ports()),
                                      "unbound": sorted(set(self.core.ports()) - self._bound)}
        self._schedule_bind(0)

    # ---- data path ----------------------------------------------------------
    def on_readable(self) -> int:
        """Take up to DRAIN_LIMIT datagrams from the proxy socket; returns how many."""
        recv, view, from_local = self.sock.recvfrom_into, self._view, self.core.from_local
        emit, apply = self.actor.emit, self.apply
        taken = 0
        for taken in range(DRAIN_LIMIT):
            try:
                size, addr = recv(view)
            except BlockingIOError:
                return taken
            except OSError:
                self.counters["rx_errors"] += 1
                return taken
            for action in from_local(addr[1], view[:size]):
                if type(action) is SendStp:
                    emit(topics.ILNP_TX, [action.nid, action.locs, topics.NH_STP, action.segment, None, None])
                else:
                    apply((action,))
        return DRAIN_LIMIT

    def on_stp(self, _topic: bytes, body: dict) -> None:
        from_overlay, apply = self.core.from_overlay, self.apply
        for item in body.get("p", ()):
            try:
                segment = item[5]
            except (IndexError, TypeError):
                self.counters["bad_rx_items"] += 1
                continue
            actions = from_overlay(segment)
            if actions:
                apply(actions)

    def apply(self, actions: list) -> None:
        for action in actions:
            kind = type(action)
            if kind is DeliverLocal:
                try:
                    self.sock.sendto(action.data, (self.local_host, action.port))
                except BlockingIOError:
                    self.counters["deliver_dropped"] += 1   # our send buffer is full
                except OSError:
                    self.counters["deliver_errors"] += 1
            elif kind is SendStp:
                self.actor.emit(topics.ILNP_TX, [action.nid, action.locs, topics.NH_STP,
                                                 action.segment, None, None])
            elif kind is Dropped:
                self._log_drop(action)

    def _log_drop(self, action: Dropped) -> None:
        now = time.monotonic()
        if now - self._last_log.get(action.reason, 0.0) < LOG_INTERVAL_S:
            return  # at most a line a second per reason, never per packet
        self._last_log[action.reason] = now
        mapping = self.core.get(action.port)
        log.warning("event=drop reason=%s port=%d size=%d max=%d%s total=%d", action.reason,
                    action.port, action.size, self.core.max_payload,
                    f" host={mapping.host}" if mapping else "", self.core.counters[action.reason])

    # ---- state --------------------------------------------------------------
    def on_hosts(self, _topic: bytes, body: dict) -> None:
        self.core.load_hosts(body.get("hosts"))

    def on_hello(self, _topic: bytes, body: dict) -> None:
        # a (re)started router, or one saying hello until it is in sync (then repeatedly,
        # so the check is debounced and costs one request when all is well)
        if body.get("a") == "router":
            self._schedule_bind(REBIND_DEBOUNCE_S)

    # ---- requests -----------------------------------------------------------
    def cmd_map(self, local_port, host, remote_port, replace=False) -> dict:
        mapping = self.core.check_map(local_port, host, remote_port, bool(replace))
        port = mapping.local_port
        if port not in self._bound:
            try:
                self._bind(port)
            except MappingError:
                if self.core.get(port) is None:   # a new mapping on a port someone else holds
                    self._conflicts.pop(port, None)
                    raise
        old = self.core.put(mapping)
        try:
            self._save()
        except OSError as exc:
            if old is not None:
                self.core.put(old)
            else:
                self.core.remove(port)
                if port in self._bound:
                    self._bound.discard(port)
                    self._release.add(port)
                    self._schedule_bind(0)
            raise ValueError(f"cannot save the mappings to {self.path}: {exc.strerror or exc}") from None
        self._subscribe(port)
        if old != mapping:
            log.info("event=map mapping=%r replaced=%r bound=%s", str(mapping), str(old) if old else None,
                     port in self._bound)
        if port not in self._bound:
            self._schedule_bind(self._retry_s)
        return self._describe(mapping, replaced=old.as_dict() if old and old != mapping else None)

    def cmd_unmap(self, local_port) -> dict:
        mapping = self.core.remove(local_port)
        try:
            self._save()
        except OSError as exc:
            self.core.put(mapping)
            raise ValueError(f"cannot save the mappings to {self.path}: {exc.strerror or exc}") from None
        self._unsubscribe(mapping.local_port)
        self._conflicts.pop(mapping.local_port, None)
        if mapping.local_port in self._bound:
            self._bound.discard(mapping.local_port)
            if not self._unbind(mapping.local_port):
                self._release.add(mapping.local_port)   # else we would hold it until we exit
                self._schedule_bind(self._retry_s)
        log.info("event=unmap mapping=%r", str(mapping))
        return self._describe(mapping)

    def cmd_list(self) -> dict:
        return {"proxy_port": self.core.proxy_port, "proxy_bind": self.bind_addr,
                "mappings": [self._describe(m, header=False) for m in self.core.mappings()]}

    def _describe(self, mapping: Mapping, header: bool = True, **extra) -> dict:
        out = {"proxy_port": self.core.proxy_port, "proxy_bind": self.bind_addr} if header else {}
        out.update(mapping.as_dict(), resolved=self.core.resolved(mapping.local_port),
                   bound=mapping.local_port in self._bound, **extra)
        conflict = self._conflicts.get(mapping.local_port)
        if conflict:
            out["bind_error"] = conflict
        return out

    # ---- router bindings ------------------------------------------------------
    def _bind(self, port: int) -> bool:
        """Bind `port` with the router: True if bound, False if the router did not answer,
        MappingError if it refused (another live process holds the port)."""
        try:
            request(self.run_dir, "router", "bind", port=port, pid=self.pid,
                    inbox=self.run_dir.inbox("proxy"), timeout=ROUTER_TIMEOUT_S)
        except RequestError as exc:
            message = str(exc)
            if message.startswith("router: "):     # the router answered: a refusal
                self._conflicts[port] = message
                self.counters["bind_conflicts"] += 1
                raise MappingError(f"STP port {port} is in use on this node ({message})") from None
            self.counters["bind_unanswered"] += 1
            return False
        self._bound.add(port)
        self._conflicts.pop(port, None)
        return True

    def _unbind(self, port: int) -> bool:
        try:
            request(self.run_dir, "router", "unbind", port=port, timeout=ROUTER_TIMEOUT_S)
        except RequestError:
            self.counters["unbind_unanswered"] += 1
            return False
        return True

    def _schedule_bind(self, delay_s: float) -> None:
        if not self._bind_pending:
            self._bind_pending = True
            self.actor.call_later(delay_s, self.bind_all)

    def bind_all(self) -> None:
        """Make the router hold every mapped port for us: ask it which it holds (one
        request), bind the rest. A router that does not answer ends the round (each try
        could block the loop a second); it is tried again later."""
        self._bind_pending = False
        for port in sorted(self._release):
            if self.core.get(port) is not None or self._unbind(port):
                self._release.discard(port)
        before = set(self._bound)
        held = self._router_ports()
        ports = self.core.ports()
        self._bound = {p for p in ports if held is not None and held.get(p) == self.pid}
        for port in ports:
            if port in self._bound:
                continue
            try:
                if not self._bind(port):
                    break
            except MappingError as exc:
                self._log_once(f"conflict{port}", "event=bind_refused port=%d reason=%r", port, str(exc))
        if set(ports) - self._bound or self._release:
            self.counters["bind_retries"] += 1
            self._schedule_bind(self._retry_s)
            self._retry_s = min(RETRY_MAX_S, self._retry_s * 2)
        else:
            self._retry_s = RETRY_FIRST_S
        if self._bound != before:
            log.info("event=bound ports=%d of=%d", len(self._bound), len(ports))

    def _router_ports(self) -> dict[int, int] | None:
        """port -> owner pid as the router has them, or None if it does not say."""
        try:
            held = request(self.run_dir, "router", "ports", timeout=ROUTER_TIMEOUT_S)
            return {int(port): owner for port, owner in held.items()}
        except (RequestError, AttributeError, ValueError, TypeError):
            return None

    def _log_once(self, key: str, fmt: str, *args) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, 0.0) >= 60.0:
            self._last_log[key] = now
            log.warning(fmt, *args)

    # ---- subscriptions ----------------------------------------------------------
    def _subscribe(self, port: int) -> None:
        if port in self._subscribed:
            return
        self._subscribed.add(port)
        self.actor.subscribe(topics.stp_rx(port), self.on_stp)

    def _unsubscribe(self, port: int) -> None:
        if port in self._subscribed:
            self._subscribed.discard(port)
            self.actor.unsubscribe(topics.stp_rx(port))

    # ---- the mappings file --------------------------------------------------------
    def _load(self) -> list[Mapping]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.error("event=mappings_unreadable path=%s error=%r", self.path, exc.strerror)
            return []
        try:
            saved = json.loads(raw)
        except ValueError as exc:
            aside = self.path.with_name(self.path.name + ".bad")
            try:
                os.replace(self.path, aside)  # keep it for a person; start empty, not crash-loop
            except OSError:
                aside = "nowhere"
            log.error("event=mappings_corrupt path=%s moved_to=%s error=%r", self.path, aside, str(exc))
            return []
        restored = self.core.restore(saved)
        if self.core.counters["bad_saved"]:
            log.warning("event=mappings_skipped count=%d path=%s", self.core.counters["bad_saved"], self.path)
        log.info("event=mappings_loaded count=%d", len(restored))
        return restored

    def _save(self) -> None:
        write_atomic(self.path, json.dumps(self.core.saved(), indent=1).encode())

    def run(self) -> None:
        try:
            self.actor.run()
        finally:
            self.sock.close()


def main(config: NodeConfig, run: RunDir) -> None:
    try:
        shell = ProxyShell(config, run)
    except OSError as exc:
        log.error("event=start_failed error=%r", str(exc))
        raise SystemExit(1) from None
    shell.run()
