"""Where each data-path actor spends its time under load: py-spy on every link and router
of the lab alice - router - bob while alice sends to bob.

    pip install py-spy        # or: pip install -e '.[profile]'
    python -m tools.profile_actors --rate 10000 --seconds 8 [--out DIR]

Prints, per process, the share of samples spent waiting in poll (idle) and the lines that
took the most samples themselves (a line in a system call, e.g. sendto, carries the
kernel's time too); DIR keeps py-spy's raw stacks (flamegraph.pl or speedscope read them).
"""
from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import click

from tools.common import OneLineCommand

from .benchsuite import QUICK, BenchError, Flow, UpLab, _status, _topology, trial

PROCESSES = [(node, program) for node in ("alice", "router", "bob") for program in ("link", "router")]
IDLE_MARKERS = ("poll", "select")


def summarize(raw: str, top: int) -> dict:
    """py-spy's raw (collapsed) stacks -> idle share and the busiest lines by own samples."""
    own: collections.Counter = collections.Counter()
    total = idle = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = stack.split(";")[-1]
        name, _, where = leaf.partition(" (")
        if any(marker in name.lower() for marker in IDLE_MARKERS):
            idle += n
            continue
        own[f"{name} ({where.rsplit('/', 1)[-1]}"] += n
    return {"samples": total, "idle_pct": round(100 * idle / total, 1) if total else None,
            "top": [(round(100 * n / total, 1), name) for name, n in own.most_common(top)]}


@click.command(cls=OneLineCommand)
@click.option("--rate", type=click.FloatRange(min=1), default=10_000.0, show_default=True, help="Packets/s alice -> bob.")
@click.option("--seconds", type=click.FloatRange(min=1), default=8.0, show_default=True, help="Seconds to sample.")
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True, help="Lines shown per process.")
@click.option("--out", "out_dir", default=None, help="Keep py-spy's raw stacks here.")
@click.option("--lab", "lab_name", default="prof", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(rate, seconds, top, out_dir, lab_name, as_json):
    """Profile the data-path actors of alice, the router and bob under load."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise click.ClickException("py-spy is not installed (pip install py-spy)")
    out = Path(out_dir or tempfile.mkdtemp(prefix="ilnp-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        with UpLab(lab_name, lambda tmp: _topology(tmp, "router")) as lab:
            pids = {f"{n}-{p}": _status(lab, n)[p]["supervisor"]["pid"] for n, p in PROCESSES}
            spies = [subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200",
                                       "--nonblocking", "-f", "raw", "-o", str(out / f"{name}.txt")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                     for name, pid in pids.items()]
            traffic = trial(lab, [Flow("alice", "bob", "overlay")], rate, replace(QUICK, trial_s=seconds + 2), [])
            for s in spies:
                s.wait(seconds + 30)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
    report = {"rate": rate, "sent": traffic["sent"], "lost": traffic["lost"],
              "processes": {name: summarize((out / f"{name}.txt").read_text(), top)
                            for name in pids if (out / f"{name}.txt").exists()}}
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    click.echo(f"{rate:g}/s alice -> router -> bob: sent {traffic['sent']}, lost {traffic['lost']}; raw stacks in {out}")
    for name, s in report["processes"].items():
        click.echo(f"{name}: {s['samples']} samples, idle (poll) {s['idle_pct']}%")
        for pct, line in s["top"]:
            click.echo(f"  {pct:5.1f}%  {line}")


if __name__ == "__main__":
    main()
