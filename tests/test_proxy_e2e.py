"""The UDP proxy end to end.

Loopback part (no namespaces): a node's broker, router and proxy on this machine, a test
standing in for discovery and the far side on the bus, real UDP sockets as applications.
Lab part (root): alice - router - bob in network namespaces, every program of the node
under supervisord, real netcat-openbsd and socat as the applications.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from actors.proto.stp import decode, encode
from actors.proto import topics
from actors.proto.numbers import NH_STP
from bus.client import BusClient, RequestError, request
from bus.rundir import RunDir
from tests.labutil import is_root, lab_name, tool, wait_discovered, wait_for, write_topology
from tests.test_map_cli import LocalNode, ok

ALICE_NID, BOB_NID, CAROL_NID = 0xFFFF_0000_0000_000A, 0xFFFF_0000_0000_000B, 0xFFFF_0000_0000_000C
LOC_A, LOC_B = 0xA, 0xB
MAX_PAYLOAD = 1440 - 40 - 4


# =========================================================================================
# loopback: the proxy actor between real UDP sockets and a bus we drive
# =========================================================================================

class FarSide:
    """Plays discovery (state.hosts) and the overlay (ilnp.tx out, ilnp.rx.42.P in)."""

    def __init__(self, node: LocalNode):
        self.node = node
        self.bus = BusClient(str(node.run_dir), name="farside")
        self.bus.subscribe(topics.ILNP_TX)
        self.bus.wait_ready()

    def hosts(self, *rows) -> None:
        self.bus.publish(topics.STATE_HOSTS, {"hosts": [list(r) for r in rows]})

    def sent(self, count: int, timeout: float = 5.0) -> list[tuple[int, list, int, int, bytes]]:
        """The next `count` STP items the proxy put on ilnp.tx: (nid, locs, src, dst, data)."""
        out, deadline = [], time.monotonic() + timeout
        while len(out) < count:
            frame = self.bus.recv(max(0.0, deadline - time.monotonic()))
            if frame is None:
                break
            for nid, locs, nh, segment, _via, _opts in frame[1]["p"]:
                if nh == NH_STP:
                    out.append((nid, locs, *decode(segment)))
        return out

    def deliver(self, port: int, src_port: int, data: bytes, src_nid: int = BOB_NID) -> None:
        """As the router does: push the segment to the inbox of whoever bound the port."""
        item = [LOC_B, src_nid, LOC_A, ALICE_NID, LOC_A, encode(src_port, port, data), None]
        self.bus.direct.route(topics.stp_rx(port), RunDir(self.node.run_dir).inbox("proxy"))
        self.bus.send(topics.stp_rx(port), [item])

    def close(self) -> None:
        self.bus.close()


def app(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.2)
    return sock


def recv_retrying(sock: socket.socket, resend, timeout: float = 5.0) -> tuple[bytes, tuple]:
    """recvfrom, calling resend() while nothing came: a fresh SUB subscription of the
    proxy takes a moment to reach the broker."""
    deadline = time.monotonic() + timeout
    while True:
        resend()
        try:
            return sock.recvfrom(65536)
        except socket.timeout:
            if time.monotonic() > deadline:
                raise AssertionError("nothing delivered to the application") from None


@pytest.fixture
def local():
    node = LocalNode().up()
    far = FarSide(node)
    try:
        yield node, far
    finally:
        far.close()
        node.down()


def core_counters(node: LocalNode) -> dict:
    return node.ask("proxy", "status")["core"]


def test_loopback_datagrams_go_out_over_stp_and_replies_come_back(local):
    node, far = local
    far.hosts(["bob", BOB_NID, [LOC_B], 0])
    ok(node.map("5000", "bob", "6000"))
    wait_for(lambda: node.ask("proxy", "list")["mappings"][0]["resolved"], 5, "bob resolved")
    a = app(5000)
    try:
        a.sendto(b"hello bob", ("127.0.0.1", node.proxy_port))
        assert far.sent(1) == [(BOB_NID, [LOC_B], 5000, 6000, b"hello bob")]
        data, source = recv_retrying(a, lambda: far.deliver(5000, 6000, b"hello alice"))
        assert (data, source) == (b"hello alice", ("127.0.0.1", node.proxy_port))
    finally:
        a.close()


def test_loopback_resolution_follows_a_move(local):
    node, far = local
    far.hosts(["bob", BOB_NID, [LOC_B], 0])
    ok(node.map("5000", "bob", "6000"))
    a = app(5000)
    try:
        wait_for(lambda: node.ask("proxy", "list")["mappings"][0]["resolved"], 5, "bob resolved")
        far.hosts(["bob", BOB_NID, [0xC, LOC_B], 0])       # bob moved to 0:0:0:c
        wait_for(lambda: (a.sendto(b"x", ("127.0.0.1", node.proxy_port)), far.sent(1, 0.2))[1] ==
                 [(BOB_NID, [0xC, LOC_B], 5000, 6000, b"x")], 5, "the new locators in use")
    finally:
        a.close()


def test_loopback_oversize_and_unmapped_are_counted_and_logged_once(local):
    node, far = local
    far.hosts(["bob", BOB_NID, [LOC_B], 0])
    ok(node.map("5000", "bob", "6000"))
    pid = node.ask("proxy", "status")["pid"]
    a, stranger = app(5000), app(0)
    try:
        for size in (MAX_PAYLOAD + 1, 1500, 9000, 65507):
            a.sendto(bytes(size), ("127.0.0.1", node.proxy_port))
        for _ in range(5):
            stranger.sendto(b"who am i", ("127.0.0.1", node.proxy_port))
        wait_for(lambda: (core_counters(node).get("oversize"), core_counters(node).get("unmapped")) == (4, 5),
                 5, "the drops counted")
        a.sendto(bytes(MAX_PAYLOAD), ("127.0.0.1", node.proxy_port))   # the largest still goes
        [(_nid, _locs, src, dst, data)] = far.sent(1)
        assert (src, dst, len(data)) == (5000, 6000, MAX_PAYLOAD)
        log = node.log("proxy")
        assert len(re.findall(r"event=drop reason=oversize port=5000 size=\d+ max=1396", log)) == 1
        assert len(re.findall(r"event=drop reason=unmapped port=\d+", log)) == 1
        assert node.ask("proxy", "status")["pid"] == pid
    finally:
        a.close()
        stranger.close()


def test_loopback_a_host_not_yet_discovered_drops_then_works(local):
    node, far = local
    far.hosts(["bob", BOB_NID, [LOC_B], 0])
    ok(node.map("5000", "carol", "7000"))
    a = app(5000)
    try:
        for _ in range(3):
            a.sendto(b"early", ("127.0.0.1", node.proxy_port))
        wait_for(lambda: core_counters(node).get("host_unknown") == 3, 5, "host_unknown counted")
        assert far.sent(1, 0.3) == []
        far.hosts(["bob", BOB_NID, [LOC_B], 0], ["carol", 0xC, [0xC], 0])
        wait_for(lambda: node.ask("proxy", "list")["mappings"][0]["resolved"], 5, "carol resolved")
        a.sendto(b"late", ("127.0.0.1", node.proxy_port))
        assert far.sent(1) == [(0xC, [0xC], 5000, 7000, b"late")]
    finally:
        a.close()


def test_loopback_fifty_mappings_never_cross(local):
    node, far = local
    far.hosts(["bob", BOB_NID, [LOC_B], 0])
    n = 50
    for i in range(n):
        request(str(node.run_dir), "proxy", "map", local_port=5100 + i, host="bob", remote_port=6100 + i)
    apps = [app(5100 + i) for i in range(n)]
    try:
        wait_for(lambda: all(m["resolved"] for m in node.ask("proxy", "list")["mappings"]), 5, "resolved")
        for rnd in range(4):
            for i, a in enumerate(apps):
                a.sendto(b"%d:%d" % (i, rnd), ("127.0.0.1", node.proxy_port))
        sent = far.sent(4 * n)
        assert len(sent) == 4 * n
        for _nid, _locs, src, dst, data in sent:
            i = int(data.split(b":")[0])
            assert (src, dst) == (5100 + i, 6100 + i)
        # replies: each application gets exactly what was addressed to its port
        for i, a in enumerate(apps):
            got, _ = recv_retrying(a, lambda i=i: far.deliver(5100 + i, 6100 + i, b"to %d" % i))
            assert got == b"to %d" % i
    finally:
        for a in apps:
            a.close()


def test_loopback_ipv6_proxy_port():
    node = LocalNode(bind="::1").up()
    far = FarSide(node)
    a = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        a.bind(("::1", 5000))
        a.settimeout(0.2)
        far.hosts(["bob", BOB_NID, [LOC_B], 0])
        assert ok(node.map("5000", "bob", "6000")).startswith("mapped [::1]:5000 -> bob:6000")
        wait_for(lambda: node.ask("proxy", "list")["mappings"][0]["resolved"], 5, "bob resolved")
        a.sendto(b"over v6", ("::1", node.proxy_port))
        assert far.sent(1) == [(BOB_NID, [LOC_B], 5000, 6000, b"over v6")]
        data, source = recv_retrying(a, lambda: far.deliver(5000, 6000, b"back"))
        assert data == b"back" and source[:2] == ("::1", node.proxy_port)
    finally:
        a.close()
        far.close()
        node.down()


def test_loopback_unmap_stops_delivery(local):
    node, far = local
    far.hosts(["bob", BOB_NID, [LOC_B], 0])
    ok(node.map("5000", "bob", "6000"))
    a = app(5000)
    try:
        recv_retrying(a, lambda: far.deliver(5000, 6000, b"mapped"))
        ok(node.map("--delete", "5000"))
        before = core_counters(node).get("to_local", 0)
        far.deliver(5000, 6000, b"after unmap")
        with pytest.raises(socket.timeout):
            while True:
                data, _ = a.recvfrom(100)
                assert data == b"mapped"   # only leftovers of the retries may still come
        assert core_counters(node).get("to_local", 0) == before
        a.sendto(b"x", ("127.0.0.1", node.proxy_port))
        wait_for(lambda: core_counters(node).get("unmapped") == 1, 5, "unmapped counted")
    finally:
        a.close()


def test_loopback_only_the_mapped_remote_is_delivered_unless_any_remote(local):
    """Issue 11: carol (another NID) and bob's other STP ports do not reach alice's
    mapping to bob:6000; with --any-remote they do."""
    node, far = local
    far.hosts(["bob", BOB_NID, [LOC_B], 0], ["carol", CAROL_NID, [0xC], 0])
    ok(node.map("5000", "bob", "6000"))
    wait_for(lambda: node.ask("proxy", "list")["mappings"][0]["resolved"], 5, "bob resolved")
    a = app(5000)
    try:
        assert recv_retrying(a, lambda: far.deliver(5000, 6000, b"bob"))[0] == b"bob"
        for _ in range(3):
            far.deliver(5000, 6000, b"carol", src_nid=CAROL_NID)
            far.deliver(5000, 6001, b"bob's other port")
        wait_for(lambda: core_counters(node).get("from_unmapped_remote") == 6, 5, "the refusals counted")
        far.deliver(5000, 6000, b"bob again")
        got = []
        with pytest.raises(socket.timeout):
            while True:
                got.append(a.recvfrom(100)[0])
        assert b"bob again" in got and set(got) <= {b"bob", b"bob again"}, got
        log = node.log("proxy")
        lines = re.findall(r"event=drop reason=from_unmapped_remote port=5000 size=\d+ source=(\S+)", log)
        assert len(lines) == 1 and lines[0] in ("[ffff:0:0:c]:6000", "[ffff:0:0:b]:6001"), lines

        assert json.loads(ok(node.map("5000", "bob", "6000", "--any-remote", "--replace", "--json")))["any_remote"]
        assert recv_retrying(a, lambda: far.deliver(5000, 6000, b"carol", src_nid=CAROL_NID))[0] == b"carol"
        assert recv_retrying(a, lambda: far.deliver(5000, 4242, b"anyone", src_nid=0x77))[0] == b"anyone"
        assert core_counters(node).get("from_unmapped_remote") == 6
    finally:
        a.close()


def host_address() -> str:
    """A non-loopback IPv4 address of this host (the one a route out would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))        # TEST-NET-3: nothing is sent
        except OSError:
            pytest.skip("this host has no IPv4 route out")
        addr = s.getsockname()[0]
    if addr.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address")
    return addr


def test_loopback_a_datagram_from_another_address_is_refused():
    """A proxy bound to every address still takes datagrams from loopback only."""
    here = host_address()
    node = LocalNode(bind="0.0.0.0").up()
    far = FarSide(node)
    outsider = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a = app(5000)
    try:
        outsider.bind((here, 5000))
        far.hosts(["bob", BOB_NID, [LOC_B], 0])
        ok(node.map("5000", "bob", "6000"))
        wait_for(lambda: node.ask("proxy", "list")["mappings"][0]["resolved"], 5, "bob resolved")
        for _ in range(3):
            outsider.sendto(b"from outside", (here, node.proxy_port))
        wait_for(lambda: core_counters(node).get("from_foreign_source") == 3, 5, "the refusals counted")
        assert far.sent(1, 0.3) == []
        a.sendto(b"from loopback", ("127.0.0.1", node.proxy_port))
        assert far.sent(1) == [(BOB_NID, [LOC_B], 5000, 6000, b"from loopback")]
        lines = re.findall(r"event=drop reason=from_foreign_source port=5000 size=12 source=(\S+)",
                           node.log("proxy"))
        assert lines == [here]
    finally:
        outsider.close()
        a.close()
        far.close()
        node.down()


def test_loopback_the_bind_addresss_own_host_may_send():
    """proxy.bind set to this host's address: applications reach it from that address."""
    here = host_address()
    node = LocalNode(bind=here).up()
    far = FarSide(node)
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        a.bind(("0.0.0.0", 5000))
        a.settimeout(0.2)
        far.hosts(["bob", BOB_NID, [LOC_B], 0])
        ok(node.map("5000", "bob", "6000"))
        wait_for(lambda: node.ask("proxy", "list")["mappings"][0]["resolved"], 5, "bob resolved")
        a.sendto(b"from this host", (here, node.proxy_port))   # the kernel picks `here` as the source
        assert far.sent(1) == [(BOB_NID, [LOC_B], 5000, 6000, b"from this host")]
        assert core_counters(node).get("from_foreign_source", 0) == 0
        assert recv_retrying(a, lambda: far.deliver(5000, 6000, b"back"))[0] == b"back"
    finally:
        a.close()
        far.close()
        node.down()


# =========================================================================================
# the lab: alice - router - bob, real nc and socat
# =========================================================================================

PROXY_PORT = 10001


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not is_root():
        pytest.skip("lab tests need root (network namespaces)")
    from tools.lab import Lab

    lab = Lab(lab_name("px"))
    try:
        lab.up(write_topology(tmp_path_factory.mktemp("topo"), "router"), timeout=60)
        wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
        yield lab
    finally:
        left = lab.down()
        assert not left, f"lab {lab.name} left behind: {left}"


def ilnp_map(lab, node: str, *argv: str) -> dict:
    return json.loads(tool(lab, node, "ilnp-map", *argv, "--json").stdout)


def map_both(lab, alice_port: int, bob_port: int) -> None:
    """alice:alice_port <-> bob:bob_port (each side needs its mapping: it binds the port)."""
    assert ilnp_map(lab, "alice", str(alice_port), "bob", str(bob_port))["proxy_port"] == PROXY_PORT
    assert ilnp_map(lab, "bob", str(bob_port), "alice", str(alice_port))["proxy_port"] == PROXY_PORT


def proxy_status(lab, node: str) -> dict:
    return request(str(lab.run_dir(node)), "proxy", "status", timeout=2.0)


class Lines:
    """A process's stdout lines, read by a thread."""

    def __init__(self, proc: subprocess.Popen):
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in iter(stream.readline, b""):
            self.q.put(line.decode(errors="replace").rstrip("\n"))

    def take(self, count: int, timeout: float) -> list[str]:
        out, deadline = [], time.monotonic() + timeout
        while len(out) < count and (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.q.get(timeout=left))
            except queue.Empty:
                break
        return out


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.lab
def test_nc_talks_both_ways_through_the_proxies(lab):
    map_both(lab, 5000, 6000)
    nc = ["nc", "-u", "-p"]
    bob = lab.popen("bob", nc + ["6000", "127.0.0.1", str(PROXY_PORT)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    alice = lab.popen("alice", nc + ["5000", "127.0.0.1", str(PROXY_PORT)], stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        at_bob, at_alice = Lines(bob), Lines(alice)
        wait_for(lambda: proxy_status(lab, "bob")["counters"] is not None, 5, "bob's proxy")
        for sender, receiver, name in ((alice, at_bob, "alice"), (bob, at_alice, "bob"),
                                       (alice, at_bob, "alice"), (bob, at_alice, "bob")):
            lines = [f"{name} says {i}: " + "the quick brown fox " * (i % 5) for i in range(20)]
            for line in lines:
                sender.stdin.write(line.encode() + b"\n")
                sender.stdin.flush()
                time.sleep(0.02)      # a modest rate: 50 lines a second
            assert receiver.take(len(lines), 10) == lines
    finally:
        stop(alice, bob)


class SocatFlow:
    """src_node:src_port -> dst_node:dst_port with socat at both ends; the test feeds
    and reads datagrams through unix datagram sockets, so boundaries are kept exactly:
      src: socat -u UNIX-RECV:in UDP-SENDTO:127.0.0.1:PROXY,sourceport=SRC
      dst: socat -u UDP-RECV:DST UNIX-SENDTO:out"""

    def __init__(self, lab, src_node: str, src_port: int, dst_node: str, dst_port: int):
        self.dir = Path(tempfile.mkdtemp(prefix="pxflow"))
        self.inlet, self.outlet = self.dir / "in.sock", self.dir / "out.sock"
        self.out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.out.bind(str(self.outlet))
        self.out.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.send_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs = [
            lab.popen(dst_node, ["socat", "-u", f"UDP-RECV:{dst_port}", f"UNIX-SENDTO:{self.outlet}"],
                      **quiet),
            lab.popen(src_node, ["socat", "-u", f"UNIX-RECV:{self.inlet}",
                                 f"UDP-SENDTO:127.0.0.1:{PROXY_PORT},sourceport={src_port}"], **quiet),
        ]
        wait_for(self.inlet.exists, 5, "socat's inlet socket")

    def send(self, data: bytes) -> None:
        self.send_sock.sendto(data, str(self.inlet))

    def recv(self, timeout: float) -> bytes | None:
        self.out.settimeout(timeout)
        try:
            return self.out.recv(65536)
        except socket.timeout:
            return None

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def close(self) -> None:
        stop(*self.procs)
        self.out.close()
        self.send_sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.lab
def test_socat_every_size_arrives_byte_exact_and_oversize_is_refused(lab):
    map_both(lab, 5001, 6001)
    flow = SocatFlow(lab, "alice", 5001, "bob", 6001)
    try:
        for size in range(1, MAX_PAYLOAD + 1):    # growing: the session is up before the big ones
            data = os.urandom(size)
            flow.send(data)
            got = flow.recv(5)
            assert got is not None, f"datagram of {size} bytes lost"
            assert got == data, f"datagram of {size} bytes changed"
        pid = proxy_status(lab, "alice")["pid"]
        for size in (MAX_PAYLOAD + 1, 1500, 8000):
            flow.send(os.urandom(size))
        wait_for(lambda: proxy_status(lab, "alice")["core"].get("oversize") == 3, 5, "oversize counted")
        log = (lab.run_dir("alice") / "proxy.log").read_text()
        assert re.search(r"event=drop reason=oversize port=5001 size=\d+ max=1396", log)
        data = os.urandom(MAX_PAYLOAD)
        flow.send(data)
        assert flow.recv(5) == data, "nothing passes after the oversize ones"
        assert flow.recv(0.3) is None, "an oversize datagram got through"
        assert proxy_status(lab, "alice")["pid"] == pid and flow.alive()
    finally:
        flow.close()


# Fifty applications per side, in the node's namespace: bob's echo each of its ports
# back with its port number; alice's send round robin and check every reply.
BOB_ECHO = r"""
import selectors, socket, sys
base, n = int(sys.argv[1]), int(sys.argv[2])
sel = selectors.DefaultSelector()
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind(("127.0.0.1", base + i))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, base + i)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        data, addr = key.fileobj.recvfrom(65536)
        key.fileobj.sendto(b"%d|" % key.data + data, addr)
"""

ALICE_CLIENT = r"""
import json, selectors, socket, sys, time
base, n, rounds, proxy, rate = (int(a) for a in sys.argv[1:6])
sel = selectors.DefaultSelector()
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind(("127.0.0.1", base + i))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, base + i)
    socks.append(s)
got = {base + i: [] for i in range(n)}
todo = [(r, i) for r in range(rounds) for i in range(n)]
gap, start, k = 1.0 / rate, time.monotonic(), 0
deadline = None
while True:
    now = time.monotonic()
    while k < len(todo) and now >= start + k * gap:
        r, i = todo[k]
        socks[i].sendto(b"%d:%d" % (base + i, r), ("127.0.0.1", proxy))
        k += 1
    if k == len(todo) and deadline is None:
        deadline = now + 10
    if deadline is not None and (now > deadline or sum(map(len, got.values())) == len(todo)):
        break
    for key, _ in sel.select(0.005):
        data, _addr = key.fileobj.recvfrom(65536)
        got[key.data].append(data.decode())
print(json.dumps(got))
"""


@pytest.mark.lab
def test_fifty_mappings_concurrent_flows_never_cross(lab, tmp_path):
    n, rounds, a0, b0 = 50, 10, 5100, 6100
    for i in range(n):   # straight to the proxies: 100 CLI runs would only add time
        request(str(lab.run_dir("alice")), "proxy", "map", local_port=a0 + i, host="bob", remote_port=b0 + i)
        request(str(lab.run_dir("bob")), "proxy", "map", local_port=b0 + i, host="alice", remote_port=a0 + i)
    listed = ilnp_map(lab, "alice", "--list")["mappings"]
    assert {m["local_port"] for m in listed} >= set(range(a0, a0 + n))
    assert all(m["bound"] for m in listed)
    (tmp_path / "echo.py").write_text(BOB_ECHO)
    (tmp_path / "client.py").write_text(ALICE_CLIENT)
    echo = lab.popen("bob", [sys.executable, str(tmp_path / "echo.py"), str(b0), str(n)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert echo.stdout.readline() == b"ready\n"
        client = lab.exec("alice", [sys.executable, str(tmp_path / "client.py"), str(a0), str(n),
                                    str(rounds), str(PROXY_PORT), "250"],
                          capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr
        got = json.loads(client.stdout)
    finally:
        stop(echo)
    for i in range(n):
        replies = got[str(a0 + i)]
        # every reply at alice's port a0+i came from bob's port b0+i and answers a0+i
        assert all(r.startswith(f"{b0 + i}|{a0 + i}:") for r in replies), (a0 + i, replies)
        assert sorted(replies) == sorted(f"{b0 + i}|{a0 + i}:{r}" for r in range(rounds)), (a0 + i, replies)


def wait_new_proxy(lab, node: str, old_pid: int, timeout: float = 20.0) -> int:
    def new_pid():
        try:
            pid = proxy_status(lab, node)["pid"]
        except RequestError:
            return None
        return pid if pid != old_pid else None
    return wait_for(new_pid, timeout, f"{node}'s proxy to be restarted")


class Sender:
    """Numbered datagrams into a flow every `gap` seconds, from a thread."""

    def __init__(self, flow: SocatFlow, gap: float = 0.02):
        self.flow, self.gap, self.seq = flow, gap, 0
        self.received: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._recv, daemon=True)]
        for t in self._threads:
            t.start()

    def _send(self) -> None:
        while not self._stop.is_set():
            self.flow.send(b"seq %d" % self.seq)
            self.seq += 1
            time.sleep(self.gap)

    def _recv(self) -> None:
        while not self._stop.is_set():
            data = self.flow.recv(0.1)
            if data is not None:
                self.received.append(int(data.split()[1]))

    def arrived_after(self, seq: int) -> bool:
        return any(s > seq for s in self.received)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)


@pytest.mark.lab
@pytest.mark.parametrize("victim", ["alice", "bob"])
def test_kill_9_of_the_proxy_mid_flow_resumes_without_remapping(lab, victim):
    a_port, b_port = (5300, 6300) if victim == "alice" else (5301, 6301)
    map_both(lab, a_port, b_port)
    flow = SocatFlow(lab, "alice", a_port, "bob", b_port)
    sender = Sender(flow)
    try:
        wait_for(lambda: len(sender.received) >= 10, 10, "the flow to run")
        old = proxy_status(lab, victim)["pid"]
        os.kill(old, signal.SIGKILL)
        killed_at = sender.seq
        new = wait_new_proxy(lab, victim, old)
        restarted_at = sender.seq
        wait_for(lambda: sender.arrived_after(restarted_at), 15,
                 f"datagrams sent after {victim}'s proxy came back (pid {old} -> {new}) to arrive")
        assert flow.alive()
        assert any(s < killed_at for s in sender.received)
        mapped = {m["local_port"] for m in ilnp_map(lab, victim, "--list")["mappings"]}
        assert (a_port if victim == "alice" else b_port) in mapped
    finally:
        sender.stop()
        flow.close()


@pytest.mark.lab
def test_mappings_survive_a_restart_of_the_whole_node(lab):
    map_both(lab, 5400, 6400)
    before = ilnp_map(lab, "bob", "--list")["mappings"]
    conf = str(lab.node("bob").supervisord_conf)
    tool(lab, "bob", "supervisorctl", "-c", conf, "restart", "all", timeout=60)
    after = ilnp_map(lab, "bob", "--list")["mappings"]
    key = lambda ms: sorted((m["local_port"], m["remote_host"], m["remote_port"]) for m in ms)  # noqa: E731
    assert key(after) == key(before) and (6400, "alice", 5400) in key(after)
    wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
    flow = SocatFlow(lab, "alice", 5400, "bob", 6400)
    try:
        def through() -> bool:
            flow.send(b"after restart")
            return flow.recv(0.3) == b"after restart"
        wait_for(through, 20, "a datagram through bob's restarted node")
    finally:
        flow.close()


class SocatSink:
    """What a node's application on UDP port `port` receives: socat -u UDP-RECV:PORT
    UNIX-SENDTO:out, read here datagram by datagram."""

    def __init__(self, lab, node: str, port: int):
        self.dir = Path(tempfile.mkdtemp(prefix="pxsink"))
        self.out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.out.bind(str(self.dir / "out.sock"))
        self.proc = lab.popen(node, ["socat", "-u", f"UDP-RECV:{port}", f"UNIX-SENDTO:{self.dir / 'out.sock'}"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def drain(self, timeout: float) -> list[bytes]:
        """Everything that arrives until nothing has for `timeout` seconds."""
        got = []
        self.out.settimeout(timeout)
        while True:
            try:
                got.append(self.out.recv(65536))
            except socket.timeout:
                return got

    def close(self) -> None:
        stop(self.proc)
        self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def socat_send(lab, node: str, src_port: int, data: bytes) -> None:
    """One datagram from the node's UDP port src_port to its proxy port, sent by socat."""
    proc = lab.exec(node, ["socat", "-u", "-", f"UDP-SENDTO:127.0.0.1:{PROXY_PORT},sourceport={src_port}"],
                    input=data, capture_output=True, timeout=10)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.lab
def test_a_third_node_reaches_a_mapping_only_when_it_is_any_remote(lab):
    """alice maps 5600 -> bob:6600; the router maps 6600 -> alice:5600 as bob does, so its
    datagrams differ from bob's by the source NID alone. Not delivered, counted, logged;
    bob's are. After `ilnp-map --replace --any-remote 5600 bob 6600` the router's are too."""
    a_port, b_port = 5600, 6600
    map_both(lab, a_port, b_port)
    assert ilnp_map(lab, "router", str(b_port), "alice", str(a_port))["bound"]
    wait_discovered(lab, [("router", "alice")])
    sink = SocatSink(lab, "alice", a_port)
    try:
        def delivered(node: str, data: bytes) -> bool:
            socat_send(lab, node, b_port, data)
            return data in sink.drain(0.3)

        wait_for(lambda: delivered("bob", b"bob before"), 20, "bob's datagram at alice")
        refused = lambda: proxy_status(lab, "alice")["core"].get("from_unmapped_remote", 0)  # noqa: E731
        before, sent = refused(), 0

        def router_refused() -> bool:
            nonlocal sent
            socat_send(lab, "router", b_port, b"router %d" % sent)
            sent += 1
            return refused() - before >= 3

        wait_for(router_refused, 20, "the router's datagrams refused at alice", interval=0.2)
        wait_for(lambda: delivered("bob", b"bob after"), 20, "bob's datagram after the router's")
        assert not [d for d in sink.drain(0.5) if d.startswith(b"router")]
        log = (lab.run_dir("alice") / "proxy.log").read_text()
        assert re.search(rf"event=drop reason=from_unmapped_remote port={a_port} size=\d+ "
                         rf"source=\[[0-9a-f:]+\]:{b_port}", log)

        listed = ilnp_map(lab, "alice", "--replace", "--any-remote", str(a_port), "bob", str(b_port))
        assert listed["any_remote"] is True
        wait_for(lambda: delivered("router", b"router, any remote"), 20, "the router's datagram at alice")
        wait_for(lambda: delivered("bob", b"bob, any remote"), 20, "bob's datagram still")
    finally:
        sink.close()
        tool(lab, "alice", "ilnp-map", "--delete", str(a_port))
        tool(lab, "router", "ilnp-map", "--delete", str(b_port))
