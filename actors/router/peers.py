"""[ext] peer state (PROTOCOL.md "Locator update", [ext] Nonce and Who gets extensions).

Who speaks [ext] (sent a version-6 packet), our nonce towards each peer NID (made on
first need, never changed: peers compare it), and each peer's nonce (the first one seen).
Pure: randomness comes from the `rng_bytes` the shell gives. What a restarted router
must remember is `state()`, loaded back with `restore()`.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Callable

from ..proto.ilnp import NONCE_LENGTHS, encode_destopts
from ..proto.numbers import NH_LOCATOR_UPDATE


class PeerTable:
    def __init__(self, nonce_length: int = 12, rng_bytes: Callable[[int], bytes] = os.urandom):
        if nonce_length not in NONCE_LENGTHS:
            raise ValueError(f"nonce_length must be 4 or 12, not {nonce_length}")
        self.nonce_length = nonce_length
        self._rng_bytes = rng_bytes
        self._ext: set[int] = set()               # NIDs that sent version 6
        self._local: dict[int, bytes] = {}        # peer NID -> our nonce towards it
        self._remote: dict[int, bytes] = {}       # peer NID -> its nonce, first one seen
        self.counters: Counter = Counter()

    # --- receiving -----------------------------------------------------------------

    def heard(self, nid: int, version: int) -> None:
        if version == 6:
            self._ext.add(nid)

    def check(self, src_nid: int, nonce: bytes | None, seq: int | None) -> dict:
        """The delivery opts of a packet with destination options: is its nonce the
        one this peer uses (None: it never sent one)? The first nonce seen is learned."""
        known = self._remote.get(src_nid)
        if nonce is None:
            ok = None if known is None else False
        elif known is None:
            self._remote[src_nid] = nonce
            ok = True
        else:
            ok = nonce == known
        return {"nonce": nonce, "seq": seq, "nonce_ok": ok}

    def plain_update(self, src_nid: int) -> dict:
        """The delivery opts of a locator update without options: from a peer whose
        nonce we hold, a missing nonce is a wrong one."""
        return {"nonce": None, "seq": None, "nonce_ok": False if src_nid in self._remote else None}

    # --- sending -------------------------------------------------------------------

    def options(self, dst_nid: int, next_header: int, nonce_due: bool, opts: dict | None) -> bytes | None:
        """The destination options header to put in front of a payload, or None.

        Only a peer that speaks [ext] gets one (an original node drops next header 60).
        It carries our nonce on locator updates and acks and wherever `nonce_due` (the
        first packets of a session), and the sequence number an update asks for."""
        if dst_nid not in self._ext:
            if opts:
                self.counters["opts_dropped"] += 1
            return None
        nonce = self._nonce_for(dst_nid) if nonce_due or next_header == NH_LOCATOR_UPDATE else None
        seq = opts.get("seq") if opts else None
        if nonce is None and seq is None:
            return None
        return encode_destopts(next_header, nonce, seq)

    def _nonce_for(self, nid: int) -> bytes:
        nonce = self._local.get(nid)
        if nonce is None:
            nonce = self._local[nid] = bytes(self._rng_bytes(self.nonce_length))
        return nonce

    def speaks_ext(self, nid: int) -> bool:
        return nid in self._ext

    # --- persistence ---------------------------------------------------------------

    def state(self) -> dict:
        """What a restarted router must remember (else peers refuse our updates, and we theirs)."""
        return {"ext": sorted(self._ext),
                "local": {str(n): v.hex() for n, v in self._local.items()},
                "remote": {str(n): v.hex() for n, v in self._remote.items()}}

    def size(self) -> int:
        """Changes whenever state() does (entries are only ever added)."""
        return len(self._ext) + len(self._local) + len(self._remote)

    def restore(self, state: dict) -> None:
        """Load state() of a previous incarnation; a malformed one is counted and skipped."""
        try:
            self._ext.update(int(n) for n in state.get("ext", ()))
            for table, target in (("local", self._local), ("remote", self._remote)):
                for nid, value in state.get(table, {}).items():
                    target[int(nid)] = bytes.fromhex(value)
        except (TypeError, ValueError, AttributeError):
            self.counters["bad_peer_state"] += 1
