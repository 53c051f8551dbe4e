"""Locators, NIDs and I-LVs: 64-bit values written as 4 hex groups (PROTOCOL.md, Names).

Internally every locator and NID is a Python int; strings exist only at the edges.
"""
from __future__ import annotations

import re

ALL_NODES = 0xFF02_0000_0000_0001
"""Link-local broadcast locator inside one virtual network."""

CRYPTO_NID_PREFIX = 0x3  # [ext] top 4 bits 0011: a self-certifying NID (PROTOCOL.md)


def is_cryptographic(nid: int) -> bool:
    """Is this NID self-certifying ([ext] "Authenticated locator updates")? The prefix is
    in the NID itself, so a forger cannot make a cryptographic peer look like a plain one."""
    return (nid >> 60) == CRYPTO_NID_PREFIX

_GROUP = re.compile(r"^[0-9a-fA-F]{1,4}$")


class AddressError(ValueError):
    """An address string that is not 4 groups of 1-4 hex digits."""


def parse64(text: str) -> int:
    """Parse `ffff:0:0:a` (leading zeros allowed, never padded) into an int."""
    if not isinstance(text, str):
        raise AddressError(f"expected a string like 0:0:0:a, got {text!r}")
    groups = text.strip().split(":")
    if len(groups) != 4 or not all(_GROUP.match(g) for g in groups):
        raise AddressError(f"{text!r} is not 4 groups of 1-4 hex digits (like 0:0:0:a)")
    value = 0
    for g in groups:
        value = (value << 16) | int(g, 16)
    return value


def format64(value: int) -> str:
    """Format an int as 4 hex groups without leading zeros: `0:0:0:a`."""
    return ":".join(f"{(value >> shift) & 0xFFFF:x}" for shift in (48, 32, 16, 0))


def format_ilv(loc: int, nid: int) -> str:
    return f"{format64(loc)}:{format64(nid)}"


def parse_locator_set(text: str) -> list[int]:
    """`0:0:0:a,0:0:0:b` -> [loc, loc]: one step of a mobility schedule."""
    parts = [p for p in text.split(",")]
    if not parts or any(not p.strip() for p in parts):
        raise AddressError(f"{text!r} is not a comma separated list of locators")
    return [parse64(p) for p in parts]


def parse_schedule(text: str) -> list[list[int]]:
    """`a-b-c` where each step may be `x,y`: the locator sets a mobile node visits."""
    steps = text.split("-")
    if any(not s.strip() for s in steps):
        raise AddressError(f"{text!r} is not a schedule like 0:0:0:a-0:0:0:b,0:0:0:c")
    return [parse_locator_set(s) for s in steps]
