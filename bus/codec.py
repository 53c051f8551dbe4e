"""Frame codec: a frame is the multipart message [topic, body], body a msgpack map.

Bytes stay bytes (bin type); maps may have int keys. Every frame body carries
`a` (publisher) and `q` (per-publisher, per-topic sequence) so receivers count gaps.
"""
from __future__ import annotations

import zlib

import msgpack

HELLO = b"hello"
"""The bus's own topic: a newcomer says hello, and the owner of each state republishes it."""


class FrameError(ValueError):
    """A frame that is not [topic, msgpack map]."""


def pack(body: dict) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def unpack(data: bytes) -> dict:
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FrameError(f"undecodable frame body: {exc}") from None
    if not isinstance(body, dict):
        raise FrameError("frame body is not a map")
    return body


class FrameStamper:
    """Packs a publisher's frames with its name (`a`) and its per-topic sequence (`q`)."""

    __slots__ = ("name", "seq")

    def __init__(self, name: str):
        self.name = name
        self.seq: dict[bytes, int] = {}  # topic -> the last q sent

    def pack(self, topic: bytes, body: dict) -> bytes:
        q = self.seq.get(topic, 0) + 1
        self.seq[topic] = q
        body["a"] = self.name
        body["q"] = q
        return pack(body)


def digest(value) -> str:
    """A short fingerprint of a msgpack-able value: two copies of a state (an owner's and
    a consumer's) compare equal by it without either being shown whole."""
    return format(zlib.crc32(msgpack.packb(value, use_bin_type=True)), "08x")


U64_MAX = (1 << 64) - 1


def is_u64(value) -> bool:
    """An unsigned 64-bit int (not a bool): what a locator or a NID is in a body."""
    return type(value) is int and 0 <= value <= U64_MAX


def u64_list(value) -> list[int]:
    """`value` if it is a list of unsigned 64-bit ints (a locator set, ...); FrameError if not.
    Whoever takes a state body checks it whole first: a bad one is dropped, never half applied."""
    if type(value) is not list or not all(type(v) is int and 0 <= v <= U64_MAX for v in value):
        raise FrameError(f"not a list of 64-bit unsigned ints: {value!r:.60}")
    return value

