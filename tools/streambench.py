"""`ilnp-bench --streams`: bulk TCP through the stream relay, beside plain TCP on the bridge.

On the lab alice - router - bob: bob serves a bulk source (tools/bulk.py) through
`ilnp-forward serve`, alice reaches it through `ilnp-forward listen`, and a sink on alice
reads it over 1 connection and over 8 at once; the same over plain TCP to bob's
link-local address (the underlay, one hop, no overlay). Then again on a lab whose
links drop 5% of datagrams. Reports MB/s, and the CPU seconds per MB that each side's
relay (the stream actor) spent.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from .lab import Lab, LabError
from .lab import netns

SOURCE_PORT, UNDERLAY_PORT, SERVED, LISTEN = 7000, 7001, 7000, 7100
CLK_TCK = 100


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _relay_pid(lab: Lab, node: str) -> int:
    proc = lab.exec(node, ["ilnp-status", "--json"], capture_output=True, text=True, timeout=10)
    return json.loads(proc.stdout)["stream"]["pid"]


def _sink(lab: Lab, target: str, count: int, timeout: float) -> dict:
    proc = lab.exec("alice", [sys.executable, "-m", "tools.bulk", "sink", "--connect", target,
                              "--count", str(count), "--timeout", str(timeout)],
                    capture_output=True, text=True, timeout=timeout + 30)
    if proc.returncode != 0:
        raise click.ClickException(f"sink failed: {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _scenario(lab: Lab, each: dict[int, int], log, timeout: float = 300) -> list[dict]:
    """Both paths, 1 and 8 connections (each[count] bytes per connection), on an up lab."""
    from .bench import _wait_discovered
    _wait_discovered(lab, "alice", "bob")
    _wait_discovered(lab, "bob", "alice")
    sources = []
    try:
        for i, count in enumerate((1, 8)):  # a source per case: ports 7000/7001, 7002/7003
            for bind, port in (("127.0.0.1", SOURCE_PORT + 2 * i), ("::", UNDERLAY_PORT + 2 * i)):
                sources.append(lab.popen("bob", [sys.executable, "-m", "tools.bulk", "source", "--bind", bind,
                                                 "--port", str(port), "--bytes", str(each[count])],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            for node, argv in (("bob", ["serve", str(SERVED + 2 * i), "--to", f"127.0.0.1:{SOURCE_PORT + 2 * i}"]),
                               ("alice", ["listen", str(LISTEN + 2 * i), "bob", str(SERVED + 2 * i)])):
                lab.exec(node, ["ilnp-forward", *argv], check=True, capture_output=True, timeout=10)
        for src in sources:
            src.stderr.readline()  # ready
        bob_ll = netns.link_local(lab.namespace("bob"))
        rows = []
        for path in ("underlay", "relay"):
            for i, count in enumerate((1, 8)):
                target = (f"[{bob_ll}%eth0]:{UNDERLAY_PORT + 2 * i}" if path == "underlay"
                          else f"127.0.0.1:{LISTEN + 2 * i}")
                pids = {n: _relay_pid(lab, n) for n in ("alice", "bob")}
                cpu0 = {n: _cpu_seconds(p) for n, p in pids.items()}
                got = _sink(lab, target, count, timeout=timeout)
                mb = got["bytes"] / 1e6
                row = {"path": path, **got}
                if path == "relay":
                    row.update({f"cpu_s_per_mb_{n}": round((_cpu_seconds(p) - cpu0[n]) / mb, 4) if mb else None
                                for n, p in pids.items()})
                rows.append(row)
                log(f"  {path:8} {count} conn  {row['mb_per_s']:7.2f} MB/s  {mb:6.1f} MB in {got['seconds']:.2f} s"
                    + (f"  CPU s/MB alice {row['cpu_s_per_mb_alice']} bob {row['cpu_s_per_mb_bob']}"
                       if path == "relay" else "") + (f"  errors {got['errors'][:1]}" if got["errors"] else ""))
        return rows
    finally:
        for src in sources:
            src.kill()
            src.wait()


def run(lab_name: str, total: int, topology, log) -> dict:
    # Under ~10% loss end to end, loss-based congestion control crawls: move a tenth, and
    # the 8 connections share that (same volume as the one).
    plans = {"clean": {1: total, 8: total}, "loss5": {1: total // 10, 8: total // 80}}
    report = {"bytes_per_connection": plans}
    for label, extra in (("clean", ""), ("loss5", "link.emulate.drop = 0.05\n")):
        log(f"streams, {'no loss' if not extra else '5% of datagrams dropped on each link'}:")
        lab = Lab(f"{lab_name}{label[0]}")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                lab.up(topology(Path(tmp), extra))
            except LabError as exc:
                raise click.ClickException(str(exc)) from None
            try:
                report[label] = _scenario(lab, plans[label], log)
            finally:
                lab.down()
    return report
