"""The underlays a node can run on, by their `underlay.kind` name in the node config."""
from __future__ import annotations

from typing import Any

from .ipv4_broadcast import Ipv4BroadcastUnderlay
from .ipv4_multicast import Ipv4MulticastUnderlay
from .ipv6_multicast import Ipv6MulticastUnderlay
from .underlay import Underlay
from .unicast import UnicastUnderlay

UNDERLAYS: dict[str, type[Underlay]] = {
    cls.kind: cls for cls in (Ipv6MulticastUnderlay, Ipv4MulticastUnderlay, Ipv4BroadcastUnderlay, UnicastUnderlay)}


def open_underlay(spec, config) -> Underlay:
    """A fresh underlay for `spec` (actors.config.UnderlaySpec) of `config`."""
    return UNDERLAYS[spec.kind].from_config(spec, config)


def adopt_underlay(spec, config, meta: Any, fds: list[int]) -> Underlay | None:
    """The underlay a predecessor handed over (its metadata and descriptors, from the fd
    store) if it fits `spec`, else None. Takes the descriptors (adopted, or closed)."""
    return UNDERLAYS[spec.kind].adopt(spec, config, fds, meta)
