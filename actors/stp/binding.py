"""Keeping STP ports bound with the router: one pure state machine for every binder.

The router holds the STP port registry (who owns each port); a process that wants
ports (the echo, the proxy, an StpSocket, the stream relay) asks it with `bind {port,
pid, inbox}` and must ask again when the router forgets (it restarted without its file)
or when a port held by another process comes free. This machine decides when to ask;
the shell does the asking (a non-blocking request in an actor, a blocking one in an
application) and feeds back the answers and the router's `state.ports` table.

Pure: time comes in as int ms; actions go out as frozen dataclasses:
  AskBind(port), AskUnbind(port)        requests for the shell to send
  Bound(port), Refused(port, reason),   what became of a wish, for the shell to report
  Unanswered(port), Lost(port)
Port 0 asks for an ephemeral port: the router's answer names it, and from then on
that port is the one wanted (Bound carries it).

A port released while its bind is still in flight is given back if the answer grants
it; a port the router's table shows as ours that we once asked for and no longer want
(a bind that timed out but was carried out later) is given back too. An unbind names
its owner, so the router never frees another process's port on our behalf.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

WANT, ASKING, BOUND, REFUSED = "want", "asking", "bound", "refused"


@dataclass(frozen=True, slots=True)
class AskBind:
    port: int


@dataclass(frozen=True, slots=True)
class AskUnbind:
    port: int


@dataclass(frozen=True, slots=True)
class Bound:
    port: int


@dataclass(frozen=True, slots=True)
class Refused:
    """The router answered no: another live process holds the port (retried later)."""
    port: int
    reason: str


@dataclass(frozen=True, slots=True)
class Unanswered:
    """The router did not answer (down or restarting): retried later."""
    port: int


@dataclass(frozen=True, slots=True)
class Lost:
    """A port we held is no longer ours at the router: asked again at once."""
    port: int


@dataclass
class _Port:
    state: str = WANT
    retry_at: int | None = None   # when to ask again (WANT, REFUSED)
    backoff_ms: int = 0
    reason: str = ""


class PortBinder:
    def __init__(self, owner: int, retry_first_ms: int = 500, retry_max_ms: int = 5000):
        self.owner = owner
        self.retry_first_ms = retry_first_ms
        self.retry_max_ms = retry_max_ms
        self._ports: dict[int, _Port] = {}
        self._releasing: dict[int, int | None] = {}  # port -> when to ask again (None: asking)
        self._abandoned: set[int] = set()  # released while a bind was in flight
        self._asked: set[int] = set()      # ports we asked for (a late bind may still land)
        self.counters: Counter = Counter()

    # ---- what the owner wants --------------------------------------------------
    def want(self, port: int, now: int) -> list:
        """Hold `port` (0: any ephemeral port) from now on."""
        self._releasing.pop(port, None)
        if port in self._ports:
            return []
        if port in self._abandoned:  # wanted again before its answer came: wait for it
            self._abandoned.discard(port)
            self._ports[port] = _Port(state=ASKING)
            return []
        self._ports[port] = entry = _Port()
        return self._ask(port, entry)

    def release(self, port: int, now: int) -> list:
        """Stop holding `port`; the router is told (retried until it has heard)."""
        entry = self._ports.pop(port, None)
        if entry is None:
            return []
        if entry.state == ASKING:
            self._abandoned.add(port)  # settle it when the answer comes
            return []
        if entry.state != BOUND:
            return []  # the router never gave it to us (a late bind is caught by the table)
        return self._give_back(port)

    # ---- what the router says ----------------------------------------------------
    def on_bind_reply(self, port: int, ok: bool | None, result, now: int) -> list:
        """The answer to AskBind(port): ok True (result: the port bound), False (result:
        the router's reason), None (no answer in time)."""
        granted = result if port == 0 else port
        if ok and not (isinstance(granted, int) and 0 < granted <= 65535):
            ok, result = False, f"bad answer {result!r}"
        if port in self._abandoned:  # released while we asked
            self._abandoned.discard(port)
            return self._give_back(granted) if ok else []
        entry = self._ports.get(port)
        if entry is None or entry.state != ASKING:
            return []  # a stray or late answer: the router's table has told us already
        if port == 0 and ok:
            del self._ports[0]
            port = granted
            self._ports[port] = entry
            self._asked.add(port)
        if ok:
            entry.state, entry.retry_at, entry.backoff_ms, entry.reason = BOUND, None, 0, ""
            return [Bound(port)]
        self._retry_later(entry, now)
        if ok is False:
            entry.state, entry.reason = REFUSED, str(result)
            self.counters["bind_refused"] += 1
            return [Refused(port, entry.reason)]
        entry.state = WANT
        self.counters["bind_unanswered"] += 1
        return [Unanswered(port)]

    def on_unbind_reply(self, port: int, ok: bool | None, now: int) -> list:
        if port not in self._releasing:
            return []
        if ok is None:
            self._releasing[port] = now + self.retry_first_ms  # unanswered: ask again
            self.counters["unbind_unanswered"] += 1
        else:
            del self._releasing[port]
        return []

    def on_router_ports(self, table: dict, now: int) -> list:
        """The router's state.ports table (port -> owner): it is the truth. A port of ours
        missing there was forgotten (asked again at once); a port another held and that
        is free now is asked for at once; one we asked for and no longer want is given back."""
        actions: list = []
        for port in sorted(self._asked):
            if table.get(port) != self.owner:
                if port not in self._ports:
                    self._asked.discard(port)  # not ours at the router, not wanted: forget it
            elif port not in self._ports and port not in self._releasing and port not in self._abandoned:
                actions.extend(self._give_back(port))
        for port, entry in self._ports.items():
            if port == 0:
                continue
            holder = table.get(port)
            if holder == self.owner:
                if entry.state != BOUND:
                    entry.state, entry.retry_at, entry.backoff_ms, entry.reason = BOUND, None, 0, ""
                    actions.append(Bound(port))
            elif entry.state == BOUND:
                self.counters["lost"] += 1
                actions.append(Lost(port))
                actions.extend(self._ask(port, entry))
            elif entry.state == WANT or (entry.state == REFUSED and holder is None):
                actions.extend(self._ask(port, entry))  # the router is up, or the port came free
        for port in [p for p in self._releasing if table.get(p) != self.owner]:
            del self._releasing[port]  # the router no longer has it for us: done
        return actions

    # ---- time ------------------------------------------------------------------
    def on_timer(self, now: int) -> list:
        actions: list = []
        for port, entry in self._ports.items():
            if entry.state in (WANT, REFUSED) and entry.retry_at is not None and entry.retry_at <= now:
                self.counters["bind_retries"] += 1
                actions.extend(self._ask(port, entry))
        for port, due in self._releasing.items():
            if due is not None and due <= now:
                self._releasing[port] = None
                actions.append(AskUnbind(port))
        return actions

    def next_deadline(self) -> int | None:
        times = [e.retry_at for e in self._ports.values() if e.retry_at is not None]
        times.extend(t for t in self._releasing.values() if t is not None)
        return min(times) if times else None

    # ---- reading -----------------------------------------------------------------
    def ports(self) -> list[int]:
        return sorted(p for p in self._ports if p != 0)

    def is_bound(self, port: int) -> bool:
        entry = self._ports.get(port)
        return entry is not None and entry.state == BOUND

    def refusal(self, port: int) -> str | None:
        """The router's last reason for refusing `port`, while it is refused."""
        entry = self._ports.get(port)
        return entry.reason if entry is not None and entry.state == REFUSED else None

    def _ask(self, port: int, entry: _Port) -> list:
        entry.state, entry.retry_at = ASKING, None
        self._asked.add(port)
        return [AskBind(port)]

    def _give_back(self, port: int) -> list:
        self._releasing[port] = None
        return [AskUnbind(port)]

    def _retry_later(self, entry: _Port, now: int) -> None:
        entry.backoff_ms = min(self.retry_max_ms, entry.backoff_ms * 2 or self.retry_first_ms)
        entry.retry_at = now + entry.backoff_ms
