"""Captures of live nodes decoded by tools/wireshark/ilnp.lua (issue 14, acceptance):
`ilnp-tap --pcap` on alice and a capture on the lab bridge, taken together during
ilnp-ping and a move (ilnp-move), then a stream of the stream relay (QUIC over STP).

Lab "router" with cryptographic NIDs (signed locator updates): alice (0:0:0:a) -
router (a, b, c) - bob (0:0:0:b). About 25 s.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.dissect import TSHARK, fields, needs_tshark, problems
from tests.labutil import tool, tool_json, wait_discovered, wait_for

pytestmark = [pytest.mark.lab, needs_tshark]

PING_COUNT = 3
ECHO_PORT, SERVED_PORT = 7, 80
LOOKED_AT = ["ip.src", "ipv6.src", "ipv6.dst", "udp.srcport", "udp.dstport", "udp.payload", "frame.time_epoch",
             "ilnp.nh", "ilnp.hop", "ilnp.src_loc", "ilnp.src_nid", "ilnp.dst_loc", "ilnp.dst_nid",
             "ilnp.nonce", "ilnp.seq", "ilnp.sig", "stp.srcport", "stp.dstport", "ilnp.disc.nid",
             "ilnp.disc.loc", "ilnp.disc.solicit", "ilnp.disc.hostname", "ilnp.lu.type", "ilnp.lu.locator"]


def one(row: dict, name: str) -> str | None:
    values = row[name]
    assert len(values) <= 1, (name, values)
    return values[0] if values else None


def read_line(proc: subprocess.Popen, timeout: float, what: str) -> str:
    """A line of proc's stderr within the deadline (it says when it captures)."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no {what} within {timeout}s")
    return proc.stderr.readline()


def read_exactly(stream, size: int, timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"read {len(data)} of {size} bytes before the deadline")
            chunk = os.read(stream.fileno(), size - len(data))
            if not chunk:
                raise AssertionError(f"end of stream after {len(data)} of {size} bytes")
            data += chunk
    return data


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> tuple[str, str]:
    """End a process we started (by its PID) and collect what it said."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err


class Capturing:
    """ilnp-tap --pcap on a node and dumpcap on the lab's bridge, started and ended together."""

    def __init__(self, lab, node: str, tmp: Path):
        self.tap_file, self.bridge_file = tmp / f"tap-{node}.pcap", tmp / "bridge.pcapng"
        bridge = lab.state()["bridge"]
        dumpcap = os.path.join(os.path.dirname(TSHARK), "dumpcap")
        self.dumpcap = subprocess.Popen(
            ["ip", "netns", "exec", bridge["namespace"], dumpcap, "-q", "-i", bridge["bridge"],
             "-f", "udp", "-w", str(self.bridge_file)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.tap = lab.popen(node, ["ilnp-tap", "--pcap", str(self.tap_file)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        try:
            assert "capturing" in read_line(self.tap, 15, "word from the tap")
            wait_for(lambda: self.bridge_file.exists() and self.bridge_file.stat().st_size > 0, 15,
                     "dumpcap to start")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> str:
        """The tap's last words. dumpcap reads the kernel in batches: it is stopped once
        the bridge's file holds the last datagram the tap wrote (so it has the rest)."""
        _, said = stop(self.tap)
        try:
            last = last_udp_payload(self.tap_file)
            if last is not None and self.dumpcap.poll() is None:
                wait_for(lambda: last in self.bridge_file.read_bytes(), 15, "the tap's last datagram on the bridge")
        finally:
            stop(self.dumpcap)
        return said


def last_udp_payload(path: Path) -> bytes | None:
    """The UDP payload of the last record of a pcap of ours (raw IPv6/UDP)."""
    data = path.read_bytes() if path.exists() else b""
    at, last = 24, None
    while at + 16 <= len(data):
        incl = struct.unpack_from("<IIII", data, at)[2]
        last = data[at + 16 + 48:at + 16 + incl]
        at += 16 + incl
    return last


@pytest.fixture(scope="module")
def lab(make_lab_module):
    lab = make_lab_module("router", defaults={"nid": "auto"})
    wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
    return lab


def nid_of(lab, node: str) -> str:
    return json.loads((lab.run_dir(node) / "node.json").read_text())["nid"]


def link_local(lab, node: str) -> str:
    out = tool(lab, node, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link").stdout
    return out.split()[3].split("/")[0]


@pytest.fixture(scope="module")
def moved(lab, tmp_path_factory):
    """Pings, a move of alice to 0:0:0:b, pings again, all captured; a second tap on
    a pipe whose reader leaves early."""
    tmp = tmp_path_factory.mktemp("captures")
    started = time.time()
    capturing = Capturing(lab, "alice", tmp)
    piped = lab.popen("alice", ["ilnp-tap", "--pcap", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        header = read_exactly(piped.stdout, 24, 15)
        tool(lab, "alice", "ilnp-ping", "-c", str(PING_COUNT), "-i", "0.2", "bob")
        record = read_exactly(piped.stdout, 16, 10)  # the pipe is fed as packets come, not at the end
        incl = struct.unpack("<IIII", record)[2]
        first = read_exactly(piped.stdout, incl, 5)
        piped.stdout.close()  # the reader leaves: the tap ends at its next write
        acked = tool_json(lab, "alice", "ilnp-status")["mobility"]["core"].get("updates_acked", 0)
        tool(lab, "alice", "ilnp-move", "0:0:0:b")
        wait_for(lambda: tool_json(lab, "alice", "ilnp-status")["mobility"]["core"].get("updates_acked", 0) > acked,
                 15, "bob to acknowledge alice's update")
        tool(lab, "alice", "ilnp-ping", "-c", str(PING_COUNT), "-i", "0.2", "bob")
        piped_rc = piped.wait(timeout=20)  # discovery speaks every 1-2 s: a write comes soon
        piped_err = piped.stderr.read().decode()
    finally:
        said = capturing.stop()
        stop(piped)
    return {"tap": capturing.tap_file, "bridge": capturing.bridge_file, "said": said, "window": (started, time.time()),
            "piped": (header, first, piped_rc, piped_err),
            "nids": {node: nid_of(lab, node) for node in ("alice", "bob", "router")},
            "alice_address": link_local(lab, "alice")}


def test_the_taps_capture_decodes_with_the_nodes_names_locators_updates_and_ports(moved):
    nids = moved["nids"]
    alice, bob = nids["alice"], nids["bob"]
    assert moved["said"].startswith("ilnp-tap: ") and " packets to " in moved["said"]
    assert problems(moved["tap"]) == []
    rows = fields(moved["tap"], LOOKED_AT)
    assert len(rows) > 2 * 2 * PING_COUNT
    # discovery: each node's hostname with its own NID
    named = {(one(r, "ilnp.disc.hostname"), one(r, "ilnp.disc.nid")) for r in rows if r["ilnp.disc.hostname"]}
    assert {(name, nids[name]) for name in ("alice", "bob", "router")} <= named
    assert all(one(r, "ilnp.disc.nid") == one(r, "ilnp.src_nid") for r in rows if r["ilnp.disc.nid"])
    # the pings: 2 x PING_COUNT echo requests from alice to bob and as many replies, first
    # through the router (alice on a), then straight on b
    requests = [r for r in rows if one(r, "stp.dstport") == str(ECHO_PORT) and one(r, "ilnp.src_nid") == alice]
    replies = [r for r in rows if one(r, "stp.srcport") == str(ECHO_PORT) and one(r, "ilnp.src_nid") == bob]
    assert len(requests) == len(replies) == 2 * PING_COUNT
    assert all(one(r, "ilnp.dst_nid") == bob and int(one(r, "stp.srcport")) >= 49152 for r in requests)
    assert [one(r, "ilnp.src_loc") for r in requests] == ["0:0:0:a"] * PING_COUNT + ["0:0:0:b"] * PING_COUNT
    assert [one(r, "ipv6.dst") for r in requests] == ["ff12::a"] * PING_COUNT + ["ff12::b"] * PING_COUNT
    # the move: a signed update naming 0:0:0:b, and bob's ack echoing its sequence number
    updates = [r for r in rows if one(r, "ilnp.lu.type") == "1"]
    acks = [r for r in rows if one(r, "ilnp.lu.type") == "0"]
    assert updates and acks
    for update in updates:
        assert (one(update, "ilnp.src_nid"), one(update, "ilnp.dst_nid")) == (alice, bob)
        assert update["ilnp.lu.locator"] == ["0:0:0:b"]
        assert one(update, "ilnp.seq") and len(one(update, "ilnp.nonce")) in (8, 24) and len(one(update, "ilnp.sig")) == 192
    assert {one(a, "ilnp.seq") for a in acks} & {one(u, "ilnp.seq") for u in updates}
    assert all((one(a, "ilnp.src_nid"), one(a, "ilnp.dst_nid")) == (bob, alice) for a in acks)
    # the underlay's headers: what alice sent is from her address, what she received from
    # an unknown sender (::); the overlay's port both ways; times within the capture
    sent = [r for r in rows if one(r, "ipv6.src") != "::"]
    assert {one(r, "ipv6.src") for r in sent} == {moved["alice_address"]}
    assert requests[0] in sent and replies[0] not in sent
    assert {(one(r, "udp.srcport"), one(r, "udp.dstport")) for r in rows} == {("10000", "10000")}
    start, end = moved["window"]
    times = [float(one(r, "frame.time_epoch")) for r in rows]
    assert all(start - 1 <= t <= end + 1 for t in times)


def test_what_the_tap_wrote_is_on_the_bridge_byte_for_byte(moved):
    """Every datagram alice sent, as the tap wrote it, is on the bridge from her address
    to the same group; every one she received is on the bridge too. And the bridge's
    capture decodes as cleanly as the tap's."""
    assert problems(moved["bridge"]) == []
    tap = fields(moved["tap"], LOOKED_AT)
    wire = [r for r in fields(moved["bridge"], LOOKED_AT) if r["ilnp.nh"]]
    on_wire = {(one(r, "ipv6.src"), one(r, "ipv6.dst"), one(r, "udp.payload")) for r in wire}
    payloads = {p for _, _, p in on_wire}
    sent = [(one(r, "ipv6.src"), one(r, "ipv6.dst"), one(r, "udp.payload")) for r in tap if one(r, "ipv6.src") != "::"]
    received = [one(r, "udp.payload") for r in tap if one(r, "ipv6.src") == "::"]
    assert sent and received
    assert [s for s in sent if s not in on_wire] == []
    assert [p for p in received if p not in payloads] == []
    # the bridge shows the same conversation: names, the update with its locator, the ack
    nids = moved["nids"]
    named = {(one(r, "ilnp.disc.hostname"), one(r, "ilnp.disc.nid")) for r in wire if r["ilnp.disc.hostname"]}
    assert {(name, nids[name]) for name in ("alice", "bob", "router")} <= named
    updates = [r for r in wire if one(r, "ilnp.lu.type") == "1"]
    assert updates and all(r["ilnp.lu.locator"] == ["0:0:0:b"] and one(r, "ilnp.src_nid") == nids["alice"]
                           for r in updates)
    assert any(one(r, "ilnp.lu.type") == "0" and one(r, "ilnp.src_nid") == nids["bob"] for r in wire)
    # routed pings: alice -> router on a, router -> bob on b (hop limit one less)
    routed = [r for r in wire if one(r, "stp.dstport") == str(ECHO_PORT) and one(r, "ilnp.src_loc") == "0:0:0:a"]
    assert {(one(r, "ipv6.dst"), one(r, "ilnp.hop")) for r in routed} == {("ff12::a", "3"), ("ff12::b", "2")}


def test_a_pipe_reader_sees_packets_live_and_leaving_ends_the_tap_quietly(moved):
    header, first, rc, err = moved["piped"]
    assert struct.unpack("<IHHiIII", header)[0] == 0xA1B2C3D4 and struct.unpack("<IHHiIII", header)[-1] == 101
    assert first[0] >> 4 == 6 and first[6] == 17  # an IPv6/UDP datagram
    assert rc == 0, err
    assert "Traceback" not in err and "Exception" not in err and "Broken pipe" not in err


def test_stream_relay_traffic_is_quic_to_wireshark(lab, tmp_path):
    """A stream through the relay (ilnp-connect to a served port): QUIC with the relay's
    ALPN, on the STP ports, nothing malformed."""
    echo = lab.popen("bob", ["socat", "TCP-LISTEN:7777,bind=127.0.0.1,fork,reuseaddr", "EXEC:cat"])
    capturing = None
    try:
        tool(lab, "bob", "ilnp-forward", "serve", str(SERVED_PORT), "--to", "127.0.0.1:7777")
        capturing = Capturing(lab, "alice", tmp_path)
        text = b"through QUIC over STP\n" * 50
        proc = lab.exec("alice", ["ilnp-connect", "bob", str(SERVED_PORT)], input=text, capture_output=True,
                        timeout=30)
        assert proc.returncode == 0 and proc.stdout == text, proc.stderr
    finally:
        if capturing:
            capturing.stop()
        stop(echo, signal.SIGTERM)
        tool(lab, "bob", "ilnp-forward", "delete", "serve", str(SERVED_PORT), check=False)
    for capture in (capturing.tap_file, capturing.bridge_file):
        assert problems(capture) == []
        rows = [r for r in fields(capture, ["stp.srcport", "stp.dstport", "quic.version", "quic.header_form",
                                            "tls.handshake.extensions_alpn_str"])
                if str(SERVED_PORT) in r["stp.srcport"] + r["stp.dstport"]]
        assert rows and all(r["quic.header_form"] for r in rows), capture  # every one went to QUIC
        assert "ilnp-stream/1" in {a for r in rows for a in r["tls.handshake.extensions_alpn_str"]}
        assert {"0", "1"} <= {h for r in rows for h in r["quic.header_form"]}  # handshake and 1-RTT
