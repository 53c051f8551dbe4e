"""Damaged state files on a real node (issue 12 acceptance): each state file of alice
corrupted (invalid JSON, wrong shape, truncated), the node's programs restarted with
supervisorctl as the user would, and then every program RUNNING and staying up, each bad
file set aside (NAME.bad, byte for byte what was there) and reported by its owner in
`ilnp-status --json` (`state_file_bad`); a temporary file left by a kill mid-write is
removed (`state_tmp_removed`).

The programs are stopped before the files are damaged and started after (supervisorctl
stop all / start all: a restart in two steps), because a running router writes
peers.json at exit when its peer table changed, which would repair the damage first.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.labutil import all_running, tool, tool_json, wait_discovered, wait_for

pytestmark = pytest.mark.lab

OWNERS = {"stp-ports.json": "router", "peers.json": "router", "locators.json": "mobility",
          "update-seqs.json": "mobility", "proxy-mappings.json": "proxy", "stream-forwards.json": "stream"}

SAMPLES = {  # good content for a file the node has not written (yet)
    "update-seqs.json": {"seen": [[5, "22" * 12, 7, [10]]]},
}

WRONG_SHAPE = {
    "stp-ports.json": {"7": [1, "tcp://10.0.0.1:5555"]},   # a bad inbox for a port binding
    "peers.json": {"ext": "everyone"},
    "locators.json": {"cur": "0:0:0:a"},
    "update-seqs.json": [],
    "proxy-mappings.json": {"version": 1, "mappings": [{"local_port": "5000"}]},
    "stream-forwards.json": {"version": 1, "serve": {"80": "127.0.0.1:8080"}},
}


@pytest.fixture
def lab(make_lab):
    lab = make_lab(base="pair")
    wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
    tool(lab, "alice", "ilnp-map", "5000", "bob", "6000")
    tool(lab, "alice", "ilnp-forward", "serve", "80", "--to", "127.0.0.1:8080")
    tool(lab, "alice", "ilnp-ping", "bob", "-c", "3", "-i", "0.2")
    run = lab.run_dir("alice")
    wait_for(lambda: all((run / name).exists() for name in OWNERS if name not in SAMPLES), 10,
             "alice's state files to be written")
    return lab


def supervisorctl(lab, *argv: str) -> None:
    tool(lab, "alice", "supervisorctl", "-c", "supervisord.conf", *argv, timeout=60)


def steady(lab, node: str, settle: float = 3.0) -> dict:
    """Every program RUNNING, with the same PIDs `settle` seconds later (no crash loop)."""
    first = wait_for(lambda: all_running(lab, node), 40, f"every program of {node} RUNNING")
    time.sleep(settle)
    assert all_running(lab, node) == first, f"a program of {node} restarted after its start"
    return first


@pytest.mark.parametrize("damage", ["invalid JSON", "wrong shape", "truncated"])
def test_each_state_file_damaged_and_the_node_restarted(lab, damage):
    run = lab.run_dir("alice")
    good = {name: (run / name).read_bytes() if (run / name).exists() else json.dumps(SAMPLES[name]).encode()
            for name in OWNERS}
    supervisorctl(lab, "stop", "all")
    written = {}
    for name in OWNERS:
        if damage == "invalid JSON":
            written[name] = b'{"this is": not json'
        elif damage == "wrong shape":
            written[name] = json.dumps(WRONG_SHAPE[name]).encode()
        else:
            written[name] = good[name][:len(good[name]) // 2]  # a write cut short
        (run / name).write_bytes(written[name])
    stale = run / ".locators.json.4194305.tmp"  # above pid_max: its writer is gone
    stale.write_bytes(good["locators.json"][:5])
    supervisorctl(lab, "start", "all")
    steady(lab, "alice")

    status = tool_json(lab, "alice", "ilnp-status")
    per_owner = {owner: sum(1 for o in OWNERS.values() if o == owner) for owner in OWNERS.values()}
    for owner, count in per_owner.items():
        assert status[owner]["counters"].get("state_file_bad") == count, (owner, status[owner]["counters"])
    assert status["mobility"]["counters"].get("state_tmp_removed") == 1
    assert not stale.exists()
    for name, owner in OWNERS.items():
        assert (run / f"{name}.bad").read_bytes() == written[name], name
        log = (run / f"{owner}.log").read_text(errors="replace")
        assert f"path={run / name} moved_to={run / name}.bad" in log, (name, log[-2000:])
    # the node works on: the mapping was in the damaged file, so map again and use it
    tool(lab, "alice", "ilnp-map", "5000", "bob", "6000")
    tool(lab, "alice", "ilnp-ping", "bob", "-c", "3", "-i", "0.2")
