"""Protocol numbers, defined once (PROTOCOL.md): next headers and well-known STP ports."""
from __future__ import annotations

NH_STP = 42             # STP, the skinny transport protocol
NH_DISCOVERY = 43       # solicitations and advertisements
NH_LOCATOR_UPDATE = 44  # locator updates and acks
NH_DESTOPTS = 60        # [ext] RFC 8200 destination options (nonce, sequence number)

UPPER_LAYERS = (NH_STP, NH_DISCOVERY, NH_LOCATOR_UPDATE)  # what an upper layer may send

ECHO_PORT = 7           # the echo actor answers here (ilnp-ping)
EPHEMERAL_FIRST = 49152  # STP ports the router hands out for "port 0"
EPHEMERAL_LAST = 65535
