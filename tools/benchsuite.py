"""ilnp-bench's scenarios: every figure of the overlay beside the raw underlay's, one run.

    rows = run_all(plan, lab_prefix, log)      # a list of dicts with KEYS, one per scenario

Scenarios (SCENARIOS), each on a lab this module brings up and down:
- `underlay`: plain UDP multicast alice -> bob on the router lab's bridge (the same sender
  program, no overlay); its round trip is plain UDP between link-local addresses.
- `pair-1way`: STP alice -> bob on one virtual network (the pair lab: no router).
- `router-1way`, `router-2way`: STP alice -> router -> bob, one way, then both at once
  (lossless_pps is per direction).
- `proxy-1way`: plain UDP sender -> ilnp-map -> overlay -> ilnp-map -> plain UDP receiver.
- `mobility-2way`: both ways at a fixed rate while alice moves a -> b -> c (the mobility
  experiment, tools/experiment); lossless_pps is that rate when nothing was lost.
- `stream-1`, `stream-8`: bulk TCP through the stream relay, 1 and 8 connections, beside
  plain TCP on the bridge (tools/streambench.py).

A lossless rate is found by doubling from `start_pps` until a trial loses, reorders or
duplicates anything, then bisecting `refine` times; the latency at 80% is a ping while
the same flows run at 80% of that rate. CPU is every process of every node of the lab
(actors and supervisord), per packet delivered, during the last lossless trial.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .experiment.orchestrate import ExperimentError, Params
from .experiment import orchestrate
from .lab import Lab, LabError, netns
from . import streambench

KEYS = ("scenario", "lossless_pps", "mb_per_s", "cpu_us_per_packet", "rtt_p50_ms", "rtt_p99_ms",
        "rtt_p50_at_80pct_ms", "rtt_p99_at_80pct_ms", "reordered", "ratio_to_raw",
        "pss_mb_per_node", "rss_mb_per_node")
SCENARIOS = ("underlay", "pair-1way", "router-1way", "router-2way", "proxy-1way", "mobility-2way",
             "stream-1", "stream-8")
CLK_TCK = 100
ECHO_PORT = 7007           # udpping's echo on bob
PROXY_APP_PORTS = (5000, 6000)   # the proxy flow: alice's app port, bob's app port
PROXY_PING_PORTS = (5002, 6002)  # the proxy round trip: alice's pinger, bob's echo
Log = Callable[[str], None]


class BenchError(RuntimeError):
    """A scenario could not run (not: it ran and lost packets)."""


@dataclass(frozen=True)
class Plan:
    trial_s: float        # seconds of sending per trial
    start_pps: float      # first rate tried
    max_pps: float        # no trial above this
    refine: int           # bisection steps after the doubling
    ping_count: int       # probes at light load and at 80%
    size: int             # datagram payload bytes (1396 fills the 1440-byte MTU)
    stream_bytes: int     # per connection, stream-1 and stream-8
    mobility: Params      # mobility-2way's experiment


QUICK = Plan(trial_s=1.0, start_pps=10_000, max_pps=160_000, refine=0, ping_count=30, size=1396,
             stream_bytes=5_000_000, mobility=Params(rate=5000, duration=7, move_time=3, handoff_time=1.5))
FULL = Plan(trial_s=5.0, start_pps=2500, max_pps=160_000, refine=3, ping_count=500, size=1396,
            stream_bytes=50_000_000, mobility=Params(rate=10_000, duration=30, move_time=6, handoff_time=3))


def empty_row(scenario: str) -> dict:
    return {key: None for key in KEYS} | {"scenario": scenario}


# ------------------------------------------------------------------ labs


def _topology(tmp: Path, base: str) -> Path:
    repo = Path(__file__).resolve().parents[1]
    text = (repo / "conf" / "lab" / f"{base}.toml").read_text()
    text = text.replace('conf = "../', f'conf = "{repo}/conf/')
    path = tmp / f"bench-{base}.toml"
    path.write_text("[defaults]\ndiscovery.wait_time = 2.0\n\n" + text)
    return path


class UpLab:
    """A lab up for the time of a `with`, its nodes discovered."""

    def __init__(self, name: str, topology: Callable[[Path], Path], pairs=(("alice", "bob"), ("bob", "alice"))):
        self.lab, self.topology, self.pairs = Lab(name), topology, pairs
        self._tmp = None

    def __enter__(self) -> Lab:
        self._tmp = tempfile.TemporaryDirectory()
        try:
            self.lab.up(self.topology(Path(self._tmp.name)))
            orchestrate.wait_discovered(self.lab, list(self.pairs))
        except (LabError, ExperimentError) as exc:
            self.__exit__()
            raise BenchError(str(exc)) from None
        except BaseException:  # SIGTERM or Ctrl-C while it comes up: it comes down again
            self.__exit__()
            raise
        return self.lab

    def __exit__(self, *_exc) -> None:
        try:
            self.lab.down()
        finally:
            self._tmp.cleanup()


def _status(lab: Lab, node: str) -> dict:
    proc = lab.exec(node, ["ilnp-status", "--json"], capture_output=True, text=True, timeout=30)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {}


def _node_pids(lab: Lab) -> list[int]:
    """Every process of every node (programs and supervisord): the CPU the overlay costs."""
    pids = []
    for node in lab.nodes():
        for entry in _status(lab, node).values():
            pid = entry.get("supervisor", {}).get("pid") if isinstance(entry, dict) else None
            if pid:
                pids.append(pid)
    return pids


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # restarted meanwhile: its successor is not counted
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def _memory(lab: Lab) -> dict:
    """PSS and RSS per node, MB, the mean over the lab's nodes."""
    found = [_status(lab, n).get("supervisord", {}).get("node_memory") for n in lab.nodes()]
    found = [m for m in found if m]
    if not found:
        return {"pss_mb_per_node": None, "rss_mb_per_node": None}
    return {"pss_mb_per_node": round(sum(m["pss_mb"] for m in found) / len(found), 1),
            "rss_mb_per_node": round(sum(m["rss_mb"] for m in found) / len(found), 1)}


# ------------------------------------------------------------------ traffic


@dataclass(frozen=True)
class Flow:
    src: str
    dst: str
    kind: str  # "raw" (plain UDP multicast), "overlay" (STP), "udp" (through the UDP proxy)


def _flow_argv(flow: Flow, index: int, rate: float, seconds: float, plan: Plan, proxy_port: int | None):
    """(receiver argv, sender argv) of tools.trafficgen for one flow."""
    gen = [sys.executable, "-m", "tools.trafficgen", "--size", str(plan.size)]
    recv = gen + ["--duration", str(seconds + 15), "--idle-stop", "0.5"]
    send = gen + ["--rate", str(rate), "--duration", str(seconds), "--idle-stop", "0.05", "--tick", "0.001"]
    if flow.kind == "raw":
        return recv + ["--raw", "eth0"], send + ["--raw", "eth0", "--peer", "raw"]
    if flow.kind == "udp":
        app_src, app_dst = PROXY_APP_PORTS
        return (recv + ["--udp", "none", "--local-port", str(app_dst)],
                send + ["--udp", f"127.0.0.1:{proxy_port}", "--local-port", str(app_src)])
    port = 5000 + index
    return (recv + ["--local-port", str(port)],
            send + ["--local-port", str(6000 + index), "--peer", flow.dst, "--peer-port", str(port)])


def _last_json(text: str, what: str) -> dict:
    lines = text.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise BenchError(f"{what} printed no result") from None


def trial(lab: Lab, flows: list[Flow], rate: float, plan: Plan, pids: list[int], seconds: float | None = None,
          during: Callable[[], dict] | None = None, proxy_port: int | None = None) -> dict:
    """All `flows` at `rate` each, at once; `during` runs meanwhile and its result is kept."""
    seconds = seconds or plan.trial_s
    receivers, senders, extra = [], [], None
    try:
        argvs = [_flow_argv(f, i, rate, seconds, plan, proxy_port) for i, f in enumerate(flows)]
        for flow, (recv, _send) in zip(flows, argvs):
            receivers.append(lab.popen(flow.dst, recv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for flow, proc in zip(flows, receivers):
            ready = proc.stderr.readline()
            if '"ready"' not in ready:
                raise BenchError(f"receiver on {flow.dst} did not start: {ready.strip() or proc.stderr.read()[-300:]}")
        cpu0 = _cpu_seconds(pids)
        for flow, (_recv, send) in zip(flows, argvs):
            senders.append(lab.popen(flow.src, send, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        if during:
            time.sleep(min(0.5, seconds / 4))  # the load is on
            extra = during()
        sent = []
        for flow, proc in zip(flows, senders):
            out, err = proc.communicate(timeout=seconds + 60)
            if proc.returncode != 0:
                raise BenchError(f"sender on {flow.src} failed: {err.strip()[-300:]}")
            sent.append(_last_json(out, f"sender on {flow.src}"))
        got = [_last_json(proc.communicate(timeout=seconds + 60)[0], f"receiver on {flow.dst}")
               for flow, proc in zip(flows, receivers)]
        cpu = _cpu_seconds(pids) - cpu0
    finally:
        for proc in receivers + senders:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    total_sent = sum(s["sent"] for s in sent)
    received = sum(g["received"] for g in got)
    reordered = sum(g["reordered"] for g in got)
    duplicated = sum(g["duplicated"] for g in got)
    achieved = min(s["sent"] for s in sent) / seconds  # a flow's sender may not keep up
    return {"rate": rate, "achieved_pps": round(achieved), "sent": total_sent, "received": received, "lost": total_sent - received,
            "reordered": reordered, "duplicated": duplicated,
            "lossless": total_sent == received and not reordered and not duplicated and total_sent > 0,
            "cpu_us_per_packet": round(cpu * 1e6 / received, 1) if received and pids else None,
            "during": extra}


def search(run_trial: Callable[[float], dict], plan: Plan, log: Log, label: str) -> tuple[float, dict | None]:
    """(highest lossless rate found, its trial): double until lossy, then bisect. A lossless
    trial whose sender fell short of the rate asked ends the search at what it achieved
    (the sending program is the limit there: `sender_bound` in the trial)."""
    good, good_trial, bad = 0.0, None, None
    rate = plan.start_pps

    def attempt(r: float) -> bool:
        nonlocal good, good_trial, bad
        t = run_trial(r)
        t["sender_bound"] = t["achieved_pps"] < 0.9 * r
        log(f"  {label:13} {r:>8.0f}/s  sent {t['sent']:>7} ({t['achieved_pps']}/s)  lost {t['lost']:>6}"
            f"  reordered {t['reordered']:>4}  dup {t['duplicated']:>3}  {'lossless' if t['lossless'] else 'LOSSY'}")
        if t["lossless"]:
            good, good_trial = min(r, t["achieved_pps"]), t
        else:
            bad = r
        return t["lossless"] and not t["sender_bound"]

    while rate <= plan.max_pps and attempt(rate):
        rate *= 2
    if good_trial and good_trial["sender_bound"]:
        return good, good_trial
    if good == 0 and bad is not None:  # lossy from the start: halve a few times
        for _ in range(3):
            if attempt(bad / 2):
                break
    for _ in range(plan.refine):
        if bad is None or bad - good <= max(250.0, good * 0.05):
            break
        attempt(round((good + bad) / 2, -2))
    return good, good_trial


# ------------------------------------------------------------------ round trips


def ilnp_ping(lab: Lab, src: str, dst: str, count: int) -> dict:
    proc = lab.exec(src, ["ilnp-ping", dst, "-c", str(count), "-i", "0.01", "--json"],
                    capture_output=True, text=True, timeout=count * 0.05 + 30)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {"error": proc.stderr.strip()[-200:]}


def udp_ping(lab: Lab, src: str, host: str, port: int, count: int, local_port: int = 0) -> dict:
    proc = lab.exec(src, [sys.executable, "-m", "tools.udpping", "ping", host, str(port), "-c", str(count),
                          "-i", "0.01", "--local-port", str(local_port)],
                    capture_output=True, text=True, timeout=count * 1.1 + 30)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {"error": proc.stderr.strip()[-200:]}


class Echo:
    """udpping's echo server on a node, for the time of a `with`."""

    def __init__(self, lab: Lab, node: str, port: int, bind: str = "::"):
        self.proc = lab.popen(node, [sys.executable, "-m", "tools.udpping", "echo", "--port", str(port),
                                     "--bind", bind], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def __enter__(self):
        ready = self.proc.stderr.readline()
        if '"ready"' not in ready:
            self.__exit__()
            raise BenchError(f"echo server did not start: {ready.strip()}")
        return self

    def __exit__(self, *_exc) -> None:
        self.proc.kill()
        self.proc.wait()


def _rtt(row: dict, result: dict, suffix: str = "") -> None:
    row[f"rtt_p50{suffix}_ms"] = result.get("p50_ms")
    row[f"rtt_p99{suffix}_ms"] = result.get("p99_ms")


# ------------------------------------------------------------------ scenarios


def datagram_scenario(lab: Lab, name: str, flows: list[Flow], ping: Callable[[int], dict], plan: Plan,
                      log: Log, proxy_port: int | None = None) -> dict:
    """The lossless rate of `flows`, the round trip at light load and at 80% of it."""
    row = empty_row(name)
    pids = [] if flows[0].kind == "raw" else _node_pids(lab)
    run_trial = lambda rate: trial(lab, flows, rate, plan, pids, proxy_port=proxy_port)  # noqa: E731
    best, best_trial = search(run_trial, plan, log, name)
    row["lossless_pps"] = best
    row["mb_per_s"] = round(best * plan.size / 1e6, 2)
    row["reordered"] = 0 if best else None
    row["cpu_us_per_packet"] = best_trial["cpu_us_per_packet"] if best_trial else None
    row["sender_bound"] = bool(best_trial and best_trial["sender_bound"])
    _rtt(row, ping(plan.ping_count))
    if best:
        loaded = trial(lab, flows, round(best * 0.8), plan, pids, seconds=max(plan.trial_s, plan.ping_count * 0.012 + 1),
                       during=lambda: ping(plan.ping_count), proxy_port=proxy_port)
        _rtt(row, loaded["during"] or {}, "_at_80pct")
        row["lost_at_80pct"] = loaded["lost"]
    if pids:
        row.update(_memory(lab))
    log(f"  {name}: lossless {best:.0f}/s, rtt p50 {row['rtt_p50_ms']} ms, at 80% {row['rtt_p50_at_80pct_ms']} ms")
    return row


def _proxy_maps(lab: Lab) -> int:
    """alice's app ports <-> bob's over the UDP proxy; returns alice's proxy port."""
    port = None
    for a_port, b_port in (PROXY_APP_PORTS, PROXY_PING_PORTS):
        for node, local, peer, remote in (("alice", a_port, "bob", b_port), ("bob", b_port, "alice", a_port)):
            proc = lab.exec(node, ["ilnp-map", str(local), peer, str(remote), "--replace", "--json"],
                            capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                raise BenchError(f"ilnp-map on {node}: {proc.stderr.strip()}")
            if node == "alice":
                port = json.loads(proc.stdout)["proxy_port"]
    return port


def router_scenarios(plan: Plan, prefix: str, wanted: set[str], log: Log) -> list[dict]:
    """Every scenario of the lab alice - router - bob, on one lab (streams last)."""
    rows = []
    with UpLab(f"{prefix}r", lambda tmp: _topology(tmp, "router")) as lab:
        if "underlay" in wanted:
            log("underlay: plain UDP multicast alice -> bob on the same bridge, no overlay")
            bob_ll = netns.link_local(lab.namespace("bob"))
            with Echo(lab, "bob", ECHO_PORT):
                rows.append(datagram_scenario(lab, "underlay", [Flow("alice", "bob", "raw")],
                                              lambda n: udp_ping(lab, "alice", f"{bob_ll}%eth0", ECHO_PORT, n),
                                              plan, log))
        overlay_ping = lambda n: ilnp_ping(lab, "alice", "bob", n)  # noqa: E731
        if "router-1way" in wanted:
            log("router-1way: STP alice -> router -> bob")
            rows.append(datagram_scenario(lab, "router-1way", [Flow("alice", "bob", "overlay")],
                                          overlay_ping, plan, log))
        if "router-2way" in wanted:
            log("router-2way: STP alice -> router -> bob and back, at once (rates per direction)")
            rows.append(datagram_scenario(lab, "router-2way", [Flow("alice", "bob", "overlay"),
                                                               Flow("bob", "alice", "overlay")],
                                          overlay_ping, plan, log))
        if "proxy-1way" in wanted:
            log("proxy-1way: UDP app -> ilnp-map -> overlay via the router -> ilnp-map -> UDP app")
            proxy_port = _proxy_maps(lab)
            with Echo(lab, "bob", PROXY_PING_PORTS[1], bind="127.0.0.1"):
                rows.append(datagram_scenario(
                    lab, "proxy-1way", [Flow("alice", "bob", "udp")],
                    lambda n: udp_ping(lab, "alice", "127.0.0.1", proxy_port, n, local_port=PROXY_PING_PORTS[0]),
                    plan, log, proxy_port=proxy_port))
        if wanted & {"stream-1", "stream-8"}:
            rows += stream_scenarios(lab, plan, wanted, log)
    return rows


def pair_scenario(plan: Plan, prefix: str, log: Log) -> dict:
    log("pair-1way: STP alice -> bob on one network, no router")
    with UpLab(f"{prefix}p", lambda tmp: _topology(tmp, "pair")) as lab:
        return datagram_scenario(lab, "pair-1way", [Flow("alice", "bob", "overlay")],
                                 lambda n: ilnp_ping(lab, "alice", "bob", n), plan, log)


def mobility_scenario(plan: Plan, prefix: str, log: Log) -> dict:
    params = plan.mobility
    log(f"mobility-2way: {params.rate:g}/s each way, alice moving every {params.move_time:g} s")
    row = empty_row("mobility-2way")
    with UpLab(f"{prefix}m", lambda tmp: orchestrate.write_topology(tmp, params)) as lab:
        pids = _node_pids(lab)
        cpu0 = _cpu_seconds(pids)
        with tempfile.TemporaryDirectory() as out:
            try:
                summary = orchestrate.run(lab, params, Path(out), log=lambda s: None, plots=False)
            except ExperimentError as exc:
                raise BenchError(str(exc)) from None
        cpu = _cpu_seconds(pids) - cpu0
        row.update(_memory(lab))
    dirs = summary["directions"].values()
    received = sum(d["received"] for d in dirs)
    row.update({"lossless_pps": params.rate if summary["lossless"] else 0,
                "mb_per_s": round(params.rate * plan.size / 1e6, 2) if summary["lossless"] else 0,
                "reordered": sum(d["reordered"] for d in dirs),
                "lost": sum(d["lost"] for d in dirs), "duplicated": sum(d["duplicated"] for d in dirs),
                "rate_pps": params.rate, "moves": len(summary["moves"]),
                "cpu_us_per_packet": round(cpu * 1e6 / received, 1) if received else None})
    log(f"  mobility-2way: lost {row['lost']}, reordered {row['reordered']}, duplicated {row['duplicated']}"
        f" across {row['moves']} moves")
    return row


def stream_scenarios(lab: Lab, plan: Plan, wanted: set[str], log: Log) -> list[dict]:
    log(f"stream-1, stream-8: bulk TCP through the stream relay, {plan.stream_bytes / 1e6:g} MB a connection")
    got = streambench._scenario(lab, {1: plan.stream_bytes, 8: plan.stream_bytes}, log)
    memory = _memory(lab)
    rows = []
    for count in (1, 8):
        name = f"stream-{count}"
        if name not in wanted:
            continue
        relay = next(r for r in got if r["path"] == "relay" and r["connections"] == count)
        plain = next(r for r in got if r["path"] == "underlay" and r["connections"] == count)
        row = empty_row(name) | memory
        row["mb_per_s"] = relay["mb_per_s"]
        row["ratio_to_raw"] = round(relay["mb_per_s"] / plain["mb_per_s"], 3) if plain["mb_per_s"] else None
        row["cpu_s_per_mb"] = {n: relay.get(f"cpu_s_per_mb_{n}") for n in ("alice", "bob")}
        row["raw_mb_per_s"] = plain["mb_per_s"]
        rows.append(row)
    return rows


def run_all(plan: Plan, prefix: str, log: Log, only: tuple[str, ...] = SCENARIOS) -> list[dict]:
    """Every scenario of `only`, in SCENARIOS order; ratios to the underlay's rate."""
    wanted = set(only)
    rows: list[dict] = []
    started = time.monotonic()
    if wanted & {"underlay", "router-1way", "router-2way", "proxy-1way", "stream-1", "stream-8"}:
        rows += router_scenarios(plan, prefix, wanted, log)
    if "pair-1way" in wanted:
        rows.append(pair_scenario(plan, prefix, log))
    if "mobility-2way" in wanted:
        rows.append(mobility_scenario(plan, prefix, log))
    raw = next((r["lossless_pps"] for r in rows if r["scenario"] == "underlay"), None)
    for row in rows:
        if row["lossless_pps"] is not None and raw:
            row["ratio_to_raw"] = round(row["lossless_pps"] / raw, 3)
    rows.sort(key=lambda r: SCENARIOS.index(r["scenario"]))
    log(f"all scenarios in {time.monotonic() - started:.0f} s")
    return rows


def table(rows: list[dict]) -> list[str]:
    """The rows as a text table (figures beside the underlay's)."""
    cols = [("scenario", "scenario", 13), ("lossless_pps", "lossless/s", 10), ("mb_per_s", "MB/s", 7),
            ("ratio_to_raw", "x raw", 6), ("cpu_us_per_packet", "CPU us/pkt", 10),
            ("rtt_p50_ms", "rtt p50", 8), ("rtt_p99_ms", "p99", 7), ("rtt_p50_at_80pct_ms", "80%: p50", 8),
            ("rtt_p99_at_80pct_ms", "p99", 7), ("reordered", "reord", 5), ("pss_mb_per_node", "PSS MB", 6),
            ("rss_mb_per_node", "RSS MB", 6)]
    lines = ["  ".join(f"{title:>{w}}" for _key, title, w in cols)]
    for row in rows:
        cells = []
        for key, _title, w in cols:
            v = row.get(key)
            text = "-" if v is None else (f"{v:.0f}" if isinstance(v, float) and key == "lossless_pps" else str(v))
            cells.append(f"{text:>{w}}")
        lines.append("  ".join(cells))
    return lines
