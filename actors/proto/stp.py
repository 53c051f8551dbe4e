"""STP, the skinny transport protocol (next header 42): | src port (2) | dst port (2) | data |.

No length, no checksum: UDP-like demultiplexing only (PROTOCOL.md)."""
from __future__ import annotations

import struct

HEADER_LEN = 4
_PORTS = struct.Struct("!HH")
_pack_ports = _PORTS.pack
_unpack_ports = _PORTS.unpack_from


class StpError(ValueError):
    """A segment shorter than its 4-byte header, or a port outside 0-65535."""


def encode(src_port: int, dst_port: int, data: bytes) -> bytes:
    try:
        return _pack_ports(src_port, dst_port) + data
    except struct.error:
        raise StpError(f"ports {src_port}, {dst_port} must be 0-65535") from None


def decode(segment: bytes) -> tuple[int, int, bytes]:
    """-> (src_port, dst_port, data)."""
    if len(segment) < HEADER_LEN:
        raise StpError(f"STP segment of {len(segment)} bytes is shorter than its 4-byte header")
    src, dst = _unpack_ports(segment)
    return src, dst, segment[HEADER_LEN:]
