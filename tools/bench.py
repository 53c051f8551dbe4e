"""`ilnp-bench`: throughput and latency of the overlay, measured beside the raw underlay.

    ilnp-bench [--quick] [--json FILE] [--scenarios underlay,router-1way,...]

By default it runs every scenario of tools/benchsuite.py (underlay, pair-1way,
router-1way, router-2way, proxy-1way, mobility-2way, stream-1, stream-8) in one run and
prints their table; `--json FILE` writes the rows (a list of objects with the keys of
benchsuite.KEYS). `--quick` takes a few minutes, the full run about half an hour.

`--rates R1,R2,...` runs the older sweep instead:
brings up the lab alice (0:0:0:a) - router (a, b, c) - bob (0:0:0:b), then for each rate
sends `--duration` seconds of `--size`-byte sequence-numbered datagrams alice -> bob:
once over plain UDP multicast on the same bridge (the underlay, one hop, no overlay),
once over the overlay through the router (STP). A rate is lossless when every packet
arrived once and in order. Then ilnp-ping alice -> bob through the router for p50/p99.
Prints a table, the highest lossless rates and their ratios to the original (2,400/s)
and to the underlay; --json writes the figures for scripts.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from tools.common import OneLineCommand

from .lab import Lab, LabError
from .benchsuite import FULL, QUICK, SCENARIOS, BenchError, run_all, table
from .latency import rows as latency_rows

ORIGINAL_LOSSLESS_PPS = 2400  # the original single-process overlay on this kind of machine
DEFAULT_RATES = "5000,10000,15000,20000,25000,30000,35000,40000,50000,60000"  # the sweep's, with --rates 
RECV_PORT = 5000


def _topology(tmp: Path, extra_defaults: str = "") -> Path:
    repo = Path(__file__).resolve().parents[1]
    text = (repo / "conf" / "lab" / "router.toml").read_text()
    text = text.replace('conf = "../', f'conf = "{repo}/conf/')
    path = tmp / "bench-router.toml"
    path.write_text("[defaults]\ndiscovery.wait_time = 2.0\n" + extra_defaults + "\n" + text)
    return path


def _wait_discovered(lab: Lab, node: str, host: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = lab.exec(node, ["ilnp-hosts", "--json"], capture_output=True, text=True)
        if proc.returncode == 0 and any(h["hostname"] == host for h in json.loads(proc.stdout)):
            return
        time.sleep(0.1)
    raise click.ClickException(f"{node} did not discover {host} within {timeout:g}s")


def _run_pair(lab: Lab, rate: float, duration: float, size: int, raw: bool, tick: float) -> dict:
    """One measurement: receiver on bob, sender on alice. Returns the figures."""
    gen = [sys.executable, "-m", "tools.trafficgen", "--size", str(size)]
    recv_args = gen + ["--duration", str(duration + 3), "--idle-stop", "1.0"]
    send_args = gen + ["--rate", str(rate), "--duration", str(duration), "--idle-stop", "0.05",
                       "--tick", str(tick)]
    if raw:
        recv_args += ["--raw", "eth0"]
        send_args += ["--raw", "eth0", "--peer", "raw"]
    else:
        recv_args += ["--local-port", str(RECV_PORT)]
        send_args += ["--peer", "bob", "--peer-port", str(RECV_PORT)]
    receiver = lab.popen("bob", recv_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = receiver.stderr.readline()  # the receiver's socket is bound
        if '"ready"' not in ready:
            raise click.ClickException(f"receiver did not start: {ready.strip() or receiver.stderr.read()[-300:]}")
        sender = lab.exec("alice", send_args, capture_output=True, text=True, timeout=duration + 30)
        if sender.returncode != 0:
            raise click.ClickException(f"sender failed: {sender.stderr.strip()[-300:]}")
        sent = json.loads(sender.stdout.strip().splitlines()[-1])
        out, err = receiver.communicate(timeout=duration + 30)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    got = json.loads(out.strip().splitlines()[-1])
    lost = sent["sent"] - got["received"]
    return {"path": "underlay" if raw else "overlay", "rate": rate, "sent": sent["sent"],
            "received": got["received"], "lost": lost, "reordered": got["reordered"],
            "duplicated": got["duplicated"],
            "achieved_pps": round(sent["sent"] / duration),
            "lossless": lost == 0 and got["reordered"] == 0 and got["duplicated"] == 0,
            "kbytes_per_s": round(got["received"] * size / duration / 1000, 1),
            "latency_p50_ms": got.get("latency_p50_ms"), "latency_p99_ms": got.get("latency_p99_ms")}


def _sweep(lab: Lab, rates: list[float], duration: float, size: int, raw: bool, tick: float,
           log) -> list[dict]:
    results, misses = [], 0
    for rate in rates:
        r = _run_pair(lab, rate, duration, size, raw, tick)
        results.append(r)
        log(f"  {r['path']:8} {rate:>8.0f}/s  sent {r['sent']:>7}  lost {r['lost']:>6}  "
            f"reordered {r['reordered']:>4}  dup {r['duplicated']:>3}  "
            f"{'lossless' if r['lossless'] else 'LOSSY':8}  p50 {r['latency_p50_ms']} ms")
        misses = 0 if r["lossless"] else misses + 1
        if misses == 2:  # two lossy rates in a row: higher ones will not do better
            break
    return results


NODES = ("alice", "router", "bob")


def _stages(lab: Lab) -> dict:
    """{node: {actor: {topic: {"wait": ..., "handle": ...}}}} (ilnp-latency --json on each)."""
    out = {}
    for node in NODES:
        proc = lab.exec(node, ["ilnp-latency", "--json"], capture_output=True, text=True, timeout=30)
        out[node] = json.loads(proc.stdout) if proc.returncode == 0 else {}
    return out


def _best(results: list[dict]) -> float:
    """The highest rate lossless with every lower rate lossless too: a lossless step after
    a lossy one is a queue still filling at capacity, not a rate the path sustains."""
    best = 0
    for r in results:  # ascending
        if not r["lossless"]:
            break
        best = r["rate"]
    return best


def run_scenarios(lab_name: str, quick: bool, scenarios: str, json_path: str | None) -> None:
    names = tuple(s.strip() for s in scenarios.split(",") if s.strip())
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown or not names:
        raise click.ClickException(f"unknown scenario {', '.join(unknown) or '(none given)'}; "
                                   f"known: {', '.join(SCENARIOS)}")
    log = lambda line: click.echo(line, err=True)  # noqa: E731 - progress on stderr, figures on stdout
    # SIGTERM (a CI timeout, kill) ends the run like Ctrl-C: the lab up now comes down
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    try:
        rows = run_all(QUICK if quick else FULL, lab_name, log, names)
    except (BenchError, LabError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in table(rows):
        click.echo(line)
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1) + "\n")


@click.command(cls=OneLineCommand)
@click.option("--lab", "lab_name", default="bench", show_default=True, help="Lab name to create.")
@click.option("--quick", is_flag=True, help="Every scenario, short trials (a few minutes).")
@click.option("--scenarios", default=",".join(SCENARIOS), show_default=True,
              help="The scenarios to run, separated by commas.")
@click.option("--rates", default=None, help="Instead of the scenarios: sweep these packets/s, ascending "
              f"(e.g. {DEFAULT_RATES}).")
@click.option("--duration", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="Seconds per rate.")
@click.option("--size", type=click.IntRange(16, 1396), default=1396, show_default=True,
              help="STP payload bytes (1396 fills the 1440-byte MTU).")
@click.option("--ping-count", type=click.IntRange(min=0), default=200, show_default=True)
@click.option("--tick", type=click.FloatRange(min=0), default=0.001, show_default=True,
              help="The sender writes what is due every TICK seconds as one burst (0: each packet alone).")
@click.option("--no-underlay", is_flag=True, help="Skip the raw underlay baseline.")
@click.option("--json", "json_path", default=None, help="Also write the figures to this file.")
@click.option("--streams", is_flag=True,
              help="Instead: bulk TCP through the stream relay (1 and 8 connections, with and without 5% loss).")
@click.option("--stream-mb", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="With --streams: MB per connection.")
def main(lab_name, quick, scenarios, rates, duration, size, ping_count, tick, no_underlay, json_path, streams,
         stream_mb):
    """Measure the overlay's lossless rates, latency, CPU and memory beside the raw underlay."""
    if not streams and rates is None:
        return run_scenarios(lab_name, quick, scenarios, json_path)
    if streams:
        from .streambench import run as run_streams
        log = lambda line: click.echo(line, err=True)  # noqa: E731
        report = run_streams(lab_name, stream_mb * 1_000_000, _topology, log)
        for label in ("clean", "loss5"):
            for row in report[label]:
                click.echo(f"{label:6} {row['path']:8} {row['connections']} conn {row['mb_per_s']:7.2f} MB/s"
                           + (f"  CPU s/MB alice {row['cpu_s_per_mb_alice']} bob {row['cpu_s_per_mb_bob']}"
                              if row["path"] == "relay" else ""))
        if json_path:
            Path(json_path).write_text(json.dumps(report, indent=1))
        return
    try:
        rate_list = [float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        raise click.ClickException(f"--rates must be numbers separated by commas, got {rates!r}") from None
    if not rate_list or any(r <= 0 for r in rate_list):
        raise click.ClickException("--rates needs at least one positive rate")
    log = lambda line: click.echo(line, err=True)  # noqa: E731 - progress on stderr, figures on stdout
    lab = Lab(lab_name)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            lab.up(_topology(Path(tmp)))
        except LabError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            _wait_discovered(lab, "alice", "bob")
            _wait_discovered(lab, "bob", "alice")
            report = {"size": size, "duration_s": duration, "tick_s": tick,
                      "original_lossless_pps": ORIGINAL_LOSSLESS_PPS}
            if not no_underlay:
                log("underlay (plain UDP multicast alice -> bob on the same bridge):")
                report["underlay"] = _sweep(lab, rate_list, duration, size, True, tick, log)
            log("overlay (STP alice -> router -> bob):")
            report["overlay"] = _sweep(lab, rate_list, duration, size, False, tick, log)
            if ping_count:
                for node in NODES:  # the stage figures of the ping alone
                    lab.exec(node, ["ilnp-latency", "--reset"], capture_output=True, timeout=30)
                proc = lab.exec("alice", ["ilnp-ping", "bob", "-c", str(ping_count), "-i", "0.01", "--json"],
                                capture_output=True, text=True, timeout=ping_count * 0.01 + 30)
                report["ping"] = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr.strip()}
                report["stages"] = _stages(lab)
        finally:
            lab.down()
    best_overlay = _best(report["overlay"])
    summary = {"overlay_lossless_pps": best_overlay,
               "overlay_lossless_kBps": round(best_overlay * size / 1000, 1),
               "vs_original": round(best_overlay / ORIGINAL_LOSSLESS_PPS, 2)}
    if "underlay" in report:
        best_underlay = _best(report["underlay"])
        summary["underlay_lossless_pps"] = best_underlay
        summary["vs_underlay"] = round(best_overlay / best_underlay, 3) if best_underlay else None
    report["summary"] = summary
    rows = [(node, *row) for node, stages in report.get("stages", {}).items() for row in latency_rows(stages)]
    report["stage_rows"] = [r for r in rows if r[3] >= max(1, ping_count // 2)]  # the ping's path
    click.echo(f"overlay lossless: {best_overlay:.0f} packets/s of {size} B "
               f"({summary['overlay_lossless_kBps']} kB/s), {summary['vs_original']}x the original's "
               f"{ORIGINAL_LOSSLESS_PPS}/s")
    if "underlay" in report:
        click.echo(f"underlay lossless (same sender, plain UDP): {summary['underlay_lossless_pps']:.0f} packets/s; "
                   f"overlay/underlay = {summary['vs_underlay']}")
    ping = report.get("ping", {})
    if "p50_ms" in ping:
        click.echo(f"ilnp-ping alice -> bob via router: p50 {ping['p50_ms']} ms, p99 {ping['p99_ms']} ms, "
                   f"loss {ping['loss_pct']}%")
        click.echo("  per stage during the ping (log2 buckets: 512 means 256-512 us; wait = the bus hop "
                   "and the wake-up, handle = the actor's work):")
        for node, actor, topic, count, w50, w99, h50, h99 in report.get("stage_rows", []):
            click.echo(f"  {node:7} {actor:9} {topic:18} {count:>6}  wait p50 {w50!s:>7} p99 {w99!s:>7}"
                       f"  handle p50 {h50!s:>6} p99 {h99!s:>6}")
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
