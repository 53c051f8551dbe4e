"""`python -m tools.lab.failover`: what a multihomed node's failover costs (issue 15).

A benchmark scenario (figures, not a pass/fail test). It builds conf/lab/multihomed.toml
(alice on lan1 and lan2 with 0:0:0:a and 0:0:0:b, the router on both and on lan3, bob on
lan3) with fast discovery, sends sequence-numbered packets alice <-> bob at `--rate`
each way (tools/trafficgen.py), and `--cycles` times pulls the cable of alice's primary
locator (her interface to lan1 down, as `ilnp-lab link alice lan1 down`) and puts it
back `--hold` seconds later. For each event and direction it prints the longest
silence of the traffic around it (the failover, or failback, time), the packets lost
(tools/faults/measure.py, by sequence number and send time) and the locator of alice's
that carried the traffic at the end of the window.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import click

from tools.common import OneLineCommand
from tools.experiment import orchestrate
from tools.experiment.analysis import Packet, read_packets
from tools.faults.measure import cost

from .lab import Lab

SETTLE_S = 3.0          # traffic steady before the first event
PRIMARY, BACKUP = "lan1", "lan2"   # alice's bridges in conf/lab/multihomed.toml (0:0:0:a, 0:0:0:b)


def carried_by(packets: list[Packet], lo_ns: int, hi_ns: int, field: str) -> str:
    """The locator of alice's most of the packets received in [lo, hi] travelled with."""
    counts = Counter(getattr(p, field) for p in packets if lo_ns <= p.received_ns <= hi_ns)
    return counts.most_common(1)[0][0] if counts else "-"


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rate", type=click.FloatRange(min=1), default=1000.0, show_default=True, help="Packets/s each way.")
@click.option("--cycles", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Cable pulls (each put back after --hold).")
@click.option("--hold", type=click.FloatRange(min=2), default=5.0, show_default=True,
              help="Seconds between one event and the next.")
@click.option("--lab", "lab_name", default="failover", show_default=True)
@click.option("--json", "json_path", default=None, help="Also write the figures to this JSON file.")
def main(rate, cycles, hold, lab_name, json_path):
    """Pull and put back a multihomed node's primary cable under traffic; print what each cost."""
    params = orchestrate.Params(rate=rate, duration=SETTLE_S + cycles * 2 * hold + 1, move_time=1e6,
                                handoff_time=0, alice_schedule="0:0:0:a,0:0:0:b")
    lab = Lab(lab_name)
    events: list[tuple[str, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        try:
            lab.up(orchestrate.write_topology(out, params, base="multihomed"), timeout=60)
            orchestrate.wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
            gens = orchestrate.start_both_ways(lab, params, out)
            time.sleep(SETTLE_S)
            for _ in range(cycles):
                for up in (False, True):
                    events.append((f"{PRIMARY} {'up' if up else 'down'}", time.time_ns()))
                    lab.set_link("alice", PRIMARY, up)
                    click.echo(f"alice {PRIMARY} {'up' if up else 'down'}", err=True)
                    time.sleep(hold)
            results = {name: gen.result(params.duration + 60) for name, gen in gens.items()}
        finally:
            lab.down()
        at_bob, at_alice = read_packets(out / "at_bob.csv"), read_packets(out / "at_alice.csv")
    rows = []
    window = hold - 0.7
    for i, (event, t) in enumerate(events):
        after = events[i + 1][1] if i + 1 < len(events) else None
        end = (after or t + int(hold * 1e9)) - 700_000_000
        to_bob = cost(at_bob, results["alice"]["start_ns"], rate, t, window_s=window, next_kill_ns=after)
        to_alice = cost(at_alice, results["bob"]["start_ns"], rate, t, window_s=window, next_kill_ns=after)
        rows.append({"event": event, "outage_ms_alice_to_bob": to_bob.outage_ms, "lost_alice_to_bob": to_bob.lost,
                     "outage_ms_bob_to_alice": to_alice.outage_ms, "lost_bob_to_alice": to_alice.lost,
                     # alice's locator: the source of what bob got, the destination of what she got
                     "via_alice_to_bob": carried_by(at_bob, end - 1_000_000_000, end, "src_loc"),
                     "via_bob_to_alice": carried_by(at_alice, end - 1_000_000_000, end, "dst_loc")})
    click.echo(f"{'event':<10} {'outage a->b ms':>15} {'lost a->b':>10} {'outage b->a ms':>15} {'lost b->a':>10}"
               f"  {'then via (a->b, b->a)'}")
    for r in rows:
        click.echo(f"{r['event']:<10} {r['outage_ms_alice_to_bob']:>15} {r['lost_alice_to_bob']:>10} "
                   f"{r['outage_ms_bob_to_alice']:>15} {r['lost_bob_to_alice']:>10}  "
                   f"{r['via_alice_to_bob']}, {r['via_bob_to_alice']}")
    sent = {name: results[name].get("sent") for name in results}
    click.echo(f"sent a->b {sent['alice']}, b->a {sent['bob']}; received a->b {len({p.seq for p in at_bob})}, "
               f"b->a {len({p.seq for p in at_alice})}")
    if json_path:
        Path(json_path).write_text(json.dumps({"rate": rate, "hold_s": hold, "events": rows, "sent": sent}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
