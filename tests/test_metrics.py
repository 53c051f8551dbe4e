"""The metrics program without a lab (no root): the exposition of a node's figures, the
optional program's files, and the real program on loopback scraped with curl, hostile
HTTP clients included. The lab test (tests/test_metrics_lab.py) scrapes a real node."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from actors import config as config_module
from actors.metrics import exposition, figures
from actors.metrics.http import IDLE_S, MAX_CONNECTIONS
from tests.labutil import REPO, wait_for
from tools.supervision import sync_program_files

BIN = Path(sys.executable).parent


def samples(text: bytes) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a scrape."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def status(counters=None, core=None, **extra):
    return {"actor": "x", "pid": 1, "uptime_s": 12.5, "in_sync": True, "counters": counters or {},
            "core": core or {}, **extra}


SNAPSHOT = {
    "actors": {
        "link": status({"rx": 10, "tx": 7}, {"rx_kernel_drops": 2}, joined=["0:0:0:a", "0:0:0:b"]),
        "router": status({"bad_items": 1}, {"malformed": 3, "forwarded": 4, "delivered": 5, "sent": 6,
                                             "no_route": 1, "not_a_number": "x"},
                         tables={"routes": 2, "sessions": 1, "route_waiting": 9}),
        "mobility": status({}, {"handoff_moves": 2, "handoff_ack_ms_sum": 30, "handoff_ack_count": 3,
                                "handoff_updates_sent": 3}, pending_updates=1),
        "proxy": status(mappings=2),
        "echo": {"error": "actor echo does not answer (timeout 1s)"},
    },
    "hosts": 4,
    "programs": {"router": {"state": "RUNNING", "starts": 3, "restarts": 2, "revivals": 0, "started_at": 900.0},
                 "echo": {"state": "BACKOFF", "starts": 5, "restarts": 4}},
    "moves": [{"id": 2, "started_at": 950.0, "open": False, "updates": [{"acked_ms": 12}, {"acked_ms": None}],
               "first_packet_ms": 40, "lost": 1, "late_on_old": 0}],
    "now": 1000.0,
    "duration_s": 0.01,
}


def test_the_exposition_has_every_figure_of_the_snapshot():
    got = samples(exposition.render(SNAPSHOT))
    assert got[("ilnp_drops_total", (("actor", "router"), ("reason", "malformed")))] == 3
    assert got[("ilnp_drops_total", (("actor", "router"), ("reason", "bad_items")))] == 1  # the bus's
    assert got[("ilnp_drops_total", (("actor", "link"), ("reason", "rx_kernel_drops")))] == 2
    assert got[("ilnp_actor_events_total", (("actor", "router"), ("event", "forwarded")))] == 4
    assert ("ilnp_actor_events_total", (("actor", "router"), ("event", "not_a_number"))) not in got
    assert got[("ilnp_packets_total", (("direction", "in"),))] == 10
    assert got[("ilnp_packets_total", (("direction", "forwarded"),))] == 4
    assert got[("ilnp_actor_up", (("actor", "echo"),))] == 0 and got[("ilnp_actor_up", (("actor", "link"),))] == 1
    assert got[("ilnp_table_entries", (("actor", "router"), ("table", "routes")))] == 2
    assert got[("ilnp_table_entries", (("actor", "discovery"), ("table", "hosts")))] == 4
    assert got[("ilnp_table_entries", (("actor", "link"), ("table", "joined")))] == 2
    assert got[("ilnp_table_entries", (("actor", "proxy"), ("table", "mappings")))] == 2
    assert got[("ilnp_queue_depth", (("actor", "router"), ("queue", "route_waiting")))] == 9
    assert got[("ilnp_queue_depth", (("actor", "mobility"), ("queue", "pending_updates")))] == 1
    assert got[("ilnp_program_restarts_total", (("program", "router"),))] == 2
    assert got[("ilnp_program_restarts_total", (("program", "echo"),))] == 4
    assert got[("ilnp_program_running", (("program", "echo"),))] == 0
    assert got[("ilnp_program_uptime_seconds", (("program", "router"),))] == 100
    assert got[("ilnp_handoff_moves_total", ())] == 2
    assert got[("ilnp_handoff_ack_seconds_count", ())] == 3 and got[("ilnp_handoff_ack_seconds_sum", ())] == 0.03
    assert got[("ilnp_handoff_last_updates_sent", ())] == 2 and got[("ilnp_handoff_last_updates_acked", ())] == 1
    assert got[("ilnp_handoff_last_first_packet_seconds", ())] == 0.04
    assert got[("ilnp_handoff_last_lost", ())] == 1


def test_mobility_down_exports_no_handoff_counters_rather_than_zeros():
    snap = {**SNAPSHOT, "actors": {**SNAPSHOT["actors"], "mobility": {"error": "down"}}}
    assert not any(name.startswith("ilnp_handoff") for name, _ in samples(exposition.render(snap)))


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["actors", "hosts", "programs", "moves", "now", "duration_s"]), _json),
       st.dictionaries(st.sampled_from(["link", "router", "mobility", "proxy", "stream"]), _json))
def test_any_answer_renders_or_is_left_out_but_never_raises(snapshot, actors):
    """The answers come from other processes: whatever shape they have, a scrape works."""
    snapshot = dict(snapshot)
    snapshot["actors"] = actors
    snapshot["now"] = 0.0
    snapshot["duration_s"] = 0.0
    for name, _ in samples(exposition.render(snapshot)):
        assert name.startswith("ilnp_")


def test_figures_tell_drops_from_other_counters():
    assert set(figures.drops(SNAPSHOT["actors"])) == {("router", "malformed"), ("router", "no_route"),
                                                      ("router", "bad_items"), ("link", "rx_kernel_drops")}
    assert figures.packets({"link": {"error": "down"}})["in"] is None


def test_the_port_is_checked_like_every_key():
    base = {"hostname": "a", "nid": "1:0:0:1", "locators": {"schedule": "0:0:0:a"}}
    assert config_module.parse_config(base).metrics_port is None  # off by default
    assert config_module.parse_config({**base, "metrics": {"port": 9464}}).metrics_port == 9464
    for bad in (0, 70000, "9464", True):
        with pytest.raises(config_module.ConfigError, match=r"metrics.port"):
            config_module.parse_config({**base, "metrics": {"port": bad}})
    with pytest.raises(config_module.ConfigError, match=r"unknown key 'metrics.address'"):
        config_module.parse_config({**base, "metrics": {"port": 9464, "address": "0.0.0.0"}})


def test_the_listener_writes_the_block_of_an_enabled_program_and_removes_it_when_disabled(tmp_path):
    programs = tmp_path / "programs"
    assert sync_program_files(programs, {"metrics"}, set()) is False  # nothing to do: no RPC either
    assert sync_program_files(programs, {"metrics"}, {"metrics"}) is True
    assert (programs / "metrics.conf").read_bytes() == (REPO / "supervisord.d" / "metrics.conf").read_bytes()
    assert sync_program_files(programs, {"metrics"}, {"metrics"}) is False  # same text: unchanged
    assert sync_program_files(programs, {"metrics"}, set()) is True
    assert not (programs / "metrics.conf").exists()


# ---- the real program, alone on loopback (no broker, no other actor: they show down) ----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def metrics(tmp_path):
    port = free_port()
    conf = tmp_path / "node.toml"
    conf.write_text(f'hostname = "m"\nnid = "ffff:0:0:1"\n[locators]\nschedule = "0:0:0:a"\n'
                    f'[metrics]\nport = {port}\n')
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = {**os.environ, "ILNP_CONF": str(conf), "ILNP_RUN_DIR": str(run), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([str(BIN / "ilnp-actor"), "metrics"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _connects(port), 15, "the metrics port")
        yield port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, timeout=20)


def listening_addresses(port: int) -> set[str]:
    """Local addresses listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(address)
    return found


def test_the_program_answers_curl_on_both_loopbacks_and_nowhere_else(metrics):
    port, _ = metrics
    for url in (f"http://127.0.0.1:{port}/metrics", f"http://[::1]:{port}/metrics"):
        proc = curl("-g", "-D", "-", url)
        assert proc.returncode == 0, proc.stderr
        head, _, body = proc.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") and b"text/plain; version=0.0.4" in head
        got = samples(body)
        assert got[("ilnp_actor_up", (("actor", "metrics"),))] == 1
        assert got[("ilnp_actor_up", (("actor", "router"),))] == 0  # no node around it
    assert listening_addresses(port) == {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


def test_hostile_clients_get_an_error_each_and_the_endpoint_goes_on(metrics):
    port, _ = metrics
    url = f"http://127.0.0.1:{port}"
    assert b"404" in curl("-D", "-", "-o", "/dev/null", f"{url}/nothing").stdout
    assert b"405" in curl("-D", "-", "-o", "/dev/null", "-X", "DELETE", f"{url}/metrics").stdout
    assert curl("-I", f"{url}/metrics").stdout.startswith(b"HTTP/1.0 200")  # HEAD: no body
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /" + b"a" * 9000)  # a head that never ends
        assert s.recv(100).startswith(b"HTTP/1.0 400")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\x00\xff garbage\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.0 400")
    # more idle connections than allowed: the extra ones are closed, a scrape still works
    # once the idle ones time out
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS + 8)]
    try:
        time.sleep(0.5)
        refused = 0
        for s in idle[MAX_CONNECTIONS:]:
            s.settimeout(5)
            refused += s.recv(1) == b""
        assert refused == 8
        deadline = time.monotonic() + IDLE_S + 10
        while curl(f"{url}/metrics").returncode != 0:
            assert time.monotonic() < deadline, "the endpoint never came back after the idle connections"
        got = samples(curl(f"{url}/metrics").stdout)
        events = {labels[1][1]: v for (name, labels), v in got.items()
                  if name == "ilnp_actor_events_total" and labels[0] == ("actor", "metrics")}
        assert events["http_refused"] >= 8 and events["http_timeouts"] >= 1  # (and the scrapes tried meanwhile)
        assert events["http_bad_requests"] == 3 and events["http_not_found"] == 1
    finally:
        for s in idle:
            s.close()


def test_without_a_port_the_program_says_so_in_one_line(tmp_path):
    conf = tmp_path / "node.toml"
    conf.write_text('hostname = "m"\nnid = "ffff:0:0:1"\n[locators]\nschedule = "0:0:0:a"\n')
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = {**os.environ, "ILNP_CONF": str(conf), "ILNP_RUN_DIR": str(run), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([str(BIN / "ilnp-actor"), "metrics"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "[metrics] port is not set" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
