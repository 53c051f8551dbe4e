"""What a node's `status` answers say, in figures: counters, drops by reason, packet
totals, table sizes, queue depths. Pure functions of the answers (dicts, as the bus
brings them: anything may be missing or of another type), shared by the metrics
program (exposition.py) and `ilnp-status --watch` (tools/watch.py).
"""
from __future__ import annotations

# Data-path drops by actor (the counters of the router core, the link and its underlay,
# and the bus runtime every actor has: docs/DESIGN.md). Every other counter is exported
# too, as an event (ilnp_actor_events_total); these are also ilnp_drops_total{reason}.
ROUTER_DROPS = ("malformed", "bad_options", "dup_arrival", "unknown_nh", "stp_malformed", "stp_unbound",
                "not_ours", "fwd_no_route", "fwd_same_link", "hop_limit", "duplicate", "no_route",
                "oversize", "via_not_joined", "bad_send")
LINK_DROPS = ("rx_oversize", "tx_oversize", "tx_errors", "rx_kernel_drops", "rx_unknown_group", "emulated_drop")
BUS_DROPS = ("bad_frames", "bad_senders", "bad_bodies", "bad_items", "item_errors", "handler_errors",
             "direct_drops", "bus_gaps")
DROPS = {"router": ROUTER_DROPS, "link": LINK_DROPS}

# direction -> (actor, counter)
PACKETS = {"in": ("link", "rx"), "out": ("link", "tx"), "forwarded": ("router", "forwarded"),
           "delivered": ("router", "delivered"), "sent": ("router", "sent")}

# actor -> {queue name: status key}: what waits inside an actor
QUEUES = {"router": {"route_waiting": ("tables", "route_waiting"), "path_switch_held": ("tables", "path_switch_held")},
          "mobility": {"pending_updates": ("pending_updates",)}}


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def answered(status) -> bool:
    """The actor answered its status request (not an {"error": ...} stand-in)."""
    return isinstance(status, dict) and "error" not in status


def counters(status) -> dict[str, float]:
    """Every counter of one actor's status: the runtime's and its core's (summed on a clash)."""
    out: dict[str, float] = {}
    if not answered(status):
        return out
    for part in ("counters", "core"):
        table = status.get(part)
        if isinstance(table, dict):
            for name, value in table.items():
                if isinstance(name, str) and number(value) and value >= 0:
                    out[name] = out.get(name, 0) + value
    return out


def drops(actors: dict) -> dict[tuple[str, str], float]:
    """{(actor, reason): count} of the data path's drops and every actor's bus drops."""
    out = {}
    for actor, status in actors.items():
        merged = counters(status)
        for reason in DROPS.get(actor, ()) + BUS_DROPS:
            if reason in merged:
                out[(actor, reason)] = merged[reason]
    return out


def packets(actors: dict) -> dict[str, float | None]:
    """{direction: count} (None when the actor that counts it did not answer)."""
    out = {}
    for direction, (actor, name) in PACKETS.items():
        status = actors.get(actor)
        out[direction] = counters(status).get(name, 0) if answered(status) else None
    return out


def _dig(status: dict, path: tuple[str, ...]):
    value = status
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def tables(actors: dict, hosts: int | None = None) -> dict[tuple[str, str], float]:
    """{(actor, table): entries}: the router's tables, the link's joined locators, the host
    table (its size comes from discovery's `hosts`), proxy mappings, stream connections."""
    out = {}
    router = actors.get("router")
    if answered(router) and isinstance(router.get("tables"), dict):
        for name, value in router["tables"].items():
            if isinstance(name, str) and number(value) and name not in ("route_waiting", "path_switch_held"):
                out[("router", name)] = value
    link = actors.get("link")
    if answered(link) and isinstance(link.get("joined"), list):
        out[("link", "joined")] = len(link["joined"])
    if hosts is not None:
        out[("discovery", "hosts")] = hosts
    proxy = actors.get("proxy")
    if answered(proxy) and number(proxy.get("mappings")):
        out[("proxy", "mappings")] = proxy["mappings"]
    stream = actors.get("stream")
    if answered(stream) and isinstance(stream.get("connections"), list):
        out[("stream", "connections")] = len(stream["connections"])
    if answered(stream) and number(stream.get("local")):
        out[("stream", "local_connections")] = stream["local"]
    return out


def queues(actors: dict) -> dict[tuple[str, str], float]:
    """{(actor, queue): depth}: packets waiting for a route or a path switch, updates waiting for their ack."""
    out = {}
    for actor, named in QUEUES.items():
        status = actors.get(actor)
        if not answered(status):
            continue
        for name, path in named.items():
            value = _dig(status, path)
            if number(value):
                out[(actor, name)] = value
    return out
