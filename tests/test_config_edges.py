"""Config edges that used to end in a traceback (issue 12 item 6): each is now one line
naming the file and the key (ConfigError), and an actor started on it exits 2 with that
line. Also: proxy.bind and stream.bind are checked (an IP address or a name this host
resolves), and a missing interface is reported by the link in one line naming
underlay.interface instead of a traceback."""
from __future__ import annotations

import pytest

from actors.config import _SPEC, _seconds, ConfigError, load_config, parse_config
from tests.labutil import REPO
from tests.test_bad_input import GOOD, assert_one_line_failure, run_tool

BASE = {"hostname": "alice", "nid": "ffff:0:0:a", "locators": {"schedule": "0:0:0:a"}}
TIME_KEYS = [key for key, spec in _SPEC.items() if spec[2] is _seconds]


def with_key(key: str, value) -> dict:
    table = {**BASE, "locators": dict(BASE["locators"])}
    *sections, last = key.split(".")
    node = table
    for section in sections:
        node = node.setdefault(section, {})
    node[last] = value
    return table


def refused(key: str, value) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(with_key(key, value), "node.toml")
    message = str(err.value)
    assert message.startswith("node.toml: ") and key in message and "\n" not in message
    return message


def test_every_time_key_is_known():
    assert set(TIME_KEYS) == {
        "locators.move_time", "locators.handoff_time", "router.route_lifetime", "router.duplicate_hold",
        "router.path_switch_hold", "router.session_lifetime", "discovery.wait_time", "mobility.update_interval",
        "stream.idle_timeout", "stream.keepalive", "link.emulate.delay"}


@pytest.mark.parametrize("key", TIME_KEYS)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
def test_a_time_that_is_not_finite_is_one_line(key, value):
    assert "finite" in refused(key, value)


@pytest.mark.parametrize("key", ["link.emulate.drop", "link.emulate.duplicate"])
def test_a_fraction_that_is_not_finite_is_one_line(key):
    assert "finite" in refused(key, float("nan"))


@pytest.mark.parametrize("key", TIME_KEYS)
def test_a_positive_time_under_one_millisecond_is_refused(key):
    """It rounded to 0 ms: a retry interval of 0 spins, a 0 lifetime expires at once."""
    assert "0.001" in refused(key, 0.0001)


@pytest.mark.parametrize("key", TIME_KEYS)
def test_a_time_past_a_year_is_refused(key):
    refused(key, 1e300)


def test_times_of_a_millisecond_and_zero_where_allowed_are_fine():
    assert parse_config(with_key("mobility.update_interval", 0.001)).update_interval_ms == 1
    assert parse_config(with_key("locators.handoff_time", 0)).handoff_time_ms == 0
    assert parse_config(with_key("router.duplicate_hold", 0.0)).duplicate_hold_ms == 0


@pytest.mark.parametrize("key", ["proxy.bind", "stream.bind"])
@pytest.mark.parametrize("value", ["no-such-host.invalid", "", "127.0.0.1 ", "a\x00b", "x" * 300, "1.2.3.4.5"])
def test_a_bind_address_that_is_not_one_is_refused(key, value):
    assert "IP address" in refused(key, value)


@pytest.mark.parametrize("key", ["proxy.bind", "stream.bind"])
@pytest.mark.parametrize("value", ["127.0.0.1", "0.0.0.0", "::1", "::", "localhost"])
def test_addresses_and_resolvable_names_bind(key, value):
    parse_config(with_key(key, value))


EDGES = [
    ("move_time inf", lambda t: t.replace("move_time = 20.0", "move_time = inf"), ["locators.move_time", "finite"]),
    ("move_time nan", lambda t: t.replace("move_time = 20.0", "move_time = nan"), ["locators.move_time"]),
    ("update_interval 0.0001", lambda t: t.replace("update_interval = 1.0", "update_interval = 0.0001"),
     ["mobility.update_interval", "0.001"]),
    ("proxy.bind unresolvable", lambda t: t.replace('bind = "127.0.0.1"', 'bind = "nowhere.invalid"'),
     ["proxy.bind"]),
]


@pytest.mark.parametrize("what,edit,words", EDGES, ids=[e[0] for e in EDGES])
def test_an_actor_refuses_each_edge_in_one_line(tmp_path, what, edit, words):
    conf = tmp_path / "node.toml"
    conf.write_text(edit(GOOD))
    assert edit(GOOD) != GOOD
    proc = run_tool("actors.run", "mobility", env={"ILNP_CONF": str(conf), "ILNP_RUN_DIR": str(tmp_path)})
    assert_one_line_failure(proc, str(conf), *words)
    assert proc.returncode == 2


def test_a_file_that_is_not_utf8_is_one_line(tmp_path):
    conf = tmp_path / "node.toml"
    conf.write_bytes(GOOD.replace('hostname = "alice"', 'hostname = "al\xe9ice"').encode("latin-1"))
    with pytest.raises(ConfigError, match=r"node.toml: not UTF-8 text \(byte 0xe9 at offset \d+\)$"):
        load_config(conf)
    proc = run_tool("actors.run", "router", env={"ILNP_CONF": str(conf), "ILNP_RUN_DIR": str(tmp_path)})
    assert_one_line_failure(proc, str(conf), "UTF-8")
    assert proc.returncode == 2


def test_a_missing_interface_is_one_line_naming_the_key(tmp_path):
    """The link is where the interface is first used (socket.if_nametoindex)."""
    conf = tmp_path / "node.toml"
    conf.write_text(GOOD.replace('interface = "eth0"', 'interface = "nosuch0"'))
    proc = run_tool("actors.run", "link", env={"ILNP_CONF": str(conf), "ILNP_RUN_DIR": str(tmp_path)})
    assert_one_line_failure(proc, "ilnp-actor link: ", str(conf), "underlay.interface", "'nosuch0'")
    assert proc.returncode == 2


def test_the_shipped_configs_still_load():
    for path in (REPO / "conf").glob("*.toml"):
        load_config(path)
