"""Wrong configuration and command-line input: each a non-zero exit and one line saying why."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from actors.config import ConfigError, load_config, parse_config
from tests.labutil import REPO

GOOD = (REPO / "conf" / "alice.toml").read_text()


def run_tool(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def assert_one_line_failure(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert err and "\n" not in err, f"not one line: {err!r}"
    assert "Traceback" not in err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"


BAD_CONFIGS = [
    # (what, edit of the good file, words the one-line reason must hold)
    ("unknown key", lambda t: t + "\ncolour = \"blue\"\n", ["unknown key", "colour"]),
    ("missing hostname", lambda t: t.replace('hostname = "alice"', ""), ["hostname"]),
    ("NID not 4 groups", lambda t: t.replace('"ffff:0:0:a"', '"ffff:0:a"'), ["nid", "4 groups"]),
    ("NID group too long", lambda t: t.replace('"ffff:0:0:a"', '"fffff:0:0:a"'), ["nid"]),
    ("bad schedule", lambda t: t.replace('schedule = "0:0:0:a"', 'schedule = "0:0:0:a--0:0:0:b"'),
     ["locators.schedule"]),
    ("negative move time", lambda t: t.replace("move_time = 20.0", "move_time = -1"), ["locators.move_time"]),
    ("port out of range", lambda t: t.replace("port = 10000", "port = 70000"), ["underlay.port", "1-65535"]),
    ("wrong type", lambda t: t.replace("mtu = 1440", 'mtu = "big"'), ["underlay.mtu", "int"]),
    ("nonce length", lambda t: t.replace("nonce_length = 12", "nonce_length = 8"), ["nonce_length", "4 or 12"]),
    ("bool for int", lambda t: t.replace("hop_limit = 3", "hop_limit = true"), ["router.hop_limit"]),
    ("not TOML", lambda t: t + "\n[[[\n", ["not valid TOML"]),
]


@pytest.mark.parametrize("what,edit,words", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_an_actor_refuses_a_bad_config_in_one_line(tmp_path, what, edit, words):
    conf = tmp_path / "node.toml"
    conf.write_text(edit(GOOD))
    with pytest.raises(ConfigError) as err:
        load_config(conf)
    assert str(conf) in str(err.value)
    proc = run_tool("actors.run", "router", env={"ILNP_CONF": str(conf), "ILNP_RUN_DIR": str(tmp_path / "run")})
    assert_one_line_failure(proc, str(conf), *words)
    assert proc.returncode == 2


def test_a_missing_config_file_is_named(tmp_path):
    proc = run_tool("actors.run", "link", env={"ILNP_CONF": str(tmp_path / "nope.toml"),
                                               "ILNP_RUN_DIR": str(tmp_path)})
    assert_one_line_failure(proc, "nope.toml", "no such file")


def test_the_shipped_configs_are_valid():
    for path in (REPO / "conf").glob("*.toml"):
        cfg = load_config(path)
        assert cfg.hostname and cfg.nid and cfg.schedule


def test_config_values_are_converted():
    cfg = parse_config({"hostname": "x", "nid": "0:0:0:1", "locators": {"schedule": "0:0:0:a-0:0:0:b,0:0:0:c",
                                                                          "move_time": 1.5}})
    assert cfg.schedule == [[0xA], [0xB, 0xC]] and cfg.move_time_ms == 1500 and cfg.nid == 1


NOT_RUNNING = {"ILNP_RUN_DIR": "/nonexistent/ilnp-node"}

BAD_CLI = [
    ("tap, node not running", "tools.tap", [], NOT_RUNNING, ["not running"]),
    ("status, node not running", "tools.status", [], NOT_RUNNING, ["not running"]),
    ("hosts, node not running", "tools.hosts", [], NOT_RUNNING, ["not running"]),
    ("ping, node not running", "tools.ping", ["bob"], NOT_RUNNING, ["not running"]),
    ("move, node not running", "tools.move", ["0:0:0:b"], NOT_RUNNING, ["not running"]),
    ("move, bad locators", "tools.move", ["0:0:0"], NOT_RUNNING, ["bad LOCATORS"]),
    ("ping, count 0", "tools.ping", ["bob", "-c", "0"], NOT_RUNNING, ["count"]),
    ("ping, no host", "tools.ping", [], NOT_RUNNING, ["HOST"]),
    ("tap, negative timeout", "tools.tap", ["-t", "-1"], NOT_RUNNING, ["timeout"]),
    ("actor, unknown name", "actors.run", ["nosuch"], {}, ["usage"]),
    ("bench, bad rates", "tools.bench", ["--rates", "fast"], {}, ["--rates"]),
]


@pytest.mark.parametrize("what,module,args,env,words", BAD_CLI, ids=[c[0] for c in BAD_CLI])
def test_a_tool_refuses_bad_input_in_one_line(what, module, args, env, words):
    assert_one_line_failure(run_tool(module, *args, env=env), *words)


def test_no_node_in_this_namespace_says_so(tmp_path):
    env = {"ILNP_RUN_BASE": str(tmp_path), "ILNP_RUN_DIR": ""}
    proc = run_tool("tools.hosts", env=env)
    assert_one_line_failure(proc, "no node running")
