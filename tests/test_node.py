"""The node foundation on the lab: supervision, resync after kill -9, the tap, two instances
on one host, and labs that leave nothing behind even when a test fails."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from actors import registry
from bus.client import request
from tools.lab.procs import alive
from actors.proto.addr import parse64
from tests.labutil import REPO, all_running, lab_name, supervisor_pids, tool, wait_discovered, wait_for

pytestmark = pytest.mark.lab

ACTORS = [entry.name for entry in registry.ACTORS if entry.name != "broker"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from tests.labutil import write_topology
    from tools.lab import Lab
    lab = Lab(lab_name("n"))
    try:
        lab.up(write_topology(tmp_path_factory.mktemp("pair"), "pair"))
        wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
        yield lab
    finally:
        assert not lab.down()


def test_every_program_of_each_node_runs(pair):
    for node in ("alice", "bob"):
        states = wait_for(lambda: all_running(pair, node), 10, f"{node} all RUNNING")
        assert set(states) == {"broker", "fdstore", *ACTORS, "supervision"}  # every program the registry names, and the listener
        assert all(pid > 0 for _, pid in states.values())


def test_tap_sees_hello_and_state_frames(pair):
    """The tap attaches without disturbing anyone; --hello makes owners republish their
    state; an actor that restarts says hello and the owners answer it."""
    tap = pair.popen("alice", ["ilnp-tap", "--json", "--hello", "-t", "20", "hello", "state."],
                     stdout=subprocess.PIPE, text=True)
    frames = []

    def until(predicate, what):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = tap.stdout.readline()
            if not line:
                break
            frames.append(json.loads(line))
            if predicate(frames[-1]):
                return frames[-1]
        raise AssertionError(f"tap never showed {what}; saw {[f['topic'] for f in frames]}")

    try:
        until(lambda f: {"state.locators", "state.hosts", "state.sessions"} <= {g["topic"] for g in frames},
              "every owner's state")
        latest = {f["topic"]: f["body"] for f in frames}
        locators = {"body": latest["state.locators"]}
        assert locators["body"]["cur"] == ["0:0:0:a"] and locators["body"]["a"] == "mobility"
        assert "bob" in [row[0] for row in latest["state.hosts"]["hosts"]]
        tool(pair, "alice", "supervisorctl", "-c", "supervisord.conf", "restart", "discovery")
        until(lambda f: f["topic"] == "hello" and f["body"]["a"] == "discovery", "discovery's hello")
        until(lambda f: f["topic"] == "state.locators" and f["body"]["q"] > locators["body"]["q"],
              "mobility answering discovery's hello")
    finally:
        tap.kill()
        tap.wait()


@pytest.mark.parametrize("victim", ["broker", *ACTORS])
def test_kill_9_restarts_only_that_actor_and_it_resyncs(pair, victim):
    before = wait_for(lambda: all_running(pair, "alice"), 10, "alice all RUNNING")
    os.kill(before[victim][1], signal.SIGKILL)

    def restarted():
        now = all_running(pair, "alice")
        return now if now and now[victim][1] != before[victim][1] else None

    after = wait_for(restarted, 15, f"{victim} to be restarted")
    for program, (_, pid) in before.items():
        if program != victim:
            assert after[program][1] == pid, f"{program} restarted when {victim} was killed"
    run = pair.run_dir("alice")
    if registry.spec(victim).serves_requests:  # not the broker, not the fd store
        # its state request was answered: in sync with every state it needs
        wait_for(lambda: request(str(run), victim, "status")["in_sync"], 10, f"{victim} in sync")
    # and the node works end to end again
    wait_for(lambda: tool(pair, "alice", "ilnp-ping", "-c", "1", "-W", "1", "bob", check=False).returncode == 0,
             20, f"ping after killing {victim}")


def test_status_of_a_node_not_running_says_so(tmp_path):
    env = {**os.environ, "ILNP_RUN_DIR": str(tmp_path / "nothing")}
    proc = subprocess.run([sys.executable, "-m", "tools.status"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "not running" in proc.stderr


def test_two_instances_on_one_host(make_lab):
    lab = make_lab("twohost")
    assert lab.namespace("alice") == lab.namespace("bob")
    assert lab.run_dir("alice") != lab.run_dir("bob")
    wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
    pids_a = wait_for(lambda: all_running(lab, "alice"), 10, "alice RUNNING")
    pids_b = wait_for(lambda: all_running(lab, "bob"), 10, "bob RUNNING")
    assert not {p for _, p in pids_a.values()} & {p for _, p in pids_b.values()}
    for src, dst in (("alice", "bob"), ("bob", "alice")):
        out = tool(lab, src, "ilnp-ping", "-c", "3", "-i", "0.05", "--json", dst).stdout
        assert json.loads(out)["received"] == 3


def test_a_failing_test_still_leaves_no_namespace_behind(tmp_path):
    """A test that fails midway, inside the make_lab fixture: pytest's teardown downs the lab."""
    record = tmp_path / "lab.txt"
    inner = tmp_path / "test_inner.py"
    inner.write_text(textwrap.dedent(f"""
        import json
        import pytest
        pytestmark = pytest.mark.lab
        def test_fails_midway(make_lab):
            lab = make_lab("pair")
            pids = [n["supervisord_pid"] for n in lab.state()["nodes"].values()]
            open({str(record)!r}, "w").write(json.dumps({{"name": lab.name, "pids": pids}}))
            assert False, "failing on purpose with the lab up"
    """))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", str(inner),
                           "--rootdir", str(REPO), "-p", "no:cacheprovider"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "failing on purpose" in proc.stdout
    made = json.loads(record.read_text())
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{made['name']}-" not in namespaces
    assert not os.path.exists(f"/run/ilnp/{made['name']}")
    assert len(made["pids"]) == 2
    for pid in made["pids"]:  # a zombie waiting for init to reap it counts as gone
        assert not alive(pid), f"supervisord {pid} outlived the failed test"


def test_a_restarted_router_relearns_its_routes_at_once(make_lab):
    """With the shipped 30 s discovery period: after kill -9 of alice's router (empty
    forwarding table) bob is reachable again within seconds, not at the next period,
    because discovery re-solicits when the router says hello; and alice keeps her nonce,
    even killed before peers.json was written (it is derived from the node key)."""
    lab = make_lab("router", defaults={"discovery": {"wait_time": 30.0}})
    # a solicitation on each side gets the answers at once, instead of the next period when
    # the nodes' own first ones went before the router was up (up to 30 s of the suite)
    for node, loc in (("alice", "0:0:0:a"), ("bob", "0:0:0:b")):
        tool(lab, node, "ilnp-attack", "solicit", "--locator", loc, "--hop", "2")
    wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
    assert tool(lab, "alice", "ilnp-ping", "-c", "1", "-W", "2", "bob", check=False).returncode == 0
    before = wait_for(lambda: all_running(lab, "alice"), 10, "alice RUNNING")
    os.kill(before["router"][1], signal.SIGKILL)
    wait_for(lambda: (now := all_running(lab, "alice")) and now["router"][1] != before["router"][1],
             15, "the router restarted")
    wait_for(lambda: tool(lab, "alice", "ilnp-ping", "-c", "1", "-W", "1", "bob", check=False).returncode == 0,
             8, "bob reachable again well before the 15-30 s discovery period")
    alice_nid = json.loads((lab.run_dir("alice") / "node.json").read_text())["nid"]
    bob_nid = json.loads((lab.run_dir("bob") / "node.json").read_text())["nid"]

    def nonce(node: str, table: str, peer: str):
        try:
            entries = json.loads((lab.run_dir(node) / "peers.json").read_text())[table]
        except (OSError, ValueError):
            return None
        return entries.get(str(parse64(peer)))

    # what alice uses now is what bob learned before the restart
    wait_for(lambda: nonce("alice", "local", bob_nid) and nonce("alice", "local", bob_nid)
             == nonce("bob", "remote", alice_nid), 5, "alice's nonce after the restart to be the one bob knows")
