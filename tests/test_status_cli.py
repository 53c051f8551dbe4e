"""`ilnp-status` without a node (no root): what it shows of supervisord's states, the
supervision listener's counts and the actors' counters, and its exit status."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from actors.registry import ACTORS
from bus.client import RequestError
from bus.rundir import RunDir
from tools import status as status_cli
from tools.status import build_report, duration, format_report, not_running

NOW = 1_000_000.0
PROGRAMS = [e.name for e in ACTORS] + ["supervision"]


def info(name, state="RUNNING", pid=100, start=NOW - 65, spawnerr=""):
    return {"name": name, "group": name, "statename": state, "pid": pid if state == "RUNNING" else 0,
            "start": start, "stop": 0, "now": NOW, "spawnerr": spawnerr, "exitstatus": 0}


def supervisor(**states):
    return {"pid": 7, "programs": [info(n, *([states[n]] if n in states else [])) for n in PROGRAMS]}


def counts(**programs):
    base = {n: {"starts": 1, "restarts": 0, "revivals": 0, "last_exit": None, "next_revival": None}
            for n in PROGRAMS}
    for name, entry in programs.items():
        base[name] = {**base[name], **entry}
    return {"version": 1, "supervisord_pid": 7, "programs": base}


def actor_status(name):
    return {"actor": name, "pid": 100, "uptime_s": 64.5, "counters": {"frames_in": 3}, "core": {"drops": 1}}


ACTORS_UP = {e.name: actor_status(e.name) for e in ACTORS if e.serves_requests}


def test_all_running_shows_each_program_and_nothing_is_down():
    report = build_report(ACTORS_UP, supervisor(), None, counts(), NOW)
    assert list(report) == PROGRAMS
    assert not_running(report) == []
    link = report["link"]
    assert link["counters"] == {"frames_in": 3}           # the actor's own status is kept as it was
    assert link["supervisor"] == {"state": "RUNNING", "pid": 100, "uptime_s": 65.0, "spawnerr": None,
                                  "restarts": 0, "starts": 1, "revivals": 0, "last_exit": None,
                                  "next_try_s": None}
    assert report["broker"] == {"supervisor": link["supervisor"]}   # answers no requests: supervisor only
    lines = format_report(report)
    assert lines[0].split() == ["program", "state", "pid", "uptime", "restarts", "PSS", "MB", "last", "exit"]
    assert lines[1].split() == ["broker", "RUNNING", "100", "1m05s", "0", "-", "-"]
    assert any(ln.startswith("link") and "frames_in=3" in ln and "drops=1" in ln for ln in lines)


def test_a_crash_looping_actor_is_named_with_its_state_restarts_and_last_exit():
    sup = supervisor(proxy="BACKOFF")
    sup["programs"][PROGRAMS.index("proxy")]["spawnerr"] = "Exited too quickly (process log may have details)"
    exit_ = {"time": NOW - 2, "status": "exit status 1", "state": "BACKOFF", "expected": False, "ran_s": 0.2}
    actors = {**ACTORS_UP, "proxy": {"error": "actor proxy is not running (BACKOFF)"}}
    report = build_report(actors, sup, None, counts(proxy={"restarts": 3, "starts": 4, "last_exit": exit_}), NOW)
    assert not_running(report) == [("proxy", "BACKOFF")]
    proxy = report["proxy"]["supervisor"]
    assert proxy["state"] == "BACKOFF" and proxy["pid"] is None and proxy["uptime_s"] is None
    assert proxy["restarts"] == 3 and proxy["last_exit"] == {**exit_, "ago_s": 2.0}
    line = next(ln for ln in format_report(report) if ln.startswith("proxy ") and "BACKOFF" in ln)
    assert line.split()[:5] == ["proxy", "BACKOFF", "-", "-", "3"]
    assert "2.0s ago: exit status 1 (ran 0.2s); Exited too quickly" in line
    assert any(ln.startswith("proxy") and "DOWN" in ln for ln in format_report(report))


def test_fatal_says_when_the_listener_tries_again():
    fatal = counts(router={"restarts": 10, "revivals": 2, "next_revival": NOW + 42,
                           "last_exit": {"time": NOW - 18, "status": "exit status 2", "state": "BACKOFF",
                                         "expected": False, "ran_s": 0.3}})
    report = build_report(ACTORS_UP, supervisor(router="FATAL"), None, fatal, NOW)
    assert report["router"]["supervisor"]["next_try_s"] == 42.0
    line = next(ln for ln in format_report(report) if ln.startswith("router ") and "FATAL" in ln)
    assert "next try in 42.0s" in line and "revived 2x" in line
    assert not_running(report) == [("router", "FATAL")]


def test_without_the_listeners_counts_restarts_are_unknown_not_zero():
    report = build_report(ACTORS_UP, supervisor(), None, None, NOW)
    assert report["echo"]["supervisor"]["restarts"] is None
    assert next(ln for ln in format_report(report) if ln.startswith("echo ")).split()[4] == "?"
    assert not_running(report) == []


def test_supervisord_not_answering_makes_every_program_unknown():
    report = build_report(ACTORS_UP, None, "supervisord does not answer at /x/supervisor.sock", None, NOW)
    assert list(report) == PROGRAMS
    assert {state for _, state in not_running(report)} == {"unknown"}
    assert "supervisord: supervisord does not answer at /x/supervisor.sock" in format_report(report)


def test_a_program_supervisord_does_not_run_is_not_running():
    sup = supervisor()
    sup["programs"] = [p for p in sup["programs"] if p["name"] != "stream"]
    report = build_report(ACTORS_UP, sup, None, counts(), NOW)
    assert not_running(report) == [("stream", "unknown")]


@pytest.mark.parametrize("seconds,text", [(None, "-"), (0.44, "0.4s"), (59.96, "60.0s"), (65, "1m05s"),
                                          (7620, "2h07m"), (273600, "3d04h")])
def test_duration(seconds, text):
    assert duration(seconds) == text


@pytest.fixture
def fake_node(monkeypatch):
    """ilnp-status run on a fake node: supervisord's answer and the counts are set per test."""
    state = {"supervisor": supervisor(), "counts": counts()}
    monkeypatch.setattr(status_cli, "find_node", lambda run_dir: (RunDir("/nonexistent"), state["supervisor"], None))
    monkeypatch.setattr(status_cli, "read_counts", lambda run, pid=None: state["counts"])
    asked = []

    def request(run, actor, cmd, timeout):
        asked.append(actor)
        if actor == "stream":
            raise RequestError("actor stream does not answer (timeout 2s)")
        return actor_status(actor)

    monkeypatch.setattr(status_cli, "request", request)
    state["asked"] = asked
    return state


def test_exit_status_is_zero_only_when_every_program_runs(fake_node):
    runner = CliRunner()
    ok = runner.invoke(status_cli.main, ["--json"])
    assert ok.exit_code == 0, ok.output
    assert set(json.loads(ok.output)) == set(PROGRAMS) | {"supervisord"}  # with the node's memory
    fake_node["supervisor"] = supervisor(proxy="BACKOFF")
    bad = runner.invoke(status_cli.main, ["--json"])
    assert bad.exit_code == 1
    report = json.loads(bad.stdout)
    assert report["proxy"]["supervisor"]["state"] == "BACKOFF"
    assert "not RUNNING: proxy (BACKOFF)" in bad.stderr
    human = runner.invoke(status_cli.main, [])
    assert human.exit_code == 1 and "proxy        BACKOFF" in human.stdout
    # a program supervisord says is down is not asked (no timeout on its stale socket)
    assert "proxy" not in fake_node["asked"][-7:]
    assert "stream      " in human.stdout and "DOWN  actor stream does not answer" in human.stdout


def test_memory_of_each_program_and_of_the_node_supervisord_included():
    report = build_report(ACTORS_UP, supervisor(), None, counts(), NOW)
    sizes = {100: {"pss_kb": 10 * 1024, "rss_kb": 30 * 1024}, 7: {"pss_kb": 5 * 1024, "rss_kb": 20 * 1024}}
    status_cli.attach_memory(report, 7, sizes.get)
    assert report["link"]["supervisor"]["memory"] == sizes[100]
    node = report["supervisord"]
    n = len(PROGRAMS)
    assert node["node_memory"] == {"pss_mb": 10.0 * n + 5, "rss_mb": 30.0 * n + 20, "processes": n + 1}
    assert not_running(report) == []  # supervisord answered: it runs
    lines = format_report(report)
    assert lines[1].split()[:6] == ["broker", "RUNNING", "100", "1m05s", "0", "10.0"]
    assert f"memory: PSS {10.0 * n + 5} MB, RSS {30.0 * n + 20} MB ({n + 1} processes, supervisord included)" in lines
    assert not any(line.startswith("supervisord ") for line in lines)


def test_process_memory_reads_this_process_and_refuses_what_is_gone():
    from tools.memory import process_memory
    import os
    mine = process_memory(os.getpid())
    assert mine and 0 < mine["pss_kb"] <= mine["rss_kb"]
    assert process_memory(2 ** 22 + 1) is None  # above pid_max: never a process
