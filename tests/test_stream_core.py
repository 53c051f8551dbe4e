"""The stream relay core, two of them back to back: QUIC (qh3) over fake STP, fake TCP,
one fake clock. Data both ways, half-close, refusal, resets, many streams, loss."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from actors.stream.core import (
    Forward, Opened, PauseReading, ResumeReading, SendStp, StreamCore, TcpClose, TcpConnect, TcpShutdown,
    TcpWrite,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.proto.signature import nid_of, public_bytes
from actors.stream.quic import QuicLink, Settings, make_certificate

ALICE, BOB = 0xFFFF_0000_0000_000A, 0xFFFF_0000_0000_000B
A, B = 0xA, 0xB
HOSTS = [["alice", ALICE, [A], 0], ["bob", BOB, [B], 0]]


@pytest.fixture(scope="module")
def cert() -> tuple[bytes, bytes]:
    return make_certificate(Ed25519PrivateKey.generate())


class Tcp:
    """What the shell would do with TCP actions: record them per connection."""

    def __init__(self):
        self.data: dict[int, bytearray] = {}
        self.events: list = []

    def take(self, action) -> None:
        self.events.append(action)
        if isinstance(action, TcpWrite):
            self.data.setdefault(action.cid, bytearray()).extend(action.data)

    def of(self, kind, cid=None) -> list:
        return [e for e in self.events if isinstance(e, kind) and (cid is None or e.cid == cid)]


class Pair:
    """alice (client side) and bob (serving STP port 22), wired by fake STP."""

    def __init__(self, cert, loss: float = 0.0, seed: int = 1, bob_nid: int = BOB):
        settings = Settings()

        def factory(peer, client, original_cid=None):
            return QuicLink(settings, peer, cert=None if client else cert, original_cid=original_cid)

        self.now = 0
        self.bob_nid = bob_nid
        self.alice, self.bob = StreamCore(ALICE, factory), StreamCore(bob_nid, factory)
        for core in (self.alice, self.bob):
            core.hosts.load([["alice", ALICE, [A], 0], ["bob", bob_nid, [B], 0]])
        self.bob.serve(Forward(22, "127.0.0.1", 2222))
        self.tcp = {ALICE: Tcp(), bob_nid: Tcp()}
        self.rng, self.loss = random.Random(seed), loss
        self.slow_readers: set[int] = set()
        self.lost = 0
        self.run(self.alice.set_client_port(50000, 0), ALICE)

    def core(self, nid: int) -> StreamCore:
        return self.alice if nid == ALICE else self.bob

    def run(self, actions, nid) -> None:
        """Carry out actions (FIFO, no recursion): datagrams cross the fake link, TCP
        actions are recorded (and, unless a slow reader, written at once)."""
        queue = [(nid, a) for a in actions]
        while queue:
            owner, action = queue.pop(0)
            if isinstance(action, SendStp):
                if self.loss and self.rng.random() < self.loss:
                    self.lost += 1
                    continue
                loc = A if owner == ALICE else B
                got = self.core(action.nid).stp_received(owner, loc, action.src_port, action.dst_port,
                                                         action.data, self.now)
                queue.extend((action.nid, a) for a in got)
                continue
            self.tcp[owner].take(action)
            if isinstance(action, TcpWrite) and owner not in self.slow_readers:
                # the local application reads at once: the shell wrote it all
                got = self.core(owner).tcp_written(action.cid, len(action.data), self.now)
                queue.extend((owner, a) for a in got)

    def advance(self, ms: int) -> None:
        end = self.now + ms
        while True:
            due = [d for d in (self.alice.next_deadline(), self.bob.next_deadline()) if d is not None]
            if not due or min(due) > end:
                break
            self.now = max(self.now, min(due))
            self.run(self.alice.on_timer(self.now), ALICE)
            self.run(self.bob.on_timer(self.now), self.bob_nid)
        self.now = end

    def open(self, cid: int) -> int:
        """alice's client cid connects; bob's relay connects to its service: bob's cid."""
        self.run(self.alice.tcp_opened(cid, "bob", 22, self.now), ALICE)
        self.advance(50)
        connect = self.tcp[self.bob_nid].of(TcpConnect)[-1]
        assert (connect.host, connect.port) == ("127.0.0.1", 2222)
        self.run(self.bob.tcp_connected(connect.cid, self.now), self.bob_nid)
        self.advance(10)
        return connect.cid


def test_data_both_ways_half_close_and_clean_end(cert):
    p = Pair(cert)
    far = p.open(1)
    assert p.tcp[ALICE].of(Opened, 1)
    p.run(p.alice.tcp_data(1, b"GET / HTTP/1.0\r\n\r\n", p.now), ALICE)
    p.run(p.alice.tcp_eof(1, p.now), ALICE)  # the client half-closes
    p.advance(10)
    assert bytes(p.tcp[BOB].data[far]) == b"GET / HTTP/1.0\r\n\r\n"
    assert p.tcp[BOB].of(TcpShutdown, far) and not p.tcp[BOB].of(TcpClose, far)
    body = bytes(range(256)) * 4000  # 1 MB back, after the half-close
    p.run(p.bob.tcp_data(far, body, p.now), BOB)
    p.run(p.bob.tcp_eof(far, p.now), BOB)
    p.advance(100)
    assert bytes(p.tcp[ALICE].data[1]) == body
    assert p.tcp[ALICE].of(TcpClose, 1) == [TcpClose(1, None)]
    assert p.tcp[BOB].of(TcpClose, far) == [TcpClose(far, None)]


def test_a_service_that_speaks_first_gets_its_stream(cert):
    p = Pair(cert)
    far = p.open(1)  # alice sent nothing yet, bob's relay connected all the same
    p.run(p.bob.tcp_data(far, b"SSH-2.0-OpenSSH\r\n", p.now), BOB)
    p.advance(10)
    assert bytes(p.tcp[ALICE].data[1]) == b"SSH-2.0-OpenSSH\r\n"


def test_a_refused_far_service_closes_the_client_with_a_reason(cert):
    p = Pair(cert)
    p.run(p.alice.tcp_opened(1, "bob", 22, p.now), ALICE)
    p.advance(20)
    far = p.tcp[BOB].of(TcpConnect)[-1].cid
    p.run(p.bob.tcp_failed(far, "connection refused", p.now), BOB)
    p.advance(20)
    assert p.tcp[ALICE].of(TcpClose, 1) == [TcpClose(1, "the far service refused the connection")]
    assert not p.tcp[ALICE].of(Opened)


def test_unknown_host_and_unserved_port(cert):
    p = Pair(cert)
    p.run(p.alice.tcp_opened(1, "carol", 22, p.now), ALICE)
    assert p.tcp[ALICE].of(TcpClose, 1)[0].error.startswith("host 'carol' is not known")
    p.run(p.alice.tcp_opened(2, "bob", 80, p.now), ALICE)  # bob serves 22 only
    p.advance(50)
    assert p.tcp[ALICE].of(TcpClose, 2) == [TcpClose(2, "nothing is served on that STP port")]


def test_a_local_reset_resets_the_far_end(cert):
    p = Pair(cert)
    far = p.open(1)
    p.run(p.alice.tcp_reset(1, p.now), ALICE)
    p.advance(20)
    assert p.tcp[BOB].of(TcpClose, far) == [TcpClose(far, "the connection was reset by the other end")]


def test_many_streams_share_one_connection_and_do_not_cross(cert):
    p = Pair(cert)
    fars = {cid: p.open(cid) for cid in range(1, 21)}
    for cid in fars:
        p.run(p.alice.tcp_data(cid, f"client {cid}".encode() * 100, p.now), ALICE)
    p.advance(50)
    for cid, far in fars.items():
        assert bytes(p.tcp[BOB].data[far]) == f"client {cid}".encode() * 100
    assert len(p.alice.connections()) == 1 and p.alice.connections()[0]["streams"] == 20


def test_a_transfer_survives_loss(cert):
    p = Pair(cert, loss=0.05)
    far = p.open(1)
    body = random.Random(3).randbytes(2_000_000)
    p.run(p.bob.tcp_data(far, body, p.now), BOB)
    p.run(p.bob.tcp_eof(far, p.now), BOB)
    for _ in range(200):
        p.advance(50)
        if p.tcp[ALICE].of(TcpShutdown, 1):
            break
    assert p.lost > 0 and bytes(p.tcp[ALICE].data[1]) == body


def test_a_slow_reader_pauses_the_sender(cert):
    """bob's service writes 8 MB, alice's TCP client reads nothing: bob's relay stops
    reading its service (PauseReading) instead of buffering it all."""
    p = Pair(cert)
    far = p.open(1)
    p.slow_readers.add(ALICE)
    chunk = b"x" * 65536
    paused = False
    for _ in range(128):
        actions = p.bob.tcp_data(far, chunk, p.now)
        p.run(actions, BOB)
        p.advance(5)
        if any(isinstance(a, PauseReading) for a in actions):
            paused = True
            break
    assert paused
    held = sum(c["held"] for c in p.alice.connections())
    assert len(p.tcp[ALICE].data[1]) <= 4 * (1 << 20) + 65536 + held * 1400
    # alice's client reads everything: the transfer resumes
    p.run(p.alice.tcp_written(1, len(p.tcp[ALICE].data[1]), p.now), ALICE)
    p.advance(200)
    assert p.tcp[BOB].of(ResumeReading, far)


def test_a_slow_reader_gets_every_byte_in_order_in_the_end(cert):
    """alice's application reads 32 kB per 10 ms while bob's service sends 6 MB: what
    alice's relay held back while the reader lagged is all delivered, in order."""
    p = Pair(cert)
    far = p.open(1)
    p.slow_readers.add(ALICE)
    body = random.Random(5).randbytes(6 << 20)
    sent = 0
    read = 0
    for _ in range(5000):
        if sent < len(body) and not (p.tcp[BOB].of(PauseReading, far) and
                                     len(p.tcp[BOB].of(PauseReading, far)) > len(p.tcp[BOB].of(ResumeReading, far))):
            chunk = body[sent:sent + 65536]
            sent += len(chunk)
            p.run(p.bob.tcp_data(far, chunk, p.now), BOB)
            if sent == len(body):
                p.run(p.bob.tcp_eof(far, p.now), BOB)
        arrived = len(p.tcp[ALICE].data.get(1, b""))
        step = min(32 << 10, arrived - read)
        if step:
            read += step
            p.run(p.alice.tcp_written(1, step, p.now), ALICE)
        p.advance(10)
        if read == len(body) and p.tcp[ALICE].of(TcpShutdown, 1):
            break
    assert p.alice.counters["held"] > 0  # the reader did lag: datagrams were held back
    assert bytes(p.tcp[ALICE].data[1]) == body


def test_keepalive_holds_an_idle_stream_and_idle_connections_time_out(cert):
    """With a stream open, keepalive pings keep the QUIC connection past its idle
    timeout; once every stream has ended, the connection idles out on both sides."""
    p = Pair(cert)
    far = p.open(1)
    p.advance(95_000)  # three idle timeouts (30 s) with nothing to send but pings
    assert len(p.alice.connections()) == 1 and len(p.bob.connections()) == 1
    p.run(p.bob.tcp_data(far, b"still here", p.now), BOB)
    p.advance(10)
    assert bytes(p.tcp[ALICE].data[1]) == b"still here"
    for core, cid in ((p.alice, 1), (p.bob, far)):
        p.run(core.tcp_eof(cid, p.now), ALICE if core is p.alice else BOB)
    p.advance(10)
    assert p.tcp[ALICE].of(TcpClose, 1) == [TcpClose(1, None)]
    p.advance(40_000)
    assert p.alice.connections() == [] and p.bob.connections() == []


# --- [ext] streams authenticated to the identifier (issue 11, PROTOCOL.md "Stream relay") ---

def test_a_cryptographic_nid_is_authenticated_by_its_certificate():
    bob_key = Ed25519PrivateKey.generate()
    bob_nid = nid_of(public_bytes(bob_key))
    p = Pair(make_certificate(bob_key), bob_nid=bob_nid)
    far = p.open(1)
    p.run(p.alice.tcp_data(1, b"hello", p.now), ALICE)
    p.advance(10)
    assert bytes(p.tcp[bob_nid].data[far]) == b"hello"
    assert p.alice.counters["authenticated"] == 1


def test_an_impostor_serving_for_a_cryptographic_nid_gets_no_byte():
    """Another key's certificate for bob's NID: the client refuses the handshake before
    a byte of the stream leaves (seen failing before: the stream was accepted)."""
    bob_nid = nid_of(public_bytes(Ed25519PrivateKey.generate()))
    p = Pair(make_certificate(Ed25519PrivateKey.generate()), bob_nid=bob_nid)
    p.run(p.alice.tcp_opened(1, "bob", 22, p.now), ALICE)
    p.run(p.alice.tcp_data(1, b"secret", p.now), ALICE)
    p.advance(200)
    assert not p.tcp[bob_nid].of(TcpConnect) and not p.tcp[bob_nid].data
    [close] = p.tcp[ALICE].of(TcpClose, 1)
    assert "certificate key does not certify the NID" in close.error
    assert p.alice.counters["authenticated"] == 0


def test_a_plain_nid_is_encrypted_not_authenticated(cert):
    p = Pair(cert)
    p.open(1)
    assert p.alice.counters["unauthenticated"] == 1 and p.alice.counters["authenticated"] == 0
