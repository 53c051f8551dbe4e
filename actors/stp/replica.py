"""A read-only copy of discovery's host table, kept by anyone who resolves names.

Discovery owns the table and publishes it whole on `state.hosts` when it changes;
a replica answers resolve() with a dict lookup, so resolution costs nothing per packet
and still follows a remote's moves.
"""
from __future__ import annotations

from ..proto.addr import format_ilv


class HostReplica:
    def __init__(self) -> None:
        self.by_name: dict[str, tuple[int, list[int]]] = {}
        self.by_nid: dict[int, str] = {}
        self.version = 0

    def load(self, rows) -> None:
        """rows: [[hostname, nid, [loc, ...], ...], ...] (state.hosts / `hosts` request)."""
        by_name: dict[str, tuple[int, list[int]]] = {}
        by_nid: dict[int, str] = {}
        for row in rows or ():
            hostname, nid, locs = row[0], row[1], list(row[2])
            if locs and hostname not in by_name:
                by_name[hostname] = (nid, locs)
            by_nid.setdefault(nid, hostname)
        self.by_name, self.by_nid = by_name, by_nid
        self.version += 1

    def resolve(self, hostname: str) -> tuple[int, list[int]] | None:
        """(nid, [locators, preferred first]) or None if not (yet) discovered."""
        return self.by_name.get(hostname)

    def locators_of(self, nid: int) -> list[int]:
        """The locators of a NID (newest first) if the host table knows it by its name."""
        name = self.by_nid.get(nid)
        found = self.by_name.get(name) if name is not None else None
        return list(found[1]) if found is not None and found[0] == nid else []

    def name_of(self, loc: int, nid: int) -> str:
        """The hostname of an I-LV, or the I-LV itself written out if unknown."""
        return self.by_nid.get(nid) or format_ilv(loc, nid)
