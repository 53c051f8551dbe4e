"""`ilnp-status`: every actor's counters (frames, drops, errors) of a running node."""
from __future__ import annotations

import click

from actors.registry import ACTORS
from bus.client import RequestError, request

from .common import OneLineCommand, json_option, node, print_json, run_dir_option


@click.command(cls=OneLineCommand)
@run_dir_option
@json_option
def main(run_dir, as_json):
    """Show the status and counters of each actor of the node."""
    run = node(run_dir)
    report = {}
    for actor in (entry.name for entry in ACTORS if entry.serves_requests):
        try:
            report[actor] = request(run, actor, "status", timeout=2.0)
        except RequestError as exc:
            report[actor] = {"error": str(exc)}
    if as_json:
        print_json(report)
        return
    for actor, status in report.items():
        if "error" in status:
            click.echo(f"{actor:10} DOWN  {status['error']}")
            continue
        merged = {**status.get("counters", {}), **status.get("core", {})}
        counters = " ".join(f"{k}={v}" for k, v in sorted(merged.items()))
        click.echo(f"{actor:10} pid {status['pid']:<7} up {status['uptime_s']:>8.1f}s  {counters}")


if __name__ == "__main__":
    main()
