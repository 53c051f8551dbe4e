"""Whether the link's interfaces can carry anything: up, with a carrier (issue 15, multihoming).

A cable pulled (a veth set down, its peer gone, a driver's carrier lost) makes every
send on that interface fail and nothing arrive, while the node still holds the
locators it carries. `CarrierWatch` tells the link at once: it listens to the kernel's
link notifications (rtnetlink, RTMGRP_LINK) and, on any, reads each watched interface's
flags again (SIOCGIFFLAGS: up is IFF_UP and IFF_RUNNING; an interface that is gone is
down). Only the flags are trusted, never the notification's content, so a lost or
unparsed notification costs nothing but a later look; a full notification buffer
(ENOBUFS) is just another reason to look.
"""
from __future__ import annotations

import errno
import fcntl
import socket
import struct

RTMGRP_LINK = 1
_SIOCGIFFLAGS = 0x8913
_IFF_UP, _IFF_RUNNING = 0x1, 0x40
_IFREQ = struct.Struct("16sH14x")   # ifr_name, ifr_flags (the rest of struct ifreq)


def interface_up(probe: socket.socket, name: str) -> bool:
    """Administratively up and running (a carrier); False for an interface that is gone."""
    try:
        out = fcntl.ioctl(probe.fileno(), _SIOCGIFFLAGS, _IFREQ.pack(name.encode()[:15], 0))
    except OSError:
        return False
    flags = _IFREQ.unpack(out)[1]
    return bool(flags & _IFF_UP) and bool(flags & _IFF_RUNNING)


class CarrierWatch:
    """The watched interfaces that are down now (`down`), kept current by `changed()`,
    which the link calls when `fileno()` is readable."""

    def __init__(self, interfaces):
        self.interfaces = tuple(dict.fromkeys(interfaces))
        self._probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
        self._nl.bind((0, RTMGRP_LINK))
        self.notifications = 0
        self.down: frozenset[str] = self._look()

    def fileno(self) -> int:
        return self._nl.fileno()

    def _look(self) -> frozenset[str]:
        return frozenset(name for name in self.interfaces if not interface_up(self._probe, name))

    def changed(self) -> bool:
        """Drain the notifications and look again; True when `down` changed."""
        while True:
            try:
                if not self._nl.recv(65536):
                    break
                self.notifications += 1
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:  # overrun: some were lost, the look covers them
                    raise
        down = self._look()
        if down == self.down:
            return False
        self.down = down
        return True

    def close(self) -> None:
        self._nl.close()
        self._probe.close()


def locators_by_interface(config) -> dict[str, list[int]]:
    """The interface each locator of the schedule rides (actors.config.UnderlaySpec: its
    own if listed, else the default's): what a dead interface takes with it."""
    default = next((spec for spec in config.underlays if spec.default), None)
    out: dict[str, list[int]] = {}
    for loc in dict.fromkeys(loc for step in config.schedule for loc in step):
        spec = next((s for s in config.underlays if loc in s.locators), default)
        if spec is not None:
            out.setdefault(spec.interface, []).append(loc)
    return out
