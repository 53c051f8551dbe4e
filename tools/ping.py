"""`ilnp-ping HOST`: round-trip times over the overlay to a node's echo port (STP 7)."""
from __future__ import annotations

import statistics
import struct
import sys
import time

import click

from actors.proto.numbers import ECHO_PORT
from actors.stp.api import HostNotFound, StpSocket, StpSocketError

from .common import OneLineCommand, json_option, node, print_json, run_dir_option

_PROBE = struct.Struct(">IQ")  # sequence, send time (ns)


@click.command(cls=OneLineCommand)
@click.argument("host")
@click.option("-c", "--count", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("-i", "--interval", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Seconds between probes.")
@click.option("-s", "--size", type=click.IntRange(min=_PROBE.size, max=1396), default=56,
              show_default=True, help="STP payload bytes.")
@click.option("-W", "--wait", "wait_s", type=click.FloatRange(min=0.01), default=2.0, show_default=True,
              help="Seconds to wait for the last reply.")
@click.option("--resolve-timeout", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds to wait for HOST to be discovered.")
@run_dir_option
@json_option
def main(host, count, interval, size, wait_s, resolve_timeout, run_dir, as_json):
    """Ping HOST over the overlay (its echo actor) and print round-trip times."""
    run = node(run_dir)
    try:
        sock = StpSocket(0, run)
    except StpSocketError as exc:
        raise click.ClickException(str(exc)) from None
    rtts: dict[int, float] = {}
    try:
        try:
            sock.wait_for_host(host, resolve_timeout)
        except HostNotFound as exc:
            raise click.ClickException(str(exc)) from None
        pad = b"\x00" * (size - _PROBE.size)
        next_send = time.monotonic()
        seq = unresolved = 0
        last_deadline = None
        while True:
            now = time.monotonic()
            if seq < count and now >= next_send:
                try:
                    sock.sendto(_PROBE.pack(seq, time.monotonic_ns()) + pad, (host, ECHO_PORT))
                except HostNotFound:
                    unresolved += 1  # the host left the table for a moment: that probe is lost
                seq += 1
                next_send += interval
                if seq == count:
                    last_deadline = now + wait_s
            if len(rtts) == count or (last_deadline is not None and now >= last_deadline):
                break
            until = next_send if seq < count else last_deadline
            try:
                data, (src, _port) = sock.recvfrom(max(0.0, until - time.monotonic()))
            except TimeoutError:
                continue
            if len(data) < _PROBE.size:
                continue
            n, sent_ns = _PROBE.unpack_from(data)
            if n in rtts or n >= seq:
                continue
            rtt = (time.monotonic_ns() - sent_ns) / 1e6
            rtts[n] = rtt
            if not as_json:
                click.echo(f"{len(data)} bytes from {src}: seq={n} time={rtt:.3f} ms")
                sys.stdout.flush()
    finally:
        sock.close()
    values = sorted(rtts.values())
    summary = {"host": host, "sent": count, "received": len(values),
               "loss_pct": round(100 * (count - len(values)) / count, 2), "unresolved": unresolved}
    if values:
        summary.update(min_ms=round(values[0], 3), avg_ms=round(statistics.fmean(values), 3),
                       max_ms=round(values[-1], 3),
                       p50_ms=round(values[len(values) // 2], 3),
                       p99_ms=round(values[min(len(values) - 1, int(len(values) * 0.99))], 3))
    if as_json:
        print_json(summary)
    else:
        click.echo(f"--- {host} ilnp ping statistics ---")
        click.echo(f"{count} packets transmitted, {len(values)} received, {summary['loss_pct']:g}% packet loss")
        if values:
            click.echo(f"rtt min/avg/max/p50/p99 = {summary['min_ms']}/{summary['avg_ms']}/"
                       f"{summary['max_ms']}/{summary['p50_ms']}/{summary['p99_ms']} ms")
    if not values:
        sys.exit(1)


if __name__ == "__main__":
    main()
