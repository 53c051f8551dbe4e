"""Issue 12 acceptance on the lab: a crash loop is visible in ilnp-status (which program,
its state, its restarts, its last exit; non-zero exit) and ends once its cause is gone;
a kill -9 counts one restart; the run directory is 0700 and a second user on the host
cannot attach to the node's bus, request sockets or supervisord."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from tests.labutil import kill_actor, tool, wait_for

pytestmark = pytest.mark.lab

PROXY_PORT = 10001      # conf/alice.toml's proxy.port (the default)
NOBODY = 65534
HOLD_PORT = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", {PROXY_PORT}))
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def pair(make_lab_module):
    return make_lab_module("pair")


def status(lab, node: str, *args: str) -> subprocess.CompletedProcess:
    return tool(lab, node, "ilnp-status", *args, check=False)


def status_json(lab, node: str) -> tuple[int, dict]:
    proc = status(lab, node, "--json")
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def supervisor(lab, node: str, program: str) -> dict:
    return status_json(lab, node)[1][program]["supervisor"]


def test_an_actor_that_cannot_start_is_named_with_state_and_restarts_and_comes_back(pair):
    """The proxy's port taken by another socket in the namespace: the proxy exits at
    start, again and again (BACKOFF, growing delays); ilnp-status names it, its state,
    its restarts and its last exit, and exits 1. The port freed, it runs again."""
    ctl = ("supervisorctl", "-c", "supervisord.conf")
    before = supervisor(pair, "alice", "proxy")["restarts"]
    tool(pair, "alice", *ctl, "stop", "proxy")
    holder = pair.popen("alice", [sys.executable, "-c", HOLD_PORT], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        tool(pair, "alice", *ctl, "start", "proxy", check=False)   # "spawn error": it failed at once

        def crash_looping():
            rc, report = status_json(pair, "alice")
            sup = report["proxy"]["supervisor"]
            return (rc, report) if sup["restarts"] >= before + 2 and sup["state"] != "RUNNING" else None

        rc, report = wait_for(crash_looping, 30, "the proxy to fail to start twice more")
        proxy = report["proxy"]["supervisor"]
        assert rc == 1
        assert proxy["state"] in ("BACKOFF", "STARTING")
        assert proxy["last_exit"]["status"] == "exit status 1" and proxy["last_exit"]["ran_s"] < 2
        assert [name for name, entry in report.items() if entry["supervisor"]["state"] != "RUNNING"] == ["proxy"]
        human = status(pair, "alice")
        assert human.returncode == 1
        line = next(ln for ln in human.stdout.splitlines() if ln.startswith("proxy ") and "exit status 1" in ln)
        assert line.split()[1] in ("BACKOFF", "STARTING") and int(line.split()[4]) >= before + 2
        assert "not RUNNING: proxy (" in human.stderr
    finally:
        holder.stdin.close()            # the cause removed: the holder exits, the port is free
        holder.wait(10)
    wait_for(lambda: status(pair, "alice").returncode == 0, 40, "the proxy RUNNING again")
    after = supervisor(pair, "alice", "proxy")
    assert after["state"] == "RUNNING" and after["restarts"] >= before + 2
    # it stays up: no restart since
    wait_for(lambda: supervisor(pair, "alice", "proxy")["uptime_s"] >= 3, 10, "the proxy to stay up")
    assert supervisor(pair, "alice", "proxy")["restarts"] == after["restarts"]
    assert tool(pair, "alice", "ilnp-map", "--list").returncode == 0     # and it answers


@pytest.mark.parametrize("victim", ["router", "broker"])
def test_kill_9_counts_one_restart(pair, victim):
    rc, report = status_json(pair, "alice")
    assert rc == 0, report
    before = report[victim]["supervisor"]
    kill_actor(pair, "alice", victim)
    after = wait_for(lambda: (s := supervisor(pair, "alice", victim))["state"] == "RUNNING" and s, 20,
                     f"{victim} RUNNING")
    assert after["restarts"] == before["restarts"] + 1
    assert after["pid"] != before["pid"]
    assert after["last_exit"]["status"] == "terminated by SIGKILL" and after["last_exit"]["ago_s"] < 30
    others = {name: entry["supervisor"]["restarts"] for name, entry in status_json(pair, "alice")[1].items()
              if name != victim}
    assert others == {name: entry["supervisor"]["restarts"] for name, entry in report.items() if name != victim}


def test_status_answers_while_the_broker_is_down(pair):
    """With the broker down the node is not "not running": supervisord still answers,
    and ilnp-status says which program is down."""
    ctl = ("supervisorctl", "-c", "supervisord.conf")
    tool(pair, "alice", *ctl, "stop", "broker")
    try:
        proc = status(pair, "alice")
        assert proc.returncode == 1, proc.stderr
        broker = next(ln for ln in proc.stdout.splitlines() if ln.startswith("broker "))
        assert broker.split()[1] == "STOPPED"
        assert "not RUNNING: broker (STOPPED)" in proc.stderr
    finally:
        tool(pair, "alice", *ctl, "start", "broker")
    wait_for(lambda: status(pair, "alice").returncode == 0, 30, "every program RUNNING again")


PROBE = r"""
import json, os, socket, sys
from pathlib import Path
import zmq
from bus.codec import pack

run = Path(sys.argv[1])
out = {"uid": os.getuid()}
try:
    os.listdir(run)
    out["listdir"] = "ok"
except OSError as exc:
    out["listdir"] = type(exc).__name__
for name in ("bus-in.sock", "bus-out.sock", "ctl-router.sock", "ctl-mobility.sock", "supervisor.sock"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(str(run / name))
        out[name] = "connected"
    except OSError as exc:
        out[name] = type(exc).__name__
    s.close()
# zmq, as bus.client does: a REQ to the router's request socket, a SUB on the bus
ctx = zmq.Context()
req = ctx.socket(zmq.REQ)
req.setsockopt(zmq.LINGER, 0)
req.setsockopt(zmq.SNDTIMEO, 1500)
req.setsockopt(zmq.RCVTIMEO, 1500)
req.connect(f"ipc://{run}/ctl-router.sock")
try:
    req.send(pack({"cmd": "ping"}))
    req.recv()
    out["zmq_request"] = "answered"
except zmq.Again:
    out["zmq_request"] = "no answer"
sub = ctx.socket(zmq.SUB)
sub.setsockopt(zmq.LINGER, 0)
sub.setsockopt(zmq.RCVTIMEO, 300)
sub.setsockopt(zmq.SUBSCRIBE, b"")
sub.connect(f"ipc://{run}/bus-out.sock")
pub = ctx.socket(zmq.PUB)
pub.setsockopt(zmq.LINGER, 0)
pub.connect(f"ipc://{run}/bus-in.sock")
try:
    for _ in range(10):              # our hello comes back through the broker: we would hear it
        pub.send_multipart([b"hello", pack({"a": "probe", "q": 1})])
        try:
            sub.recv_multipart()
            out["zmq_bus"] = "attached"
            break
        except zmq.Again:
            pass
    else:
        out["zmq_bus"] = "nothing heard"
except zmq.ZMQError as exc:
    out["zmq_bus"] = str(exc)
# the library every tool uses
from bus.client import BusClient, request
for what, call in (("request", lambda: request(str(run), "router", "ping", timeout=1.5)),
                   ("bus_client", lambda: BusClient(str(run)).close())):
    try:
        call()
        out[what] = "attached"
    except Exception as exc:
        out[what] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def probe(lab, node: str, as_nobody: bool) -> dict:
    argv = [sys.executable, "-c", PROBE, str(lab.run_dir(node))]
    if as_nobody:
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    proc = tool(lab, node, *argv, timeout=60)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_run_dir_is_0700_and_a_second_user_cannot_attach(pair):
    run = pair.run_dir("alice")
    st = os.stat(run)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    # the node's user can (the probe sees an attachment when there is one)
    mine = probe(pair, "alice", as_nobody=False)
    assert mine["uid"] == os.geteuid() and mine["listdir"] == "ok"
    assert {mine[s] for s in ("bus-in.sock", "bus-out.sock", "ctl-router.sock", "ctl-mobility.sock",
                              "supervisor.sock")} == {"connected"}, mine
    assert (mine["zmq_request"], mine["zmq_bus"], mine["request"], mine["bus_client"]) == \
        ("answered", "attached", "attached", "attached"), mine
    # another uid on the same host (in the node's namespace) cannot
    theirs = probe(pair, "alice", as_nobody=True)
    assert theirs["uid"] == NOBODY and theirs["listdir"] == "PermissionError"
    assert {theirs[s] for s in ("bus-in.sock", "bus-out.sock", "ctl-router.sock", "ctl-mobility.sock",
                                "supervisor.sock")} == {"PermissionError"}, theirs
    assert (theirs["zmq_request"], theirs["zmq_bus"]) == ("no answer", "nothing heard"), theirs
    assert "attached" not in (theirs["request"], theirs["bus_client"]), theirs
    assert "not running" in theirs["request"], theirs      # it cannot even read node.json
