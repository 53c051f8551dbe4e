"""Sequence-numbered traffic over the overlay (or the raw underlay), for bench and experiment.

Runs inside a node's namespace (`ilnp-lab exec NODE -- python -m tools.trafficgen ...`):
sends `--rate` packets/s of `--size` bytes to PEER:PORT for `--duration` seconds while
receiving whatever the peer sends, then prints one JSON summary line (with `start_ns`, the
wall time of the first send: packet `seq` left about start_ns + (seq + 1) / rate).
`--csv` writes one row per received packet, duplicates included: seq, send time, receive
time (ns since the epoch) and, over the overlay, the locators it travelled with: the
sender's (src_loc), the one it was addressed to (dst_loc) and the network it arrived on
(arrival_loc).
`--wait-go` holds the sending back until a line arrives on stdin, so that two generators
that send to each other start together, each bound before the other sends.

Packet: seq (u64) | send time ns (u64) | padding.
"""
from __future__ import annotations

import csv
import json
import socket
import struct
import sys
import time

import click

from tools.common import OneLineCommand

from actors.proto.addr import format64
from actors.run import batch_scheduling
from actors.stp.api import HostNotFound, StpSocket, StpSocketError

HEAD = struct.Struct(">QQ")
RAW_GROUP = "ff12:0:fffe:0::1"  # a group of its own, never an overlay locator's
RAW_PORT = 10999


class Tally:
    """What arrived: counts losses, reordering and duplicates against the peer's sent count."""

    def __init__(self, csv_path: str | None):
        self.received = 0
        self.duplicated = 0
        self.reordered = 0
        self.highest = -1
        self.seen: set[int] = set()
        self.first_ns = None
        self.last_ns = None
        self.latency_ns: list[int] = []
        self._csv_file = open(csv_path, "w", newline="") if csv_path else None
        self._csv = csv.writer(self._csv_file) if self._csv_file else None
        self._loc_text: dict[int, str] = {}
        if self._csv:
            self._csv.writerow(["seq", "sent_ns", "received_ns", "src_loc", "dst_loc", "arrival_loc"])

    def _locs(self, ilv) -> list[str]:
        if ilv is None:
            return ["", "", ""]
        text = self._loc_text
        out = []
        for loc in ilv:
            name = text.get(loc)
            if name is None:
                name = text[loc] = format64(loc)
            out.append(name)
        return out

    def add(self, data: bytes, now_ns: int, ilv=None) -> None:
        if len(data) < HEAD.size:
            return
        seq, sent_ns = HEAD.unpack_from(data)
        if seq in self.seen:
            self.duplicated += 1
            if self._csv:  # every copy gets a row: the CSV alone tells duplicates apart
                self._csv.writerow([seq, sent_ns, now_ns, *self._locs(ilv)])
            return
        self.seen.add(seq)
        self.received += 1
        if seq < self.highest:
            self.reordered += 1
        else:
            self.highest = seq
        if self.first_ns is None:
            self.first_ns = now_ns
        self.last_ns = now_ns
        if self.received % 10 == 1:  # a sample is enough for percentiles
            self.latency_ns.append(now_ns - sent_ns)
        if self._csv:
            self._csv.writerow([seq, sent_ns, now_ns, *self._locs(ilv)])

    def close(self) -> None:
        if self._csv_file:
            self._csv_file.close()

    def summary(self) -> dict:
        lat = sorted(self.latency_ns)
        span = (self.last_ns - self.first_ns) / 1e9 if self.received > 1 else 0.0
        out = {"received": self.received, "duplicated": self.duplicated, "reordered": self.reordered,
               "highest_seq": self.highest, "rx_span_s": round(span, 3)}
        if lat:
            out["latency_p50_ms"] = round(lat[len(lat) // 2] / 1e6, 3)
            out["latency_p99_ms"] = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e6, 3)
        return out


class OverlayPort:
    def __init__(self, local_port: int, peer: str | None, peer_port: int, resolve_timeout: float):
        self.sock = StpSocket(local_port)
        self.address = (peer, peer_port)
        self.unresolved = 0
        if peer:
            self.sock.wait_for_host(peer, resolve_timeout)

    def send(self, datas: list[bytes]) -> None:
        try:
            self.sock.sendmany(datas, self.address)
        except HostNotFound:
            self.unresolved += len(datas)  # the host left the table for a moment: those are lost

    def receive(self, timeout: float) -> list[tuple[bytes, object]]:
        """[(data, Ilv), ...]: what is ready, waiting up to timeout for the first."""
        out = []
        try:
            data, _, ilv = self.sock.recvfrom_ilv(timeout)
        except TimeoutError:
            return out
        out.append((data, ilv))
        while self.sock._inbox:
            entry = self.sock._inbox.popleft()
            out.append((entry[0], entry.ilv))
        return out

    def counters(self) -> dict:
        """What the socket could not hand to the node's router (bus/direct.py's outcomes)."""
        bus = self.sock.bus
        return {"not_handed_over": bus.direct_drops, "no_consumer": bus.no_consumer,
                "held": bus.direct_held, "dropped_malformed": self.sock.dropped_malformed}

    def close(self) -> None:
        self.sock.close()


class RawPort:
    """The same traffic as plain UDP multicast on the lab's link: the underlay baseline."""

    def __init__(self, interface: str, send: bool):
        ifindex = socket.if_nametoindex(interface)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        sock.bind(("::", RAW_PORT))
        if not send:
            mreq = socket.inet_pton(socket.AF_INET6, RAW_GROUP) + struct.pack("@I", ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        self.dest = (RAW_GROUP, RAW_PORT, 0, ifindex)
        self.sock = sock

    def send(self, datas: list[bytes]) -> None:
        for data in datas:
            self.sock.sendto(data, self.dest)

    def receive(self, timeout: float) -> list[tuple[bytes, None]]:
        self.sock.settimeout(timeout)
        try:
            out = [(self.sock.recv(65535), None)]
        except (socket.timeout, BlockingIOError):
            return []
        self.sock.setblocking(False)
        try:
            while True:
                out.append((self.sock.recv(65535), None))
        except BlockingIOError:
            pass
        return out

    def close(self) -> None:
        self.sock.close()


class UdpPort:
    """Plain UDP from a bound local port to HOST:PORT: an unmodified application, as the
    UDP proxy (ilnp-map) sees one, or the proxy's peer application receiving."""

    def __init__(self, local_port: int, dest: tuple[str, int] | None):
        family = socket.AF_INET6 if dest and ":" in dest[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", local_port))
        self.sock, self.dest = sock, dest

    def send(self, datas: list[bytes]) -> None:
        for data in datas:
            try:
                self.sock.sendto(data, self.dest)
            except ConnectionRefusedError:
                pass  # the proxy is not there yet: those are lost, and counted as such

    receive = RawPort.receive

    def close(self) -> None:
        self.sock.close()


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter(f"{text!r} is not HOST:PORT", param_hint="--udp")
    return host.strip("[]"), int(port)


def run(port, rate: float, duration: float, size: int, tally: Tally, idle_stop: float,
        progress: bool, tick: float = 0.0) -> tuple[int, int]:
    """Send at `rate` for `duration` while receiving; then receive until idle. Receiving
    only (rate 0), `duration` is the longest it waits: it stops once something arrived and
    nothing more for `idle_stop` (the sender is done, or its flow broke).
    Returns (sent, wall ns when sending started)."""
    pad = b"\x00" * (size - HEAD.size)
    pack = HEAD.pack
    start_ns = time.time_ns()
    t0 = time.monotonic()
    end = t0 + duration
    sent = 0
    last_report = last_rx = t0
    while True:
        now = time.monotonic()
        if now >= end or (not rate and tally.received and now - last_rx >= idle_stop):
            break
        elapsed = now - t0
        if tick:  # an application that writes what is due every tick, as one burst
            elapsed -= elapsed % tick
        due = int(elapsed * rate) - sent if rate else 0
        if due > 0:
            batch = [pack(seq, time.time_ns()) + pad for seq in range(sent, sent + min(due, 256))]
            port.send(batch)
            sent += len(batch)
            wait = 0.0
        else:
            wait = min(end - now, (tick - (now - t0) % tick) if tick else (1.0 / rate if rate else 0.05))
        got = port.receive(wait)
        if got:
            last_rx = time.monotonic()
            now_ns = time.time_ns()
            for data, ilv in got:
                tally.add(data, now_ns, ilv)
        if progress and now - last_report >= 1.0:
            last_report = now
            print(json.dumps({"progress_s": round(now - t0, 1), "sent": sent, "received": tally.received,
                              "highest_seq": tally.highest}), file=sys.stderr, flush=True)
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < idle_stop:
        got = port.receive(0.05)
        if got:
            idle_since = time.monotonic()
            now_ns = time.time_ns()
            for data, ilv in got:
                tally.add(data, now_ns, ilv)
    return sent, start_ns


@click.command(cls=OneLineCommand)
@click.option("--local-port", type=click.IntRange(0, 65535), default=0, help="STP port to bind (0: any).")
@click.option("--peer", default=None, help="Hostname to send to (none: receive only).")
@click.option("--peer-port", type=click.IntRange(0, 65535), default=0)
@click.option("--rate", type=click.FloatRange(min=0), default=100.0, show_default=True, help="Packets/s.")
@click.option("--tick", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Send what is due every TICK seconds as one burst (0: each packet when due).")
@click.option("--duration", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Seconds.")
@click.option("--size", type=click.IntRange(HEAD.size, 1396), default=1396, show_default=True,
              help="Payload bytes.")
@click.option("--idle-stop", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="After sending, stop when nothing arrived for this long.")
@click.option("--csv", "csv_path", default=None, help="Write received packets to this CSV.")
@click.option("--raw", "raw_iface", default=None, metavar="IFACE",
              help="Plain UDP multicast on IFACE instead of the overlay (the underlay baseline).")
@click.option("--udp", "udp_dest", default=None, metavar="HOST:PORT",
              help="Plain UDP from loopback --local-port to HOST:PORT (e.g. an ilnp-map proxy port);"
                   " 'none' receives only.")
@click.option("--progress", is_flag=True, help="A JSON progress line on stderr every second.")
@click.option("--resolve-timeout", type=click.FloatRange(min=0), default=10.0)
@click.option("--wait-go", is_flag=True, help="After printing ready, wait for a line on stdin before sending.")
def main(local_port, peer, peer_port, rate, duration, size, idle_stop, csv_path, raw_iface, udp_dest, progress,
         resolve_timeout, wait_go, tick):
    """Send and receive sequence-numbered packets; print a JSON summary."""
    batch_scheduling()  # like the node's actors (and the same for the raw baseline)
    dest = None if udp_dest in (None, "none") else _host_port(udp_dest)
    try:
        if udp_dest:
            port, peer = UdpPort(local_port, dest), "udp" if dest else None
        elif raw_iface:
            port = RawPort(raw_iface, send=bool(peer))
        else:
            port = OverlayPort(local_port, peer, peer_port, resolve_timeout)
    except (StpSocketError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    tally = Tally(csv_path)
    print(json.dumps({"ready": True}), file=sys.stderr, flush=True)
    try:
        if wait_go:
            sys.stdin.readline()
        sent, start_ns = run(port, rate if peer else 0, duration, size, tally, idle_stop, progress, tick)
        counters = port.counters() if hasattr(port, "counters") else {}
    finally:
        port.close()
        tally.close()
    click.echo(json.dumps({"sent": sent, "rate": rate, "size": size, "start_ns": start_ns,
                           "unresolved": getattr(port, "unresolved", 0), **counters, **tally.summary()}))


if __name__ == "__main__":
    main()
