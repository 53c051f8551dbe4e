"""Bus topic names (DESIGN.md). Topics are bytes; subscribers filter by prefix."""
from __future__ import annotations

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


def ilnp_rx(next_header: int) -> bytes:
    """Upper-layer delivery topic for one next header (not STP)."""
    return b"ilnp.rx.%d" % next_header


def stp_rx(port: int) -> bytes:
    """STP delivery topic for one port: fixed width so prefixes never collide."""
    return b"ilnp.rx.42.%05d" % port
