"""Discovery message body (PROTOCOL.md, Discovery, next header 43).

    | NID (8) | Locator (8) | flag (1: 1 solicitation, 0 advertisement) | hostname UTF-8 to the end |

The hostname rule ([ext] Discovery safeguards) is defined here and nowhere else (the
config's `hostname` check uses it): 1-63 ASCII letters, digits, `-`, `_` and `.`.
Hostnames are printed by tools and logged, so they carry no spaces, terminal escapes,
newlines or look-alike letters of other scripts. A body whose hostname is not text
(empty, not UTF-8) is malformed (DiscoveryWireError); one whose text breaks the rule is
BadHostname, a subclass, so a receiver can count the two apart.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

_FIXED = struct.Struct(">QQB")
FIXED_LEN = _FIXED.size  # 17
MAX_HOSTNAME_BYTES = 63
HOSTNAME_RULE = f"1-{MAX_HOSTNAME_BYTES} letters, digits, '-', '_' or '.' (ASCII)"

FLAG_ADVERTISEMENT = 0
FLAG_SOLICITATION = 1

_HOSTNAME = re.compile(f"[A-Za-z0-9._-]{{1,{MAX_HOSTNAME_BYTES}}}")  # explicit ranges: ASCII only


class DiscoveryWireError(ValueError):
    """Bytes (or fields) that are not a valid discovery body."""


class BadHostname(DiscoveryWireError):
    """A hostname that is text but breaks the hostname rule."""


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    nid: int
    loc: int
    solicitation: bool
    hostname: str


def valid_hostname(hostname) -> bool:
    """Does `hostname` follow the hostname rule (HOSTNAME_RULE)?"""
    return isinstance(hostname, str) and _HOSTNAME.fullmatch(hostname) is not None


def check_hostname(hostname: str) -> bytes:
    """Return the bytes of a valid hostname, or raise BadHostname."""
    if not valid_hostname(hostname):
        raise BadHostname(f"hostname {hostname!r} is not {HOSTNAME_RULE}")
    return hostname.encode("ascii")


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
    if not raw:
        raise DiscoveryWireError("discovery body without a hostname")
    try:
        hostname = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DiscoveryWireError(f"hostname is not UTF-8: {exc.reason}") from exc
    if not valid_hostname(hostname):
        raise BadHostname(f"hostname {hostname!r} is not {HOSTNAME_RULE}")
    return DiscoveryMessage(nid, loc, flag == FLAG_SOLICITATION, hostname)
