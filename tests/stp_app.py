"""A small STP application for lab tests, run inside a node's namespace, and its test-side handle.

Inside a node (its env gives ILNP_RUN_DIR):

    python -m tests.stp_app PORT [--to HOST:PORT --send N --tag T --size S]
                                 [--expect M] [--echo] [--go] [--deadline SEC]

binds PORT (0 = ephemeral) with actors.stp.api.StpSocket and prints one JSON object a line:
  {"event": "bound", "port": P, "pid": PID}
  {"event": "ready"}                     (--to HOST resolved; with --go: now waiting for "go" on stdin)
  {"event": "sent", "count": N}
  {"event": "recv", "host": H, "port": P, "data": HEX}      one per datagram, in arrival order
  {"event": "done", "received": M, "echoed": E}
  {"event": "error", "error": "..."}     exit 2 (bind failed) or 3 (host never resolved)
It sends payload(T, i, S) for i in 0..N-1, receives until M datagrams came (answering each
to its sender with --echo) and exits 0, or 1 when the deadline passes first. It always exits
within --deadline seconds, so a test never leaves it behind.

Test side: `App.start(lab, node, port, ...)` runs it with lab.popen and collects its lines.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import queue
import select
import subprocess
import sys
import threading
import time

DEFAULT_DEADLINE = 20.0


def payload(tag: str, i: int, size: int) -> bytes:
    """Datagram i of a stream: names its stream and index, then bytes that differ per i."""
    head = f"{tag}:{i}:".encode()
    if size <= len(head):
        return head
    body = b""
    block = 0
    while len(body) < size - len(head):
        body += hashlib.sha256(head + block.to_bytes(4, "big")).digest()
        block += 1
    return head + body[:size - len(head)]


def sizes(count: int, largest: int) -> list[int]:
    """A spread of sizes for a stream: the largest first (a session's first packets would
    carry the [ext] nonce if there were room), then tiny and mid ones."""
    pattern = [largest, 1, 0, 17, 100, 512]
    return [pattern[i % len(pattern)] for i in range(count)]


# ---- the application (inside the node) ------------------------------------------------

def _emit(**event) -> None:
    print(json.dumps(event), flush=True)


def _wait_go(deadline: float) -> bool:
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sys.stdin], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            line = sys.stdin.readline()
            if line.strip() == "go":
                return True
            if not line:
                return False  # stdin closed: the test gave up
    return False


def _resolve(sock, host: str, deadline: float) -> bool:
    from actors.stp.api import HostNotFound
    try:
        sock.wait_for_host(host, max(0.0, deadline - time.monotonic()))
        return True
    except HostNotFound:
        return False


def run(args: argparse.Namespace) -> int:
    from actors.stp.api import StpSocket, StpSocketError

    deadline = time.monotonic() + args.deadline
    try:
        sock = StpSocket(args.port, timeout=min(5.0, args.deadline))
    except StpSocketError as exc:
        _emit(event="error", error=str(exc))
        return 2
    try:
        _emit(event="bound", port=sock.port, pid=_pid())
        dest = None
        if args.to:
            host, _, port = args.to.rpartition(":")
            dest = (host, int(port))
            if not _resolve(sock, host, deadline):
                _emit(event="error", error=f"host {host!r} not resolved before the deadline")
                return 3
        _emit(event="ready")
        if args.go and not _wait_go(deadline):
            _emit(event="done", received=0, echoed=0)
            return 1
        if dest is not None and args.send:
            for i, size in enumerate(sizes(args.send, args.size)):
                sock.sendto(payload(args.tag, i, size), dest)
            _emit(event="sent", count=args.send)
        received = echoed = 0
        while received < args.expect:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                data, (host, port) = sock.recvfrom(left)
            except TimeoutError:
                break
            received += 1
            _emit(event="recv", host=host, port=port, data=data.hex())
            if args.echo:
                sock.sendto(data, (host, port))
                echoed += 1
        _emit(event="done", received=received, echoed=echoed)
        return 0 if received >= args.expect else 1
    finally:
        sock.close()


def _pid() -> int:
    import os
    return os.getpid()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.stp_app", description=__doc__.split("\n")[0])
    p.add_argument("port", type=int)
    p.add_argument("--to", help="HOST:PORT to send to")
    p.add_argument("--send", type=int, default=0, help="datagrams to send to --to")
    p.add_argument("--tag", default="x", help="stream name inside every payload")
    p.add_argument("--size", type=int, default=1000, help="largest payload of the stream")
    p.add_argument("--expect", type=int, default=0, help="datagrams to receive before exiting")
    p.add_argument("--echo", action="store_true", help="answer every datagram to its sender")
    p.add_argument("--go", action="store_true", help='wait for "go" on stdin before sending')
    p.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE, help="seconds before giving up")
    return p.parse_args(argv)


# ---- the test side ----------------------------------------------------------------------

class App:
    """A running stp_app in a lab node; events are collected by a reader thread."""

    def __init__(self, proc: subprocess.Popen, node: str):
        self.proc = proc
        self.node = node
        self.events: list[dict] = []
        self._queue: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, lab, node: str, port: int, *options: str, deadline: float = DEFAULT_DEADLINE) -> "App":
        argv = [sys.executable, "-m", "tests.stp_app", str(port), "--deadline", str(deadline), *options]
        proc = lab.popen(node, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        return cls(proc, node)

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self._queue.put(json.loads(line))
            except ValueError:
                self._queue.put({"event": "garbage", "line": line})
        self._queue.put(None)

    def wait_event(self, name: str, timeout: float = 15.0) -> dict:
        """The first event `name` (earlier events are kept in self.events); AssertionError if none."""
        for event in self.events:
            if event.get("event") == name:
                return event
        end = time.monotonic() + timeout
        while True:
            try:
                event = self._queue.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"app on {self.node}: no {name!r} within {timeout}s; "
                                     f"events so far: {self.events}") from None
            if event is None:
                self._queue.put(None)  # stays at the end for later waits
                raise AssertionError(f"app on {self.node} exited ({self.proc.wait()}) without {name!r}; "
                                     f"events: {self.events}; stderr: {self.proc.stderr.read().strip()}")
            self.events.append(event)
            if event.get("event") == name:
                return event

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 25.0) -> int:
        """Wait for exit (killing it after timeout) and for all its events; returns its status."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(5)
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            if event is not None:
                self.events.append(event)
        return code

    def received(self) -> list[tuple[str, int, bytes]]:
        return [(e["host"], e["port"], bytes.fromhex(e["data"])) for e in self.events if e["event"] == "recv"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    sys.exit(run(parse_args()))
