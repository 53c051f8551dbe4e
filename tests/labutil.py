"""Helpers for tests that run real nodes on the lab (root, network namespaces)."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

import tomli_w

REPO = Path(__file__).resolve().parents[1]
FAST = {"discovery": {"wait_time": 2.0}}  # hostnames resolve within a second or two


def lab_name(prefix: str = "t") -> str:
    """Unique and short: namespace and veth names have length limits."""
    return f"{prefix}{secrets.token_hex(2)}"


def write_topology(tmp_path: Path, base: str, defaults: dict | None = None,
                   nodes: dict[str, dict] | None = None) -> Path:
    """A copy of conf/lab/BASE.toml with absolute conf paths, extra [defaults] and per-node `set`."""
    src = REPO / "conf" / "lab" / f"{base}.toml"
    topo = tomllib.loads(src.read_text())
    merged_defaults = _merge(topo.get("defaults", {}), FAST)
    topo["defaults"] = _merge(merged_defaults, defaults or {})
    for name, node in topo["nodes"].items():
        node["conf"] = str((src.parent / node["conf"]).resolve())
        if nodes and name in nodes:
            node["set"] = _merge(node.get("set", {}), nodes[name])
    path = tmp_path / f"{base}-{secrets.token_hex(2)}.toml"
    path.write_text(tomli_w.dumps(topo))
    return path


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll until condition() is truthy; fail naming `what` after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def tool(lab, node: str, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command in a node's namespace with its environment; text output."""
    proc = lab.exec(node, list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} on {node} failed ({proc.returncode}): "
                             f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def tool_json(lab, node: str, *argv: str, timeout: float = 30) -> Any:
    return json.loads(tool(lab, node, *argv, "--json", timeout=timeout).stdout)


def knows(lab, node: str, hostname: str) -> bool:
    proc = tool(lab, node, "ilnp-hosts", "--json", check=False)
    return proc.returncode == 0 and any(h["hostname"] == hostname for h in json.loads(proc.stdout))


def wait_discovered(lab, pairs: list[tuple[str, str]], timeout: float = 20.0) -> None:
    for node, hostname in pairs:
        wait_for(lambda: knows(lab, node, hostname), timeout, f"{node} to discover {hostname}")


def is_root() -> bool:
    return os.geteuid() == 0


def supervisor_pids(lab, node: str) -> dict[str, tuple[str, int]]:
    """{program: (state, pid)} from `supervisorctl status` run the way a user runs it."""
    proc = tool(lab, node, "supervisorctl", "-c", "supervisord.conf", "status", check=False)
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            pid = int(parts[3].rstrip(",")) if len(parts) > 3 and parts[2] == "pid" else 0
            states[parts[0]] = (parts[1], pid)
    return states


def all_running(lab, node: str) -> dict | None:
    states = supervisor_pids(lab, node)
    return states if states and all(s == "RUNNING" for s, _ in states.values()) else None


def kill_actor(lab, node: str, actor: str, timeout: float = 15.0) -> None:
    """kill -9 one actor of a node (by the PID its supervisord gives) and wait until it runs again."""
    before = wait_for(lambda: all_running(lab, node), timeout, f"{node} all RUNNING")
    os.kill(before[actor][1], 9)

    def restarted():
        now = all_running(lab, node)
        return now if now and now[actor][1] != before[actor][1] else None

    wait_for(restarted, timeout, f"{actor} on {node} to be restarted")
