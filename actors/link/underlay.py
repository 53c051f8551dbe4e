"""The Underlay interface: what carries the overlay's datagrams between nodes.

A locator names a virtual network; an underlay maps each locator it joins to
something it can send to and receive from (an IPv6 or IPv4 multicast group, the
interface's IPv4 broadcast address, a list of unicast peers), and tells, for each
datagram it receives, the locator it arrived on. One underlay is one socket (or a
receive and a send socket) for a (kind, interface, port) of the config
(actors.config.UnderlaySpec); the link drives several at once and knows nothing of
how they work. To add one: subclass Underlay and list it in kinds.py under its
`underlay.kind` name (docs/DESIGN.md, "Add an underlay").
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, ClassVar, Iterable


class Underlay(ABC):
    """One underlay endpoint of a node. Every method is non-blocking.

    `counters` holds the underlay's own drops (its own looped-back transmissions,
    datagrams from networks it has not joined), which the link reports."""

    kind: ClassVar[str]  # its `underlay.kind` name (kinds.py)

    def __init__(self) -> None:
        self.counters: Counter = Counter()

    @classmethod
    @abstractmethod
    def from_config(cls, spec, config) -> "Underlay":
        """Open one for `spec` (actors.config.UnderlaySpec: kind, interface, port, its
        locators) of the node config `config` (group tag, multicast loop, file path for
        errors). ConfigError, one line naming the key, when the interface is missing."""

    @abstractmethod
    def fileno(self) -> int:
        """What the link's loop polls for readable datagrams."""

    @property
    @abstractmethod
    def joined(self) -> frozenset[int]:
        """The locators joined now."""

    @abstractmethod
    def join(self, loc: int) -> None:
        """Start receiving the virtual network `loc` (OSError if the system refuses)."""

    @abstractmethod
    def leave(self, loc: int) -> None:
        """Stop receiving `loc` (nothing happens if it was not joined)."""

    @abstractmethod
    def send(self, loc: int, datagram: bytes) -> bool:
        """Send one datagram on `loc`; False if `loc` is not joined (sent all the same:
        membership governs receiving only). OSError if the system refuses."""

    @abstractmethod
    def recv_batch(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` received datagrams with their arrival locator, oldest first;
        [] when none is ready. Own transmissions and strays are dropped and counted."""

    @abstractmethod
    def close(self) -> None:
        ...

    def addresses(self) -> dict[int, str]:
        """What each joined locator maps to, for the link's status (group, peers...)."""
        return {}

    # Handing over to the next link (the fd store, bus/fdstore.py). An underlay whose
    # reception dies with its descriptors (a multicast socket takes its memberships and
    # its receive buffer with it) lists them here; the link keeps them in the node's fd
    # store, and after a restart its successor adopts them and reads what the kernel
    # buffered meanwhile. The default: nothing to hand over.

    def pace_receive(self) -> None:
        """Back to the receive buffer sized for the link's pace, after the backlog of an
        adoption was read (its buffer was deepened while no link ran). Default: nothing."""

    def handover_fds(self) -> list[int]:
        """The descriptors to keep across a restart of the link ([]: none)."""
        return []

    def handover_meta(self, joined: Iterable[int]) -> dict[str, Any]:
        """What a successor needs besides the descriptors: how they were opened and the
        locators `joined` (the link may list more than are joined now, never fewer)."""
        return {"kind": self.kind, "joined": sorted(joined)}

    @classmethod
    def adopt(cls, spec, config, fds: list[int], meta: Any) -> "Underlay | None":
        """An underlay on descriptors a predecessor handed over, with the locators of
        `meta` joined (joined already is fine), if they fit `spec`; None if not (the
        caller then opens a fresh one). Owns `fds`: closes them when it returns None.
        handover.SocketHandover implements these three for socket-based underlays."""
        for fd in fds:
            os.close(fd)
        return None
