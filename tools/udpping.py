"""Round trips over plain UDP, for the baselines the overlay's ilnp-ping is compared with.

    python -m tools.udpping echo --port 7 [--bind ::]           # answers every datagram
    python -m tools.udpping ping HOST PORT [-c N] [-i S] [--local-port P]

`ping` sends N probes (sequence number + send time) one every S seconds, waits up to
-W seconds for each, and prints one JSON line: sent, received, p50_ms, p99_ms. ilnp-bench
uses it between two lab hosts' link-local addresses (the raw underlay's round trip) and
through the UDP proxy (ilnp-map), where the application is plain UDP on loopback.
"""
from __future__ import annotations

import json
import socket
import struct
import sys
import time

import click

from tools.common import OneLineCommand

PROBE = struct.Struct(">QQ")  # seq, send time ns


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@click.group()
def main():
    """Plain UDP round trips (echo server and pinger)."""


@main.command(cls=OneLineCommand)
@click.option("--port", type=click.IntRange(1, 65535), required=True)
@click.option("--bind", default="::", show_default=True)
@click.option("--count", type=click.IntRange(min=0), default=0, help="Stop after this many (0: never).")
def echo(port, bind, count):
    """Send every datagram back to where it came from."""
    sock = socket.socket(_family(bind), socket.SOCK_DGRAM)
    try:
        sock.bind((bind, port))
    except OSError as exc:
        raise click.ClickException(f"cannot bind {bind} port {port}: {exc.strerror}") from None
    print(json.dumps({"ready": True}), file=sys.stderr, flush=True)
    answered = 0
    while not count or answered < count:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)
        answered += 1


@main.command(cls=OneLineCommand)
@click.argument("host")
@click.argument("port", type=click.IntRange(1, 65535))
@click.option("-c", "--count", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("-i", "--interval", type=click.FloatRange(min=0), default=0.01, show_default=True)
@click.option("-W", "--wait", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Seconds to wait for each answer.")
@click.option("--local-port", type=click.IntRange(0, 65535), default=0,
              help="Port to send from (the UDP proxy delivers only to the mapped port).")
@click.option("--size", type=click.IntRange(PROBE.size, 1396), default=64, show_default=True)
def ping(host, port, count, interval, wait, local_port, size):
    """Probe HOST PORT (an echo server) and print the round-trip percentiles as JSON."""
    family = _family(host)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", local_port))
    dest = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)[0][4]
    pad = b"\x00" * (size - PROBE.size)
    rtts: list[float] = []
    for seq in range(count):
        started = time.monotonic()
        sock.sendto(PROBE.pack(seq, time.monotonic_ns()) + pad, dest)
        deadline = started + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except (socket.timeout, ConnectionRefusedError):
                break
            if len(data) >= PROBE.size:
                got_seq, sent_ns = PROBE.unpack_from(data)
                if got_seq == seq:
                    rtts.append((time.monotonic_ns() - sent_ns) / 1e6)
                    break  # a late answer to an earlier probe is skipped
        rest = interval - (time.monotonic() - started)
        if rest > 0 and seq < count - 1:
            time.sleep(rest)
    p50, p99 = percentile(rtts, 0.5), percentile(rtts, 0.99)
    click.echo(json.dumps({"sent": count, "received": len(rtts),
                           "p50_ms": None if p50 is None else round(p50, 3),
                           "p99_ms": None if p99 is None else round(p99, 3)}))


if __name__ == "__main__":
    main()
