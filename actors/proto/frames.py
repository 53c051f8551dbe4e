"""Bus body layouts of the data topics: one named tuple per item kind.

A data frame's body is `{"p": [item, ...]}` (plus the bus's `a` and `q`). Items travel
as msgpack arrays, so a named tuple packs as its fields in order and a receiver may
unpack an item positionally; these classes are the one place that order is written.
Build items with them, never as hand-made lists.
"""
from __future__ import annotations

from typing import NamedTuple


class LinkItem(NamedTuple):
    """`link.rx`: a datagram and the locator it arrived on; `link.tx`: a datagram and
    the interface (joined locator) to send it out on."""
    loc: int
    datagram: bytes


class TxItem(NamedTuple):
    """`ilnp.tx`: an upper layer asks the router to send a packet.

    via None: the router picks the first destination locator it has a route for;
    via X: out on interface X, to dst_locs[0]. opts: None, or the [ext] destination
    options the router stamps: {"seq": int} (the router adds the nonce itself)."""
    dst_nid: int
    dst_locs: list
    next_header: int
    payload: bytes
    via: int | None = None
    opts: dict | None = None

    @property
    def seq(self) -> int | None:
        """The [ext] sequence number this packet asks for, if any."""
        return self.opts.get("seq") if self.opts else None


class RxItem(NamedTuple):
    """`ilnp.rx.*`: a packet for us, delivered by the router to its upper layer.

    payload: the upper layer's bytes (for STP the whole segment, header included).
    opts: None for a plain packet, else {"nonce": bytes | None, "seq": int | None,
    "nonce_ok": True | False | None} (None: this peer never sent a nonce)."""
    src_loc: int
    src_nid: int
    dst_loc: int
    dst_nid: int
    arrival_loc: int
    payload: bytes
    opts: dict | None = None


def items(body: dict) -> list:
    """The items of a data frame body (an empty list for a body without any)."""
    found = body.get("p")
    return found if isinstance(found, list) else []
