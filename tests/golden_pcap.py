"""Reader for the golden capture of the original overlay (classic pcap, Ethernet, IPv6/UDP)."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

PCAP = Path(__file__).parent / "golden" / "original-overlay.pcap"


@dataclass(frozen=True)
class GoldenFrame:
    index: int
    group: bytes  # 16-byte IPv6 destination (the locator's multicast group)
    payload: bytes  # the UDP payload: one overlay packet
    source: bytes = b""  # 16-byte IPv6 source: the underlay address of the node that sent it
    t_ms: int = 0        # capture time, ms since the first frame

    @property
    def locator(self) -> int:
        return int.from_bytes(self.group[8:], "big")


def golden_frames(path: Path = PCAP) -> list[GoldenFrame]:
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    if magic != 0xA1B2C3D4:
        raise ValueError("expected a little-endian classic pcap")
    frames, offset, first = [], 24, None
    while offset < len(data):
        sec, usec, incl, _orig = struct.unpack("<IIII", data[offset:offset + 16])
        stamp = sec * 1000 + usec // 1000
        first = stamp if first is None else first
        offset += 16
        eth = data[offset:offset + incl]
        offset += incl
        assert struct.unpack(">H", eth[12:14])[0] == 0x86DD, "IPv6 only"
        ip6 = eth[14:]
        assert ip6[6] == 17, "UDP only"
        udp = ip6[40:]
        ulen = struct.unpack(">H", udp[4:6])[0]
        frames.append(GoldenFrame(len(frames), ip6[24:40], udp[8:ulen], ip6[8:24], stamp - first))
    return frames


def by_next_header(nh: int) -> list[GoldenFrame]:
    return [f for f in golden_frames() if f.payload[6] == nh]
