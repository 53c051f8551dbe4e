"""`python -m tools.bench_transport`: what one hop between two idle processes costs, by
transport: zmq ipc PUSH/PULL (the direct data path today) against an AF_UNIX SEQPACKET
connection, with and without SCHED_BATCH. Prints round-trip p50/p99; a benchmark, not a
test (docs/PERFORMANCE.md: the per-stage budget says why this is the question)."""
from __future__ import annotations

import os
import socket
import tempfile
import time

import click
import zmq

from tools.common import OneLineCommand


def _batch(on: bool) -> None:
    if on:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _zmq_rtts(count: int, gap: float, batch: bool, tmp: str) -> list[float]:
    a, b = f"ipc://{tmp}/a.sock", f"ipc://{tmp}/b.sock"
    pid = os.fork()
    ctx = zmq.Context()
    if pid == 0:  # the echoing side
        try:
            _batch(batch)
            pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
            pull.bind(b)
            push.connect(a)
            for _ in range(count):
                push.send_multipart(pull.recv_multipart())
            time.sleep(0.2)
        finally:
            os._exit(0)
    _batch(batch)
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind(a)
    push.connect(b)
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    time.sleep(0.3)
    rtts = []
    for _ in range(count):
        t = time.perf_counter()
        push.send_multipart([b"link.rx", b"x" * 100])
        poller.poll(1000)
        pull.recv_multipart()
        rtts.append(time.perf_counter() - t)
        time.sleep(gap)
    os.waitpid(pid, 0)
    ctx.destroy(0)
    return rtts


def _seqpacket_rtts(count: int, gap: float, batch: bool, tmp: str) -> list[float]:
    path = f"{tmp}/seq.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen()
    pid = os.fork()
    if pid == 0:
        try:
            _batch(batch)
            conn, _ = listener.accept()
            for _ in range(count):
                conn.send(conn.recv(262144))
        finally:
            os._exit(0)
    _batch(batch)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(path)
    poller = zmq.Poller()
    poller.register(sock.fileno(), zmq.POLLIN)
    time.sleep(0.3)
    rtts = []
    for _ in range(count):
        t = time.perf_counter()
        sock.send(b"x" * 100)
        poller.poll(1000)
        sock.recv(262144)
        rtts.append(time.perf_counter() - t)
        time.sleep(gap)
    os.waitpid(pid, 0)
    sock.close()
    listener.close()
    return rtts


@click.command(cls=OneLineCommand)
@click.option("--count", type=click.IntRange(min=10), default=2000, show_default=True)
@click.option("--gap", type=click.FloatRange(min=0), default=0.002, show_default=True,
              help="Seconds between round trips (light load: both sides idle between them).")
def main(count, gap):
    """Round trips between two processes by transport (zmq ipc, AF_UNIX SEQPACKET)."""
    for name, fn in (("zmq ipc", _zmq_rtts), ("unix seqpacket", _seqpacket_rtts)):
        for batch in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                r = sorted(fn(count, gap, batch, tmp))
            click.echo(f"{name:15} SCHED_BATCH={'on ' if batch else 'off'}  round trip p50 "
                       f"{r[len(r) // 2] * 1e6:6.0f} us  p99 {r[int(len(r) * 0.99)] * 1e6:6.0f} us")


if __name__ == "__main__":
    main()
