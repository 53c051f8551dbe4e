"""Running the mobility experiment on a lab: topology, traffic both ways, transitions, results.

    params = Params(rate=100, duration=30, move_time=6, handoff_time=3)
    path = write_topology(tmp_dir, params)         # conf/lab/router.toml + the schedules
    lab.up(path)                                   # (the CLI does this and the down)
    summary = run(lab, params, out_dir, log=print) # writes out_dir/summary.json, CSVs, PNGs

The mobile node moves by its own schedule (locators.schedule / move_time / handoff_time in
its config, as the dissertation's node did); a watcher on each mobile node's bus records
every state.locators it publishes, so the figures know when each move and handoff was.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import tomli_w

from actors.proto.addr import format64
from actors.proto import topics
from bus.client import BusClient, RequestError, request
from bus.rundir import RunDir

from . import analysis
from .analysis import Timeline, Transition

REPO = Path(__file__).resolve().parents[2]
ALICE_PORT = 5001   # STP port of alice's generator
BOB_PORT = 5000
FAST_DISCOVERY = 2.0  # discovery wait_time (s) on the lab: names resolve within a second or two


class ExperimentError(RuntimeError):
    """The experiment could not run (not: it ran and lost packets)."""


@dataclass(frozen=True)
class Params:
    rate: float = 100.0          # packets/s, each direction
    duration: float = 60.0       # seconds of sending
    move_time: float = 20.0      # seconds between moves
    handoff_time: float = 10.0   # seconds both sets are held (0: hard handoff)
    size: int = 1396             # STP payload bytes (fills the 1440-byte MTU)
    both_mobile: bool = False    # bob moves too (the dissertation's further work)
    alice_schedule: str = "0:0:0:a-0:0:0:b-0:0:0:c"
    bob_schedule: str = "0:0:0:b-0:0:0:c-0:0:0:a"  # only with both_mobile

    @property
    def mobile(self) -> list[str]:
        return ["alice", "bob"] if self.both_mobile else ["alice"]

    def node_overrides(self) -> dict[str, dict]:
        """Per-node `set` of the lab topology (conf/lab/router.toml's node names)."""
        moving = {"move_time": self.move_time, "handoff_time": self.handoff_time}
        out = {"alice": {"locators": {"schedule": self.alice_schedule, **moving}}}
        if self.both_mobile:
            out["bob"] = {"locators": {"schedule": self.bob_schedule, **moving}}
        return out


def write_topology(directory: Path, params: Params, base: str = "router") -> Path:
    """conf/lab/BASE.toml with absolute conf paths, fast discovery and the schedules."""
    src = REPO / "conf" / "lab" / f"{base}.toml"
    topo = tomllib.loads(src.read_text())
    defaults = topo.setdefault("defaults", {})
    defaults.setdefault("discovery", {})["wait_time"] = FAST_DISCOVERY
    overrides = params.node_overrides()
    for name, node in topo["nodes"].items():
        node["conf"] = str((src.parent / node["conf"]).resolve())
        for section, values in overrides.get(name, {}).items():
            node.setdefault("set", {}).setdefault(section, {}).update(values)
    path = Path(directory) / f"experiment-{base}.toml"
    path.write_text(tomli_w.dumps(topo))
    return path


# ---------------------------------------------------------------- watching moves


class LocatorWatcher(threading.Thread):
    """Records a node's state.locators as Transitions (wall time of receipt, ns)."""

    def __init__(self, node: str, run_dir: Path):
        super().__init__(name=f"watch-{node}", daemon=True)
        self.node, self.run_dir = node, run_dir
        self.transitions: list[Transition] = []
        self.ready = threading.Event()
        self.error: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            client = BusClient(RunDir(self.run_dir), name="experiment")
            client.subscribe(topics.STATE_LOCATORS)
            client.wait_ready(10.0)  # our hello makes mobility republish its state
        except RequestError as exc:
            self.error = str(exc)
            self.ready.set()
            return
        self.ready.set()
        try:
            while not self._halt.is_set():
                frame = client.recv(0.2)
                if frame is None or frame[0] != topics.STATE_LOCATORS:
                    continue
                body = frame[1]
                cur = ",".join(format64(x) for x in body.get("cur", ()))
                leaving = ",".join(format64(x) for x in body.get("leaving", ()))
                last = self.transitions[-1] if self.transitions else None
                if last is None or (last.cur, last.leaving) != (cur, leaving):
                    self.transitions.append(Transition(self.node, time.time_ns(), cur, leaving))
        finally:
            client.close()

    def current(self) -> Transition | None:
        return self.transitions[-1] if self.transitions else None

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


# ---------------------------------------------------------------- traffic


class Generator:
    """tools.trafficgen on one node, sending to and receiving from the other."""

    def __init__(self, lab, node: str, peer: str, port: int, peer_port: int, params: Params, csv_path: Path):
        argv = [sys.executable, "-m", "tools.trafficgen", "--local-port", str(port), "--peer", peer,
                "--peer-port", str(peer_port), "--rate", repr(params.rate), "--duration", repr(params.duration),
                "--size", str(params.size), "--csv", str(csv_path), "--progress", "--wait-go",
                "--idle-stop", "2.0", "--resolve-timeout", "15"]
        self.node = node
        self.csv_path = csv_path
        self.proc = lab.popen(node, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        self.ready = threading.Event()
        self.progress: dict = {}
        self.stderr_tail: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, name=f"gen-{node}", daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            line = line.strip()
            try:
                msg = json.loads(line)
            except ValueError:
                self.stderr_tail = (self.stderr_tail + [line])[-5:]
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get("ready"):
                self.ready.set()
            elif "progress_s" in msg:
                self.progress = msg
        self.ready.set()  # exited: whoever waits must look at the process

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ExperimentError(f"traffic generator on {self.node} did not finish within {timeout:g}s") from None
        self._reader.join(timeout=2)
        lines = out.strip().splitlines()
        if self.proc.returncode != 0 or not lines:
            raise ExperimentError(f"traffic generator on {self.node} failed ({self.proc.returncode}): "
                                  f"{' '.join(self.stderr_tail) or 'no output'}")
        return json.loads(lines[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_both_ways(lab, params: Params, out: Path, ready_s: float = 20.0) -> dict[str, Generator]:
    """alice <-> bob at params.rate each way, started together: {"alice": ..., "bob": ...},
    each writing what it receives to out/at_<node>.csv."""
    gens = {"alice": Generator(lab, "alice", "bob", 5001, 5002, params, out / "at_alice.csv"),
            "bob": Generator(lab, "bob", "alice", 5002, 5001, params, out / "at_bob.csv")}
    for gen in gens.values():
        gen.ready.wait(ready_s)
    for gen in gens.values():
        gen.go()
    return gens


def wait_discovered(lab, pairs: list[tuple[str, str]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for node, host in pairs:
        run = RunDir(lab.run_dir(node))
        while True:
            try:
                if any(row[0] == host for row in request(run, "discovery", "hosts", timeout=2.0)):
                    break
            except RequestError:
                pass
            if time.monotonic() > deadline:
                raise ExperimentError(f"{node} did not discover {host} within {timeout:g}s")
            time.sleep(0.1)


def node_status(lab, node: str) -> dict:
    """Every actor's status (counters) of a node, as ilnp-status --json gives it."""
    proc = lab.exec(node, ["ilnp-status", "--json"], capture_output=True, text=True, timeout=30)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {"error": proc.stderr.strip()[-300:]}


# ---------------------------------------------------------------- the run


def run(lab, params: Params, out_dir: Path, log: Callable[[str], None] = lambda s: None,
        plots: bool = True) -> dict:
    """Traffic both ways on an up lab while the mobile nodes move; writes out_dir and
    returns the summary. Raises ExperimentError when it cannot run."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
    watchers = [LocatorWatcher(node, lab.run_dir(node)) for node in params.mobile]
    gens: list[Generator] = []
    try:
        for w in watchers:
            w.start()
        for w in watchers:
            w.ready.wait(15)
            if w.error:
                raise ExperimentError(f"cannot watch {w.node}'s locators: {w.error}")
        gens = [Generator(lab, "alice", "bob", ALICE_PORT, BOB_PORT, params, out_dir / "bob_to_alice.csv"),
                Generator(lab, "bob", "alice", BOB_PORT, ALICE_PORT, params, out_dir / "alice_to_bob.csv")]
        for g in gens:
            if not g.ready.wait(30) or g.proc.poll() is not None:
                raise ExperimentError(f"traffic generator on {g.node} did not start: "
                                      f"{' '.join(g.stderr_tail) or 'no ready line'}")
        for g in gens:
            g.go()
        log(f"sending {params.rate:g} packets/s of {params.size} B each way for {params.duration:g} s; "
            f"{', '.join(params.mobile)} moving every {params.move_time:g} s, handoff {params.handoff_time:g} s")
        _show_progress(gens, watchers, params, log)
        results = {g.node: g.result(timeout=params.duration + 60) for g in gens}
        status = {node: node_status(lab, node) for node in lab.nodes()}
    finally:
        for g in gens:
            g.kill()
        for w in watchers:
            w.stop()
    transitions = [t for w in watchers for t in w.transitions]
    analysis.write_transitions(out_dir / "transitions.csv", transitions)
    (out_dir / "status.json").write_text(json.dumps(status, indent=1, sort_keys=True))
    summary = summarize(params, results, out_dir, transitions, lab_name=lab.name)
    if plots:
        summary["files"] += draw(params, summary, out_dir, transitions)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _show_progress(gens: list[Generator], watchers: list[LocatorWatcher], params: Params, log) -> None:
    """A line a second while sending: sent/received each way and where the mobile nodes are."""
    by_node = {g.node: g for g in gens}
    end = time.monotonic() + params.duration
    shown = {w.node: len(w.transitions) for w in watchers}
    while time.monotonic() < end + 0.5 and any(g.proc.poll() is None for g in gens):
        time.sleep(1.0)
        a, b = by_node["alice"].progress, by_node["bob"].progress
        where = []
        for w in watchers:
            for t in w.transitions[shown[w.node]:]:
                log(f"  {w.node}: " + (f"now in {t.cur}, leaving {t.leaving}" if t.leaving
                                      else f"in {t.cur} only"))
            shown[w.node] = len(w.transitions)
            cur = w.current()
            if cur is not None:
                where.append(f"{w.node} in {cur.cur}" + (f" (+{cur.leaving})" if cur.leaving else ""))
        log(f"  {a.get('progress_s', 0):5.1f} s  alice\u2192bob sent {a.get('sent', 0):>7} "
            f"recv {b.get('received', 0):>7}  |  bob\u2192alice sent {b.get('sent', 0):>7} "
            f"recv {a.get('received', 0):>7}  |  {'; '.join(where)}")


def summarize(params: Params, results: dict, out_dir: Path, transitions: list[Transition],
              lab_name: str = "") -> dict:
    """summary.json's content from the generators' results and CSVs."""
    timeline = Timeline(transitions)
    t0 = min(r["start_ns"] for r in results.values())
    directions = {}
    for sender, receiver in (("alice", "bob"), ("bob", "alice")):
        packets = analysis.read_packets(out_dir / f"{sender}_to_{receiver}.csv")
        r = results[sender]
        directions[f"{sender}->{receiver}"] = analysis.direction(packets, r["sent"], r["start_ns"], r["rate"],
                                                                 timeline)
    moves = []
    for node in timeline.nodes():
        for t in timeline.moves(node):
            moves.append({"node": node, "t_s": round((t.time_ns - t0) / 1e9, 3), "to": t.cur,
                          "leaving": t.leaving})
    moves.sort(key=lambda m: m["t_s"])
    return {
        "params": dataclasses.asdict(params),
        "lab": lab_name,
        "start_ns": t0,
        "lossless": analysis.lossless(directions),
        "directions": directions,
        "moves": moves,
        "generators": results,
        "files": ["summary.json", "alice_to_bob.csv", "bob_to_alice.csv", "transitions.csv", "status.json"],
    }


def draw(params: Params, summary: dict, out_dir: Path, transitions: list[Transition]) -> list[str]:
    from . import plots  # matplotlib only when drawing

    timeline = Timeline(transitions)
    t0 = summary["start_ns"]
    directions = []
    for sender, receiver in (("alice", "bob"), ("bob", "alice")):
        d = summary["directions"][f"{sender}->{receiver}"]
        packets = analysis.read_packets(out_dir / f"{sender}_to_{receiver}.csv")
        lost = analysis.count(packets, d["sent"])["lost_seqs"]
        gen = summary["generators"][sender]
        directions.append(plots.Direction(sender, receiver, packets, lost, gen["start_ns"], gen["rate"], "alice"))
    x_max = params.duration + 3
    title = (f"{params.rate:g} packets/s of {params.size} B each way; {', '.join(params.mobile)} moving every "
             f"{params.move_time:g} s, handoff {params.handoff_time:g} s")
    plots.seq_vs_time(out_dir / "seq_vs_time.png", directions, timeline, t0, x_max, title)
    plots.throughput_buckets(out_dir / "throughput.png", directions, timeline, t0, x_max, params.size, title)
    return ["seq_vs_time.png", "throughput.png"]
