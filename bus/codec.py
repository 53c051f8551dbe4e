"""Frame codec: a frame is the multipart message [topic, body], body a msgpack map.

Bytes stay bytes (bin type); maps may have int keys. Every frame body carries
`a` (publisher) and `q` (per-publisher, per-topic sequence) so receivers count gaps.
"""
from __future__ import annotations

import msgpack


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


def decode_frame(parts: list[bytes]) -> tuple[bytes, dict]:
    if len(parts) != 2:
        raise FrameError(f"expected 2 frame parts, got {len(parts)}")
    return parts[0], unpack(parts[1])
