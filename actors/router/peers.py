"""[ext] peer state (PROTOCOL.md "Locator update", [ext] Nonce, Who gets extensions and
"[ext] Authenticated locator updates").

- Who speaks [ext] (sent us a version-6 packet).
- Our nonce towards each peer NID (made on first need, never changed: peers compare it).
  With a `nonce_key` (the shell gives one derived from the node key) it is
  SHA-256(key || peer NID): the same after any restart, so a kill -9 before peers.json
  is written loses nothing, and unpredictable to anyone without the key.
- Each peer's nonce, learned per session: only from a packet addressed to us (never
  from ALL_NODES, which anyone can send to every node), kept while the peer stays in
  touch, and replaced by the nonce of the first packet of a new session (a peer silent
  for the session lifetime, or one whose state was wiped, starts again).
- The node key's signature on our locator updates and acks, when our NID is
  cryptographic (the signer is given by the shell).

Every table is capped and evicts the least recently used entry (counted): strangers
can make us hear from, or answer, any number of invented NIDs. Pure: randomness comes
from the `rng_bytes` the shell gives. What a restarted router must remember is
`state()`, loaded back with `restore()`; `version` changes whenever state() does.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter, OrderedDict
from typing import Callable

from ..proto.ilnp import NONCE_LENGTHS, encode_destopts
from ..proto.numbers import NH_LOCATOR_UPDATE

MAX_PEERS = 4096  # per table; legitimate nodes of one overlay are far fewer


class PeerTable:
    def __init__(self, nonce_length: int = 12, rng_bytes: Callable[[int], bytes] = os.urandom,
                 session_lifetime_ms: int = 30000, signer=None, own_nid: int = 0,
                 max_peers: int = MAX_PEERS, nonce_key: bytes | None = None):
        if nonce_length not in NONCE_LENGTHS:
            raise ValueError(f"nonce_length must be 4 or 12, not {nonce_length}")
        self.nonce_length = nonce_length
        self.session_lifetime = session_lifetime_ms
        self.max_peers = max_peers
        self.signer = signer            # proto.signature.Signer, or None (a plain NID signs nothing)
        self.own_nid = own_nid
        self._rng_bytes = rng_bytes
        self._nonce_key = nonce_key
        self._ext: OrderedDict[int, None] = OrderedDict()          # NIDs that sent version 6
        self._local: OrderedDict[int, bytes] = OrderedDict()       # peer NID -> our nonce towards it
        self._remote: OrderedDict[int, list] = OrderedDict()       # peer NID -> [its nonce, last heard ms]
        self.version = 0
        self.counters: Counter = Counter()

    def _put(self, table: OrderedDict, key: int, value) -> None:
        table[key] = value
        table.move_to_end(key)
        if len(table) > self.max_peers:
            table.popitem(last=False)
            self.counters["peers_evicted"] += 1
        self.version += 1

    # --- receiving -----------------------------------------------------------------

    def heard(self, nid: int, version: int) -> None:
        """A packet for us (or ALL_NODES) from `nid`: does it speak [ext]?"""
        if version == 6:
            if nid in self._ext:
                self._ext.move_to_end(nid)
            else:
                self._put(self._ext, nid, None)

    def touch(self, nid: int, now: int) -> None:
        """A packet without options from `nid` to us: the peer's session goes on."""
        known = self._remote.get(nid)
        if known is not None:
            known[1] = now

    def check(self, src_nid: int, nonce: bytes | None, seq: int | None, sig: bytes | None,
              unicast: bool, now: int) -> dict:
        """The delivery opts of a packet with destination options: is its nonce the one
        this peer uses in its current session (None: we hold none for it)?"""
        known = self._remote.get(src_nid)
        if known is not None and now - known[1] >= self.session_lifetime:
            known = None  # that session is over: the next nonce is a new session's
        if nonce is None:
            ok = None if known is None else False
        elif known is None:
            if unicast:
                if src_nid in self._remote:
                    self.counters["nonce_replaced"] += 1
                self._put(self._remote, src_nid, [nonce, now])
                ok = True
            else:
                ok = None  # ALL_NODES: anyone can send that; it teaches us nothing
        else:
            ok = nonce == known[0]
            if ok:
                known[1] = now
                self._remote.move_to_end(src_nid)
        return {"nonce": nonce, "seq": seq, "nonce_ok": ok, "sig": sig}

    def plain_update(self, src_nid: int, now: int) -> dict:
        """The delivery opts of a locator update without options: from a peer whose
        nonce we hold (in a live session), a missing nonce is a wrong one."""
        known = self._remote.get(src_nid)
        live = known is not None and now - known[1] < self.session_lifetime
        return {"nonce": None, "seq": None, "nonce_ok": False if live else None, "sig": None}

    # --- sending -------------------------------------------------------------------

    def options(self, dst_nid: int, next_header: int, nonce_due: bool, opts: dict | None,
                payload: bytes = b"") -> bytes | None:
        """The destination options header to put in front of a payload, or None.

        Only a peer that speaks [ext] gets one (an original node drops next header 60).
        It carries our nonce on locator updates and acks and wherever `nonce_due` (the
        first packets of a session), the sequence number an update asks for, and, on an
        update or ack with a sequence number, our node key's signature."""
        if dst_nid not in self._ext:
            if opts:
                self.counters["opts_dropped"] += 1
            return None
        update = next_header == NH_LOCATOR_UPDATE
        nonce = self._nonce_for(dst_nid) if nonce_due or update else None
        seq = opts.get("seq") if opts else None
        if nonce is None and seq is None:
            return None
        sig = None
        if update and seq is not None and self.signer is not None:
            sig = self.signer.sign(self.own_nid, dst_nid, seq, nonce, payload)
            self.counters["signed"] += 1
        return encode_destopts(next_header, nonce, seq, sig)

    def _nonce_for(self, nid: int) -> bytes:
        nonce = self._local.get(nid)
        if nonce is None:
            if self._nonce_key is not None:
                nonce = hashlib.sha256(self._nonce_key + nid.to_bytes(8, "big")).digest()[:self.nonce_length]
            else:
                nonce = bytes(self._rng_bytes(self.nonce_length))
            self._put(self._local, nid, nonce)
        else:
            self._local.move_to_end(nid)
        return nonce

    def speaks_ext(self, nid: int) -> bool:
        return nid in self._ext

    def sizes(self) -> dict:
        return {"ext": len(self._ext), "local": len(self._local), "remote": len(self._remote)}

    # --- persistence ---------------------------------------------------------------

    def state(self) -> dict:
        """What a restarted router must remember (else peers refuse our updates, and we
        theirs). Remote nonces are kept with how long ago they were last heard."""
        return {"ext": list(self._ext),
                "local": {str(n): v.hex() for n, v in self._local.items()},
                "remote": {str(n): v[0].hex() for n, v in self._remote.items()}}

    def size(self) -> int:
        """Changes whenever state() does (kept for callers that compare it)."""
        return self.version

    def restore(self, state: dict, now: int = 0) -> None:
        """Load state() of a previous incarnation; a malformed one is counted and skipped.
        Remote nonces come back as heard `now`: their sessions go on after a restart."""
        try:
            for n in state.get("ext", ()):
                self._put(self._ext, int(n), None)
            for nid, value in state.get("local", {}).items():
                self._put(self._local, int(nid), bytes.fromhex(value))
            for nid, value in state.get("remote", {}).items():
                nonce = bytes.fromhex(value)
                if len(nonce) in NONCE_LENGTHS:
                    self._put(self._remote, int(nid), [nonce, now])
        except (TypeError, ValueError, AttributeError):
            self.counters["bad_peer_state"] += 1
