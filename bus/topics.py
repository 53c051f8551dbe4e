"""Bus topic names (DESIGN.md). Topics are bytes; subscribers filter by prefix."""
from __future__ import annotations

import functools

HELLO = b"hello"
STATE = b"state."
STATE_LOCATORS = b"state.locators"
STATE_HOSTS = b"state.hosts"
STATE_SESSIONS = b"state.sessions"
LINK_RX = b"link.rx"
LINK_TX = b"link.tx"
ILNP_RX = b"ilnp.rx."
ILNP_TX = b"ilnp.tx"
MOB_PEER = b"mob.peer"
LOG = b"log"

NH_STP = 42
NH_DISCOVERY = 43
NH_LOCATOR_UPDATE = 44


# Data topics travel straight from publisher to consumer (PUSH to the consumer's
# inbox), not through the broker: a broker hop costs as much CPU as the consumer's
# own receive. They are published to the broker too, where they cost nothing unless
# someone (ilnp-tap) subscribes.
DIRECT_PREFIXES = (LINK_RX, LINK_TX, ILNP_TX, ILNP_RX)

# The fixed consumer of each data topic; STP ports are routed at bind time.
_CONSUMERS = {LINK_RX: "router", LINK_TX: "link", ILNP_TX: "router",
              b"ilnp.rx.43": "discovery", b"ilnp.rx.44": "mobility"}


def is_direct(topic: bytes) -> bool:
    return topic.startswith(DIRECT_PREFIXES)


def consumer(topic: bytes) -> str | None:
    """The actor whose inbox receives this data topic (None: routed at run time)."""
    return _CONSUMERS.get(topic)


@functools.lru_cache(maxsize=None)  # called per delivered packet: format each topic once
def ilnp_rx(next_header: int) -> bytes:
    """Upper-layer delivery topic for one next header (not STP)."""
    return b"ilnp.rx.%d" % next_header


@functools.lru_cache(maxsize=None)  # at most 65536 ports
def stp_rx(port: int) -> bytes:
    """STP delivery topic for one port: fixed width so prefixes never collide."""
    return b"ilnp.rx.42.%05d" % port
