"""The STP port registry: which process holds each STP port on this node.

Pure: whether an owner still lives is asked of a callable the shell gives (pid_alive).
A port held by an owner that is gone is reclaimed; binding a port the same owner
already holds is allowed (idempotent); port 0 picks a free ephemeral port.

Capped (MAX_BINDINGS): when full, a new port takes the place of the least recently
bound port whose owner is gone (counted `ports_evicted`); a live owner's port is never
taken (its binder would at once ask for it again, and take another's), so when every
holder lives the bind is refused (counted `bind_full`).
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any, Callable

from ..proto.numbers import EPHEMERAL_FIRST, EPHEMERAL_LAST

MAX_BINDINGS = 4096  # local processes only; each costs a line in stp-ports.json and state.ports


MAX_PID = 1 << 22    # Linux's PID_MAX_LIMIT: an owner is a process id
IPC_PATH_MAX = 107   # sun_path holds 108 bytes with its NUL


class BindError(ValueError):
    """A port that cannot be bound (in use by a live owner, out of range, none free, a bad
    owner or inbox)."""


def check_owner(pid: Any) -> int:
    """A binder's process id; BindError for anything else (a string, a bool, a number past
    any pid: os.kill would raise on it later, at every bind of that port)."""
    if type(pid) is not int or not 0 < pid <= MAX_PID:
        raise BindError(f"pid {pid!r:.40} is not a process id")
    return pid


def check_inbox(inbox: Any, is_inbox: Callable[[str], bool]) -> str | None:
    """None (no inbox) or an inbox endpoint of this node (is_inbox says which); BindError
    for anything else. Checked before it is saved: a route to a bad endpoint failed at
    the first datagram for the port, and again after every restart."""
    if inbox is None:
        return None
    if (not isinstance(inbox, str) or not is_inbox(inbox)
            or len(inbox.encode()) - len("ipc://") > IPC_PATH_MAX):
        raise BindError(f"inbox {inbox!r:.80} is not an inbox of this node")
    return inbox


class PortRegistry:
    def __init__(self, is_owner_alive: Callable[[Any], bool] | None = None,
                 max_bindings: int = MAX_BINDINGS):
        self._is_owner_alive = is_owner_alive or (lambda owner: True)
        self.max_bindings = max_bindings
        self._ports: OrderedDict[int, Any] = OrderedDict()  # STP port -> owner, least recently bound first
        self._next_ephemeral = EPHEMERAL_FIRST
        self.counters: Counter = Counter()

    def __contains__(self, port: int) -> bool:
        return port in self._ports

    def bind(self, port: int, owner: Any) -> int:
        """Bind `port` for `owner` (port 0: any free ephemeral port); returns the port."""
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise BindError(f"port {port!r} is not 0-65535")
        if port == 0:
            return self._bind_ephemeral(owner)
        holder = self._ports.get(port, owner)
        if holder != owner:
            if self._is_owner_alive(holder):
                raise BindError(f"port {port} is already bound by {holder}")
            self.counters["stale_reclaimed"] += 1
        if port in self._ports:
            self._ports.move_to_end(port)
        else:
            self._make_room()
        self._ports[port] = owner
        return port

    def _make_room(self) -> None:
        """Before a new binding: past the cap, the least recently bound dead owner's
        port goes; if every holder lives, BindError."""
        if len(self._ports) < self.max_bindings:
            return
        for port, holder in self._ports.items():
            if not self._is_owner_alive(holder):
                del self._ports[port]
                self.counters["ports_evicted"] += 1
                return
        self.counters["bind_full"] += 1
        raise BindError(f"the port registry is full ({self.max_bindings} bindings, every owner alive)")

    def _bind_ephemeral(self, owner: Any) -> int:
        size = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1
        start = self._next_ephemeral - EPHEMERAL_FIRST
        for stale_ok in (False, True):  # prefer a free port, then a dead owner's
            for i in range(size):
                port = EPHEMERAL_FIRST + (start + i) % size
                holder = self._ports.get(port)
                if holder is None or (stale_ok and not self._is_owner_alive(holder)):
                    if holder is not None:
                        self.counters["stale_reclaimed"] += 1
                        self._ports.move_to_end(port)
                    else:
                        self._make_room()
                    self._ports[port] = owner
                    self._next_ephemeral = EPHEMERAL_FIRST + (port + 1 - EPHEMERAL_FIRST) % size
                    return port
        raise BindError(f"no free ephemeral port ({EPHEMERAL_FIRST}-{EPHEMERAL_LAST})")

    def unbind(self, port: int, owner: Any = None) -> bool:
        """Release a port (only if `owner` holds it, when given); False if nothing was released."""
        holder = self._ports.get(port)
        if holder is None or (owner is not None and holder != owner):
            return False
        del self._ports[port]
        return True

    def bindings(self) -> dict[int, Any]:
        """port -> owner, a copy."""
        return dict(self._ports)

    def __len__(self) -> int:
        return len(self._ports)
