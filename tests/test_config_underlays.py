"""[underlay.locators."<loc>"]: a locator on an underlay of its own (issue 15, items 1, 2
and 5). The config contract (kind, interface, port, peers), how locators share a socket,
which sockets a node opens, and every refusal: one line naming the file and the key."""
from __future__ import annotations

import tomllib

import pytest

from actors.config import MAX_UNDERLAY_SOCKETS, UNDERLAY_KINDS, ConfigError, load_config, parse_config, parse_peer
from tests.test_bad_input import assert_one_line_failure, run_tool

CONTRACT = """
hostname = "alice"
nid = "ffff:0:0:a"
[locators]
schedule = "0:0:0:a,0:0:0:d,0:0:0:e,0:0:0:f"
[underlay]
kind = "ipv6-multicast"
interface = "lan1"
port = 10000
[underlay.locators."0:0:0:d"]
kind = "unicast"
interface = "lan3"
port = 10000
peers = ["10.9.0.2:10000", "[fd00:9::2]:10000"]
[underlay.locators."0:0:0:e"]
kind = "ipv4-multicast"
[underlay.locators."0:0:0:f"]
kind = "ipv4-broadcast"
"""


def node(schedule: str = "0:0:0:a", underlay: dict | None = None, **locators) -> dict:
    """A node table; `locators` maps a locator key (with _ for :) to its underlay entry."""
    table = {"hostname": "alice", "nid": "ffff:0:0:a", "locators": {"schedule": schedule},
             "underlay": {"interface": "lan1", **(underlay or {})}}
    if locators:
        table["underlay"]["locators"] = {key.lstrip("_").replace("_", ":"): entry for key, entry in locators.items()}
    return table


def refused(table: dict, *words: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(table, "conf/alice.toml")
    message = str(err.value)
    assert message.startswith("conf/alice.toml: ") and "\n" not in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def test_the_contract_example_gives_one_socket_per_kind_interface_and_port():
    config = parse_config(tomllib.loads(CONTRACT), "conf/alice.toml")
    specs = {spec.kind: spec for spec in config.underlays}
    assert [spec.kind for spec in config.underlays] == ["ipv6-multicast", "unicast", "ipv4-multicast",
                                                        "ipv4-broadcast"]
    default = specs["ipv6-multicast"]
    assert default.default and default.interface == "lan1" and default.locators == ()  # 0:0:0:a rides it
    unicast = specs["unicast"]
    assert (unicast.interface, unicast.port, unicast.locators) == ("lan3", 10000, (0xD,))
    assert unicast.peers == ((0xD, (("::ffff:10.9.0.2", 10000), ("fd00:9::2", 10000))),)
    assert unicast.interface_key == 'underlay.locators."0:0:0:d".interface'
    # interface and port default to [underlay]'s; the error for a missing one names that key
    for kind in ("ipv4-multicast", "ipv4-broadcast"):
        assert (specs[kind].interface, specs[kind].port) == ("lan1", 10000)
        assert specs[kind].interface_key == "underlay.interface" and not specs[kind].default
    assert specs["ipv4-multicast"].locators == (0xE,) and specs["ipv4-broadcast"].locators == (0xF,)


def test_locators_that_agree_on_kind_interface_and_port_share_a_socket():
    config = parse_config(node("0:0:0:d,0:0:0:e,0:0:0:b,0:0:0:c",
                               _0_0_0_d={"kind": "unicast", "interface": "lan3", "peers": ["10.9.0.2:10000"]},
                               _0_0_0_e={"kind": "unicast", "interface": "lan3", "peers": ["10.9.0.3:10000"]},
                               _0_0_0_b={"kind": "ipv4-multicast"}, _0_0_0_c={"kind": "ipv4-multicast"}))
    assert [(s.kind, s.locators) for s in config.underlays] == [("unicast", (0xD, 0xE)),
                                                                 ("ipv4-multicast", (0xB, 0xC))]
    assert dict(config.underlays[0].peers) == {0xD: (("::ffff:10.9.0.2", 10000),),
                                               0xE: (("::ffff:10.9.0.3", 10000),)}


def test_the_default_is_opened_only_when_a_locator_of_the_schedule_rides_it():
    every_one_listed = parse_config(node("0:0:0:d", _0_0_0_d={"kind": "ipv4-multicast"}))
    assert [s.kind for s in every_one_listed.underlays] == ["ipv4-multicast"]
    one_not = parse_config(node("0:0:0:d-0:0:0:a", _0_0_0_d={"kind": "ipv4-multicast"}))
    assert [(s.kind, s.default) for s in one_not.underlays] == [("ipv6-multicast", True), ("ipv4-multicast", False)]
    plain = parse_config(node("0:0:0:a-0:0:0:b"))   # no [underlay.locators]: as before issue 15
    assert [(s.kind, s.interface, s.port, s.default) for s in plain.underlays] == [
        ("ipv6-multicast", "lan1", 10000, True)]


def test_an_entry_for_a_locator_outside_the_schedule_is_checked_but_opens_nothing():
    """A shared file may list locators some nodes never hold; a bad one is still an error."""
    config = parse_config(node("0:0:0:a", _0_0_0_d={"kind": "unicast", "interface": "lan9", "peers": ["10.0.0.1:1"]}))
    assert [s.kind for s in config.underlays] == ["ipv6-multicast"]
    refused(node("0:0:0:a", _0_0_0_d={"kind": "unicast", "peers": ["10.0.0.1"]}),
            'underlay.locators."0:0:0:d".peers[0]')


def test_the_contract_error_for_a_peer_that_is_not_host_port():
    message = refused(node("0:0:0:d", _0_0_0_d={"kind": "unicast", "peers": ["10.9.0.2:10000", "10.9.0"]}))
    assert message.startswith('conf/alice.toml: underlay.locators."0:0:0:d".peers[1]: "10.9.0" is not host:port')


@pytest.mark.parametrize("text", ["10.9.0", "10.9.0.2", "10.9.0.2:", ":10000", "10.9.0.2:http", "fd00::2:10000",
                                  "[fd00::2]", "[fd00::2%lan3]:1", "host.example:10000", "10.9.0.2:0",
                                  "10.9.0.2:65536", "[fe80::1]:10000", "239.1.2.3:10000", "[ff02::1]:10000",
                                  "0.0.0.0:10000", "255.255.255.255:10000", "[::]:10000", "1.2.3.4:10000" * 6])
def test_a_peer_that_is_not_a_unicast_address_and_port_is_refused(text):
    with pytest.raises(ValueError):
        parse_peer(text)
    refused(node("0:0:0:d", _0_0_0_d={"kind": "unicast", "peers": [text]}), 'underlay.locators."0:0:0:d".peers[0]',
            text[:20])


@pytest.mark.parametrize("text,peer", [("10.9.0.2:10000", ("::ffff:10.9.0.2", 10000)),
                                       ("[fd00:9:0:0::2]:1", ("fd00:9::2", 1)),
                                       ("[::ffff:10.1.2.3]:7", ("::ffff:10.1.2.3", 7)),
                                       ("[2001:DB8::1]:65535", ("2001:db8::1", 65535))])
def test_a_peer_is_kept_as_the_socket_reports_its_sender(text, peer):
    assert parse_peer(text) == peer


@pytest.mark.parametrize("what,table,words", [
    ("unknown kind", node("0:0:0:d", _0_0_0_d={"kind": "ipx"}), ['underlay.locators."0:0:0:d".kind', "ipx"]),
    ("unknown default kind", node("0:0:0:d", underlay={"kind": "carrier-pigeon"}), ["underlay.kind"]),
    ("kind not a string", node("0:0:0:d", _0_0_0_d={"kind": 4}), ['underlay.locators."0:0:0:d".kind', "str"]),
    ("not a locator", node("0:0:0:d", **{"zz": {"kind": "ipv4-multicast"}}),
     ['underlay.locators."zz"', "not a locator"]),
    ("unknown key", node("0:0:0:d", _0_0_0_d={"kind": "ipv4-multicast", "group": "239.1.1.1"}),
     ['underlay.locators."0:0:0:d".group']),
    ("entry not a table", node("0:0:0:d", _0_0_0_d="unicast"), ['underlay.locators."0:0:0:d"', "table"]),
    ("locators not tables", {**node(), "underlay": {"locators": ["0:0:0:d"]}}, ["underlay.locators"]),
    ("listed twice", node("0:0:0:d", _0_0_0_d={"kind": "ipv4-multicast"}, **{"0:0:0:000d": {"kind": "ipv4-multicast"}}),
     ['underlay.locators."0:0:0:000d"', "twice"]),
    ("peers on multicast", node("0:0:0:d", _0_0_0_d={"kind": "ipv4-multicast", "peers": ["10.0.0.1:1"]}),
     ['underlay.locators."0:0:0:d".peers', "only a unicast"]),
    ("unicast without peers", node("0:0:0:d", _0_0_0_d={"kind": "unicast"}), ['underlay.locators."0:0:0:d".peers']),
    ("unicast with no peers", node("0:0:0:d", _0_0_0_d={"kind": "unicast", "peers": []}),
     ['underlay.locators."0:0:0:d".peers']),
    ("peers not a list", node("0:0:0:d", _0_0_0_d={"kind": "unicast", "peers": "10.0.0.1:1"}),
     ['underlay.locators."0:0:0:d".peers']),
    ("a peer not a string", node("0:0:0:d", _0_0_0_d={"kind": "unicast", "peers": ["10.0.0.1:1", 7]}),
     ['underlay.locators."0:0:0:d".peers[1]']),
    ("a peer twice", node("0:0:0:d", _0_0_0_d={"kind": "unicast", "peers": ["10.0.0.1:1", "10.0.0.1:1"]}),
     ['underlay.locators."0:0:0:d".peers[1]', "twice"]),
    ("a peer of two locators on one socket",
     node("0:0:0:d,0:0:0:e", _0_0_0_d={"kind": "unicast", "peers": ["10.0.0.1:1"]},
          _0_0_0_e={"kind": "unicast", "peers": ["10.0.0.2:1", "10.0.0.1:1"]}),
     ['underlay.locators."0:0:0:e".peers[1]', "0:0:0:d", "could not tell"]),
    ("unicast as the default", node("0:0:0:a", underlay={"kind": "unicast"}), ["underlay.kind", "peers"]),
    ("two locators on one broadcast port",
     node("0:0:0:d,0:0:0:e", _0_0_0_d={"kind": "ipv4-broadcast"}, _0_0_0_e={"kind": "ipv4-broadcast"}),
     ['underlay.locators."0:0:0:e".port', "another port"]),
    ("a listed locator on the default's broadcast port",
     node("0:0:0:a,0:0:0:e", underlay={"kind": "ipv4-broadcast"}, _0_0_0_e={"kind": "ipv4-broadcast"}),
     ['underlay.locators."0:0:0:e".port', "[underlay]"]),
    ("a broadcast default carrying two locators", node("0:0:0:a-0:0:0:b", underlay={"kind": "ipv4-broadcast"}),
     ["underlay.kind", "one locator", "0:0:0:a, 0:0:0:b"]),
    ("interface name too long", node("0:0:0:d", _0_0_0_d={"kind": "ipv4-multicast", "interface": "x" * 16}),
     ['underlay.locators."0:0:0:d".interface']),
    ("port out of range", node("0:0:0:d", _0_0_0_d={"kind": "ipv4-multicast", "port": 70000}),
     ['underlay.locators."0:0:0:d".port', "1-65535"]),
    ("port not an int", node("0:0:0:d", _0_0_0_d={"kind": "ipv4-multicast", "port": True}),
     ['underlay.locators."0:0:0:d".port']),
    ("too many sockets", node(",".join(f"0:0:0:{i:x}" for i in range(1, 11)),
                              **{f"0:0:0:{i:x}": {"kind": "ipv4-multicast", "port": 20000 + i} for i in range(1, 11)}),
     [f"more than {MAX_UNDERLAY_SOCKETS} underlay sockets"]),
])
def test_a_bad_underlay_is_one_line_naming_the_key(what, table, words):
    refused(table, *words)


def test_a_locator_inherits_the_default_kind_interface_and_port():
    config = parse_config(node("0:0:0:d", underlay={"kind": "ipv4-multicast", "port": 12000},
                               _0_0_0_d={"interface": "lan2"}))
    assert [(s.kind, s.interface, s.port) for s in config.underlays] == [("ipv4-multicast", "lan2", 12000)]


def test_every_kind_is_accepted():
    for kind in UNDERLAY_KINDS:
        entry = {"kind": kind, **({"peers": ["10.0.0.1:1"]} if kind == "unicast" else {})}
        assert parse_config(node("0:0:0:d", _0_0_0_d=entry)).underlays[0].kind == kind


def test_a_file_names_itself_in_the_error(tmp_path):
    conf = tmp_path / "bob.toml"
    conf.write_text(CONTRACT.replace('"[fd00:9::2]:10000"', '"[fd00:9::2]:x"'))
    with pytest.raises(ConfigError) as err:
        load_config(conf)
    assert str(err.value) == (f'{conf}: underlay.locators."0:0:0:d".peers[1]: "[fd00:9::2]:x" is not host:port'
                              " (an IPv4 address:port or [IPv6 address]:port)")


def test_a_missing_interface_of_a_locator_is_one_line_from_the_link_naming_its_key(tmp_path):
    """Where the interface is first used: the link exits 2 with one line."""
    conf = tmp_path / "node.toml"
    conf.write_text(CONTRACT.replace('interface = "lan1"', 'interface = "lo"')
                    .replace('interface = "lan3"', 'interface = "nosuch3"'))
    proc = run_tool("actors.run", "link", env={"ILNP_CONF": str(conf), "ILNP_RUN_DIR": str(tmp_path)})
    assert_one_line_failure(proc, "ilnp-actor link: ", str(conf), 'underlay.locators."0:0:0:d".interface',
                            "'nosuch3'")
    assert proc.returncode == 2


def test_the_readme_underlay_examples_are_valid_configs():
    """README "Underlays": each toml block, with a node's required keys around it."""
    import re

    from tests.labutil import REPO

    section = (REPO / "README.md").read_text().split("### Underlays", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert len(blocks) == 4
    kinds = set()
    for block in blocks:
        listed = re.findall(r'\[underlay\.locators\."([^"]+)"\]', block)
        schedule = ",".join(listed) or "0:0:0:a"
        table = tomllib.loads(f'hostname = "alice"\nnid = "ffff:0:0:a"\n[locators]\nschedule = "{schedule}"\n'
                              + block)
        kinds |= {spec.kind for spec in parse_config(table, "README.md").underlays}
    assert kinds == set(UNDERLAY_KINDS)
