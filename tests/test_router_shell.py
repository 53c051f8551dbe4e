"""The router shell under a flood of invented NIDs (issue 11 item 4): what it publishes and
writes costs in proportion to what changed, at a bounded rate, not once per new NID.

The shell runs on a real (brokerless) bus runtime in a short /tmp run directory; the
clock is fake (the shell's and CoreTimer's `monotonic_ms`), and so is the actor's timer
queue, so nothing here depends on how fast the machine is.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from actors.config import parse_config
from actors.proto import ilnp as wire
from actors.proto import stp, topics
from bus.rundir import RunDir

A = 0xA
ME = 0xFFFF_0000_0000_000D
N_INVENTED = 20_000
BATCH = 100          # packets per link.rx frame
STEP_MS = 5          # fake time between frames: 200 frames over one second


class Fake:
    """The fake clock and timer queue the shell and its CoreTimer run on."""

    def __init__(self):
        self.now = 0
        self.timers: list[tuple[int, int, object]] = []
        self.seq = 0

    def ms(self) -> int:
        return self.now

    def call_later(self, delay_s: float, fn) -> None:
        self.seq += 1
        self.timers.append((self.now + round(delay_s * 1000), self.seq, fn))

    def advance(self, to: int) -> None:
        """Move the clock to `to`, running each timer at its time."""
        while True:
            due = sorted(t for t in self.timers if t[0] <= to)
            if not due:
                break
            when, seq, fn = due[0]
            self.timers.remove(due[0])
            self.now = max(self.now, when)
            fn()
        self.now = to


@pytest.fixture
def shell(monkeypatch):
    import actors.router.main as router_main
    import bus.actor as bus_actor

    fake = Fake()
    monkeypatch.setattr(router_main, "monotonic_ms", fake.ms)
    monkeypatch.setattr(bus_actor, "monotonic_ms", fake.ms)
    writes: list[str] = []
    real_write = router_main.write_atomic

    def counting_write(path, data):
        writes.append(os.path.basename(path))
        real_write(path, data)

    monkeypatch.setattr(router_main, "write_atomic", counting_write)
    path = tempfile.mkdtemp(prefix="rsh", dir="/tmp")  # ipc paths must stay short
    config = parse_config({"hostname": "router", "nid": "ffff:0:0:d",
                           "locators": {"schedule": "0:0:0:a"}})
    shell = router_main.RouterShell(config, RunDir(path))
    published: list[tuple[bytes, dict]] = []
    shell.actor.publish = lambda topic, body: published.append((topic, dict(body))) or b""
    shell.actor.emit = lambda topic, item: None
    shell.actor.call_later = fake.call_later
    shell.on_locators(topics.STATE_LOCATORS, {"joined": [A], "leaving": []})
    shell.core.ports.bind(7, os.getpid())
    shell.fake, shell.published, shell.writes = fake, published, writes
    try:
        yield shell
    finally:
        shell.actor.close()
        shutil.rmtree(path, ignore_errors=True)


def spoofed_ping(i: int) -> bytes:
    """A ping to our echo port from invented NID i (version 6: it claims to speak [ext])."""
    return wire.encode(A, 0x2000_0000_0000_0000 + i, A, ME, 42, stp.encode(40000, 7, b"ping"), 3)


def flood(shell) -> int:
    """N_INVENTED spoofed pings in frames of BATCH; returns the fake time it took."""
    for k in range(N_INVENTED // BATCH):
        shell.fake.advance(k * STEP_MS)
        shell.on_link_rx(topics.LINK_RX, {"p": [[A, spoofed_ping(k * BATCH + j)] for j in range(BATCH)]})
    return (N_INVENTED // BATCH) * STEP_MS


def test_sessions_are_published_at_a_bounded_rate_while_20000_spoofed_sessions_arrive(shell):
    duration = flood(shell)
    shell.fake.advance(duration + 1000)  # what was held back goes out
    sessions = [body["sessions"] for topic, body in shell.published if topic == topics.STATE_SESSIONS]
    print(f"\n[{N_INVENTED} spoofed sessions in {duration} ms] state.sessions published {len(sessions)} times")
    assert 1 <= len(sessions) <= 2 + duration // 100  # at most one per 100 ms, not one per session
    # nothing is lost by coalescing: the last publication is the table as it stands
    assert sessions[-1] == sorted([loc, nid] for loc, nid, _ in shell.core.sessions(shell.fake.now))
    assert shell.core.counters["sessions_evicted"] > 0  # and the table stayed at its cap


def test_the_first_change_is_published_at_once(shell):
    shell.on_link_rx(topics.LINK_RX, {"p": [[A, spoofed_ping(1)]]})
    assert [b["sessions"] for t, b in shell.published if t == topics.STATE_SESSIONS] == [
        [[A, 0x2000_0000_0000_0001]]]


def test_hello_still_republishes_the_whole_set(shell):
    shell.on_link_rx(topics.LINK_RX, {"p": [[A, spoofed_ping(i)] for i in range(3)]})
    shell.actor._announced = True
    shell.actor._on_hello(b"hello", {"a": "someone-else"})
    last = [b["sessions"] for t, b in shell.published if t == topics.STATE_SESSIONS][-1]
    assert len(last) == 3


def test_peers_json_is_written_at_a_bounded_rate_and_at_exit(shell):
    duration = flood(shell)
    shell.fake.advance(duration + 2000)
    written = shell.writes.count("peers.json")
    print(f"\n[{N_INVENTED} new [ext] NIDs in {duration} ms] peers.json written {written} times")
    assert 1 <= written <= 2 + duration // 1000  # at most one per second, not one per batch
    saved = json.loads((shell.run.path / "peers.json").read_text())
    assert saved == shell.core.peers.state()  # the held-back change was written
    shell.on_link_rx(topics.LINK_RX, {"p": [[A, spoofed_ping(N_INVENTED + 1)]]})
    shell.save_peers()  # at exit (main() calls it when the actor stops)
    assert json.loads((shell.run.path / "peers.json").read_text()) == shell.core.peers.state()
    before = len(shell.writes)
    shell.save_peers()  # nothing changed: nothing written
    assert len(shell.writes) == before
