"""Damaged state files (issue 12 item 4): every file a node keeps is read through one
loader (actors/statefile.py) that checks its shape. A file that is not JSON, is
truncated, or is JSON of the wrong shape is moved aside (NAME.bad), logged in one line
and counted (`state_file_bad` in the owner's counters, shown by ilnp-status), and the
actor starts as if there were no file. Temporary files a kill left mid-write are removed
at start; write_atomic fsyncs the directory after the rename.

The shells run in this process on a real (brokerless) bus runtime in a short /tmp run
directory: constructing one is the actor's start. One test starts real processes.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from actors.config import parse_config
from actors.statefile import StateFile
from bus import rundir as rundir_mod
from bus.rundir import RunDir, remove_stale_tmp, write_atomic


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(**proxy):
    return parse_config({"hostname": "alice", "nid": "ffff:0:0:a",
                         "locators": {"schedule": "0:0:0:a-0:0:0:b"},
                         "proxy": {"port": free_port(), **proxy}}, "alice.toml")


def start(actor: str, run: RunDir):
    """The actor's shell, started on `run` (its constructor loads its files)."""
    if actor == "router":
        from actors.router.main import RouterShell as Shell
    elif actor == "mobility":
        from actors.mobility.main import MobilityShell as Shell
    elif actor == "proxy":
        from actors.proxy.main import ProxyShell as Shell
    else:
        from actors.stream.main import StreamShell as Shell
    return Shell(config(), run)


def stop(shell) -> None:
    for name in ("sock", "connect_sock"):
        if getattr(shell, name, None) is not None:
            getattr(shell, name).close()
    for sock in getattr(shell, "listeners", {}).values():
        sock.close()
    shell.actor.close()


@pytest.fixture
def run():
    path = tempfile.mkdtemp(prefix="ilsf", dir="/tmp")  # ipc paths must stay short
    try:
        yield RunDir(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- per file: a good content, what the actor makes of it, and wrong shapes ----------

def good(name: str, run: RunDir):
    return {
        "stp-ports.json": {"7": [os.getpid(), run.inbox("echo")]},
        "peers.json": {"ext": [5], "local": {"5": "00" * 12}, "remote": {"5": "11" * 12}},
        "locators.json": {"cur": [0xB]},
        "update-seqs.json": {"seen": [[5, "22" * 12, 7, [10]]]},
        "proxy-mappings.json": {"version": 1, "mappings": [
            {"local_port": 5000, "remote_host": "bob", "remote_port": 6000, "any_remote": False}]},
        "stream-forwards.json": {"version": 1, "serve": [{"stp_port": 80, "host": "127.0.0.1", "port": 8080}],
                                 "listen": []},
    }[name]


FILES = {  # file -> (owner, what the owner holds when the file loaded, ... when it did not)
    "stp-ports.json": ("router", lambda s: s.core.ports.bindings() == {7: os.getpid()},
                       lambda s: s.core.ports.bindings() == {}),
    "peers.json": ("router", lambda s: s.core.peers.state()["remote"] == {"5": "11" * 12},
                   lambda s: s.core.peers.state()["remote"] == {}),
    "locators.json": ("mobility", lambda s: s.core.cur == (0xB,), lambda s: s.core.cur == (0xA,)),
    "update-seqs.json": ("mobility", lambda s: 5 in s.core.seen_state()["seen"][0][:1],
                         lambda s: s.core.seen_state() == {"seen": []}),
    "proxy-mappings.json": ("proxy", lambda s: list(s.core.ports()) == [5000],
                            lambda s: not s.core.ports()),
    "stream-forwards.json": ("stream", lambda s: [f.stp_port for f in s.table.serves()] == [80],
                             lambda s: s.table.serves() == [] and s.table.listens() == []),
}

WRONG_SHAPES = {
    "stp-ports.json": [
        {"7": "not a pair"},
        {"seven": [1, None]},
        {"7": [True, None]},
        {"7": [1, None, 3]},
        {"70000": [1, None]},
        {"7": [1, "tcp://10.0.0.1:5555"]},            # a bad inbox string for a port binding
        {"7": [1, "ipc:///tmp/elsewhere/in-x.sock"]},  # an inbox, but not this node's
        {"7": [1, "garbage"]},
    ],
    "peers.json": [
        {"ext": "5"},
        {"ext": [5], "local": {"5": "zz"}},
        {"remote": {"5": "11"}},                       # a nonce of 1 byte
        {"local": {"-1": "00" * 12}},
        {"remote": []},
        {"somethingelse": 1},
    ],
    "locators.json": [
        {"cur": "0:0:0:b"},
        {"cur": []},
        {"cur": [-1]},
        {"cur": [1 << 64]},
        {"cur": [0xFF02_0000_0000_0001]},              # ALL_NODES: mobility refused it at start
        {"where": [0xB]},
    ],
    "update-seqs.json": [
        {"seen": {"5": 1}},
        {"seen": [[5, "22" * 12, 7]]},
        {"seen": [["5", "22" * 12, 7, [10]]]},
        {"seen": [[5, "2", 7, [10]]]},
        {"seen": [[5, None, 1 << 32, [10]]]},
        {"seen": [[5, None, 7, "a"]]},
    ],
    "proxy-mappings.json": [
        {"version": 2, "mappings": []},
        {"version": 1, "mappings": {}},
        {"version": 1, "mappings": [{"local_port": "5000", "remote_host": "bob", "remote_port": 6000}]},
        {"version": 1, "mappings": [{"local_port": 5000, "remote_host": 7, "remote_port": 6000}]},
        {"version": 1, "mappings": [{"local_port": 5000, "remote_host": "bob", "remote_port": 6000,
                                     "any_remote": "yes"}]},
        {"version": 1, "mappings": [{"local_port": 5000, "remote_host": "bob", "remote_port": 6000}] * 2},
    ],
    "stream-forwards.json": [
        {"version": 1, "serve": {"80": 1}},
        {"version": 1, "serve": [{"stp_port": 80, "host": "127.0.0.1"}]},
        {"version": 1, "serve": [{"stp_port": 0, "host": "127.0.0.1", "port": 8080}]},
        {"version": 1, "listen": [{"local_port": 9080, "host": "bob", "stp_port": 80, "bind": 5}]},
        {"version": 1, "listen": [{"local_port": 9080, "host": "has space", "stp_port": 80}]},
        {"serve": [], "listen": []},
    ],
}


def damaged(name: str, run: RunDir) -> list[tuple[str, bytes]]:
    """(what, content) of every kind of damage to `name`."""
    text = json.dumps(good(name, run), indent=1).encode()
    cases = [("invalid JSON", b"{not json"), ("truncated", text[:len(text) // 2]), ("empty", b""),
             ("not UTF-8", b'{"\xff\xfe": 1}'), ("a list", b"[]"), ("a number", b"42"), ("null", b"null"),
             ("nested deep", b"[" * 100_000 + b"]" * 100_000)]
    cases += [(f"wrong shape {i}", json.dumps(v).encode()) for i, v in enumerate(WRONG_SHAPES[name])]
    return cases


def test_every_file_of_design_is_covered():
    design = (Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md").read_text()
    table = design[design.index("## Files a node keeps"):].split("\n## ")[0]
    listed = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert listed - {"node.json", "node.key", "stream.sock"} == set(FILES)


@pytest.mark.parametrize("name", list(FILES))
def test_a_good_file_loads(run, name, caplog):
    actor, loaded, _ = FILES[name]
    (run.path / name).write_text(json.dumps(good(name, run)))
    shell = start(actor, run)
    try:
        assert loaded(shell), f"{actor} did not restore {name}"
        assert shell.actor.counters["state_file_bad"] == 0
        assert not (run.path / f"{name}.bad").exists()
        assert "_corrupt" not in caplog.text
    finally:
        stop(shell)


CASES = [(name, i) for name in FILES for i in range(8 + len(WRONG_SHAPES[name]))]


@pytest.mark.parametrize("name,case", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_a_damaged_file_is_set_aside_logged_and_counted(run, name, case, caplog):
    actor, _, empty = FILES[name]
    what, content = damaged(name, run)[case]
    (run.path / name).write_bytes(content)
    caplog.set_level(logging.ERROR)
    shell = start(actor, run)  # the actor starts: no exception
    try:
        assert (run.path / f"{name}.bad").read_bytes() == content, what
        assert not (run.path / name).exists() or name == "locators.json"  # mobility writes its new set
        assert shell.actor.counters["state_file_bad"] == 1, what
        [line] = [r.getMessage() for r in caplog.records if "_corrupt" in r.getMessage()]
        assert name in line and "moved_to=" in line and "reason=" in line and "\n" not in line
        assert empty(shell), f"{actor} kept something of a damaged {name} ({what})"
    finally:
        stop(shell)


def test_a_set_aside_file_replaces_an_older_bad_one(run):
    (run.path / "locators.json").write_text("{")
    (run.path / "locators.json.bad").write_text("older")
    stop(start("mobility", run))
    assert (run.path / "locators.json.bad").read_text() == "{"


def test_the_router_survives_a_bad_inbox_for_a_port_binding(run):
    """Issue 12: a bad inbox saved for a port killed the router at the first datagram,
    again after every restart. Now the file is set aside at start, the port unbound."""
    from actors.proto import ilnp as wire
    from actors.proto import stp, topics
    (run.path / "stp-ports.json").write_text(json.dumps({"7": [os.getpid(), "tcp://no.such.host:1"]}))
    shell = start("router", run)
    try:
        shell.on_locators(topics.STATE_LOCATORS, {"joined": [0xA], "leaving": []})
        ping = wire.encode(0xA, 0x2000_0000_0000_0001, 0xA, 0xFFFF_0000_0000_000A, 42,
                           stp.encode(40000, 7, b"ping"), 3)
        shell.on_link_rx(topics.LINK_RX, {"p": [[0xA, ping]]})
        shell.actor.flush()
        assert shell.core.ports.bindings() == {}
        assert shell.actor.counters["state_file_bad"] == 1
    finally:
        stop(shell)


# ---- temporary files and write_atomic -------------------------------------------------

def dead_pid() -> int:
    pid = 4_000_000  # above any pid_max in use here
    while rundir_mod.pid_alive(pid):
        pid += 1
    return pid


@pytest.mark.parametrize("name,actor", [(n, FILES[n][0]) for n in FILES])
def test_a_temporary_file_left_by_a_kill_is_removed_at_start(run, name, actor, caplog):
    stale = run.path / f".{name}.{dead_pid()}.tmp"
    stale.write_text('{"half')
    live = run.path / f".{name}.1.tmp"  # pid 1 lives: a writer at work is left alone
    live.write_text("")
    other = run.path / ".something-else.json.12.tmp"
    other.write_text("")
    shell = start(actor, run)
    try:
        assert not stale.exists() and live.exists() and other.exists()
        assert shell.actor.counters["state_tmp_removed"] == 1
        assert "event=" in caplog.text and "tmp_removed" in caplog.text
    finally:
        stop(shell)


def test_remove_stale_tmp_takes_our_own_pid_too(tmp_path):
    """Ours at start can only be a previous process's whose PID we were given again."""
    path = tmp_path / "x.json"
    mine = tmp_path / f".x.json.{os.getpid()}.tmp"
    mine.write_text("")
    assert remove_stale_tmp(path) == [mine] and not mine.exists()


def test_write_atomic_fsyncs_the_directory_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(a, b):
        events.append("rename")
        real_replace(a, b)

    monkeypatch.setattr(rundir_mod.os, "fsync", fsync)
    monkeypatch.setattr(rundir_mod.os, "replace", replace)
    write_atomic(tmp_path / "f.json", b"{}")
    assert events == ["fsync-file", "rename", "fsync-dir"]
    assert (tmp_path / "f.json").read_bytes() == b"{}"


def test_a_failed_write_leaves_no_temporary_file_and_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    path.write_text("old")

    def full(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir_mod.os, "fsync", full)
    with pytest.raises(OSError):
        write_atomic(path, b"new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_statefile_counts_into_the_given_counters(tmp_path):
    from collections import Counter
    counters = Counter()
    path = tmp_path / "s.json"
    path.write_text("[1]")

    def must_be_dict(v):
        if not isinstance(v, dict):
            raise ValueError("not an object")

    store = StateFile(path, logging.getLogger("t"), "s", must_be_dict, counters)
    assert store.load() is None and counters["state_file_bad"] == 1
    assert store.bad_reason == "wrong shape (not an object)"
    store.save({"a": 1})
    assert store.load() == {"a": 1} and counters["state_file_bad"] == 1


# ---- real processes: the router's and the proxy's files damaged before a node starts --

def test_a_node_with_damaged_files_starts_and_says_so():
    """Before: a wrong-shape stp-ports.json made the router exit at start (FATAL)."""
    from tests.test_map_cli import LocalNode
    node = LocalNode()
    try:
        (node.run_dir / "stp-ports.json").write_text('["7", 1]')
        (node.run_dir / "peers.json").write_text('{"ext": "x"}')
        (node.run_dir / "proxy-mappings.json").write_text('{"version": 1, "mappings": [{"local_port": 1}]}')
        node.up()
        assert node.procs["router"].poll() is None and node.procs["proxy"].poll() is None
        assert node.ask("router", "status")["counters"]["state_file_bad"] == 2
        assert node.ask("proxy", "status")["counters"]["state_file_bad"] == 1
        for name in ("stp-ports.json", "peers.json", "proxy-mappings.json"):
            assert (node.run_dir / f"{name}.bad").exists(), name
        assert node.log("router").count("_corrupt") == 2
    finally:
        node.down()
