"""Classic pcap files of UDP datagrams, as a capture on the underlay would hold them.

`ilnp-tap --pcap` writes each overlay packet a node sends or receives wrapped in the
IP and UDP headers it travels in on the underlay, so that one dissector
(tools/wireshark/ilnp.lua) reads the tap's files and a capture on the wire alike.
Link type RAW (101): each record is an IP packet, IPv6 or IPv4 by its version nibble,
so a file can hold both families. Little-endian, microsecond timestamps: what
tcpdump, tshark and Wireshark read everywhere.
"""
from __future__ import annotations

import functools
import ipaddress
import struct
from typing import BinaryIO

MAGIC = 0xA1B2C3D4          # microsecond timestamps
VERSION = (2, 4)
LINKTYPE_RAW = 101          # raw IP, no link-layer header
SNAPLEN = 65535             # one underlay datagram is at most 65,507 bytes
UDP = 17
MULTICAST_HOP_LIMIT = 1     # the underlay's multicast hop limit (docs/PROTOCOL.md, Underlay)

_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_IPV6 = struct.Struct("!IHBB16s16s")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


def file_header(linktype: int = LINKTYPE_RAW, snaplen: int = SNAPLEN) -> bytes:
    return _FILE_HEADER.pack(MAGIC, *VERSION, 0, 0, snaplen, linktype)


def record(ts_ns: int, packet: bytes, snaplen: int = SNAPLEN) -> bytes:
    """One record: time (ns since the epoch, kept to the microsecond), then the packet
    (cut at snaplen, its original length kept)."""
    sec, rest = divmod(ts_ns, 1_000_000_000)
    kept = packet[:snaplen]
    return _RECORD_HEADER.pack(sec, rest // 1000, len(kept), len(packet)) + kept


# a capture names few addresses, each in every packet: parse each once
_address = functools.lru_cache(maxsize=1024)(ipaddress.ip_address)


def _ones_complement(data: bytes) -> int:
    """The Internet checksum of data (RFC 1071), ready to pack with "=H".

    The one's complement sum does not depend on byte order, so the words are summed in
    the machine's own order and the result is packed in that order again."""
    if len(data) % 2:
        data += b"\0"
    total = sum(memoryview(data).cast("H"))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_datagram(src: str, dst: str, sport: int, dport: int, payload: bytes,
                 hop_limit: int = MULTICAST_HOP_LIMIT) -> bytes:
    """An IPv6 or IPv4 packet (by the addresses' family) carrying one UDP datagram, with
    the UDP checksum (and for IPv4 the header checksum) filled in."""
    source, dest = _address(src), _address(dst)
    if source.version != dest.version:
        raise ValueError(f"source {src} and destination {dst} are not of one IP version")
    length = _UDP.size + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP payload of {len(payload)} bytes does not fit a datagram")
    if source.version == 6:
        pseudo = source.packed + dest.packed + struct.pack("!IxxxB", length, UDP)
    else:
        pseudo = source.packed + dest.packed + struct.pack("!xBH", UDP, length)
    udp = bytearray(_UDP.pack(sport, dport, length, 0) + payload)
    checksum = _ones_complement(pseudo + udp) or 0xFFFF  # 0 means "none" on the wire
    struct.pack_into("=H", udp, 6, checksum)
    if source.version == 6:
        return _IPV6.pack(6 << 28, length, UDP, hop_limit, source.packed, dest.packed) + udp
    header = bytearray(_IPV4.pack(0x45, 0, 20 + length, 0, 0x4000, hop_limit, UDP, 0,
                                  source.packed, dest.packed))
    struct.pack_into("=H", header, 10, _ones_complement(bytes(header)))
    return bytes(header) + udp


class PcapWriter:
    """Writes the file header at once, then records; flush() hands them to the reader
    (a pipe into Wireshark sees each batch as it comes)."""

    def __init__(self, stream: BinaryIO, linktype: int = LINKTYPE_RAW, snaplen: int = SNAPLEN):
        self.stream = stream
        self.snaplen = snaplen
        self.packets = 0
        stream.write(file_header(linktype, snaplen))

    def write(self, ts_ns: int, packet: bytes) -> None:
        self.stream.write(record(ts_ns, packet, self.snaplen))
        self.packets += 1

    def flush(self) -> None:
        self.stream.flush()

