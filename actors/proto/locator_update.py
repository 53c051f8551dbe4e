"""Locator update wire format, next header 44 (PROTOCOL.md, "Locator update").

    update: | 0x01 | new locator (8) | new locator (8) | ...   (at least one locator)
    ack:    | 0x00 |

The original sends exactly these bytes (tests/golden): an update names the mover's
new locator set (not the handoff's joined set) and an ack is the single byte 0x00.
Sequence numbers and nonces ride in the destination options header, not here.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

TYPE_ACK = 0x00
TYPE_UPDATE = 0x01

_LOC = struct.Struct(">Q")
_ACK = bytes((TYPE_ACK,))
_UPDATE = bytes((TYPE_UPDATE,))


class LocatorUpdateWireError(ValueError):
    """Bytes that are not a locator update or ack (or locators that cannot be encoded)."""


@dataclass(frozen=True)
class Update:
    locs: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "locs", tuple(self.locs))


@dataclass(frozen=True)
class Ack:
    pass


def encode_update(locs) -> bytes:
    locs = list(locs)
    if not locs:
        raise LocatorUpdateWireError("a locator update names at least one locator")
    try:
        return _UPDATE + b"".join(_LOC.pack(loc) for loc in locs)
    except struct.error as exc:
        raise LocatorUpdateWireError(f"locator not a 64-bit unsigned int: {exc}") from None


def encode_ack() -> bytes:
    return _ACK


def decode(body) -> Update | Ack:
    """Decode a next-header-44 payload; raises only LocatorUpdateWireError."""
    if not isinstance(body, bytes):
        body = bytes(body)  # bytearray / memoryview from the shell
    if not body:
        raise LocatorUpdateWireError("empty locator update body")
    kind = body[0]
    if kind == TYPE_ACK:
        if len(body) != 1:
            raise LocatorUpdateWireError(f"ack with {len(body) - 1} trailing bytes")
        return Ack()
    if kind != TYPE_UPDATE:
        raise LocatorUpdateWireError(f"unknown locator update type {kind:#04x}")
    rest = len(body) - 1
    if rest == 0 or rest % _LOC.size:
        raise LocatorUpdateWireError(
            f"update body of {len(body)} bytes is not 1 + 8 x locators (at least one)")
    return Update(tuple(loc for (loc,) in _LOC.iter_unpack(body[1:])))
