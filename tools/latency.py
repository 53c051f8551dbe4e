"""`ilnp-latency`: a node's per-stage latency, actor by actor (bus/latency.py).

For each data topic an actor consumes: how long its frames waited between their
publisher and the actor's loop (`wait`: the bus hop, the consumer's wake-up, frames
ahead of it) and how long the actor's handlers took with them (`handle`). Figures are
log2 buckets: a p50 of 64 us means between 32 and 64. `--reset` starts afresh (run it,
make the traffic to look at, run it again without). docs/PERFORMANCE.md has the budget
of a ping through a router, stage by stage.
"""
from __future__ import annotations

import click

from actors.registry import ACTORS
from bus.client import RequestError, request

from .common import OneLineCommand, json_option, node, print_json, run_dir_option


def collect(run) -> dict:
    """{actor: {topic: {"wait": {...}, "handle": {...}}}} for every actor that answers."""
    out = {}
    for actor in (entry.name for entry in ACTORS if entry.serves_requests):
        try:
            out[actor] = request(run, actor, "status", timeout=2.0).get("latency", {})
        except RequestError:
            continue  # not running: nothing to show
    return out


def reset(run) -> None:
    for actor in (entry.name for entry in ACTORS if entry.serves_requests):
        try:
            request(run, actor, "latency_reset", timeout=2.0)
        except RequestError:
            pass


def rows(stages: dict) -> list[tuple]:
    return [(actor, topic, s["wait"]["count"], s["wait"]["p50_us"], s["wait"]["p99_us"],
             s["handle"]["p50_us"], s["handle"]["p99_us"])
            for actor, topics in stages.items() for topic, s in topics.items()]


@click.command(cls=OneLineCommand)
@run_dir_option
@click.option("--reset", "do_reset", is_flag=True, help="Start every actor's figures afresh.")
@json_option
def main(run_dir, do_reset, as_json):
    """Show how long data frames wait for each actor and how long it takes with them."""
    run = node(run_dir)
    if do_reset:
        reset(run)
        return 0
    stages = collect(run)
    if as_json:
        print_json(stages)
        return 0
    click.echo(f"{'actor':<10} {'topic':<16} {'frames':>8} {'wait p50':>9} {'p99':>7} {'handle p50':>11} {'p99':>7}  (us)")
    for actor, topic, count, w50, w99, h50, h99 in rows(stages):
        click.echo(f"{actor:<10} {topic:<16} {count:>8} {w50!s:>9} {w99!s:>7} {h50!s:>11} {h99!s:>7}")
    return 0


if __name__ == "__main__":
    main()
