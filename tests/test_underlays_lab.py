"""The underlays of issue 15 on the lab, with real programs (socat, nc, tshark):

- conf/lab/unicast.toml: alice on lan1 behind r1, bob on lan2 behind r2, the routers
  joined only by the unicast locator 0:0:0:d over wan (a bridge that floods neither
  multicast nor broadcast): discovery, ping, the UDP proxy and a 20 MB stream.
- conf/lab/ipv4.toml: alice on an IPv4-multicast locator, bob on an IPv4-broadcast one,
  the router between them: discovery, ping and the UDP proxy as on IPv6, and what goes
  on each wire is IPv4 multicast and IPv4 broadcast.

One lab per class (each is torn down before the next comes up: the machine is shared).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.labutil import is_root, lab_name, tool, tool_json, wait_discovered, wait_for, write_topology
from tests.test_proxy_e2e import SocatFlow, map_both, stop

pytestmark = pytest.mark.lab

SIZE = 20_000_000
UNDERLAY_PORT = 10000


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "big"
    path.write_bytes(os.urandom(SIZE))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def up(tmp_path_factory, base: str, pairs: list[tuple[str, str]], nodes: dict | None = None):
    """Bring conf/lab/BASE.toml up (fast discovery, `nodes`' overrides), wait for `pairs`
    to discover each other, yield the lab; always down, checked."""
    if not is_root():
        pytest.skip("lab tests need root (network namespaces)")
    from tools.lab import Lab

    lab = Lab(lab_name("u"))
    try:
        lab.up(write_topology(tmp_path_factory.mktemp("topo"), base, nodes=nodes), timeout=90)
        wait_discovered(lab, pairs, timeout=30)
        yield lab
    finally:
        left = lab.down()
        assert not left, f"lab {lab.name} left behind: {left}"


def pings(lab, src: str, dst: str, count: int = 5) -> dict:
    return tool_json(lab, src, "ilnp-ping", "-c", str(count), "-i", "0.1", dst, timeout=60)


def proxy_flow_both_ways(lab, a: str, a_port: int, b: str, b_port: int) -> None:
    """ilnp-map on both sides, then socat datagrams each way, every size byte exact."""
    tool_json(lab, a, "ilnp-map", str(a_port), b, str(b_port))
    tool_json(lab, b, "ilnp-map", str(b_port), a, str(a_port))
    for src, sp, dst, dp in ((a, a_port, b, b_port), (b, b_port, a, a_port)):
        flow = SocatFlow(lab, src, sp, dst, dp)
        try:
            # the first datagram may wait for the far side's routes: retry it until one arrives
            wait_for(lambda: flow.send(b"hello") or flow.recv(0.5) == b"hello", 20, f"{src} -> {dst} via proxies")
            while (extra := flow.recv(0.2)) is not None:
                assert extra == b"hello"                         # the retries, nothing else
            sent = [os.urandom(n) for n in (1, 100, 1000, 1396)]
            for data in sent:
                flow.send(data)
            assert [flow.recv(5) for _ in sent] == sent
        finally:
            flow.close()


class Stream:
    """server_node's file served by socat at TCP 127.0.0.1:tcp_port, forwarded over the
    overlay at STP port stp_port, reached from client_node at 127.0.0.1:local_port."""

    def __init__(self, lab, server_node: str, client_node: str, path: Path,
                 tcp_port: int = 7070, stp_port: int = 70, local_port: int = 9070):
        self.lab, self.client_node, self.local_port = lab, client_node, local_port
        self.server = lab.popen(server_node, ["socat", "-u", f"FILE:{path}",
                                              f"TCP-LISTEN:{tcp_port},bind=127.0.0.1,reuseaddr,fork"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        served = tool_json(lab, server_node, "ilnp-forward", "serve", str(stp_port), "--to", f"127.0.0.1:{tcp_port}")
        assert served["bound"], served
        tool(lab, client_node, "ilnp-forward", "listen", str(local_port), server_node, str(stp_port))

    def start(self, out: Path) -> subprocess.Popen:
        """A socat client that writes what it reads to `out` until the far end closes."""
        return self.lab.popen(self.client_node, ["socat", "-u", f"TCP:127.0.0.1:{self.local_port}",
                                                 f"CREATE:{out}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def fetch(self, out: Path, timeout: float = 180) -> str:
        client = self.start(out)
        try:
            _, err = client.communicate(timeout=timeout)
        finally:
            stop(client)
        assert client.returncode == 0, err
        return sha256(out)

    def close(self) -> None:
        stop(self.server)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- two sites joined by a unicast locator ------------------------------------------------

@pytest.fixture(scope="class")
def unicast(tmp_path_factory):
    yield from up(tmp_path_factory, "unicast", [("alice", "bob"), ("bob", "alice")])


class TestUnicast:
    def test_discovery_crosses_the_unicast_locator(self, unicast):
        # the fixture waits for alice and bob only: the far router's answer may come a
        # discovery period later (seen once: bob knew r2 and alice, not r1 yet)
        wait_discovered(unicast, [("alice", "r1"), ("alice", "r2"), ("bob", "r1"), ("bob", "r2")])
        hosts = {h["hostname"]: h["locators"] for h in tool_json(unicast, "alice", "ilnp-hosts")}
        assert hosts["bob"] == ["0:0:0:b"] and {"r1", "r2"} <= set(hosts), hosts
        hosts = {h["hostname"]: h["locators"] for h in tool_json(unicast, "bob", "ilnp-hosts")}
        assert hosts["alice"] == ["0:0:0:a"] and {"r1", "r2"} <= set(hosts), hosts

    def test_alice_pings_bob(self, unicast):
        result = pings(unicast, "alice", "bob")
        assert result["received"] == 5, result

    def test_the_udp_proxy_flow_both_ways(self, unicast):
        proxy_flow_both_ways(unicast, "alice", 5100, "bob", 6100)

    def test_a_20_mb_stream_arrives_byte_exact(self, unicast, big, tmp_path):
        stream = Stream(unicast, "bob", "alice", big[0])
        try:
            assert stream.fetch(tmp_path / "got") == big[1]
        finally:
            stream.close()

    def test_the_routers_talk_on_wan_by_unicast_only(self, unicast, tmp_path):
        """What crossed wan while alice pinged bob: unicast UDP between the routers'
        addresses on the underlay port, and nothing else of ours."""
        seen = capture(unicast, "r1", "wan", lambda: pings(unicast, "alice", "bob", 3), count=6)
        assert seen and set(seen) <= {("10.9.0.2", "10.9.0.3"), ("10.9.0.3", "10.9.0.2")}, seen


@pytest.fixture(scope="class")
def unicast6(tmp_path_factory):
    """The unicast lab with the routers' peers given by their IPv6 (ULA) addresses on wan."""
    def peers(addr: str) -> dict:
        return {"underlay": {"locators": {"0:0:0:d": {"peers": [f"[{addr}]:{UNDERLAY_PORT}"]}}}}
    yield from up(tmp_path_factory, "unicast", [("alice", "bob"), ("bob", "alice")],
                  nodes={"r1": peers("fd00:9::3"), "r2": peers("fd00:9::2")})


class TestUnicastIpv6:
    def test_ping_and_discovery_over_ipv6_peers(self, unicast6):
        hosts = {h["hostname"]: h["locators"] for h in tool_json(unicast6, "alice", "ilnp-hosts")}
        assert hosts["bob"] == ["0:0:0:b"], hosts
        seen = capture(unicast6, "r1", "wan", lambda: pings(unicast6, "alice", "bob", 3), count=6)
        assert seen and set(seen) <= {("fd00:9::2", "fd00:9::3"), ("fd00:9::3", "fd00:9::2")}, seen
        assert pings(unicast6, "bob", "alice")["received"] == 5


def capture(lab, node: str, iface: str, action, count: int) -> list[tuple[str, str]]:
    """(source, destination) of the first `count` underlay datagrams tshark sees on the
    node's interface while `action` runs (IPv4 and IPv6 alike)."""
    proc = lab.popen(node, ["tshark", "-l", "-n", "-i", iface, "-f", f"udp port {UNDERLAY_PORT}",
                            "-c", str(count), "-a", "duration:30", "-T", "fields",
                            "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "Capturing on" in _stderr_line(proc), 20, "tshark to start capturing")
        action()
        out, _ = proc.communicate(timeout=40)
    finally:
        stop(proc)
    rows = []
    for line in out.splitlines():
        src4, src6, dst4, dst6 = (line.split("\t") + ["", "", "", ""])[:4]
        rows.append((src4 or src6, dst4 or dst6))
    return rows


def _stderr_line(proc: subprocess.Popen) -> str:
    line = proc.stderr.readline()
    if not line and proc.poll() is not None:
        raise AssertionError(f"tshark exited {proc.returncode}")
    return line


# ---- IPv4 multicast and IPv4 broadcast -----------------------------------------------------

@pytest.fixture(scope="class")
def ipv4(tmp_path_factory):
    yield from up(tmp_path_factory, "ipv4", [("alice", "bob"), ("bob", "alice")])


class TestIpv4:
    def test_discovery_across_both(self, ipv4):
        # the router's own locators depend on which of its adverts came first: not checked
        hosts = {h["hostname"]: h["locators"] for h in tool_json(ipv4, "alice", "ilnp-hosts")}
        assert hosts["bob"] == ["0:0:0:b"] and "router" in hosts, hosts
        hosts = {h["hostname"]: h["locators"] for h in tool_json(ipv4, "bob", "ilnp-hosts")}
        assert hosts["alice"] == ["0:0:0:a"] and "router" in hosts, hosts

    def test_ping_across_both(self, ipv4):
        assert pings(ipv4, "alice", "bob")["received"] == 5
        assert pings(ipv4, "bob", "alice")["received"] == 5

    def test_the_udp_proxy_flow_both_ways(self, ipv4):
        proxy_flow_both_ways(ipv4, "alice", 5200, "bob", 6200)

    def test_alices_wire_carries_ipv4_multicast(self, ipv4):
        seen = capture(ipv4, "alice", "lan1", lambda: pings(ipv4, "alice", "bob", 3), count=6)
        assert seen, "nothing captured"
        for src, dst in seen:
            assert src in ("10.1.0.1", "10.1.0.2") and ipv4_multicast(dst), seen

    def test_bobs_wire_carries_ipv4_broadcast(self, ipv4):
        seen = capture(ipv4, "bob", "lan2", lambda: pings(ipv4, "bob", "alice", 3), count=6)
        assert seen, "nothing captured"
        assert all(src in ("10.2.0.2", "10.2.0.3") and dst == "10.2.0.255" for src, dst in seen), seen


def ipv4_multicast(address: str) -> bool:
    import ipaddress
    try:
        return ipaddress.IPv4Address(address).is_multicast
    except ValueError:
        return False
