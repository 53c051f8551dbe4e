"""A node's figures in Prometheus' text format (prometheus_client writes it).

`render(snapshot)` is pure: the snapshot is what the metrics program gathered for one
scrape (every actor's `status`, the supervision listener's counts, mobility's `moves`,
the host table's size). The names are listed in README "Seeing what a node does".
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from . import figures
from .figures import answered, number

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ALIVE = ("STARTING", "RUNNING", "STOPPING")


def render(snapshot: dict) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_OneShot(families(snapshot)))
    return generate_latest(registry)


class _OneShot:
    def __init__(self, metrics: list):
        self.metrics = metrics

    def collect(self):
        return self.metrics


def families(snapshot: dict) -> list:
    actors = snapshot.get("actors") if isinstance(snapshot.get("actors"), dict) else {}
    out = []
    out += _actor_families(actors)
    out += _data_path_families(actors, snapshot.get("hosts"))
    out += _program_families(snapshot.get("programs"), snapshot.get("now", 0.0))
    out += _handoff_families(actors.get("mobility"), snapshot.get("moves"))
    duration = GaugeMetricFamily("ilnp_scrape_duration_seconds", "How long gathering this scrape's figures took.")
    duration.add_metric([], snapshot.get("duration_s", 0.0))
    out.append(duration)
    return out


def _actor_families(actors: dict) -> list:
    up = GaugeMetricFamily("ilnp_actor_up", "1 when the actor answered its status request.", labels=["actor"])
    sync = GaugeMetricFamily("ilnp_actor_in_sync", "1 when the actor has every state it requires.", labels=["actor"])
    uptime = GaugeMetricFamily("ilnp_actor_uptime_seconds", "Seconds since the actor's process started.",
                               labels=["actor"])
    events = CounterMetricFamily("ilnp_actor_events", "Every counter of every actor (ilnp-status shows the same).",
                                 labels=["actor", "event"])
    for actor, status in sorted(actors.items()):
        up.add_metric([actor], 1 if answered(status) else 0)
        if not answered(status):
            continue
        sync.add_metric([actor], 1 if status.get("in_sync") is True else 0)
        if number(status.get("uptime_s")):
            uptime.add_metric([actor], status["uptime_s"])
        for name, value in sorted(figures.counters(status).items()):
            events.add_metric([actor, name], value)
    return [up, sync, uptime, events]


def _data_path_families(actors: dict, hosts) -> list:
    drops = CounterMetricFamily("ilnp_drops", "Packets and frames dropped, by actor and reason.",
                                labels=["actor", "reason"])
    for (actor, reason), value in sorted(figures.drops(actors).items()):
        drops.add_metric([actor, reason], value)
    packets = CounterMetricFamily("ilnp_packets", "Packets in (from the underlay), out (to it), forwarded, "
                                  "delivered to this node and sent by it.", labels=["direction"])
    for direction, value in figures.packets(actors).items():
        if value is not None:
            packets.add_metric([direction], value)
    tables = GaugeMetricFamily("ilnp_table_entries", "Entries in a table of an actor.", labels=["actor", "table"])
    for (actor, table), value in sorted(figures.tables(actors, hosts if number(hosts) else None).items()):
        tables.add_metric([actor, table], value)
    queues = GaugeMetricFamily("ilnp_queue_depth", "What waits inside an actor.", labels=["actor", "queue"])
    for (actor, queue), value in sorted(figures.queues(actors).items()):
        queues.add_metric([actor, queue], value)
    return [drops, packets, tables, queues]


def _program_families(programs, now: float) -> list:
    restarts = CounterMetricFamily("ilnp_program_restarts", "Starts of a program after it died (supervision listener).",
                                   labels=["program"])
    starts = CounterMetricFamily("ilnp_program_starts", "Starts of a program.", labels=["program"])
    revivals = CounterMetricFamily("ilnp_program_revivals", "FATAL program started again by the listener.",
                                   labels=["program"])
    running = GaugeMetricFamily("ilnp_program_running", "1 when supervisord says RUNNING.", labels=["program"])
    uptime = GaugeMetricFamily("ilnp_program_uptime_seconds", "Seconds since the program's last start.",
                               labels=["program"])
    for name, entry in sorted((programs if isinstance(programs, dict) else {}).items(), key=lambda kv: str(kv[0])):
        if not isinstance(name, str) or not isinstance(entry, dict):
            continue
        for family, key in ((restarts, "restarts"), (starts, "starts"), (revivals, "revivals")):
            value = entry.get(key)
            family.add_metric([name], value if number(value) and value >= 0 else 0)
        running.add_metric([name], 1 if entry.get("state") == "RUNNING" else 0)
        started = entry.get("started_at")
        if entry.get("state") in ALIVE and number(started):
            uptime.add_metric([name], max(0.0, now - started))
    return [restarts, starts, revivals, running, uptime]


def _handoff_families(mobility, moves) -> list:
    if not answered(mobility):
        return []  # zeros would look like a reset of every counter
    counted = figures.counters(mobility)
    out = []
    for name, key, text in (
            ("ilnp_handoff_moves", "handoff_moves", "Moves of this node."),
            ("ilnp_handoff_updates_sent", "handoff_updates_sent", "Locator updates sent by moves (retries not counted)."),
            ("ilnp_handoff_updates_acked", "handoff_updates_acked", "Locator updates of moves acknowledged."),
            ("ilnp_handoff_updates_unacked", "handoff_updates_unacked", "Locator updates whose retries ran out."),
            ("ilnp_handoff_updates_superseded", "handoff_updates_superseded",
             "Locator updates replaced by a later move's before their ack."),
            ("ilnp_handoff_lost", "handoff_lost",
             "Packets the router dropped for want of a route within moves' windows."),
            ("ilnp_handoff_waited", "handoff_waited", "Packets that waited for a route within moves' windows."),
            ("ilnp_handoff_late_on_old", "handoff_late_on_old",
             "Data packets that arrived on an old locator after the first one on the new.")):
        family = CounterMetricFamily(name, text)
        family.add_metric([], counted.get(key, 0))
        out.append(family)
    for name, key, text in (("ilnp_handoff_ack_seconds", "handoff_ack", "From a move's update to its ack."),
                            ("ilnp_handoff_first_packet_seconds", "handoff_first_packet",
                             "From a move's start to the first data packet on a new locator.")):
        out.append(SummaryMetricFamily(name, text, count_value=counted.get(f"{key}_count", 0),
                                       sum_value=counted.get(f"{key}_ms_sum", 0) / 1000))
    last = moves[-1] if isinstance(moves, list) and moves and isinstance(moves[-1], dict) else None
    if last is not None:
        out += _last_move(last)
    return out


def _last_move(move: dict) -> list:
    """Gauges of the latest move (its window may still be open: ilnp_handoff_last_open)."""
    updates = [u for u in move.get("updates") or () if isinstance(u, dict)]
    acks = [u["acked_ms"] for u in updates if number(u.get("acked_ms"))]
    values = {
        "id": (move.get("id"), "The latest move's number (since the mobility actor started)."),
        "started_timestamp_seconds": (move.get("started_at"), "When the latest move started (Unix time)."),
        "open": (1 if move.get("open") else 0, "1 while the latest move's window is open."),
        "updates_sent": (len(updates), "Locator updates the latest move sent."),
        "updates_acked": (len(acks), "Of them, acknowledged."),
        "ack_seconds": (max(acks) / 1000 if acks else None, "From the latest move to its last ack."),
        "first_packet_seconds": (move["first_packet_ms"] / 1000 if number(move.get("first_packet_ms")) else None,
                                 "From the latest move to its first data packet on a new locator."),
        "lost": (move.get("lost"), "Packets dropped for want of a route in the latest move's window."),
        "late_on_old": (move.get("late_on_old"), "Data packets on an old locator after the first on the new."),
    }
    out = []
    for suffix, (value, text) in values.items():
        if number(value):
            family = GaugeMetricFamily(f"ilnp_handoff_last_{suffix}", text)
            family.add_metric([], value)
            out.append(family)
    return out
