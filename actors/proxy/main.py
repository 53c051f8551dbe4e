"""The proxy actor: ProxyCore behind one local UDP socket and the bus.

UDP from local port P (mapped) -> ilnp.tx (STP from P); ilnp.rx.42.P -> UDP from the
proxy port to the local port P. Only local sources may send and only the mapped remote
(unless the mapping is any_remote) may deliver: the core decides, the shell logs each
kind of refusal at most once a second. Owns the mappings: served by `map`, `unmap`, `list`,
saved to RUN_DIR/proxy-mappings.json on every change and read at start, so they
survive kill -9 of this actor and a restart of the node. A PortBinder keeps every
mapped port bound with the router; `map` answers once the router has (never blocking
the loop): bound, refused (a new mapping on a port another process holds is an error),
or not answering (mapped all the same; the binding is retried).
"""
from __future__ import annotations

import logging

from bus.actor import DRAIN_LIMIT, Reply
from bus.codec import is_u64
from bus.rundir import RunDir

from ..config import NodeConfig
from ..proto import topics
from ..ratelog import RateLimitedLog
from ..registry import open_actor
from ..statefile import StateFile
from ..stp.binding import Bound, Lost, Refused, Unanswered
from ..stp.bound_ports import BoundPorts
from .core import DeliverLocal, Dropped, Mapping, MappingError, ProxyCore, SendStp, check_saved
from .udp import open_proxy_socket

log = logging.getLogger("proxy")

MAPPINGS_FILE = "proxy-mappings.json"


class ProxyShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.bind_addr = config.proxy_bind
        # the socket first: a proxy port in use fails the start before anything else is made
        self.sock, self.local_host = open_proxy_socket(config.proxy_bind, config.proxy_port)
        self.actor = actor = open_actor("proxy", run, requires=(topics.STATE_HOSTS,))
        self.counters = actor.counters
        # the address really bound (proxy.bind may be a name): its host may send, besides loopback
        self.core = ProxyCore(config.proxy_port, config.mtu, bind=self.sock.getsockname()[0])
        self.binder = BoundPorts(actor, self.on_binding)
        self.store = StateFile(run.path / MAPPINGS_FILE, log, "mappings", check_saved, actor.counters)
        self._buf = bytearray(65536)           # any UDP datagram fits; oversize ones are seen whole
        self._view = memoryview(self._buf)
        self._waiting: dict[int, list[tuple[Reply, Mapping]]] = {}  # `map` replies awaiting the router
        self.ratelog = RateLimitedLog(log)
        actor.subscribe(topics.STATE_HOSTS, self.on_hosts)
        actor.add_reader(self.sock, self.on_readable)
        actor.command("map", self.cmd_map, deferred=True)
        actor.command("unmap", self.cmd_unmap)
        actor.command("list", self.cmd_list)
        actor.status_extra = lambda: {
            "core": dict(self.core.counters + self.binder.machine.counters), "proxy_port": self.core.proxy_port,
            "mappings": len(self.core.ports()),
            "unbound": [p for p in self.core.ports() if not self.binder.is_bound(p)]}
        for mapping in self.core.restore(self.store.load() or {"version": 1, "mappings": []}):
            self._follow(mapping.local_port)
        log.info("event=mappings_loaded count=%d skipped=%d", len(self.core.ports()), self.core.counters["bad_saved"])

    # ---- data path ----------------------------------------------------------
    def on_readable(self) -> int:
        """Take up to DRAIN_LIMIT datagrams from the proxy socket; returns how many."""
        recv, view, from_local = self.sock.recvfrom_into, self._view, self.core.from_local
        emit, apply = self.actor.emit, self.apply
        for taken in range(DRAIN_LIMIT):
            try:
                size, addr = recv(view)
            except BlockingIOError:
                return taken
            except OSError:
                self.counters["rx_errors"] += 1
                return taken
            for action in from_local(addr[0], addr[1], view[:size]):
                if type(action) is SendStp:
                    emit(topics.ILNP_TX, action.tx_item())
                else:
                    apply((action,))
        return DRAIN_LIMIT

    def on_hosts(self, _topic: bytes, body: dict) -> None:
        rows = body.get("hosts")
        if not _host_rows(rows):
            self.counters["bad_bodies"] += 1
            return
        self.core.load_hosts(rows)

    def on_stp(self, _topic: bytes, body: dict) -> None:
        from_overlay, apply = self.core.from_overlay, self.apply
        for item in self.actor.items(body):
            if not (type(item) is list and len(item) == 7 and is_u64(item[1]) and type(item[5]) is bytes):
                self.counters["bad_items"] += 1  # this item only: the rest of the batch goes on
                continue
            try:
                actions = from_overlay(item[1], item[5])  # frames.RxItem.src_nid, .payload
            except Exception:
                self.actor.item_error(_topic)
                continue
            apply(actions)

    def apply(self, actions: list) -> None:
        for action in actions:
            if type(action) is DeliverLocal:
                try:
                    self.sock.sendto(action.data, (self.local_host, action.port))
                except BlockingIOError:
                    self.counters["deliver_dropped"] += 1   # our send buffer is full
                except OSError:
                    self.counters["deliver_errors"] += 1
            elif type(action) is Dropped:
                if action.source:   # refused for where it came from: say where
                    self.ratelog.warning(action.reason, "event=drop reason=%s port=%d size=%d source=%s total=%d",
                                         action.reason, action.port, action.size, action.source,
                                         self.core.counters[action.reason])
                else:
                    self.ratelog.warning(action.reason, "event=drop reason=%s port=%d size=%d max=%d total=%d",
                                         action.reason, action.port, action.size, self.core.max_payload,
                                         self.core.counters[action.reason])

    # ---- requests -----------------------------------------------------------
    def cmd_map(self, reply: Reply, local_port, host, remote_port, replace=False, any_remote=False) -> None:
        mapping = self.core.check_map(local_port, host, remote_port, bool(replace), any_remote)
        port = mapping.local_port
        if self.binder.is_bound(port) or self.core.get(port) is not None:
            reply.ok(self._commit(mapping))  # ours already, or its binding is retried anyway
            return
        self._waiting.setdefault(port, []).append((reply, mapping))
        self.binder.want(port)

    def cmd_unmap(self, local_port) -> dict:
        mapping = self.core.remove(local_port)
        self._save(undo=lambda: self.core.put(mapping))
        self.actor.unsubscribe(topics.stp_rx(mapping.local_port), direct=True)
        self.binder.release(mapping.local_port)
        log.info("event=unmap mapping=%r", str(mapping))
        return self._describe(mapping)

    def cmd_list(self) -> dict:
        return {"proxy_port": self.core.proxy_port, "proxy_bind": self.bind_addr,
                "mappings": [self._describe(m, header=False) for m in self.core.mappings()]}

    def _commit(self, mapping: Mapping) -> dict:
        old = self.core.put(mapping)
        self._save(undo=lambda: self.core.put(old) if old else self.core.remove(mapping.local_port))
        self._follow(mapping.local_port)
        if old != mapping:
            log.info("event=map mapping=%r replaced=%r bound=%s", str(mapping), str(old) if old else None,
                     self.binder.is_bound(mapping.local_port))
        return self._describe(mapping, replaced=old.as_dict() if old and old != mapping else None)

    def _save(self, undo) -> None:
        try:
            self.store.save(self.core.saved())
        except OSError as exc:
            undo()
            raise ValueError(f"cannot save the mappings to {self.store.path}: {exc.strerror or exc}") from None

    def _describe(self, mapping: Mapping, header: bool = True, **extra) -> dict:
        out = {"proxy_port": self.core.proxy_port, "proxy_bind": self.bind_addr} if header else {}
        out.update(mapping.as_dict(), resolved=self.core.resolved(mapping.local_port),
                   bound=self.binder.is_bound(mapping.local_port), **extra)
        if (refusal := self.binder.refusal(mapping.local_port)) is not None:
            out["bind_error"] = refusal
        return out

    def _follow(self, port: int) -> None:
        """Receive the port's segments and keep it bound (idempotent)."""
        self.actor.unsubscribe(topics.stp_rx(port), direct=True)
        self.actor.subscribe(topics.stp_rx(port), self.on_stp, direct=True)
        self.binder.want(port)

    # ---- router bindings ------------------------------------------------------
    def on_binding(self, event) -> None:
        """What became of a port's binding: answer the `map` calls waiting for it."""
        kind, port = type(event), event.port
        if kind is Refused:
            self.ratelog.warning(f"refused{port}", "event=bind_refused port=%d reason=%r", port, event.reason,
                                 interval_s=60.0)
            if self.core.get(port) is None:  # a new mapping on a port someone else holds
                self.binder.release(port)
            self._answer(port, MappingError(f"STP port {port} is in use on this node ({event.reason})"))
        elif kind is Bound or kind is Unanswered:  # unanswered: mapped all the same, retried
            self._answer(port, None)
        elif kind is Lost:
            log.warning("event=binding_lost port=%d", port)

    def _answer(self, port: int, error: Exception | None) -> None:
        for reply, mapping in self._waiting.pop(port, ()):
            try:
                if error is not None:
                    raise error
                reply.ok(self._commit(mapping))
            except ValueError as exc:
                reply.error(str(exc))

    def run(self) -> None:
        try:
            self.actor.run()
        finally:
            self.sock.close()


def _host_rows(rows) -> bool:
    """Whether `rows` are state.hosts rows, [[hostname, nid, [loc, ...], ...], ...]: the
    whole table from discovery, so one bad row means it is not discovery's (dropped whole)."""
    return type(rows) is list and all(
        type(row) is list and len(row) >= 3 and type(row[0]) is str and is_u64(row[1])
        and type(row[2]) is list and all(is_u64(loc) for loc in row[2]) for row in rows)


def main(config: NodeConfig, run: RunDir) -> None:
    try:
        shell = ProxyShell(config, run)
    except OSError as exc:
        log.error("event=start_failed error=%r", str(exc))
        raise SystemExit(1) from None
    shell.run()
