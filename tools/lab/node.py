"""One node: its environment, its supervisord, and the state of its programs."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import netns
from .errors import LabError
from .procs import alive, read_pidfile
from .topology import one_line

STATES = {"STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN"}


@dataclass(frozen=True)
class NodeRef:
    """What it takes to run something as a node (all of it is in the state file)."""
    lab: str
    name: str
    namespace: str
    run_dir: Path
    repo: Path
    supervisord_conf: Path

    @property
    def conf(self) -> Path:
        return self.run_dir / "node.toml"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "supervisord.pid"


def node_env(node: NodeRef, base: dict | None = None) -> dict[str, str]:
    """The environment every process of a node gets (supervisord, exec, tools)."""
    env = dict(os.environ if base is None else base)
    env.update(ILNP_CONF=str(node.conf), ILNP_RUN_DIR=str(node.run_dir),
               ILNP_NODE=node.name, ILNP_LAB=node.lab)
    # this interpreter's bin dir first: supervisord, supervisorctl and our console scripts
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(p for p in (bindir, env.get("PATH") or os.defpath) if p)
    # the repo importable even where the package is not installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(node.repo), env.get("PYTHONPATH")) if p)
    return env


def run_in(node: NodeRef, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run of argv in the node's namespace, env and cwd (kwargs: subprocess's;
    env= is merged on top of the node's environment)."""
    env = node_env(node)
    env.update(kwargs.pop("env", None) or {})
    kwargs.setdefault("cwd", node.repo)
    return subprocess.run(netns.exec_argv(node.namespace, list(argv)), env=env, **kwargs)


def popen_in(node: NodeRef, argv: list[str], **kwargs) -> subprocess.Popen:
    env = node_env(node)
    env.update(kwargs.pop("env", None) or {})
    kwargs.setdefault("cwd", node.repo)
    return subprocess.Popen(netns.exec_argv(node.namespace, list(argv)), env=env, **kwargs)


def start_supervisord(node: NodeRef, timeout: float) -> int:
    """Start the node's supervisord (it daemonizes) and return its PID from the pidfile."""
    log = node.run_dir / "supervisord.start.log"
    # output to a file, not a pipe: the daemon may keep inherited descriptors open
    with open(log, "wb") as out:
        try:
            r = run_in(node, ["supervisord", "-c", str(node.supervisord_conf)],
                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"node {node.name}: supervisord did not daemonize within {timeout:g}s") from None
    if r.returncode != 0:
        raise LabError(f"node {node.name}: supervisord exited {r.returncode}: {error_line(log)}")
    deadline = time.monotonic() + timeout
    while True:
        pid = read_pidfile(node.pidfile)
        if pid and alive(pid):
            return pid
        if time.monotonic() > deadline:
            raise LabError(f"node {node.name}: supervisord wrote no pidfile {node.pidfile}"
                           f" within {timeout:g}s")
        time.sleep(0.05)


def program_status(node: NodeRef, timeout: float = 10.0) -> dict[str, tuple[str, int | None]] | None:
    """{program: (STATE, pid or None)} from `supervisorctl status`; None while supervisord
    does not answer."""
    try:
        r = run_in(node, ["supervisorctl", "-c", str(node.supervisord_conf), "status"],
                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    status = {}
    for line in r.stdout.splitlines():
        parts = line.replace(",", " ").split()
        if len(parts) >= 2 and parts[1] in STATES:
            pid = int(parts[3]) if len(parts) >= 4 and parts[2] == "pid" and parts[3].isdigit() else None
            status[parts[0]] = (parts[1], pid)
    return status or None


def program_states(node: NodeRef, timeout: float = 10.0) -> dict[str, str] | None:
    """{program: STATE}, or None while supervisord does not answer."""
    status = program_status(node, timeout)
    return None if status is None else {p: s for p, (s, _) in status.items()}


def program_log_tail(node: NodeRef, program: str) -> str:
    """Last line a program wrote (stderr first, then stdout), best effort."""
    for stream in ("stderr", "stdout"):
        try:
            r = run_in(node, ["supervisorctl", "-c", str(node.supervisord_conf), "tail", program, stream],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            continue
        lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
        if r.returncode == 0 and lines and not lines[-1].startswith(f"{program}: ERROR"):
            return one_line(lines[-1])[:200]
    return ""


def wait_running(nodes: list[NodeRef], pids: dict[str, int], timeout: float, settle: float = 1.0) -> None:
    """Poll until every program of every node is RUNNING and has kept the same PID for
    `settle` seconds (a program that dies just after its startsecs is not "up");
    raise naming the node and the program."""
    deadline = time.monotonic() + timeout
    pending = {n.name: n for n in nodes}
    last: dict[str, dict] = {}                 # node -> last status seen
    since: dict[str, tuple[dict, float]] = {}  # node -> (program pids, all RUNNING since)
    restarted: dict[str, set[str]] = {n.name: set() for n in nodes}
    while pending:
        now = time.monotonic()
        for name, node in list(pending.items()):
            if not alive(pids[name]):
                raise LabError(f"node {name}: supervisord (pid {pids[name]}) exited;"
                               f" see {node.run_dir}/supervisord.log")
            status = program_status(node)
            if status is None:
                continue
            before, last[name] = last.get(name, {}), status
            restarted[name] |= {p for p, (_, pid) in status.items()
                                if pid and before.get(p, (None, pid))[1] not in (None, pid)}
            fatal = [p for p, (s, _) in status.items() if s == "FATAL"]
            if fatal:
                raise _not_running(node, fatal[0], "FATAL")
            if not all(s == "RUNNING" for s, _ in status.values()):
                since.pop(name, None)
                continue
            pidmap = {p: pid for p, (_, pid) in status.items()}
            if since.get(name, (None,))[0] != pidmap:
                since[name] = (pidmap, now)
            elif now - since[name][1] >= settle:
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            name, node = next(iter(pending.items()))
            status = last.get(name)
            if not status:
                raise LabError(f"node {name}: supervisorctl status got no answer within {timeout:g}s")
            down = [(p, s) for p, (s, _) in status.items() if s != "RUNNING"]
            if down:
                raise _not_running(node, down[0][0], f"{down[0][1]} after {timeout:g}s")
            flapping = sorted(restarted[name]) or sorted(status)
            raise _not_running(node, flapping[0], f"restarting (still not steady after {timeout:g}s)")
        time.sleep(0.1)


def supervisord_log_hint(node: NodeRef, program: str) -> str:
    """supervisord's own last word on a program (e.g. "spawnerr: can't find command")."""
    try:
        lines = (node.run_dir / "supervisord.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    # a spawn error does not name its program; it is the likeliest cause, so it goes first
    picks = [ln for ln in lines if "spawnerr:" in ln] or \
            [ln for ln in lines if f" {program} " in ln or f"'{program}'" in ln]
    return one_line(picks[-1].split(" ", 2)[-1])[:200] if picks else ""     # without date and time


def _not_running(node: NodeRef, program: str, how: str) -> LabError:
    tail = program_log_tail(node, program) or supervisord_log_hint(node, program)
    return LabError(f"node {node.name}: program {program} is {how}, not RUNNING"
                    + (f" (last output: {tail})" if tail else ""))


def error_line(path: Path) -> str:
    """The line of a log that says what went wrong: the first "Error", else the last line."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    picks = [ln for ln in lines if "Error" in ln] or lines[-1:]
    return one_line(picks[0])[:200] if picks else "no output"
