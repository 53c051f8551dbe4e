"""The underlays a node can run on, by their `underlay.kind` name in the node config."""
from __future__ import annotations

from typing import Any

from .ipv6_multicast import Ipv6MulticastUnderlay
from .underlay import Underlay

UNDERLAYS: dict[str, type[Underlay]] = {cls.kind: cls for cls in (Ipv6MulticastUnderlay,)}


def open_underlay(config) -> Underlay:
    return UNDERLAYS[config.underlay_kind].from_config(config)


def adopt_underlay(config, meta: Any, fds: list[int]) -> Underlay | None:
    """The underlay a predecessor handed over (its metadata and descriptors, from the fd
    store) if it fits `config`, else None. Takes the descriptors (adopted, or closed)."""
    return UNDERLAYS[config.underlay_kind].adopt(config, fds, meta)
