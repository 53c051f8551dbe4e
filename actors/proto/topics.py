"""The node's bus topics (docs/DESIGN.md, "Bus topics"). Topics are bytes; subscribers
filter by prefix, so names are hierarchical and STP port topics are fixed width.

Data topics (link.*, ilnp.*) carry batches of items laid out in `frames`; they are
pushed straight into their consumer's inbox (bus/direct.py), and the actor registry
(actors/registry.py) says who consumes each. State topics are republished by their
owner whenever someone says hello.
"""
from __future__ import annotations

import functools

from bus.codec import HELLO

from .numbers import NH_DISCOVERY, NH_LOCATOR_UPDATE

__all__ = ["HELLO", "STATE_LOCATORS", "STATE_HOSTS", "STATE_SESSIONS", "STATE_PORTS", "STATE_LINKS",
           "STATE_FORWARDING", "LINK_RX", "LINK_TX", "ILNP_TX", "ILNP_RX", "MOB_PEER",
           "ILNP_RX_DISCOVERY", "ILNP_RX_LOCATOR_UPDATE", "ilnp_rx", "stp_rx", "DATA_TOPICS"]

# state, owned by one actor each
STATE_LOCATORS = b"state.locators"      # mobility: the node's locator set
STATE_HOSTS = b"state.hosts"            # discovery: the host table
STATE_SESSIONS = b"state.sessions"      # router: active sessions
STATE_PORTS = b"state.ports"            # router: STP port -> owner pid
STATE_FORWARDING = b"state.forwarding"  # router: the epoch of its forwarding table
STATE_LINKS = b"state.links"            # link: the locators whose interface is down
MOB_PEER = b"mob.peer"                  # mobility: a peer moved (accepted update)

# data
LINK_RX = b"link.rx"                    # link -> router: datagrams with their arrival locator
LINK_TX = b"link.tx"                    # router -> link: datagrams and their out interface
ILNP_TX = b"ilnp.tx"                    # any upper layer -> router: packets to send
ILNP_RX = b"ilnp.rx."                   # router -> upper layers: packets for us, by next header


@functools.lru_cache(maxsize=None)  # called per delivered packet: format each topic once
def ilnp_rx(next_header: int) -> bytes:
    """Upper-layer delivery topic for one next header (STP has one per port: stp_rx)."""
    return b"ilnp.rx.%d" % next_header


@functools.lru_cache(maxsize=None)  # at most 65536 ports
def stp_rx(port: int) -> bytes:
    """STP delivery topic for one port: fixed width so prefixes never collide."""
    return b"ilnp.rx.42.%05d" % port


ILNP_RX_DISCOVERY = ilnp_rx(NH_DISCOVERY)
ILNP_RX_LOCATOR_UPDATE = ilnp_rx(NH_LOCATOR_UPDATE)

# Every data topic with a fixed consumer (the registry names it); STP port topics are
# routed to the binder's inbox when the port is bound.
DATA_TOPICS = (LINK_RX, LINK_TX, ILNP_TX, ILNP_RX_DISCOVERY, ILNP_RX_LOCATOR_UPDATE)
