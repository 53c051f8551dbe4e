"""`ilnp-faults`: kill -9 each actor in turn, on alice and on the router, while traffic
flows alice <-> bob through the router; print what each restart cost.

A benchmark scenario (figures, not a pass/fail test): builds its own lab (`--lab faults`),
sends sequence-numbered packets both ways at `--rate`, and for each kill reports how long
supervisord took to have the actor RUNNING again, the longest silence of the traffic
around the kill (each direction) and the packets lost.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click

from actors.registry import ACTORS
from tools.common import OneLineCommand
from tools.experiment import orchestrate
from tools.experiment.analysis import read_packets
from tools.lab import Lab

from .measure import Kill, cost

SETTLE_S = 3.0      # traffic steady before each kill
RESTART_WAIT_S = 20.0


def _pids(lab, node: str) -> dict[str, tuple[str, int]]:
    proc = lab.exec(node, ["supervisorctl", "-c", "supervisord.conf", "status"], capture_output=True, text=True)
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "pid":
            out[parts[0]] = (parts[1], int(parts[3].rstrip(",")))
        elif len(parts) >= 2:
            out[parts[0]] = (parts[1], 0)
    return out


def _kill(lab, node: str, actor: str) -> Kill:
    before = _pids(lab, node)[actor][1]
    t = time.time_ns()
    os.kill(before, 9)
    deadline = time.monotonic() + RESTART_WAIT_S
    while time.monotonic() < deadline:
        state, pid = _pids(lab, node).get(actor, ("?", 0))
        if state == "RUNNING" and pid not in (0, before):
            return Kill(node, actor, t, round((time.time_ns() - t) / 1e9, 2))
        time.sleep(0.05)
    return Kill(node, actor, t, None)


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rate", type=click.FloatRange(min=1), default=2000.0, show_default=True,
              help="Packets/s each way.")
@click.option("--nodes", default="alice,router", show_default=True, help="Whose actors to kill.")
@click.option("--actors", "actor_names", default=",".join(a.name for a in ACTORS), show_default=True)
@click.option("--lab", "lab_name", default="faults", show_default=True)
@click.option("--json", "json_path", default=None, help="Also write the figures to this JSON file.")
def main(rate, nodes, actor_names, lab_name, json_path):
    """Kill -9 each actor in turn while traffic flows; print what each restart cost."""
    nodes_l = [n for n in nodes.split(",") if n]
    actors_l = [a for a in actor_names.split(",") if a]
    unknown = set(actors_l) - {a.name for a in ACTORS}
    if unknown or not set(nodes_l) <= {"alice", "router", "bob"}:
        raise click.UsageError(f"unknown actor or node: {sorted(unknown) or nodes}")
    kills_n = len(nodes_l) * len(actors_l)
    params = orchestrate.Params(rate=rate, duration=SETTLE_S + kills_n * (SETTLE_S + 4.0) + 2,
                                move_time=1e6, handoff_time=0, alice_schedule="0:0:0:a")
    lab = Lab(lab_name)
    kills: list[Kill] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        try:
            lab.up(orchestrate.write_topology(out, params))
            orchestrate.wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
            gens = orchestrate.start_both_ways(lab, params, out)
            time.sleep(SETTLE_S)
            for node in nodes_l:
                for actor in actors_l:
                    time.sleep(SETTLE_S)
                    kill = _kill(lab, node, actor)
                    kills.append(kill)
                    click.echo(f"killed {node}/{actor}: running again after {kill.restart_s} s", err=True)
            results = {name: gen.result(params.duration + 60) for name, gen in gens.items()}
            rows = []
            at_bob, at_alice = read_packets(out / "at_bob.csv"), read_packets(out / "at_alice.csv")
            for i, kill in enumerate(kills):
                after = kills[i + 1].time_ns if i + 1 < len(kills) else None
                to_bob = cost(at_bob, results["alice"]["start_ns"], rate, kill.time_ns, next_kill_ns=after)
                to_alice = cost(at_alice, results["bob"]["start_ns"], rate, kill.time_ns, next_kill_ns=after)
                rows.append({"node": kill.node, "actor": kill.actor, "restart_s": kill.restart_s,
                             "outage_ms_alice_to_bob": to_bob.outage_ms, "lost_alice_to_bob": to_bob.lost,
                             "outage_ms_bob_to_alice": to_alice.outage_ms, "lost_bob_to_alice": to_alice.lost})
        finally:
            lab.down()
    click.echo(f"{'node/actor':<18} {'restart s':>9} {'outage a->b ms':>15} {'lost a->b':>10} "
               f"{'outage b->a ms':>15} {'lost b->a':>10}")
    for r in rows:
        click.echo(f"{r['node'] + '/' + r['actor']:<18} {r['restart_s']!s:>9} {r['outage_ms_alice_to_bob']:>15} "
                   f"{r['lost_alice_to_bob']:>10} {r['outage_ms_bob_to_alice']:>15} {r['lost_bob_to_alice']:>10}")
    if json_path:
        Path(json_path).write_text(json.dumps({"rate": rate, "kills": rows}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
