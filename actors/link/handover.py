"""An underlay's sockets across a restart of the link (the fd store, bus/fdstore.py).

A socket-based underlay hands over its sockets with its identity (what a fresh one
opened from the same config would be: port, interface index, group tag, source
address) and the locators it joined. The next link adopts them only if the identity in
the metadata and the sockets themselves (family, type, bound port) fit its config; then
it joins every listed locator again (joined already is fine) and reads the backlog.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any, ClassVar, Iterable

from ..proto.addr import format64
from .sockets import pace_receive

MAX_ADOPTED_LOCATORS = 256  # a handed-over joined list longer than this is not ours
log = logging.getLogger("link")


class SocketHandover:
    """Mixin for an Underlay on sockets. The subclass gives its sockets (receive socket
    first), their families, its identity, the identity a fresh one would have, and how
    to reopen itself on adopted sockets."""

    kind: ClassVar[str]
    socket_families: ClassVar[tuple[int, ...]]  # of sockets(), in order

    def sockets(self) -> list[socket.socket]:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def expected_identity(cls, spec, config) -> dict[str, Any]:
        """What identity() of one opened now from `spec` would be (ConfigError when
        its interface is missing, as at a fresh start)."""
        raise NotImplementedError

    @classmethod
    def reopen(cls, spec, config, socks: list[socket.socket]):
        raise NotImplementedError

    @classmethod
    def refuse_sockets(cls, socks: list[socket.socket], expected: dict[str, Any]) -> str | None:
        """A subclass's further checks of the handed sockets (None: they fit)."""
        return None

    def handover_fds(self) -> list[int]:
        return [sock.fileno() for sock in self.sockets()]

    def pace_receive(self) -> None:
        self.rcvbuf = pace_receive(self.sockets()[0])  # the receive socket comes first

    def handover_meta(self, joined: Iterable[int]) -> dict[str, Any]:
        return {"kind": self.kind, **self.identity(), "joined": sorted(joined)}

    @classmethod
    def adopt(cls, spec, config, fds: list[int], meta: Any):
        """The predecessor's sockets if they are what `spec` would open, with every
        locator it listed joined again (the list may be longer than what was joined,
        never shorter: the link stores it before joining); None if they do not fit
        (closed: the caller opens fresh ones). A missing interface is a ConfigError."""
        socks: list[socket.socket] = []
        try:
            expected = cls.expected_identity(spec, config)
            why = _refuse_meta(cls.kind, expected, len(cls.socket_families), fds, meta)
            if why is None:
                for fd in fds:
                    socks.append(socket.socket(fileno=fd))
                why = _refuse_sockets(socks, cls.socket_families, spec.port) or cls.refuse_sockets(socks, expected)
            if why is None:
                underlay = cls.reopen(spec, config, socks)
        except OSError as exc:  # not a socket, an option refused: open a fresh one instead
            why = f"{type(exc).__name__}: {exc}"
        except BaseException:
            close_handed(fds, socks)
            raise
        if why is not None:
            log.warning("event=fd_not_adopted kind=%s reason=%r", cls.kind, why)
            close_handed(fds, socks)
            return None
        for loc in meta["joined"]:
            try:
                underlay.join(loc)
            except OSError as exc:  # the link will try again when state.locators wants it
                underlay.counters["adopt_join_errors"] += 1
                log.error("event=adopt_join_failed locator=%s error=%r", format64(loc), str(exc))
        return underlay


def _refuse_meta(kind: str, expected: dict[str, Any], nfds: int, fds: list[int], meta: Any) -> str | None:
    """Why a handed-over entry does not fit (None: it does, as far as its metadata says)."""
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        return f"not a {kind} underlay"
    if len(fds) != nfds:
        return f"{len(fds)} descriptors, not {nfds}"
    for key, want in expected.items():
        if meta.get(key) != want or type(meta.get(key)) is not type(want):
            return f"{key} {meta.get(key)!r}, configured {want!r}"
    joined = meta.get("joined")
    if (not isinstance(joined, list) or len(joined) > MAX_ADOPTED_LOCATORS
            or not all(type(loc) is int and 0 <= loc < 1 << 64 for loc in joined)):
        return "joined is not a list of locators"
    return None


def _refuse_sockets(socks: list[socket.socket], families: tuple[int, ...], port: int) -> str | None:
    """Why the sockets are not UDP sockets of these families, the first bound to `port`."""
    for i, (sock, family) in enumerate(zip(socks, families)):
        if sock.family != family or sock.type != socket.SOCK_DGRAM:
            return f"socket {i} is {sock.family!r} {sock.type!r}, not UDP on {family!r}"
    try:
        bound = socks[0].getsockname()[1]
    except (OSError, IndexError):
        return "receive socket has no address"
    if bound != port:
        return f"receive socket on port {bound}, configured {port}"
    return None


def close_handed(fds: list[int], socks: list[socket.socket]) -> None:
    """Close handed-over descriptors: through their socket object where one was made."""
    for sock in socks:
        sock.close()
    for fd in fds[len(socks):]:
        try:
            os.close(fd)
        except OSError:
            pass
