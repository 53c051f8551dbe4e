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
        self.bad_rows = 0  # rows of a table that did not have the layout (skipped, counted)

    def load(self, rows) -> None:
        """rows: [[hostname, nid, [loc, ...], ...], ...] (state.hosts / `hosts` request).

        The table comes off the bus, so any local process could have sent it: a body that
        is not a list leaves the copy as it was, and a row without the layout is skipped."""
        if rows is None:
            rows = ()
        elif not isinstance(rows, (list, tuple)):
            self.bad_rows += 1
            return
        by_name: dict[str, tuple[int, list[int]]] = {}
        by_nid: dict[int, str] = {}
        for row in rows:
            parsed = _parse_row(row)
            if parsed is None:
                self.bad_rows += 1
                continue
            hostname, nid, locs = parsed
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


def _is_u64(value) -> bool:
    return type(value) is int and 0 <= value < 1 << 64


def _parse_row(row) -> tuple[str, int, list[int]] | None:
    if not isinstance(row, (list, tuple)) or len(row) < 3:
        return None
    hostname, nid, locs = row[0], row[1], row[2]
    if not isinstance(hostname, str) or not _is_u64(nid) or not isinstance(locs, (list, tuple)):
        return None
    if not all(_is_u64(loc) for loc in locs):
        return None
    return hostname, nid, list(locs)
