"""Issue 4, bad input on real nodes: raw UDP into a locator's multicast group is dropped and counted.

Lab "router": alice (0:0:0:a) - router (a, b, c) - bob (0:0:0:b). A plain python socket in
alice's namespace sends into bob's network 0:0:0:b (alice has not joined it), so bob and the
router receive every datagram. Each batch ends with a valid marker datagram to an app bound
on bob: the datagrams of one socket arrive in order, so when the app has the marker, bob's
router has seen the whole batch, and anything bad it let through would have reached the app first.
"""
from __future__ import annotations

import json
import random
import re
import struct
import sys
import tomllib

import pytest

from actors.proto.addr import ALL_NODES
from actors.proto import discovery as discovery_wire
from actors.proto.ilnp import HEADER, WireError, encode, unpack_header
from actors.proto.numbers import NH_DISCOVERY, NH_STP
from bus.client import request
from bus.rundir import RunDir
from tests.labutil import lab_name, tool, tool_json, wait_discovered, wait_for, write_topology
from tests.stp_app import App

pytestmark = pytest.mark.lab

LOC_B = 0xB
BOB_NID = 0xFFFF_0000_0000_000B
STRANGER = 0x1234  # a NID no node has
APP_PORT = 7500

# Sends the hex datagrams of a JSON list on stdin to one locator's group, in order.
INJECT = r"""
import json, socket, sys
group, port, iface = sys.argv[1], int(sys.argv[2]), sys.argv[3]
index = socket.if_nametoindex(iface)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
for data in json.load(sys.stdin):
    s.sendto(bytes.fromhex(data), (group, port, 0, index))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from tools.lab import Lab

    lab = Lab(lab_name("bd"))
    try:
        lab.up(write_topology(tmp_path_factory.mktemp("bad"), "router"), timeout=30)
        wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
        lab.pids_at_start = {node: supervised_pids(lab, node) for node in lab.nodes()}
        yield lab
    finally:
        left = lab.down()
        assert not left, f"lab {lab.name} left behind: {left}"


def supervised_pids(lab, node: str) -> dict[str, int]:
    """{program: pid} from supervisorctl status; every program must be RUNNING."""
    out = tool(lab, node, "supervisorctl", "-c", str(lab.node(node).supervisord_conf), "status",
               check=False).stdout
    pids = {}
    for line in out.splitlines():
        m = re.match(r"(\S+)\s+(\S+)\s+pid (\d+),", line)
        assert m and m.group(2) == "RUNNING", f"{node}: {line}"
        pids[m.group(1)] = int(m.group(3))
    assert pids, f"{node}: no programs in {out!r}"
    return pids


def core_counter(lab, node: str, actor: str, name: str) -> int:
    status = request(RunDir(lab.run_dir(node)), actor, "status", timeout=5.0)
    return status.get("core", {}).get(name, 0)


def oversize_drops(lab, node: str) -> int:
    """A datagram longer than the MTU is dropped by the link, before it costs a bus hop."""
    run = RunDir(lab.run_dir(node))
    return request(run, "link", "status", timeout=5.0).get("counters", {}).get("rx_oversize", 0)


def underlay(lab) -> dict:
    """The lab's underlay settings (interface, port, group_tag, mtu), as bob runs them."""
    return tomllib.loads((lab.run_dir("bob") / "node.toml").read_text())["underlay"]


def inject(lab, datagrams: list[bytes], loc: int = LOC_B) -> None:
    """Send raw datagrams from alice's namespace into the group of `loc`."""
    conf = underlay(lab)
    # PROTOCOL.md: locator l1:l2:l3:l4 is the group ff12:0:TAG:0:l1:l2:l3:l4
    groups = [(loc >> shift) & 0xFFFF for shift in (48, 32, 16, 0)]
    group = "ff12:0:%x:0:%x:%x:%x:%x" % (conf["group_tag"], *groups)
    proc = lab.exec("alice", [sys.executable, "-c", INJECT, group, str(conf["port"]), conf["interface"]],
                    input=json.dumps([d.hex() for d in datagrams]), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"injecting failed: {proc.stderr.strip()}"


def stp_to_bob(data: bytes, version: int = 6) -> bytes:
    segment = struct.pack("!HH", 9, APP_PORT) + data
    return encode(LOC_B, STRANGER, LOC_B, BOB_NID, NH_STP, segment, 3, version=version)


def with_version(datagram: bytes, version: int) -> bytes:
    return bytes([(version << 4) | (datagram[0] & 0x0F)]) + datagram[1:]


def with_payload_length(datagram: bytes, length: int) -> bytes:
    return datagram[:4] + struct.pack("!H", length) + datagram[6:]


def solicitation(hostname_bytes: bytes) -> bytes:
    body = struct.pack(">QQB", STRANGER, LOC_B, 1) + hostname_bytes
    return encode(LOC_B, STRANGER, ALL_NODES, 0, NH_DISCOVERY, body, 3)


def not_a_header(datagram: bytes) -> bool:
    try:
        unpack_header(datagram)
    except WireError:
        return True
    return False


def _truncated() -> list[bytes]:
    whole = stp_to_bob(b"truncated")
    return [b"", whole[:1], whole[:20], whole[:39], whole[:-1]]


def _wrong_length() -> list[bytes]:
    whole = stp_to_bob(b"twenty bytes of data")
    return [with_payload_length(whole, n) for n in (0, 19, 23, 25, 1400, 0xFFFF)]


def _wrong_version() -> list[bytes]:
    whole = stp_to_bob(b"wrong version")
    return [with_version(whole, v) for v in (1, 4, 5, 7, 15)]


def _random_bytes() -> list[bytes]:
    rng = random.Random(4)
    out = []
    while len(out) < 30:
        data = rng.randbytes(rng.randrange(0, 300))
        if not_a_header(data):  # a random valid header would be a fair packet, not bad input
            out.append(data)
    return out


BAD_HEADERS = {
    "truncated": _truncated,
    "wrong_payload_length": _wrong_length,
    "wrong_version": _wrong_version,
    "random_bytes": _random_bytes,
}


def run_batch(lab, datagrams: list[bytes]) -> None:
    """Inject the batch and then a marker; bob's app must get the marker and nothing else."""
    app = App.start(lab, "bob", APP_PORT, "--expect", "1", deadline=15)
    try:
        app.wait_event("bound")
        marker = b"marker after the bad ones"
        inject(lab, datagrams + [stp_to_bob(marker)])
        assert app.finish() == 0, f"the marker never arrived: {app.events}"
        got = [data for _host, _port, data in app.received()]
        assert got == [marker], ("bob delivered a bad datagram to the application: "
                                 f"{[(len(d), d[:24]) for d in got]}")
    finally:
        app.kill()


def assert_same_actors(lab) -> None:
    for node in ("bob", "router"):
        assert supervised_pids(lab, node) == lab.pids_at_start[node], f"an actor of {node} restarted"


@pytest.mark.parametrize("kind", list(BAD_HEADERS))
def test_bad_headers_are_dropped_and_counted(lab, kind):
    datagrams = BAD_HEADERS[kind]()
    assert all(not_a_header(d) for d in datagrams)  # the test's own premise
    before = {node: core_counter(lab, node, "router", "malformed") for node in ("bob", "router")}
    run_batch(lab, datagrams)
    for node in ("bob", "router"):
        want = before[node] + len(datagrams)
        wait_for(lambda: core_counter(lab, node, "router", "malformed") >= want, 5,
                 f"{node}'s router to count {len(datagrams)} malformed")
        assert core_counter(lab, node, "router", "malformed") == want
    assert_same_actors(lab)


def test_over_long_datagram_is_dropped_and_counted(lab):
    # A valid packet but bigger than the link MTU: a conforming sender never makes one.
    mtu = underlay(lab)["mtu"]
    big = stp_to_bob(b"o" * (mtu + 200))
    assert not not_a_header(big) and len(big) > mtu
    before = oversize_drops(lab, "bob")
    run_batch(lab, [big])
    wait_for(lambda: oversize_drops(lab, "bob") >= before + 1, 5, "bob to count the over-long datagram")
    assert oversize_drops(lab, "bob") == before + 1
    assert_same_actors(lab)


def test_bad_discovery_hostnames_are_dropped_and_counted(lab):
    bad_names = [b"\xff\xfe", b"al\xc3ce", b"\xc0\xaf", b"bob\xe2\x82", b"\xed\xa0\x80"]  # invalid UTF-8
    for raw in bad_names:
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
    datagrams = [solicitation(raw) for raw in bad_names]
    for d in datagrams:
        with pytest.raises(discovery_wire.DiscoveryWireError):
            discovery_wire.decode(d[HEADER.size:])
    before = {node: core_counter(lab, node, "discovery", "malformed") for node in ("bob", "router")}
    run_batch(lab, datagrams)
    for node in ("bob", "router"):
        want = before[node] + len(datagrams)
        wait_for(lambda: core_counter(lab, node, "discovery", "malformed") >= want, 5,
                 f"{node}'s discovery to count {len(datagrams)} malformed")
        assert core_counter(lab, node, "discovery", "malformed") == want
    # no stranger in the host tables, and the counter is what ilnp-status shows
    names = {h["hostname"] for h in tool_json(lab, "bob", "ilnp-hosts")}
    assert names == {"alice", "router"}
    status = tool_json(lab, "bob", "ilnp-status")
    assert status["discovery"]["core"]["malformed"] == before["bob"] + len(datagrams)
    assert_same_actors(lab)


def test_nodes_still_work_after_bad_input(lab):
    # alice's own network this time: alice and the router receive it
    junk = _random_bytes() + _truncated()
    before = core_counter(lab, "alice", "router", "malformed")
    inject(lab, junk, loc=0xA)
    wait_for(lambda: core_counter(lab, "alice", "router", "malformed") >= before + len(junk), 5,
             "alice's router to count the junk")
    assert tool_json(lab, "alice", "ilnp-status")["router"]["core"]["malformed"] == before + len(junk)
    result = tool_json(lab, "alice", "ilnp-ping", "-c", "3", "-i", "0.1", "bob")
    assert result["received"] == 3, result
    for node in lab.nodes():
        assert supervised_pids(lab, node) == lab.pids_at_start[node], f"an actor of {node} restarted"
