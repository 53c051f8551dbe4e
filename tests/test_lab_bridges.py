"""ilnp-lab with several bridges (issue 15): the topology's [bridges] and each host's
interfaces, addresses and bridge ports (no root), then the plumbing for real: what
crosses a bridge and what a unicast-only one stops, a cable pulled and put back, and
nothing left behind (root)."""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools.lab import Lab, LabError, running
from tools.lab import netns
from tools.lab.names import IFNAMSIZ, lab_dir, peer_name
from tools.lab.topology import load_topology
from tests.test_lab import (assert_nothing_left, assert_one_line_error, ilnp_lab, lab_namespaces,
                            node_conf, root_links, supervisor_conf, GOOD_PROGRAMS)

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.lab(pytest.mark.skipif(not IS_ROOT or not shutil.which("ip"),
                                                reason="needs root and iproute2 (network namespaces)"))

# alice on lan1; r1 on lan1 and wan; r2 on lan2 and wan; bob and carol share a host on
# lan2 (carol also wants lan1: the host has both); wan floods neither multicast nor broadcast
THREE = """\
[bridges.lan1]
ipv4 = "10.1.0.0/24"
ipv6 = "fd00:1::/64"
[bridges.lan2]
ipv4 = "10.2.0.0/24"
[bridges.wan]
ipv4 = "10.9.0.0/24"
ipv6 = "fd00:9::/64"
unicast_only = true

[nodes.alice]
conf = "alice.toml"
bridges = ["lan1"]
[nodes.r1]
conf = "alice.toml"
bridges = ["lan1", "wan"]
[nodes.r1.set]
underlay.interface = "wan"
[nodes.r2]
conf = "alice.toml"
bridges = ["lan2", "wan"]
[nodes.r2.set.underlay.locators."0:0:0:d"]
kind = "unicast"
interface = "wan"
peers = ["10.9.0.2:10000"]
[nodes.bob]
conf = "alice.toml"
host = "shared"
bridges = ["lan2"]
[nodes.carol]
conf = "alice.toml"
host = "shared"
bridges = ["lan1", "lan2"]
"""


def three(dir: Path, text: str = THREE) -> Path:
    node_conf(dir, "alice", "ffff:0:0:a")
    path = dir / "three.toml"
    path.write_text(text)
    return path


# ---- topology (no root) --------------------------------------------------------------

def test_bridges_hosts_and_addresses(tmp_path):
    topo = load_topology(three(tmp_path))
    assert [b.name for b in topo.bridges] == ["lan1", "lan2", "wan"]
    assert [b.unicast_only for b in topo.bridges] == [False, False, True]
    assert topo.hosts() == ["alice", "r1", "r2", "shared"]
    assert topo.host_bridges("shared") == ["lan2", "lan1"]      # bob's first, then carol's
    assert topo.addresses("alice", "lan1") == {"ipv4": "10.1.0.1/24", "ipv6": "fd00:1::1/64"}
    assert topo.addresses("r1", "wan") == {"ipv4": "10.9.0.2/24", "ipv6": "fd00:9::2/64"}
    assert topo.addresses("r2", "wan") == {"ipv4": "10.9.0.3/24", "ipv6": "fd00:9::3/64"}
    assert topo.addresses("shared", "lan2") == {"ipv4": "10.2.0.4/24"}     # lan2 has no ipv6
    iface = {n.name: n.config["underlay"]["interface"] for n in topo.nodes}
    # the first bridge, unless the topology names another of the node's bridges
    assert iface == {"alice": "lan1", "r1": "wan", "r2": "lan2", "bob": "lan2", "carol": "lan1"}
    assert topo.nodes[2].config["underlay"]["locators"]["0:0:0:d"]["interface"] == "wan"


def test_a_topology_without_bridges_has_the_default_one(tmp_path):
    node_conf(tmp_path, "alice", "ffff:0:0:a")
    path = tmp_path / "t.toml"
    path.write_text('[nodes.alice]\nconf = "alice.toml"\n[nodes.bob]\nconf = "alice.toml"\n')
    topo = load_topology(path)
    assert [(b.name, b.device, b.ipv4, b.ipv6) for b in topo.bridges] == [("eth0", "br0", None, None)]
    assert topo.host_bridges("bob") == ["eth0"] and topo.addresses("bob", "eth0") == {}


def replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


BAD = [
    ("bridge name", lambda t: replace(t, "[bridges.lan2]", "[bridges.Lan-2]"),
     ["bridges.Lan-2", "bad bridge name"]),
    ("lo", lambda t: replace(t, "[bridges.lan2]", "[bridges.lo]"), ["bridges.lo", "loopback"]),
    ("long name", lambda t: replace(t, "[bridges.lan2]", "[bridges.a_very_long_bridge]"),
     ["bridges.a_very_long_bridge", "1-15"]),
    ("unknown key", lambda t: replace(t, 'ipv4 = "10.2.0.0/24"', 'ipv4 = "10.2.0.0/24"\nmtu = 9000'),
     ["bridges.lan2", "unknown key", "mtu"]),
    ("not a subnet", lambda t: replace(t, '"10.2.0.0/24"', '"10.2.0/24"'), ["bridges.lan2.ipv4", "not a subnet"]),
    ("host bits", lambda t: replace(t, '"10.2.0.0/24"', '"10.2.0.1/24"'), ["bridges.lan2.ipv4", "host bits"]),
    ("public", lambda t: replace(t, '"10.2.0.0/24"', '"8.8.8.0/24"'), ["bridges.lan2.ipv4", "private"]),
    ("v6 in ipv4", lambda t: replace(t, '"10.2.0.0/24"', '"fd00:2::/64"'), ["bridges.lan2.ipv4", "private IPv4"]),
    ("not ULA", lambda t: replace(t, '"fd00:9::/64"', '"2001:db8::/64"'), ["bridges.wan.ipv6", "ULA"]),
    ("not a string", lambda t: replace(t, '"fd00:9::/64"', '64'), ["bridges.wan.ipv6", "must be a subnet"]),
    ("overlap", lambda t: replace(t, '"10.9.0.0/24"', '"10.1.0.0/16"'),
     ["bridges.wan.ipv4", "overlaps bridges.lan1.ipv4"]),
    ("no room", lambda t: replace(t, '"10.2.0.0/24"', '"10.2.0.0/30"'),
     ["bridges.lan2.ipv4", "no address 3", "host r2"]),
    ("unicast_only", lambda t: replace(t, "unicast_only = true", 'unicast_only = "yes"'),
     ["bridges.wan.unicast_only", "true or false"]),
    ("empty bridges", lambda t: "[bridges]\n" + t[t.index("[nodes.alice]"):], ["bridges:", "no [bridges.NAME]"]),
    ("bridges not a table", lambda t: "bridges = 3\n" + t[t.index("[nodes.alice]"):], ["bridges", "must be a table"]),
    ("node without bridges", lambda t: replace(t, 'bridges = ["lan1"]\n', ""),
     ["nodes.alice.bridges", "required", "lan1, lan2, wan"]),
    ("unknown bridge", lambda t: replace(t, 'bridges = ["lan1"]', 'bridges = ["lan9"]'),
     ["nodes.alice.bridges", "unknown bridge 'lan9'"]),
    ("twice", lambda t: replace(t, 'bridges = ["lan1"]', 'bridges = ["lan1", "lan1"]'),
     ["nodes.alice.bridges", "twice"]),
    ("not a list", lambda t: replace(t, 'bridges = ["lan1"]', 'bridges = "lan1"'),
     ["nodes.alice.bridges", "non-empty list"]),
    ("empty list", lambda t: replace(t, 'bridges = ["lan1"]', 'bridges = []'),
     ["nodes.alice.bridges", "non-empty list"]),
    ("interface elsewhere", lambda t: replace(t, 'underlay.interface = "wan"', 'underlay.interface = "lan2"'),
     ["nodes.r1.set.underlay.interface", "'lan2'", "lan1, wan"]),
    ("defaults interface", lambda t: '[defaults]\nunderlay.interface = "wan"\n' + t,
     ["nodes.alice.defaults.underlay.interface", "'wan'"]),
    ("locator interface", lambda t: replace(t, 'interface = "wan"\npeers', 'interface = "lan1"\npeers'),
     ["nodes.r2", 'underlay.locators."0:0:0:d".interface', "'lan1'", "lan2, wan"]),
]


@pytest.mark.parametrize("edit, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_bridges_are_one_line_errors_naming_file_and_key(tmp_path, edit, words):
    path = three(tmp_path, edit(THREE))
    with pytest.raises(LabError) as err:
        load_topology(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg and all(w in msg for w in words), msg


def test_peer_names_per_link_fit_and_stay_unique():
    host = "a-very-long-host-name-indeed"
    names = {peer_name(i, host, j) for i in range(100) for j in range(10)}
    assert len(names) == 1000 and max(map(len, names)) <= IFNAMSIZ
    assert peer_name(3, "alice") == "v3-alice" and peer_name(3, "alice", 2) == "v3b2-alice"


def unicast_peers(node) -> list[str]:
    return node.config["underlay"]["locators"]["0:0:0:d"]["peers"]


def test_repo_topologies_of_issue_15_load_and_their_unicast_peers_are_the_routers():
    """conf/lab/unicast.toml names each router's peer by address: the one the lab gives."""
    unicast = load_topology("unicast")
    nodes = {n.name: n for n in unicast.nodes}
    assert unicast.host_bridges("r1") == ["lan1", "wan"] and unicast.host_bridges("r2") == ["lan2", "wan"]
    assert unicast.bridge("wan").unicast_only
    for me, other in (("r1", "r2"), ("r2", "r1")):
        peer = ipaddress.ip_interface(unicast.addresses(other, "wan")["ipv4"]).ip
        port = nodes[other].config["underlay"]["port"]
        assert unicast_peers(nodes[me]) == [f"{peer}:{port}"]
    # alice and bob have no bridge in common, nor either with the other's router
    assert not set(unicast.host_bridges("alice")) & set(unicast.host_bridges("bob"))
    assert not set(unicast.host_bridges("alice")) & set(unicast.host_bridges("r2"))

    ipv4 = {n.name: n.config["underlay"] for n in load_topology("ipv4").nodes}
    assert ipv4["alice"]["kind"] == "ipv4-multicast" and ipv4["bob"]["kind"] == "ipv4-broadcast"
    assert ipv4["router"]["locators"]["0:0:0:b"] == {"kind": "ipv4-broadcast", "interface": "lan2"}

    multihomed = load_topology("multihomed")
    alice = next(n for n in multihomed.nodes if n.name == "alice")
    assert alice.bridges == ("lan1", "lan2")
    assert alice.config["locators"]["schedule"] == "0:0:0:a,0:0:0:b"
    assert alice.config["underlay"]["interface"] == "lan1"
    assert alice.config["underlay"]["locators"]["0:0:0:b"]["interface"] == "lan2"


# ---- plumbing (root) ------------------------------------------------------------------

# listen PORT [GROUP IFACE]...: print "ready", then each datagram as "payload source"
# until one says "end"; send TARGET... END: "probe" to each target (ADDR or ADDR%IFACE
# for a group), then "end" to END
PROBE = r"""
import socket, struct, sys, time
def family(addr): return socket.AF_INET6 if ":" in addr else socket.AF_INET
if sys.argv[1] == "listen":
    port, socks = int(sys.argv[2]), []
    for fam in (socket.AF_INET6, socket.AF_INET):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
        socks.append(s)
    for spec in sys.argv[3:]:
        group, iface = spec.split("%")
        index = socket.if_nametoindex(iface)
        if family(group) == socket.AF_INET6:
            socks[0].setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                                socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", index))
        else:
            socks[1].setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                                socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", index))
    print("ready", flush=True)
    import select
    while True:
        for s in select.select(socks, [], [], 20)[0] or sys.exit("no end marker"):
            data, src = s.recvfrom(100)
            print(data.decode(), src[0].split("%")[0], flush=True)
            if data == b"end":
                sys.exit(0)
else:
    port = int(sys.argv[2])
    for target in sys.argv[3:-1]:
        addr, _, iface = target.partition("%")
        s = socket.socket(family(addr), socket.SOCK_DGRAM)
        if family(addr) == socket.AF_INET:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            if iface:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                             struct.pack("@4s4si", socket.inet_aton("0.0.0.0"), socket.inet_aton("0.0.0.0"),
                                         socket.if_nametoindex(iface)))
        elif iface:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(iface))
        try:
            s.sendto(b"probe", (addr, port))
        except OSError as e:
            print("refused", addr, e.errno, flush=True)
    end = sys.argv[-1]
    if end != "-":
        time.sleep(0.05)
        socket.socket(family(end), socket.SOCK_DGRAM).sendto(b"end", (end, port))
"""


def probe(lab, receiver: str, groups: list[str], sender: str, targets: list[str], end: str,
          end_from: str | None = None) -> list[str]:
    """What `receiver` hears of `sender`'s probes before the end marker (sent last, by
    unicast to `end`, from `end_from` if given): "probe SOURCE" lines. The marker bounds
    the wait, no sleep."""
    port = str(20000 + secrets.randbelow(10000))
    listener = lab.popen(receiver, [sys.executable, "-c", PROBE, "listen", port, *groups],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "ready", listener.stderr.read()
        for node, argv in ((sender, [*targets, "-" if end_from else end]), (end_from, [end])):
            if node:
                sent = lab.exec(node, [sys.executable, "-c", PROBE, "send", port, *argv],
                                capture_output=True, text=True, timeout=30)
                assert sent.returncode == 0, sent.stderr
        out, err = listener.communicate(timeout=30)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert listener.returncode == 0, err
    lines = out.splitlines()
    assert lines[-1].startswith("end "), lines
    return sorted(lines[:-1])


@pytest.fixture(scope="module")
def plumbed(tmp_path_factory):
    """THREE, plumbing only, shared by the module."""
    if not IS_ROOT:
        pytest.skip("needs root")
    name = "t" + secrets.token_hex(4)
    links_before = root_links()
    with running(three(tmp_path_factory.mktemp("three")), name=name, start=False) as lab:
        yield lab
    assert_nothing_left(name, links_before=links_before)


def interfaces(lab, node: str) -> dict[str, set[str]]:
    """{ifname: {global addresses}} inside the node's namespace (lo left out)."""
    out = json.loads(netns.ip("-j", "-n", lab.namespace(node), "addr", "show"))
    return {link["ifname"]: {f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["scope"] == "global"}
            for link in out if link["ifname"] != "lo"}


@needs_root
def test_each_host_has_one_interface_per_bridge_with_its_addresses(plumbed):
    lab = plumbed
    assert interfaces(lab, "alice") == {"lan1": {"10.1.0.1/24", "fd00:1::1/64"}}
    assert interfaces(lab, "r1") == {"lan1": {"10.1.0.2/24", "fd00:1::2/64"},
                                     "wan": {"10.9.0.2/24", "fd00:9::2/64"}}
    assert interfaces(lab, "r2") == {"lan2": {"10.2.0.3/24"}, "wan": {"10.9.0.3/24", "fd00:9::3/64"}}
    assert interfaces(lab, "bob") == interfaces(lab, "carol") == {"lan2": {"10.2.0.4/24"},
                                                                  "lan1": {"10.1.0.4/24", "fd00:1::4/64"}}
    bns = f"{lab.name}-br"
    ports = {dev: sorted(p["ifname"] for p in json.loads(netns.ip("-j", "-n", bns, "link", "show", "master", dev)))
             for dev in ("lan1", "lan2", "wan")}
    assert ports == {"lan1": ["v0-alice", "v1-r1", "v3b1-shared"], "lan2": ["v2-r2", "v3-shared"],
                     "wan": ["v1b1-r1", "v2b1-r2"]}
    for dev in ("lan1", "lan2", "wan"):
        info = json.loads(netns.ip("-j", "-d", "-n", bns, "link", "show", dev))[0]["linkinfo"]["info_data"]
        assert info["mcast_snooping"] == 0
    assert "interface = \"wan\"" in (lab.run_dir("r1") / "node.toml").read_text()
    assert lab.address("r2", "wan") == "10.9.0.3" and lab.address("r2", "wan", "ipv6") == "fd00:9::3"
    with pytest.raises(LabError, match="not on bridge 'wan'"):
        lab.address("alice", "wan")
    with pytest.raises(LabError, match="no ipv6 address"):
        lab.address("r2", "lan2", "ipv6")
    st = json.loads(ilnp_lab("--lab", lab.name, "status", "--json").stdout)
    assert st["hosts"]["shared"]["links"]["lan1"] == {"peer": "v3b1-shared", "present": True, "up": True,
                                                     "addresses": ["10.1.0.4/24", "fd00:1::4/64"]}
    assert st["bridges"]["wan"]["unicast_only"] and st["nodes"]["carol"]["bridges"] == ["lan1", "lan2"]


@needs_root
def test_multicast_and_broadcast_cross_a_bridge_of_their_own_and_nowhere_else(plumbed):
    lab = plumbed
    heard = probe(lab, "r1", ["ff12::77%lan1", "239.1.2.3%lan1"], "alice",
                  ["ff12::77%lan1", "239.1.2.3%lan1", "10.1.0.255"], "10.1.0.2")
    alice_ll = netns.link_local(lab.namespace("alice"), "lan1")
    assert heard == sorted([f"probe {alice_ll}", "probe 10.1.0.1", "probe 10.1.0.1"])
    # bob's host is on lan1 too, r2 is not: the same probes from carol reach r1 only
    heard = probe(lab, "r2", ["ff12::77%lan2", "239.1.2.3%lan2"], "carol",
                  ["ff12::77%lan1", "239.1.2.3%lan1", "10.1.0.255"], "10.2.0.3")
    assert heard == []


@needs_root
def test_a_unicast_only_bridge_carries_unicast_and_nothing_else(plumbed):
    lab = plumbed
    heard = probe(lab, "r2", ["ff12::77%wan", "239.1.2.3%wan"], "r1",
                  ["10.9.0.3", "fd00:9::3", "ff12::77%wan", "239.1.2.3%wan", "10.9.0.255"], "10.9.0.3")
    assert heard == ["probe 10.9.0.2", "probe fd00:9::2"]


@needs_root
def test_a_pulled_cable_stops_traffic_until_it_is_put_back(plumbed):
    lab = plumbed
    r = ilnp_lab("--lab", lab.name, "link", "r1", "lan1", "down")
    assert r.returncode == 0 and r.stdout.strip() == "r1 lan1 down", r.stderr
    try:
        assert netns.link_state(lab.namespace("r1"), "lan1")["up"] is False
        assert "lan1<->v1-r1 10.1.0.2/24 fd00:1::2/64 DOWN" in ilnp_lab("--lab", lab.name, "status").stdout
        heard = probe(lab, "r1", ["ff12::77%lan1"], "alice", ["10.1.0.2", "ff12::77%lan1"], "10.9.0.2",
                      end_from="r2")     # the marker comes over wan
        assert heard == []
    finally:
        assert ilnp_lab("--lab", lab.name, "link", "r1", "lan1", "up").returncode == 0
    assert netns.link_state(lab.namespace("r1"), "lan1")["up"] is True
    assert probe(lab, "r1", [], "alice", ["10.1.0.2"], "10.1.0.2") == ["probe 10.1.0.1"]


@needs_root
@pytest.mark.parametrize("argv, words", [
    (["link", "alice", "wan", "down"], ["node alice is not on bridge 'wan'", "lan1"]),
    (["link", "dave", "lan1", "down"], ["unknown node 'dave'"]),
    (["link", "alice", "lan1", "sideways"], ["'sideways' is not one of"]),
])
def test_bad_link_commands_are_one_line_errors(plumbed, argv, words):
    assert_one_line_error(ilnp_lab("--lab", plumbed.name, *argv), *words)
    assert netns.link_state(plumbed.namespace("alice"), "lan1")["up"]


@needs_root
def test_a_failed_up_with_several_bridges_leaves_nothing(tmp_path):
    name = "t" + secrets.token_hex(4)
    links_before = root_links()
    conf = supervisor_conf(tmp_path, GOOD_PROGRAMS)
    conf.write_text("[supervisord\n")                     # fails after all the plumbing
    try:
        with pytest.raises(LabError, match="supervisord exited"):
            Lab(name, supervisord_conf=conf).up(three(tmp_path), timeout=20)
        assert_nothing_left(name, links_before=links_before)
    finally:
        Lab(name).down()


@needs_root
def test_down_without_state_file_removes_every_bridge(tmp_path):
    name = "t" + secrets.token_hex(4)
    links_before = root_links()
    try:
        Lab(name).up(three(tmp_path), start=False)
        assert len(lab_namespaces(name)) == 5
        shutil.rmtree(lab_dir(name))                     # no state at all
        assert ilnp_lab("--lab", name, "down").returncode == 0
        assert_nothing_left(name, links_before=links_before)
    finally:
        Lab(name).down()
