"""ilnp-tap --pcap refuses what it cannot do in one line, before it touches the bus:
options that do not go with it, a terminal as stdout, a node whose config it cannot
read, a file it cannot write. (A running node's capture: tests/test_dissector_lab.py.)"""
from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from tests.labutil import REPO

BAD_USE = [(["--pcap", "x.pcap", "--json"], "no PREFIXES, --json or --hello"),
           (["--pcap", "x.pcap", "link."], "no PREFIXES, --json or --hello"),
           (["--pcap", "x.pcap", "--hello"], "no PREFIXES, --json or --hello")]


def tap(*args: str, env: dict | None = None, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.tap", *args], cwd=REPO, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, timeout=60)


def one_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode != 0 and err and "\n" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


@pytest.fixture
def fake_node(tmp_path):
    """A run directory that looks like a live node's (its broker "is" this test process):
    enough for the tap to find it and read its config, never to talk to it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "bus-out.sock").touch()

    def make(conf: str | None) -> dict:
        info = {"hostname": "alice", "nid": "ffff:0:0:a", "pid": os.getpid()}
        if conf is not None:
            info["conf"] = conf
        (run / "node.json").write_text(json.dumps(info))
        return {"ILNP_RUN_DIR": str(run)}

    return make


@pytest.mark.parametrize("args,words", BAD_USE)
def test_options_that_do_not_go_with_pcap_are_refused(args, words):
    one_line(tap(*args, env={"ILNP_RUN_DIR": "/nonexistent"}), words)


def test_a_pcap_to_a_terminal_is_refused():
    leader, follower = pty.openpty()
    try:
        proc = tap("--pcap", "-", env={"ILNP_RUN_DIR": "/nonexistent"}, stdout=follower)
    finally:
        os.close(follower)
        os.close(leader)
    one_line(proc, "stdout is a terminal")


def test_a_node_that_is_not_running_is_named():
    one_line(tap("--pcap", "x.pcap", env={"ILNP_RUN_DIR": "/nonexistent/node"}), "not running")


def test_a_config_the_tap_cannot_read_is_one_line(fake_node, tmp_path):
    one_line(tap("--pcap", str(tmp_path / "x.pcap"), env=fake_node(str(tmp_path / "gone.toml"))),
             "the node's config", "gone.toml")
    one_line(tap("--pcap", str(tmp_path / "x.pcap"), env=fake_node(None)), "names no config")
    assert not (tmp_path / "x.pcap").exists()  # refused before anything was written


def test_a_file_it_cannot_write_is_one_line(fake_node, tmp_path):
    env = fake_node(str(REPO / "conf" / "alice.toml"))
    one_line(tap("--pcap", str(tmp_path / "no" / "such" / "dir.pcap"), env=env), "cannot write", "dir.pcap")
