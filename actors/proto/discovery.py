"""Discovery message body (PROTOCOL.md, Discovery, next header 43).

    | NID (8) | Locator (8) | flag (1: 1 solicitation, 0 advertisement) | hostname UTF-8 to the end |

A hostname is 1-255 bytes of UTF-8 without control characters (C0, DEL, C1):
it is printed by tools and logged, so it must not carry terminal escapes or
newlines, and 255 keeps a body well inside one datagram (17 + 255 bytes).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

_FIXED = struct.Struct(">QQB")
FIXED_LEN = _FIXED.size  # 17
MAX_HOSTNAME_BYTES = 255

FLAG_ADVERTISEMENT = 0
FLAG_SOLICITATION = 1

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class DiscoveryWireError(ValueError):
    """Bytes (or fields) that are not a valid discovery body."""


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    nid: int
    loc: int
    solicitation: bool
    hostname: str


def check_hostname(hostname: str) -> bytes:
    """Return the UTF-8 of a valid hostname, or raise DiscoveryWireError."""
    if not isinstance(hostname, str):
        raise DiscoveryWireError(f"hostname must be a string, got {hostname!r}")
    if _CONTROL.search(hostname):
        raise DiscoveryWireError(f"hostname {hostname!r} contains control characters")
    try:
        raw = hostname.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise DiscoveryWireError(f"hostname {hostname!r} is not encodable as UTF-8") from exc
    if not 1 <= len(raw) <= MAX_HOSTNAME_BYTES:
        raise DiscoveryWireError(
            f"hostname must be 1-{MAX_HOSTNAME_BYTES} bytes of UTF-8, got {len(raw)}")
    return raw


def encode(nid: int, loc: int, solicitation: bool, hostname: str) -> bytes:
    raw = check_hostname(hostname)
    try:
        fixed = _FIXED.pack(nid, loc, FLAG_SOLICITATION if solicitation else FLAG_ADVERTISEMENT)
    except struct.error as exc:
        raise DiscoveryWireError(f"NID and locator must be 64-bit unsigned: {exc}") from exc
    return fixed + raw


def decode(body: bytes) -> DiscoveryMessage:
    if len(body) < FIXED_LEN:
        raise DiscoveryWireError(f"discovery body of {len(body)} bytes, need at least {FIXED_LEN}")
    nid, loc, flag = _FIXED.unpack_from(body)
    if flag not in (FLAG_ADVERTISEMENT, FLAG_SOLICITATION):
        raise DiscoveryWireError(f"solicitation flag {flag} is neither 0 nor 1")
    raw = bytes(body[FIXED_LEN:])
    if not 1 <= len(raw) <= MAX_HOSTNAME_BYTES:
        raise DiscoveryWireError(
            f"hostname must be 1-{MAX_HOSTNAME_BYTES} bytes of UTF-8, got {len(raw)}")
    try:
        hostname = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DiscoveryWireError(f"hostname is not UTF-8: {exc.reason}") from exc
    if _CONTROL.search(hostname):
        raise DiscoveryWireError(f"hostname {hostname!r} contains control characters")
    return DiscoveryMessage(nid, loc, flag == FLAG_SOLICITATION, hostname)
