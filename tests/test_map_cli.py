"""ilnp-map: bad input is one line on stderr and a non-zero exit; against a running node
(broker, router and proxy on loopback, no network namespace needed) it maps, lists,
deletes, refuses conflicts, and the mappings outlive kill -9 of the proxy."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from actors.proto import topics
from bus.client import BusClient, RequestError, request
from bus.rundir import NodeNotFound, RunDir
from tests.labutil import wait_for

REPO = Path(__file__).resolve().parents[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def map_cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`ilnp-map ARGV` as a user runs it (the console script is tools.map:main)."""
    base = {k: v for k, v in os.environ.items() if k not in ("ILNP_RUN_DIR", "ILNP_RUN_BASE")}
    base["PYTHONPATH"] = str(REPO)
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "tools.map", *argv], cwd=REPO, env=base,
                          capture_output=True, text=True, timeout=30)


class LocalNode:
    """A node's broker, router and proxy on loopback in this namespace (no link actor:
    nothing goes on any network). Each program logs to RUN_DIR/<name>.log."""

    PROGRAMS = ("broker", "router", "proxy")

    def __init__(self, hostname: str = "alice", nid: str = "ffff:0:0:a", proxy_port: int | None = None,
                 bind: str = "127.0.0.1"):
        # a short path: ipc:// endpoints are unix sockets (108-byte limit)
        self.run_dir = Path(tempfile.mkdtemp(prefix="ilnpmap"))
        self.proxy_port = proxy_port or free_udp_port()
        self.conf = self.run_dir / "node.toml"
        self.conf.write_text(f'hostname = "{hostname}"\nnid = "{nid}"\n'
                             f'[locators]\nschedule = "0:0:0:a"\n'
                             f'[proxy]\nport = {self.proxy_port}\nbind = "{bind}"\n')
        self.env = {**os.environ, "ILNP_RUN_DIR": str(self.run_dir), "ILNP_CONF": str(self.conf),
                    "PYTHONPATH": str(REPO)}
        self.procs: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str) -> subprocess.Popen:
        with open(self.run_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "actors.run", name], cwd=REPO, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start(self, name: str) -> subprocess.Popen:
        proc = self.spawn(name)
        if name == "broker":
            wait_for(lambda: RunDir(self.run_dir).read_node_info().get("pid") == proc.pid, 10, "the broker")
        else:
            wait_for(lambda: self.answers(name, proc.pid), 10, f"the {name} actor to answer")
        if name == "router":
            self.sync_router()
        return proc

    def sync_router(self) -> None:
        """Give the router the locators mobility would: it stops saying hello, so a hello
        from it means a restart and nothing here rebinds ports by accident."""
        with BusClient(str(self.run_dir), name="mobility") as bus:
            bus.wait_ready()
            bus.publish(topics.STATE_LOCATORS, {"cur": [0xA], "joined": [0xA], "leaving": []})
        wait_for(lambda: self.ask("router", "status")["in_sync"], 5, "the router in sync")

    def answers(self, actor: str, pid: int) -> bool:
        try:
            return request(str(self.run_dir), actor, "status", timeout=0.5)["pid"] == pid
        except (RequestError, NodeNotFound):
            return False

    def up(self) -> "LocalNode":
        for name in self.PROGRAMS:
            self.start(name)
        return self

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)

    def ask(self, actor: str, cmd: str, **args):
        return request(str(self.run_dir), actor, cmd, timeout=3.0, **args)

    def map(self, *argv: str) -> subprocess.CompletedProcess:
        return map_cli("--run-dir", str(self.run_dir), *argv)

    def log(self, name: str) -> str:
        return (self.run_dir / f"{name}.log").read_text(errors="replace")

    def down(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs.pop(name)
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(self.run_dir, ignore_errors=True)


@pytest.fixture
def node():
    n = LocalNode()
    try:
        yield n.up()
    finally:
        n.down()


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ilnp-map: "), lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    return lines[0]


# ---- bad input: no node needed (usage is checked before the node is looked for) ------

BAD_INPUT = [
    ([], "give exactly one of"),
    (["5000"], "expected LOCAL_PORT REMOTE_HOST REMOTE_PORT, got 1 argument"),
    (["5000", "bob"], "got 2 arguments"),
    (["5000", "bob", "6000", "7000"], "got 4 arguments"),
    (["0", "bob", "6000"], "bad local port '0'"),
    (["65536", "bob", "6000"], "bad local port '65536'"),
    (["abc", "bob", "6000"], "bad local port 'abc'"),
    (["5000", "bob", "0"], "bad remote port '0'"),
    (["5000", "bob", "6x"], "bad remote port '6x'"),
    (["5000", "", "6000"], "bad remote host ''"),
    (["5000", "bob", "-1"], "no such option"),
    (["--delete", "abc"], "bad local port 'abc'"),
    (["--delete", "99999"], "bad local port '99999'"),
    (["--delete"], "requires an argument"),
    (["--list", "5000", "bob", "6000"], "give exactly one of"),
    (["--list", "--delete", "5000"], "give exactly one of"),
    (["--replace", "--list"], "--replace goes with"),
    (["--any-remote", "--list"], "--any-remote goes with"),
    (["--delete", "5000", "--any-remote"], "--any-remote goes with"),
    (["--any-remote", "5000", "bob"], "got 2 arguments"),
    (["--bogus"], "no such option"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUT, ids=[" ".join(a) or "none" for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_a_usage_exit(tmp_path, argv, message):
    line = one_line_error(map_cli("--run-dir", str(tmp_path), *argv))
    assert message.lower() in line.lower()


@pytest.mark.parametrize("argv", [["5000", "bob", "6000"], ["--list"], ["--delete", "5000"]])
def test_node_not_running_at_the_run_dir(tmp_path, argv):
    proc = map_cli("--run-dir", str(tmp_path), *argv)
    assert proc.returncode == 1
    assert f"node not running at {tmp_path}" in one_line_error(proc)


def test_node_not_running_in_this_namespace(tmp_path):
    proc = map_cli("--list", env={"ILNP_RUN_BASE": str(tmp_path)})
    assert "no node running in this network namespace" in one_line_error(proc)


def test_node_from_the_environment(tmp_path):
    proc = map_cli("--list", env={"ILNP_RUN_DIR": str(tmp_path)})
    assert f"node not running at {tmp_path}" in one_line_error(proc)


def test_help_is_not_an_error():
    proc = map_cli("--help")
    assert proc.returncode == 0 and "LOCAL_PORT" in proc.stdout and proc.stderr == ""


def test_help_says_who_is_delivered_and_where_any_remote_replies_go():
    text = " ".join(map_cli("--help").stdout.split())
    assert "--any-remote" in text
    assert "only from REMOTE_HOST:REMOTE_PORT" in text
    assert "replies still go to REMOTE_HOST:REMOTE_PORT" in text


# ---- against a running node ---------------------------------------------------------

def test_map_prints_the_proxy_port_and_binds_the_stp_port(node):
    out = ok(node.map("5000", "bob", "6000"))
    assert out == f"mapped 127.0.0.1:5000 -> bob:6000 via proxy port {node.proxy_port}\n"
    assert out.split()[-1] == str(node.proxy_port)  # easy to grab
    proxy_pid = node.procs["proxy"].pid
    assert node.ask("router", "ports").get("5000") == proxy_pid


def test_map_json(node):
    result = json.loads(ok(node.map("5000", "bob", "6000", "--json")))
    assert result["proxy_port"] == node.proxy_port
    assert (result["local_port"], result["remote_host"], result["remote_port"]) == (5000, "bob", 6000)
    assert result["bound"] is True and result["resolved"] is False
    assert result["any_remote"] is False


def test_a_host_not_discovered_is_accepted_with_a_note(node):
    proc = node.map("5000", "nobody", "6000")
    assert proc.returncode == 0 and "via proxy port" in proc.stdout
    assert "nobody is not discovered yet" in proc.stderr


def test_local_port_mapped_elsewhere_is_refused_unless_replaced(node):
    ok(node.map("5000", "bob", "6000"))
    ok(node.map("5000", "bob", "6000"))  # the same again: fine
    line = one_line_error(node.map("5000", "carol", "7000"))
    assert "local port 5000 is already mapped to bob:6000" in line and "--replace" in line
    listed = json.loads(ok(node.map("--list", "--json")))["mappings"]
    assert [(m["local_port"], m["remote_host"], m["remote_port"]) for m in listed] == [(5000, "bob", 6000)]
    ok(node.map("5000", "carol", "7000", "--replace"))
    listed = json.loads(ok(node.map("--list", "--json")))["mappings"]
    assert [(m["remote_host"], m["remote_port"]) for m in listed] == [("carol", 7000)]


def test_the_proxy_port_cannot_be_mapped(node):
    line = one_line_error(node.map(str(node.proxy_port), "bob", "6000"))
    assert "is the proxy port itself" in line


def test_a_port_another_process_holds_is_refused(node):
    node.ask("router", "bind", port=5005, pid=os.getpid())  # this live test process holds it
    line = one_line_error(node.map("5005", "bob", "6000"))
    assert "STP port 5005 is in use" in line
    assert json.loads(ok(node.map("--list", "--json")))["mappings"] == []


def test_list_and_delete(node):
    ok(node.map("5001", "carol", "7001"))
    ok(node.map("5000", "bob", "6000"))
    listed = json.loads(ok(node.map("--list", "--json")))
    assert listed["proxy_port"] == node.proxy_port
    assert [m["local_port"] for m in listed["mappings"]] == [5000, 5001]
    plain = ok(node.map("--list"))
    assert f"proxy port {node.proxy_port}" in plain and "carol:7001" in plain and "bob:6000" in plain

    gone = json.loads(ok(node.map("--delete", "5000", "--json")))
    assert (gone["local_port"], gone["remote_host"], gone["proxy_port"]) == (5000, "bob", node.proxy_port)
    assert "5000" not in node.ask("router", "ports")  # released with the router too
    assert [m["local_port"] for m in node.ask("proxy", "list")["mappings"]] == [5001]
    assert "local port 5000 is not mapped" in one_line_error(node.map("--delete", "5000"))
    assert ok(node.map("--delete", "5001")).startswith("unmapped 127.0.0.1:5001 -> carol:7001")
    assert "no mappings" in ok(node.map("--list"))


def test_proxy_not_running(node):
    node.kill("proxy")
    line = one_line_error(node.map("--list"))
    assert "proxy" in line and ("not running" in line or "does not answer" in line)


def test_mappings_survive_kill_9_of_the_proxy(node):
    ok(node.map("5000", "bob", "6000"))
    ok(node.map("5001", "carol", "7001"))
    saved = json.loads((node.run_dir / "proxy-mappings.json").read_text())
    assert len(saved["mappings"]) == 2
    node.kill("proxy")
    new = node.start("proxy")
    listed = json.loads(ok(node.map("--list", "--json")))["mappings"]
    assert [(m["local_port"], m["remote_host"], m["remote_port"]) for m in listed] == \
        [(5000, "bob", 6000), (5001, "carol", 7001)]
    # the router gives the dead proxy's ports to the new one
    wait_for(lambda: node.ask("router", "ports").get("5000") == new.pid
             and node.ask("router", "ports").get("5001") == new.pid, 5, "the ports rebound")


def test_mappings_survive_a_restart_of_the_whole_node(node):
    ok(node.map("5000", "bob", "6000"))
    for name in ("proxy", "router", "broker"):
        node.kill(name)
    node.up()
    listed = json.loads(ok(node.map("--list", "--json")))["mappings"]
    assert [(m["local_port"], m["remote_host"]) for m in listed] == [(5000, "bob")]
    wait_for(lambda: node.ask("router", "ports").get("5000") == node.procs["proxy"].pid, 5, "rebound")


def test_a_restarted_router_gets_the_ports_back(node):
    ok(node.map("5000", "bob", "6000"))
    (node.run_dir / "stp-ports.json").unlink()   # a router that lost its bindings
    node.kill("router")
    node.start("router")
    wait_for(lambda: node.ask("router", "ports").get("5000") == node.procs["proxy"].pid, 5,
             "the proxy to rebind after the router's hello")


def test_a_corrupt_mappings_file_is_set_aside(node):
    node.kill("proxy")
    (node.run_dir / "proxy-mappings.json").write_text("{not json")
    node.start("proxy")
    assert node.ask("proxy", "list")["mappings"] == []
    assert (node.run_dir / "proxy-mappings.json.bad").read_text() == "{not json"
    assert "event=mappings_corrupt" in node.log("proxy")


def test_a_proxy_port_in_use_fails_the_start_with_one_log_line():
    node = LocalNode()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        blocker.bind(("127.0.0.1", node.proxy_port))
        node.start("broker")
        assert node.spawn("proxy").wait(15) == 1
        [line] = [ln for ln in node.log("proxy").splitlines() if "event=start_failed" in ln]
        assert f"cannot bind the proxy port 127.0.0.1:{node.proxy_port}" in line and "in use" in line
        assert "Traceback" not in node.log("proxy")
    finally:
        blocker.close()
        node.down()


def test_any_remote_is_kept_listed_and_shown(node):
    out = ok(node.map("5000", "bob", "6000", "--any-remote"))
    assert out == f"mapped 127.0.0.1:5000 -> bob:6000 (any remote) via proxy port {node.proxy_port}\n"
    ok(node.map("5001", "carol", "7001"))
    one = json.loads(ok(node.map("5000", "bob", "6000", "--any-remote", "--json")))   # the same again
    assert (one["local_port"], one["any_remote"]) == (5000, True)
    listed = json.loads(ok(node.map("--list", "--json")))["mappings"]
    assert [(m["local_port"], m["any_remote"]) for m in listed] == [(5000, True), (5001, False)]
    plain = ok(node.map("--list")).splitlines()
    assert "FROM" in plain[1]
    assert [line.split()[2] for line in plain[2:]] == ["any", "remote"]
    saved = json.loads((node.run_dir / "proxy-mappings.json").read_text())
    assert [m.get("any_remote") for m in saved["mappings"]] == [True, False]
    # the flag is part of the mapping: changing it either way needs --replace
    assert "already mapped to bob:6000 with --any-remote" in one_line_error(node.map("5000", "bob", "6000"))
    assert "without --any-remote" in one_line_error(node.map("5001", "carol", "7001", "--any-remote"))
    ok(node.map("5001", "carol", "7001", "--any-remote", "--replace"))
    ok(node.map("5000", "bob", "6000", "--replace"))
    listed = node.ask("proxy", "list")["mappings"]
    assert [(m["local_port"], m["any_remote"]) for m in listed] == [(5000, False), (5001, True)]
    gone = json.loads(ok(node.map("--delete", "5001", "--json")))
    assert gone["any_remote"] is True


def test_any_remote_survives_kill_9_and_an_old_file_loads_without_it(node):
    ok(node.map("5000", "bob", "6000", "--any-remote"))
    node.kill("proxy")
    node.start("proxy")
    assert [(m["local_port"], m["any_remote"]) for m in node.ask("proxy", "list")["mappings"]] == [(5000, True)]
    node.kill("proxy")
    (node.run_dir / "proxy-mappings.json").write_text(json.dumps(   # as the proxy wrote it before the flag
        {"version": 1, "mappings": [{"local_port": 5002, "remote_host": "bob", "remote_port": 6002}]}))
    node.start("proxy")
    assert [(m["local_port"], m["any_remote"]) for m in node.ask("proxy", "list")["mappings"]] == [(5002, False)]
