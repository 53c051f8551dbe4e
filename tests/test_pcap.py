"""The pcap writer (tools/pcap.py) and the tap's capture of link frames (tools/tap.py
PcapTap, capture): file and record headers, link type, timestamps, the IPv6/UDP (and
IPv4) headers a datagram travels in on the underlay, per-frame flushes, a reader that
leaves the pipe. The dissector's reading of these files: tests/test_dissector.py."""
from __future__ import annotations

import io
import ipaddress
import os
import struct
import time

import pytest

from actors.config import parse_config
from actors.link.ipv4_multicast import ipv4_multicast_group
from actors.proto import topics
from actors.proto.frames import LinkItem
from actors.proto.ilnp import encode
from tools import pcap
from tools.tap import PcapTap, capture
from tools.tap_underlay import UnderlayView

NID_A = 0xFFFF_0000_0000_000A
NID_B = 0xFFFF_0000_0000_000B
TS = 1_700_000_000_123_456_789  # ns since the epoch


def internet_sum(data: bytes) -> int:
    """RFC 1071 the plain way, big-endian words (an independent check of the writer's)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def read_pcap(data: bytes) -> tuple[tuple, list[tuple[int, int, int, bytes]]]:
    """(file header fields, [(sec, usec, orig_len, packet)])."""
    header = struct.unpack("<IHHiIII", data[:24])
    records, at = [], 24
    while at < len(data):
        sec, usec, incl, orig = struct.unpack("<IIII", data[at:at + 16])
        records.append((sec, usec, orig, data[at + 16:at + 16 + incl]))
        at += 16 + incl
    assert at == len(data), "a record overruns the file"
    return header, records


def split_ipv6_udp(packet: bytes) -> dict:
    vtf, plen, nh, hop = struct.unpack("!IHBB", packet[:8])
    sport, dport, ulen, checksum = struct.unpack("!HHHH", packet[40:48])
    return {"version": vtf >> 28, "plen": plen, "nh": nh, "hop": hop,
            "src": str(ipaddress.ip_address(packet[8:24])), "dst": str(ipaddress.ip_address(packet[24:40])),
            "sport": sport, "dport": dport, "ulen": ulen, "checksum": checksum, "payload": packet[48:]}


def test_the_file_header_says_classic_pcap_microseconds_raw_ip():
    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack("<IHHiIII", pcap.file_header())
    assert (magic, major, minor, zone, sigfigs) == (0xA1B2C3D4, 2, 4, 0, 0)
    assert (snaplen, linktype) == (65535, 101)  # LINKTYPE_RAW: IPv4 or IPv6 by the version nibble


def test_a_record_keeps_the_time_to_the_microsecond_and_both_lengths():
    sec, usec, incl, orig = struct.unpack("<IIII", pcap.record(TS, b"x" * 10)[:16])
    assert (sec, usec, incl, orig) == (1_700_000_000, 123_456, 10, 10)
    cut = pcap.record(TS, b"y" * 100, snaplen=64)
    assert struct.unpack("<IIII", cut[:16])[2:] == (64, 100) and cut[16:] == b"y" * 64


def test_an_ipv6_datagram_has_the_underlays_headers_and_a_valid_checksum():
    payload = encode(0xA, NID_A, 0xB, NID_B, 42, b"\0\7\0\7ping", 3)
    packet = pcap.udp_datagram("fe80::1", "ff12::a", 10000, 10000, payload)
    f = split_ipv6_udp(packet)
    assert (f["version"], f["nh"], f["hop"], f["src"], f["dst"]) == (6, 17, 1, "fe80::1", "ff12::a")
    assert f["plen"] == f["ulen"] == 8 + len(payload) and len(packet) == 40 + 8 + len(payload)
    assert (f["sport"], f["dport"], f["payload"]) == (10000, 10000, payload)
    pseudo = packet[8:40] + struct.pack("!IxxxB", f["ulen"], 17)
    assert f["checksum"] != 0 and internet_sum(pseudo + packet[40:]) == 0xFFFF


def test_a_checksum_that_sums_to_zero_is_sent_as_ffff():
    """0 means "no checksum" in UDP (and IPv6 forbids it): RFC 768 sends all ones."""
    base = b"abcd\0\0"
    first = split_ipv6_udp(pcap.udp_datagram("::1", "ff12::b", 1, 2, base))["checksum"]
    # a payload word equal to that checksum brings the sum to 0xffff, the checksum to 0
    packet = pcap.udp_datagram("::1", "ff12::b", 1, 2, b"abcd" + first.to_bytes(2, "big"))
    assert split_ipv6_udp(packet)["checksum"] == 0xFFFF
    assert internet_sum(packet[8:40] + struct.pack("!IxxxB", 14, 17) + packet[40:]) == 0xFFFF


def test_an_ipv4_datagram_has_a_valid_header_and_udp_checksum():
    packet = pcap.udp_datagram("10.0.0.1", "239.1.0.10", 10000, 10000, b"odd")
    assert packet[0] == 0x45 and len(packet) == 20 + 8 + 3
    total, flags, ttl, proto = struct.unpack("!2xH2xHBB", packet[:10])
    assert (total, flags, ttl, proto) == (31, 0x4000, 1, 17)
    assert packet[12:16] == bytes([10, 0, 0, 1]) and packet[16:20] == bytes([239, 1, 0, 10])
    assert internet_sum(packet[:20]) == 0xFFFF
    pseudo = packet[12:20] + struct.pack("!xBH", 17, 11)
    assert internet_sum(pseudo + packet[20:]) == 0xFFFF


def test_mixed_families_and_oversized_payloads_are_refused():
    with pytest.raises(ValueError, match="one IP version"):
        pcap.udp_datagram("10.0.0.1", "ff12::a", 1, 1, b"")
    with pytest.raises(ValueError, match="does not fit"):
        pcap.udp_datagram("::", "ff12::a", 1, 1, bytes(65_528))


class Flushes(io.BytesIO):
    def __init__(self):
        super().__init__()
        self.flushes = 0

    def flush(self):
        self.flushes += 1
        super().flush()


IPV6 = {"eth0": ["fd00:1::2", "fe80::a"], "lan3": ["fd00:9::1"]}
IPV4 = {"eth0": ("10.1.0.2", "10.1.0.255"), "lan3": ("10.9.0.1", "10.9.0.255")}


def View(tag: int = 0, underlay: dict | None = None, schedule: str = "0:0:0:a,0:0:0:b") -> UnderlayView:
    """A node's underlay as its config gives it, with made-up interface addresses."""
    config = parse_config({"hostname": "x", "nid": "0:0:0:1", "locators": {"schedule": schedule},
                           "underlay": {"interface": "eth0", "group_tag": tag, **(underlay or {})}})
    return UnderlayView(config, ipv6_addresses=lambda interface: IPV6.get(interface, []),
                        ipv4_addresses=lambda interface, spec, config: IPV4.get(interface))


def datagram(src_loc: int, dst_loc: int) -> bytes:
    return encode(src_loc, NID_A, dst_loc, NID_B, 42, b"\0\1\0\2", 3)


def test_link_frames_become_the_datagrams_on_the_underlay_one_flush_per_frame():
    out = Flushes()
    tap = PcapTap(pcap.PcapWriter(out), View(tag=0x1234))
    monotonic_sent = time.monotonic_ns() - 2_000_000_000  # left its publisher 2 s ago
    tx = [list(LinkItem(0xB, datagram(0xA, 0xB))), list(LinkItem(0xA, datagram(0xA, 0xB)))]
    assert tap.write_frame(topics.LINK_TX, {"a": "router", "q": 1, "t": monotonic_sent, "p": tx}) == 2
    assert out.flushes == 1  # the batch, at once: a pipe reader sees it now
    assert tap.write_frame(topics.LINK_RX, {"a": "link", "q": 1, "p": [list(LinkItem(0xC, datagram(0xC, 0xA)))]}) == 1
    assert out.flushes == 2
    header, records = read_pcap(out.getvalue())
    assert header[-1] == 101 and len(records) == 3
    got = [split_ipv6_udp(r[3]) for r in records]
    # sent: from our address to the out interface's group; received: the arrival group,
    # sender unknown to the bus (::); always the overlay port
    assert [(g["src"], g["dst"]) for g in got] == [("fe80::a", "ff12:0:1234::b"),
                                                   ("fe80::a", "ff12:0:1234::a"),
                                                   ("::", "ff12:0:1234::c")]
    assert all((g["sport"], g["dport"], g["hop"]) == (10000, 10000, 1) for g in got)
    assert [g["payload"] for g in got] == [datagram(0xA, 0xB), datagram(0xA, 0xB), datagram(0xC, 0xA)]
    # the frame's send time (monotonic), in wall-clock time; a frame without one: now
    sent_wall = records[0][0] + records[0][1] / 1e6
    assert abs(sent_wall - (time.time() - 2.0)) < 0.5
    assert records[0][:2] == records[1][:2]
    assert abs(records[2][0] + records[2][1] / 1e6 - time.time()) < 0.5


def test_other_topics_and_bad_items_write_nothing_and_bad_items_are_counted():
    out = Flushes()
    tap = PcapTap(pcap.PcapWriter(out), View())
    assert tap.write_frame(topics.ILNP_TX, {"p": [list(LinkItem(0xA, b"x"))]}) == 0
    assert tap.write_frame(topics.STATE_LOCATORS, {"cur": [1]}) == 0
    assert tap.write_frame(topics.LINK_RX, {"p": "not a list"}) == 0
    good = list(LinkItem(0xA, datagram(0xA, 0xB)))
    bad = [["x", b"y"], [1], "junk", [0xA, "not bytes"], [0xA, b"z", "extra"]]
    assert tap.write_frame(topics.LINK_RX, {"p": [*bad, good]}) == 1
    assert tap.bad_items == len(bad)
    assert len(read_pcap(out.getvalue())[1]) == 1 and out.flushes == 1


def test_a_limit_stops_inside_a_batch():
    tap = PcapTap(pcap.PcapWriter(io.BytesIO()), View())
    items = [list(LinkItem(0xA, datagram(0xA, 0xB)))] * 5
    assert tap.write_frame(topics.LINK_TX, {"p": items}, limit=3) == 3 and tap.writer.packets == 3


class FakeClient:
    def __init__(self, frames):
        self.frames = list(frames)

    def recv(self, timeout=None):
        return self.frames.pop(0) if self.frames else None


def test_capture_stops_after_count_packets():
    frame = (topics.LINK_RX, {"p": [list(LinkItem(0xA, datagram(0xB, 0xA)))] * 3})
    out = io.BytesIO()
    tap = capture(FakeClient([frame] * 4), View(), out, count=7)
    assert tap.writer.packets == 7 and len(read_pcap(out.getvalue())[1]) == 7


def test_a_reader_that_leaves_the_pipe_ends_the_capture_quietly():
    """EPIPE (Wireshark closed, head had enough) returns None; what is still buffered
    goes to /dev/null, so nothing is raised at exit either."""
    read_end, write_end = os.pipe()
    out = os.fdopen(write_end, "wb")
    os.close(read_end)  # the reader is gone before the first byte
    frame = (topics.LINK_RX, {"p": [list(LinkItem(0xA, datagram(0xB, 0xA)))]})
    assert capture(FakeClient([frame] * 3), View(), out) is None
    assert os.readlink(f"/proc/self/fd/{out.fileno()}") == os.devnull
    out.write(b"more")
    out.close()  # flushes into /dev/null: no BrokenPipeError


def test_a_reader_sees_the_header_and_each_batch_as_it_is_written():
    read_end, write_end = os.pipe()
    out = os.fdopen(write_end, "wb")  # buffered, as sys.stdout.buffer is
    seen = []

    class Watching(FakeClient):
        def recv(self, timeout=None):
            seen.append(os.read(read_end, 65536))  # what reached the pipe so far
            return super().recv(timeout)

    frame = (topics.LINK_RX, {"p": [list(LinkItem(0xA, datagram(0xB, 0xA)))]})
    try:
        capture(Watching([frame]), View(), out)
        assert len(seen[0]) == 24  # the file header, before any packet
        assert len(seen[1]) == 16 + 40 + 8 + 44  # the first batch, before waiting for more
    finally:
        out.close()
        os.close(read_end)


def addresses(packet: bytes) -> tuple[str, str, int, int, int]:
    """(source, destination, source port, destination port, hop limit or TTL) of an IPv4 or IPv6 UDP packet."""
    if packet[0] >> 4 == 4:
        src, dst, hop, udp = packet[12:16], packet[16:20], packet[8], packet[20:]
    else:
        src, dst, hop, udp = packet[8:24], packet[24:40], packet[7], packet[40:]
    return (str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), *struct.unpack("!HH", udp[:4]), hop)


def test_each_locator_is_written_as_its_own_underlay_carries_it():
    """[underlay.locators."<loc>"]: IPv4 multicast (the link's group), IPv4 broadcast,
    unicast to every peer of either family; the rest rides the IPv6 default, as in the
    link (a locator listed but outside the schedule too: the link opens nothing for it)."""
    view = View(tag=7, schedule="0:0:0:a,0:0:0:b,0:0:0:c,0:0:0:d", underlay={"locators": {
        "0:0:0:b": {"kind": "ipv4-multicast"},
        "0:0:0:c": {"kind": "ipv4-broadcast", "port": 10002},
        "0:0:0:d": {"kind": "unicast", "interface": "lan3", "peers": ["10.9.0.2:10000", "[fd00:9::2]:10001"]},
        "0:0:0:e": {"kind": "ipv4-multicast"}}})
    tap = PcapTap(pcap.PcapWriter(io.BytesIO()), view)
    payload = datagram(0xA, 0xB)

    def sent(loc):
        return [addresses(p) for p in tap.datagrams(topics.LINK_TX, LinkItem(loc, payload))]

    def received(loc):
        return [addresses(p) for p in tap.datagrams(topics.LINK_RX, LinkItem(loc, payload))]

    assert sent(0xA) == [("fe80::a", "ff12:0:7::a", 10000, 10000, 1)]  # the default, link-local
    assert received(0xA) == [("::", "ff12:0:7::a", 10000, 10000, 1)]
    group = ipv4_multicast_group(0xB, 7)
    assert group.startswith("239.")
    assert sent(0xB) == [("10.1.0.2", group, 10000, 10000, 1)]
    assert received(0xB) == [("0.0.0.0", group, 10000, 10000, 1)]
    assert sent(0xC) == [("10.1.0.2", "10.1.0.255", 10002, 10002, 64)]
    assert sent(0xD) == [("10.9.0.1", "10.9.0.2", 10000, 10000, 64), ("fd00:9::1", "fd00:9::2", 10000, 10001, 64)]
    assert received(0xD) == [("0.0.0.0", "10.9.0.1", 10000, 10000, 64)]
    assert sent(0xE) == [("fe80::a", "ff12:0:7::e", 10000, 10000, 1)]
    # the payload is the overlay packet, whatever carries it
    assert all(p.endswith(payload) for p in tap.datagrams(topics.LINK_TX, LinkItem(0xD, payload)))


def test_an_item_sent_to_several_peers_is_one_item_and_a_record_per_peer():
    view = View(schedule="0:0:0:a", underlay={"locators": {"0:0:0:a": {
        "kind": "unicast", "peers": ["10.1.0.3:10000", "10.1.0.4:10000"]}}})
    out = io.BytesIO()
    tap = PcapTap(pcap.PcapWriter(out), view)
    assert tap.write_frame(topics.LINK_TX, {"p": [list(LinkItem(0xA, datagram(0xA, 0xB)))]}) == 1
    assert [addresses(r[3])[1] for r in read_pcap(out.getvalue())[1]] == ["10.1.0.3", "10.1.0.4"]
