"""The bus package (bus/): codec, sequence numbers and gaps, the direct data path,
hello/resync, requests and Actor.ask.

Each test gets a short run directory under /tmp (ipc paths must stay under ~100
chars); a test that needs the broker starts the real one (bus.broker.serve) in a
subprocess, since it installs a SIGTERM handler. Actors run their real loop
(Actor.run) in a thread, with signal installation stubbed out (only the main thread
may install handlers). Everything a test starts is stopped by the `node` fixture,
even when the test fails; waits are conditions with deadlines.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq

import bus.actor
import bus.direct
from bus.actor import Actor
from bus.client import BusClient, RequestError, RequestRefused, request
from bus.codec import HELLO, FrameError, pack, unpack
from bus.direct import HELD, NO_CONSUMER, REFUSED, SENT, DirectOut, bind_inbox, unlink_inbox
from bus.rundir import NodeNotFound, RunDir, current_netns, find_run_dir

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 3.0
STATE = b"state.x"
DATA = b"t.data"

BROKER = ("import sys; from bus.broker import serve; from bus.rundir import RunDir; "
          "serve(RunDir(sys.argv[1]), {'hostname': 'testnode'})")


def wait_until(cond, timeout: float = DEADLINE_S, what: str = "the condition"):
    """cond()'s first truthy value; AssertionError once `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.002)


def recv_until(client: BusClient, match, timeout: float = DEADLINE_S, what: str = "a frame"):
    """Frames from `client` until match(topic, body); returns that (topic, body)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        frame = client.recv(left)
        if frame is not None and match(*frame):
            return frame
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


class Loop:
    """An actor's real run() in a thread. call(fn) runs fn inside its loop (sockets are
    not thread-safe) and returns the result; a 10 ms tick makes stop() take effect fast."""

    TICK_S = 0.01

    def __init__(self, actor: Actor):
        self.actor = actor
        self._calls: queue.Queue = queue.Queue()
        self.crashed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"actor-{actor.name}", daemon=True)

    def start(self) -> "Loop":
        self.actor.call_later(0, self._tick)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self.actor.run()
        except BaseException as exc:  # reported by stop()
            self.crashed = exc

    def _tick(self) -> None:
        while True:
            try:
                fn, box = self._calls.get_nowait()
            except queue.Empty:
                break
            try:
                box.put((True, fn()))
            except BaseException as exc:
                box.put((False, exc))
        self.actor.call_later(self.TICK_S, self._tick)

    def call(self, fn, timeout: float = DEADLINE_S):
        box: queue.Queue = queue.Queue(1)
        self._calls.put((fn, box))
        try:
            ok, value = box.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"actor {self.actor.name} did not run the call (crashed: {self.crashed!r})")
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        self.actor.stop()
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive(), f"actor {self.actor.name} did not stop"
        assert self.crashed is None, f"actor {self.actor.name} crashed: {self.crashed!r}"


class Node:
    """A run directory, maybe a broker, and the actors and clients a test made."""

    def __init__(self, path: str):
        self.run = RunDir(path)
        self.broker: subprocess.Popen | None = None
        self._actors: list[Actor] = []
        self._loops: dict[int, Loop] = {}
        self._clients: list[BusClient] = []
        self._closers: list = []

    def start_broker(self) -> None:
        self.broker = subprocess.Popen([sys.executable, "-c", BROKER, str(self.run.path)], cwd=ROOT)
        wait_until(lambda: self.run.broker_running() or self.broker.poll() is not None, 10, "the broker")
        assert self.broker.poll() is None, "the broker exited"

    def stop_broker(self, tries: int = 10) -> int | None:
        """SIGTERM, repeated: the broker misses a SIGTERM that lands while zmq.proxy is busy
        forwarding (the handler runs only if the signal interrupts zmq_proxy's poll; a known
        bug of bus/broker.py), and one that lands while it waits in poll stops it. Returns
        its exit status (after `tries`, SIGKILL and AssertionError)."""
        proc, self.broker = self.broker, None
        if proc is None:
            return None
        for _ in range(tries):
            proc.terminate()
            try:
                return proc.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        proc.wait()
        raise AssertionError(f"the broker did not stop on {tries} SIGTERMs")

    def actor(self, name: str, **kwargs) -> Actor:
        actor = Actor(name, self.run, **kwargs)
        self._actors.append(actor)
        return actor

    def start(self, actor: Actor) -> Loop:
        loop = self._loops[id(actor)] = Loop(actor)
        return loop.start()

    def stop(self, actor: Actor) -> None:
        """Stop a running actor now (its run() closes it)."""
        self._loops[id(actor)].stop()

    def client(self, name: str = "client") -> BusClient:
        client = BusClient(self.run, name)
        self._clients.append(client)
        return client

    def on_close(self, fn) -> None:
        self._closers.append(fn)

    def close(self) -> None:
        """Stop and close everything, the broker last, whatever fails on the way."""
        problems = []
        for loop in self._loops.values():
            if loop.thread.is_alive():
                loop.actor.stop()
        for loop in self._loops.values():
            loop.thread.join(DEADLINE_S)      # each run() closes its actor
            if loop.thread.is_alive() or loop.crashed is not None:
                problems.append(f"actor {loop.actor.name}: alive={loop.thread.is_alive()} "
                                f"crashed={loop.crashed!r}")
        closers = [a.close for a in self._actors if id(a) not in self._loops]
        closers += [c.close for c in self._clients]
        closers += [getattr(thing, "close", thing) for thing in self._closers]
        for close in closers:
            try:
                close()
            except Exception as exc:
                problems.append(f"closing: {exc!r}")
        try:
            self.stop_broker()
        except AssertionError as exc:
            problems.append(str(exc))
        assert not problems, problems


@pytest.fixture
def node(monkeypatch):
    # Actor.run installs SIGTERM/SIGINT handlers: only the main thread may, and ours runs pytest
    monkeypatch.setattr(bus.actor, "signal", SimpleNamespace(
        signal=lambda *_args: None, SIGTERM=signal.SIGTERM, SIGINT=signal.SIGINT))
    path = tempfile.mkdtemp(prefix="bus", dir="/tmp")
    made = Node(path)
    try:
        yield made
    finally:
        try:
            made.close()
        finally:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def live(node):
    """A node whose broker runs."""
    node.start_broker()
    return node


def announced(actor: Actor):
    return lambda: actor._announced


# ---- codec ------------------------------------------------------------------------

def test_codec_round_trip_keeps_bytes_str_and_int_keys():
    body = {"a": "router", "q": 7, "p": [b"\x00\xff\x80", "text", 1, -2, None, True, 1.5, [b"", ""]],
            7: b"int key", "m": {1: b"one", 65535: {2: [3]}}}
    back = unpack(pack(body))
    assert back == body
    assert type(back["p"][0]) is bytes and type(back["p"][1]) is str
    assert type(back["p"][7][0]) is bytes and type(back["p"][7][1]) is str
    assert back[7] == b"int key" and back["m"][65535] == {2: [3]}
    assert unpack(pack({"t": (1, (2, b"x"))})) == {"t": [1, [2, b"x"]]}  # tuples come back as lists


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\x81\xa1a", pack({"a": 1}) + b"\x00",
                                  b"\x81\x91\x01\x02"],  # a map keyed by a list
                         ids=["empty", "never-used-byte", "truncated", "truncated-map", "extra-data", "list-key"])
def test_codec_garbage_is_a_frame_error(data):
    with pytest.raises(FrameError, match="undecodable frame body"):
        unpack(data)


@pytest.mark.parametrize("body", [[1, 2], 5, b"bytes", "str", None])
def test_codec_a_body_that_is_not_a_map_is_a_frame_error(body):
    with pytest.raises(FrameError, match="not a map"):
        unpack(pack(body))
    assert issubclass(FrameError, ValueError)


# ---- sequence numbers and gaps --------------------------------------------------------

def test_publish_numbers_frames_per_topic(node):
    actor = node.actor("pub")
    frames = [(topic, unpack(actor.publish(topic, {"n": i})))
              for i, topic in enumerate([b"s.a", b"s.a", b"s.b", b"s.a", b"s.b"])]
    assert [(t, b["a"], b["q"], b["n"]) for t, b in frames] == [
        (b"s.a", "pub", 1, 0), (b"s.a", "pub", 2, 1), (b"s.b", "pub", 1, 2), (b"s.a", "pub", 3, 3),
        (b"s.b", "pub", 2, 4)]
    # data items are batched: one frame per topic per flush, numbered on the same topic
    actor.emit(b"s.a", 1)
    actor.emit(b"s.a", 2)
    actor.emit(b"d.c", 3)
    actor.flush()
    assert actor.counters["frames_out"] == 7
    assert actor.counters["items_out"] == 3
    assert actor._stamp.seq == {b"s.a": 4, b"s.b": 2, b"d.c": 1}


def test_the_dispatcher_counts_gaps_per_publisher_and_topic(node):
    actor = node.actor("sub")
    seen = []
    actor.subscribe(b"t", lambda topic, body: seen.append((topic, body.get("a"), body.get("q"))))

    def feed(topic, sender, q):
        actor._dispatch([topic, pack({"a": sender, "q": q})])

    for q in (1, 2, 5):
        feed(b"t.a", "x", q)                 # 3 and 4 missed
    assert actor.counters["bus_gaps"] == 2
    feed(b"t.a", "y", 1)                     # another publisher: its own numbering
    feed(b"t.a", "y", 2)
    feed(b"t.b", "x", 9)                     # another topic: first seen, no gap
    feed(b"t.b", "x", 10)
    assert actor.counters["bus_gaps"] == 2
    feed(b"t.a", "y", 4)                     # 3 missed
    assert actor.counters["bus_gaps"] == 3
    feed(b"t.a", "x", 1)                     # x restarted: numbering starts over, no gap
    feed(b"t.a", "x", 2)
    feed(b"t.a", "x", 2)                     # a duplicate is no gap either
    assert actor.counters["bus_gaps"] == 3
    actor._dispatch([b"t.a", pack({"q": 50})])         # no publisher: not counted
    actor._dispatch([b"t.a", pack({"a": "x", "q": "9"})])
    assert actor.counters["bus_gaps"] == 3
    assert actor.counters["frames_in"] == len(seen) == 13
    # what is not [topic, map] is counted and dropped, never handled
    actor._dispatch([b"t.a", b"\xc1"])
    actor._dispatch([b"t.a", pack([1])])
    actor._dispatch([b"t.a"])
    actor._dispatch([b"t.a", pack({}), b"extra"])
    assert actor.counters["bad_frames"] == 4
    assert len(seen) == 13


def test_a_handler_error_is_counted_and_the_next_frame_handled(node):
    actor = node.actor("sub")
    seen = []

    def handler(_topic, body):
        if body.get("boom"):
            raise RuntimeError("boom")
        seen.append(body["q"])

    actor.subscribe(b"t", handler)
    actor._dispatch([b"t.a", pack({"a": "x", "q": 1, "boom": True})])
    actor._dispatch([b"t.a", pack({"a": "x", "q": 2})])
    assert actor.counters["handler_errors"] == 1
    assert seen == [2]


def test_a_bus_client_counts_gaps(live):
    receiver = live.client("recv")
    receiver.subscribe(b"g.")
    receiver.wait_ready()
    sender = live.client("send")
    sender.wait_ready()  # its publisher now knows the receiver's subscription
    raw = sender.pub
    for q in (1, 2, 6):
        raw.send_multipart([b"g.x", pack({"a": "p", "q": q})])
    raw.send_multipart([b"g.x", b"\xc1"])                     # undecodable: skipped by recv
    raw.send_multipart([b"g.y", pack({"a": "p", "q": 3})])   # another topic: first seen
    raw.send_multipart([b"g.y", pack({"a": "p", "q": 5})])
    got = [receiver.recv(DEADLINE_S) for _ in range(5)]
    assert [(t, b["q"]) for t, b in got] == [(b"g.x", 1), (b"g.x", 2), (b"g.x", 6), (b"g.y", 3), (b"g.y", 5)]
    assert receiver.gaps == 3 + 1
    # the client's own publish numbers per topic too
    assert unpack(sender.publish(b"g.z", {}))["q"] == 1
    assert unpack(sender.publish(b"g.z", {}))["q"] == 2


def test_a_client_that_watched_hellos_can_stop(live):
    ears = live.client("ears")
    ears.subscribe(HELLO)
    ears.subscribe(b"z.end")
    ears.wait_ready()
    ears.unsubscribe(HELLO)
    talker = live.client("talker")
    talker.wait_ready()           # it knows ears' subscriptions (and ears' unsubscription)
    talker.publish(HELLO, {})
    talker.publish(b"z.end", {})  # same publisher, same path: arrives after the hello
    topic, _body = ears.recv(DEADLINE_S)
    assert topic == b"z.end"


# ---- the direct data path ---------------------------------------------------------------

def test_direct_frames_reach_the_consumer_without_the_broker(node):
    # no broker at all: the only way a frame can arrive is the consumer's inbox
    consumer = node.actor("cons", consumes=(DATA,))
    assert node.run.inbox_path("cons").exists()
    assert node.run.topic_inbox_path(DATA).exists()
    got = []
    consumer.subscribe(DATA, lambda _t, body: got.append(body))
    node.start(consumer)
    producer = node.actor("prod")
    producer.emit(DATA, [1, b"x"])
    producer.emit(DATA, 2)
    producer.flush()
    wait_until(lambda: got, what="the data frame")
    sent_ns = got[0].pop("t")  # when it left, for the consumer's stage clock
    assert got == [{"p": [[1, b"x"], 2], "a": "prod", "q": 1}]
    assert type(sent_ns) is int and sent_ns <= time.monotonic_ns()
    assert consumer.stages.snapshot()[DATA.decode()]["wait"]["count"] == 1
    assert producer.counters["items_out"] == 2 and producer.counters["frames_out"] == 1
    assert producer.counters["direct_drops"] == 0 and producer.counters["no_consumer"] == 0
    # a consumer that stopped and came back: the PUSH queued meanwhile. (Only once the
    # PUSH has seen the connection go: a frame sent just before that is lost with it.)
    node.stop(consumer)
    assert not node.run.topic_inbox_path(DATA).exists()  # its endpoint goes with it
    wait_until(lambda: producer.direct.is_down(DATA), what="the PUSH to see its consumer go")
    producer.emit(DATA, 3)
    producer.flush()
    assert producer.counters["no_consumer"] == 0          # connected once: it queues
    assert producer.counters["direct_held"] == 1          # for the consumer's next incarnation
    again = node.actor("cons", consumes=(DATA,))
    got2 = []
    again.subscribe(DATA, lambda _t, body: got2.append(body))
    node.start(again)
    # an actor's loop retries what it holds every HOLD_RETRY_MS; this producer runs no loop
    wait_until(lambda: (producer.direct.retry(), got2)[1], what="the held frame")
    assert [{k: v for k, v in body.items() if k != "t"} for body in got2] == [{"p": [3], "a": "prod", "q": 2}]


def test_the_tap_gets_a_copy_of_a_data_frame_through_the_broker(live):
    tap = live.client("tap")
    tap.subscribe(DATA)
    tap.wait_ready()
    consumer = live.actor("cons", consumes=(DATA,))
    got = []
    consumer.subscribe(DATA, lambda _t, body: got.append(body["p"]))
    live.start(consumer)
    producer = live.actor("prod")
    loop = live.start(producer)
    wait_until(announced(producer), what="the producer's hello")
    for item in ("x", "y"):
        loop.call(lambda item=item: producer.emit(DATA, item))   # the loop flushes after the pass
        topic, body = recv_until(tap, lambda t, b: t == DATA, what="the tap's copy")
        assert (body["p"], body["a"]) == ([item], "prod")
    wait_until(lambda: len(got) == 2, what="both frames at the consumer")
    assert got == [["x"], ["y"]]                    # once each: not through the broker as well
    assert consumer.counters["bus_gaps"] == 0 and tap.gaps == 0


def test_a_topic_nobody_consumes_is_counted_by_an_actor(node):
    producer = node.actor("prod")
    producer.emit(b"t.none", 1)
    producer.emit(b"t.none", 2)
    producer.flush()
    assert producer.counters["no_consumer"] == 2
    assert producer.counters["direct_drops"] == 0
    assert producer.counters["frames_out"] == 1     # still published, for the tap
    # a consumer binds the topic's endpoint: the next frame is handed over
    consumer = node.actor("late", consumes=(b"t.none",))
    got = []
    consumer.subscribe(b"t.none", lambda _t, body: got.append(body["p"]))
    node.start(consumer)
    producer.emit(b"t.none", 3)
    producer.flush()
    assert producer.counters["no_consumer"] == 2
    wait_until(lambda: got == [[3]], what="the frame at the late consumer")


def test_a_topic_nobody_consumes_is_counted_by_a_bus_client(live):
    client = live.client("app")
    assert client.send(b"t.none", [1, 2, 3]) is False
    assert client.no_consumer == 3
    assert client.direct_drops == 3   # a BusClient counts every item not handed over here


def test_a_full_consumer_queue_is_a_refused_send(live, monkeypatch):
    monkeypatch.setattr(bus.direct, "SNDBUF", 1 << 18)  # what a consumer may fall behind by
    sink = bind_inbox(live.run, "sink", consumes=(b"t.full",))  # listens, never reads
    live.on_close(lambda: (sink.close(), unlink_inbox(live.run, "sink", (b"t.full",))))
    big = b"x" * 65536

    # DirectOut itself: SENT until the connection's buffer is full, then REFUSED
    out = DirectOut(live.run)
    live.on_close(out.close)
    results = []
    while REFUSED not in results and len(results) < 5000:
        results.append(out.send(b"t.full", pack({"a": "out", "q": len(results) + 1, "p": [big]})))
    assert results[-1] is REFUSED and set(results[:-1]) == {SENT}

    # an Actor counts the refused items as direct_drops
    producer = live.actor("prod")
    for _ in range(5000):
        producer.emit(b"t.full", big)
        producer.emit(b"t.full", big)
        producer.flush()
        if producer.counters["direct_drops"]:
            break
    assert producer.counters["direct_drops"] == 2
    assert producer.counters["no_consumer"] == 0

    # a BusClient: False, in direct_drops, not in no_consumer
    client = live.client("app")
    sent = [client.send(b"t.full", [big]) for _ in range(5000) if client.direct_drops == 0]
    assert sent[-1] is False and client.direct_drops == 1 and client.no_consumer == 0

    # the sink catches up: what each sender handed over arrives in order, and a send works again
    frames_out = producer.counters["frames_out"]
    expected = {"out": list(range(1, len(results))),          # all but the last, refused frame
                "prod": list(range(1, frames_out)),
                client.name: list(range(1, len(sent)))}
    received = {}
    for _, frame in inbox_frames(sink, DEADLINE_S):  # each sender's frames, in order, none lost
        body = unpack(frame)
        received.setdefault(body["a"], []).append(body["q"])
    assert received == expected
    producer.emit(b"t.full", b"small")  # room again once the sink has read
    producer.flush()
    assert producer.counters["direct_drops"] == 2
    frames = inbox_frames(sink, DEADLINE_S)
    assert [unpack(frame)["q"] for _, frame in frames] == [frames_out + 1]   # a receiver would count 1 gap


def test_what_is_held_for_a_consumer_that_is_down_is_bounded_in_bytes_and_replayed(live, monkeypatch):
    """A restarting consumer gets what was sent meanwhile, in order, up to HOLD_BYTES (a
    frame count alone let 2,000 one-packet frames, 1 s at 2,000/s, be the whole backlog)."""
    monkeypatch.setattr(bus.direct, "HOLD_BYTES", 10 * 1100)
    sink = bind_inbox(live.run, "sink", consumes=(b"t.down",))
    out = DirectOut(live.run)
    live.on_close(out.close)
    assert out.send(b"t.down", pack({"a": "out", "q": 1, "p": [b"x"]})) is SENT
    sink.close()                                   # the consumer dies
    unlink_inbox(live.run, "sink", (b"t.down",))
    results = [out.send(b"t.down", pack({"a": "out", "q": q, "p": [b"y" * 1000]})) for q in range(2, 14)]
    assert results[:10] == [HELD] * 10 and set(results[10:]) == {REFUSED}
    again = bind_inbox(live.run, "sink", consumes=(b"t.down",))   # its next incarnation
    live.on_close(lambda: (again.close(), unlink_inbox(live.run, "sink", (b"t.down",))))
    out.retry()
    assert [unpack(frame)["q"] for _, frame in inbox_frames(again, DEADLINE_S)] == list(range(2, 12))


def test_a_consumer_back_from_a_restart_gets_time_to_read_before_refusals(live, monkeypatch):
    """A restarted actor reads its inbox only once its required state came (up to 1 s):
    the queue towards it filled and the rest was refused (kill -9 of the router's link at
    2,000/s each way: ~100 lost each way, all direct_drops at the router)."""
    monkeypatch.setattr(bus.direct, "SNDBUF", 1 << 18)
    monkeypatch.setattr(bus.direct, "CATCH_UP_S", 30.0)
    sink = bind_inbox(live.run, "sink", consumes=(b"t.back",))
    out = DirectOut(live.run)
    live.on_close(out.close)
    big = b"x" * 65536
    assert out.send(b"t.back", pack({"a": "out", "q": 1, "p": [big]})) is SENT
    sink.close()                                   # killed
    unlink_inbox(live.run, "sink", (b"t.back",))
    again = bind_inbox(live.run, "sink", consumes=(b"t.back",))   # back, not reading yet
    live.on_close(lambda: (again.close(), unlink_inbox(live.run, "sink", (b"t.back",))))
    results = [out.send(b"t.back", pack({"a": "out", "q": q, "p": [big]})) for q in range(2, 40)]
    assert REFUSED not in results and HELD in results     # the queue filled, then it held
    received = []
    deadline = time.monotonic() + DEADLINE_S
    while len(received) < 38 and time.monotonic() < deadline:   # it reads now; held frames follow
        out.retry()
        received += [unpack(frame)["q"] for _, frame in inbox_frames(again, 0.3)]
    assert received == list(range(2, 40))
    out._conns[next(iter(out._conns))].catch_up_until = 0.0  # caught up: behind again is refused
    results = [out.send(b"t.back", pack({"a": "out", "q": q, "p": [big]})) for q in range(40, 80)]
    assert results[-1] is REFUSED and HELD not in results


def test_route_sends_a_topic_to_an_explicit_inbox(node):
    topic = b"stp.rx.7"
    app = node.actor("app")
    got = []
    app.subscribe(topic, lambda _t, body: got.append(body["p"]), direct=True)
    node.start(app)
    producer = node.actor("prod")
    producer.emit(topic, "a")
    producer.flush()
    assert producer.counters["no_consumer"] == 1       # no endpoint for the topic, no route
    producer.direct.route(topic, node.run.inbox("app"))
    producer.emit(topic, "b")
    producer.flush()
    wait_until(lambda: got, what="the routed frame")
    assert got == [["b"]]
    assert not node.run.topic_inbox_path(topic).exists()  # it went to the app's own inbox
    producer.direct.unroute(topic)
    producer.emit(topic, "c")
    producer.flush()
    assert producer.counters["no_consumer"] == 2
    # DirectOut's own answers
    out = DirectOut(node.run)
    node.on_close(out.close)
    assert out.send(topic, pack({"p": ["d"]})) is NO_CONSUMER
    out.route(topic, node.run.inbox("app"))
    assert out.send(topic, pack({"p": ["e"]})) is SENT
    wait_until(lambda: len(got) == 2, what="the second routed frame")
    assert got[1] == ["e"]


# ---- hello and resync -----------------------------------------------------------------

def test_an_owner_republishes_its_state_when_someone_says_hello(live):
    owner = live.actor("owner")
    state = {"v": 1}
    owner.owns(STATE, lambda: {"v": state["v"]})
    loop = live.start(owner)
    wait_until(announced(owner), what="the owner's hello")
    watcher = live.client("watch")
    watcher.subscribe(STATE)
    watcher.wait_ready()     # its hello: the owner republishes
    _topic, body = recv_until(watcher, lambda t, b: t == STATE, what="the state after a hello")
    assert (body["v"], body["a"]) == (1, "owner")
    first_q = body["q"]
    loop.call(lambda: state.update(v=2))
    watcher.publish(HELLO, {})           # each hello: a fresh snapshot
    _topic, body = recv_until(watcher, lambda t, b: t == STATE and b["v"] == 2, what="the state after a hello")
    assert body["q"] > first_q
    assert watcher.gaps == 0


def test_a_requiring_actor_says_hello_until_its_state_arrives(live, monkeypatch):
    monkeypatch.setattr(bus.actor, "HELLO_RETRY_S", 0.02)
    ears = live.client("ears")
    ears.subscribe(HELLO)
    ears.wait_ready()
    needy = live.actor("needy", requires=(STATE,))
    got = []
    needy.subscribe(STATE, lambda _t, body: got.append(body["v"]))
    loop = live.start(needy)
    for _ in range(4):  # it keeps saying hello: nobody owns the state yet
        recv_until(ears, lambda t, b: t == HELLO and b["a"] == "needy", what="needy's hellos")
    status = request(live.run, "needy", "status")
    assert status["actor"] == "needy" and status["in_sync"] is False and status["pid"] == os.getpid()
    assert needy._announced  # it keeps at it for the state alone
    owner = live.actor("owner")
    owner.owns(STATE, lambda: {"v": 5})
    live.start(owner)
    wait_until(lambda: got, what="the state at needy")
    assert got[0] == 5
    assert request(live.run, "needy", "status")["in_sync"] is True
    # in sync and announced: no more hellos after those already said
    said = loop.call(lambda: needy._stamp.seq[HELLO])
    heard = []

    def quiet():
        frame = ears.recv(5 * 0.02)
        if frame is not None and frame[1]["a"] == "needy":
            heard.append(frame[1]["q"])
        return frame is None

    wait_until(quiet, what="needy to stop saying hello")
    assert max(heard, default=0) <= said


def test_an_owner_republishes_what_it_owns_once_its_own_hello_comes_back(live):
    early = live.client("early")     # attached before the owner starts, and never says hello
    early.subscribe(STATE)
    early.subscribe(HELLO)
    probe = live.client("probe")
    probe.wait_ready()
    recv_until(early, lambda t, b: t == HELLO and b["a"] == probe.name,
               what="the probe's hello at the early subscriber (its subscriptions are at the broker)")
    probe.close()
    owner = live.actor("owner")
    owner.owns(STATE, lambda: {"v": 42})   # published nowhere else: no publish at start, no hello from others
    live.start(owner)
    _topic, body = recv_until(early, lambda t, b: t == STATE, what="the owned state")
    assert (body["v"], body["a"]) == (42, "owner")
    assert owner._announced
    assert early._stamp.seq == {}              # the early subscriber published nothing


# ---- requests ---------------------------------------------------------------------------

def serving(node: Node, name: str = "svc") -> tuple[Actor, Loop]:
    svc = node.actor(name)

    def fail(why="bad input"):
        raise ValueError(why)

    def crash():
        raise RuntimeError("kaput")

    svc.command("add", lambda a, b: a + b)
    svc.command("fail", fail)
    svc.command("crash", crash)
    return svc, node.start(svc)


def test_request_results_and_one_line_errors(live):
    serving(live)
    assert request(live.run, "svc", "add", a=2, b=3) == 5
    assert request(live.run, "svc", "add", a=[1], b=[b"x"]) == [1, b"x"]
    assert request(str(live.run.path), "svc", "ping") == "pong"
    with pytest.raises(RequestRefused) as refused:
        request(live.run, "svc", "fail")
    assert str(refused.value) == "svc: bad input"
    assert isinstance(refused.value, RequestError)
    with pytest.raises(RequestRefused, match=r"^svc: ValueError$"):
        request(live.run, "svc", "fail", why="")
    with pytest.raises(RequestRefused, match=r"^svc: svc has no command 'nope'$"):
        request(live.run, "svc", "nope")
    with pytest.raises(RequestRefused, match=r"^svc: .*unexpected keyword argument 'c'"):
        request(live.run, "svc", "add", a=1, b=2, c=3)
    with pytest.raises(RequestRefused, match=r"^svc: internal error: kaput$"):
        request(live.run, "svc", "crash")
    status = request(live.run, "svc", "status")
    assert status["actor"] == "svc" and status["in_sync"] is True
    assert request(live.run, "svc", "add", a=1, b=1) == 2   # still serving after all that


def test_request_to_an_actor_that_is_not_running(live):
    with pytest.raises(RequestError, match=r"^actor ghost is not running on the node at "):
        request(live.run, "ghost", "ping")
    live.run.ctl_path("zombie").touch()   # a stale endpoint nobody serves
    started = time.monotonic()
    with pytest.raises(RequestError, match=r"^actor zombie does not answer \(timeout 0.2s\)$"):
        request(live.run, "zombie", "ping", timeout=0.2)
    assert time.monotonic() - started >= 0.19


def test_request_when_the_node_is_not_running(node):
    serving(node)                                 # the actor serves, but there is no broker
    with pytest.raises(RequestError, match=r"^node not running at "):
        request(node.run, "svc", "ping")
    with pytest.raises(NodeNotFound, match="node not running"):
        request(str(node.run.path), "svc", "ping")   # found by path: NodeNotFound, not RequestError
    with pytest.raises(RequestError, match="node not running"):
        BusClient(node.run)


def test_an_idle_broker_stops_on_sigterm(node):
    node.start_broker()
    info = node.run.read_node_info()
    assert info["hostname"] == "testnode" and info["pid"] == node.broker.pid
    assert info["netns"] == current_netns()
    assert find_run_dir(node.run.path).path == node.run.path
    assert stat.S_IMODE(os.stat(node.run.path).st_mode) == 0o700
    for name in ("bus-in.sock", "bus-out.sock"):
        assert stat.S_IMODE(os.stat(node.run.sock(name)).st_mode) == 0o600
    assert node.stop_broker(tries=1) == 0     # idle: the first SIGTERM is enough
    assert not node.run.node_json.exists()
    assert not node.run.broker_running()
    with pytest.raises(RequestError, match="node not running"):
        request(node.run, "svc", "ping")
    with pytest.raises(NodeNotFound):
        find_run_dir(node.run.path)


def test_a_deferred_command_answers_after_the_loop_did_other_things(live):
    svc = live.actor("svc")
    waiting = []

    def wait_go(reply, tag):
        waiting.append((reply, tag))

    def on_go(_topic, body):
        while waiting:
            reply, tag = waiting.pop(0)
            if body["v"] is None:
                reply.error("gave up")
            else:
                reply.ok({"tag": tag, "go": body["v"]})
            reply.ok("a second answer is ignored")

    svc.command("wait_go", wait_go, deferred=True)
    svc.subscribe(b"ev.go", on_go)
    live.start(svc)
    wait_until(announced(svc), what="svc's hello")
    go = live.client("go")
    go.wait_ready()   # its publisher knows svc's subscription
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(request, live.run, "svc", "wait_go", tag="a")
        wait_until(lambda: waiting, what="the deferred request at svc")
        assert request(live.run, "svc", "ping") == "pong"   # the loop is not blocked meanwhile
        assert not pending.done()
        go.publish(b"ev.go", {"v": 7})
        assert pending.result(DEADLINE_S) == {"tag": "a", "go": 7}
        pending = pool.submit(request, live.run, "svc", "wait_go", tag="b")
        wait_until(lambda: waiting, what="the second deferred request")
        go.publish(b"ev.go", {"v": None})
        with pytest.raises(RequestRefused, match=r"^svc: gave up$"):
            pending.result(DEADLINE_S)
    assert svc.counters["replies_lost"] == 0
    assert request(live.run, "svc", "ping") == "pong"   # the REQ peers were not confused


def test_ask_another_actor(node):
    serving(node)                        # no broker needed: requests go straight to ctl sockets
    asker = node.actor("asker")
    loop = node.start(asker)
    answers = []

    def ask(actor, cmd, timeout_s, **args):
        asked_at = time.monotonic()
        loop.call(lambda: asker.ask(actor, cmd, lambda ok, result: answers.append(
            (cmd, ok, result, time.monotonic() - asked_at)), timeout_s, **args))

    ask("svc", "add", 0.25, a=1, b=2)
    ask("svc", "fail", 0.25)
    ask("svc", "nope", 0.25)
    ask("ghost", "ping", 0.3)
    wait_until(lambda: any(a[0] == "ping" for a in answers), what="the timeout for ghost")
    by_cmd = {cmd: (ok, result) for cmd, ok, result, _ in answers}
    assert len(answers) == 4                   # one answer each: no timeout after a reply
    assert by_cmd["add"] == (True, 3)
    assert by_cmd["fail"] == (False, "svc: bad input")
    assert by_cmd["nope"] == (False, "svc: svc has no command 'nope'")
    assert by_cmd["ping"] == (None, "actor ghost does not answer (timeout 0.3s)")
    assert [a[3] for a in answers if a[0] == "ping"][0] >= 0.3


def test_ask_waits_for_an_actor_that_is_starting(node):
    asker = node.actor("asker")
    loop = node.start(asker)
    answers = []
    loop.call(lambda: asker.ask("late", "ping", lambda ok, result: answers.append((ok, result)), 2.0))
    serving(node, "late")
    wait_until(lambda: answers, what="late's answer")
    assert answers == [(True, "pong")]


def test_core_timer_ignores_a_call_armed_for_a_superseded_deadline(monkeypatch):
    """A core whose deadline moves earlier again and again (QUIC's) must fire once per
    deadline reached, not once per move: the later call armed before is ignored."""
    from bus import actor as actor_module
    from bus.actor import CoreTimer

    calls: list = []

    class FakeActor:
        def call_later(self, delay_s, fn):
            calls.append(fn)

    now = [1000]
    monkeypatch.setattr(actor_module, "monotonic_ms", lambda: now[0])
    deadlines = [2000]
    fired: list = []
    timer = CoreTimer(FakeActor(), lambda: deadlines[0], lambda t: fired.append(t))
    timer.arm()                 # armed for 2000
    deadlines[0] = 1500
    timer.arm()                 # moved earlier: armed for 1500 too
    assert len(calls) == 2
    now[0], deadlines[0] = 1500, 9000
    calls[1]()                  # 1500 comes: the core fires, the timer re-arms for 9000
    assert fired == [1500] and len(calls) == 3
    now[0] = 2000
    calls[0]()                  # the call armed for 2000 is stale: nothing is due
    assert fired == [1500]
    now[0] = 9000
    calls[2]()
    assert fired == [1500, 9000]


def test_a_frame_with_a_strange_sender_is_counted_not_fatal(node):
    """A local process can publish anything: a sender or sequence number of the wrong
    type must not take the actor down (it used to raise 'unhashable' outside the guard)."""
    actor = node.actor("victim")
    seen = []
    actor.subscribe(b"t", lambda topic, body: seen.append(topic))
    for body in ({"a": [1], "q": 1}, {"a": {"x": 1}, "q": 2}, {"a": "ok", "q": [3]}):
        actor._dispatch([b"t.x", pack(body)])
    assert actor.counters["bad_senders"] == 2
    assert seen == [b"t.x"] * 3  # still handled: only the gap bookkeeping skips them


# ---- resync that holds (issue 12) ----------------------------------------------------------

def test_a_gap_in_a_state_topic_makes_the_consumer_say_hello_again(live, monkeypatch):
    """A state frame lost on the way (a high-water mark, a broker restart) shows as a gap
    in its publisher's numbering: the consumer asks again (hello), at most once per
    RESYNC_MIN_S however many gaps it sees."""
    monkeypatch.setattr(bus.actor, "RESYNC_MIN_S", 0.3)
    ears = live.client("ears")
    ears.subscribe(HELLO)
    ears.wait_ready()
    cons = live.actor("cons")
    got = []
    cons.subscribe(STATE, lambda _t, body: got.append(body["q"]))
    live.start(cons)
    wait_until(announced(cons), what="the consumer's hello")
    owner = live.client("owner")
    owner.wait_ready()      # its publisher knows the consumer's subscription
    while (frame := ears.recv(0.05)) is not None:
        pass                # the hellos said so far
    raw = owner.pub
    raw.send_multipart([STATE, pack({"a": "own", "q": 1})])
    raw.send_multipart([STATE, pack({"a": "own", "q": 2})])
    wait_until(lambda: got == [1, 2], what="the state frames")
    assert ears.recv(0.2) is None           # in sync, no gap: it says nothing
    raw.send_multipart([STATE, pack({"a": "own", "q": 4})])     # 3 was lost
    _t, hello = recv_until(ears, lambda t, b: t == HELLO and b["a"] == "cons", what="a hello after the gap")
    started = time.monotonic()
    for q in range(6, 60, 2):               # a gap in every frame: still one hello per RESYNC_MIN_S
        raw.send_multipart([STATE, pack({"a": "own", "q": q})])
    _t, again = recv_until(ears, lambda t, b: t == HELLO and b["a"] == "cons", what="the next hello")
    assert time.monotonic() - started >= 0.25
    assert again["q"] == hello["q"] + 1
    assert ears.recv(0.5) is None
    assert cons.counters["bus_gaps"] == 1 + 27 and cons.counters["resync_hellos"] == 2
    # a gap in a data frame (pushed to the inbox, never through the broker) is counted, not resynced
    cons._dispatch([DATA, pack({"a": "prod", "q": 1, "p": []})], from_broker=False)
    cons._dispatch([DATA, pack({"a": "prod", "q": 5, "p": []})], from_broker=False)
    assert cons.counters["bus_gaps"] == 28 + 3
    assert ears.recv(0.5) is None


def test_a_restarted_broker_leads_every_owner_to_republish(live):
    """The broker dies with a state frame inside it (frozen, then killed): once a new
    broker is up, the owner republishes and the consumer has the owner's current state;
    a consumer that requires the state is out of sync until it has it again."""
    owner = live.actor("owner")
    state = {"v": 1}
    owner.owns(STATE, lambda: {"v": state["v"]})
    owner_loop = live.start(owner)
    cons = live.actor("cons", requires=(STATE,))
    seen = []
    cons.subscribe(STATE, lambda _t, body: seen.append(body["v"]))
    live.start(cons)
    wait_until(lambda: seen and seen[-1] == 1 and owner._announced and cons._announced,
               what="the consumer in sync")
    live.broker.send_signal(signal.SIGSTOP)   # it reads nothing more
    owner_loop.call(lambda: (state.update(v=2), owner.publish(STATE, {"v": 2})))
    time.sleep(0.2)                            # the frame is in the frozen broker's buffers
    live.broker.kill()
    live.broker.wait()
    live.broker = None
    assert seen[-1] == 1
    live.start_broker()
    wait_until(lambda: seen[-1] == 2, what="the state published while the broker died")
    assert owner.counters["bus_reconnects"] >= 1 and cons.counters["bus_reconnects"] >= 1
    assert request(live.run, "cons", "status")["in_sync"] is True
    # a second restart: the same again
    owner_loop.call(lambda: state.update(v=3))   # changed, not published: only a republish carries it
    live.stop_broker()
    live.start_broker()
    wait_until(lambda: seen[-1] == 3, what="the state after a second broker restart")


def test_an_owner_started_before_the_broker_publishes_once_the_broker_is_up(node):
    """What an owner publishes before the broker exists is lost: it says hello until its
    own comes back, then publishes what it owns."""
    owner = node.actor("owner")
    owner.owns(STATE, lambda: {"v": 7})
    owner.publish(STATE, {"v": 7})             # its first publication: nowhere to go
    node.start(owner)
    time.sleep(0.3)
    assert not owner._announced
    node.start_broker()
    watcher = node.client("watch")
    watcher.subscribe(STATE)
    _t, body = recv_until(watcher, lambda t, b: t == STATE, what="the owned state")
    assert body["v"] == 7
    wait_until(announced(owner), what="the owner's hello back")


def test_hellos_from_a_flood_are_answered_at_a_bounded_rate(live, monkeypatch):
    """Every hello asks each owner for its state: a local process saying hello in a loop
    must not turn into a republication per hello (the last hello still gets one after it)."""
    monkeypatch.setattr(bus.actor, "REPUBLISH_MIN_S", 0.1)
    owner = live.actor("owner")
    state = {"v": 0}
    owner.owns(STATE, lambda: {"v": state["v"]})
    loop = live.start(owner)
    wait_until(announced(owner), what="the owner's hello")
    watcher = live.client("watch")
    watcher.subscribe(STATE)
    watcher.wait_ready()
    time.sleep(0.2)
    start_q = loop.call(lambda: owner._stamp.seq[STATE])
    for _ in range(200):
        watcher.publish(HELLO, {})
    time.sleep(0.05)
    loop.call(lambda: state.update(v=9))
    _t, body = recv_until(watcher, lambda t, b: t == STATE and b["v"] == 9, what="the last republication")
    time.sleep(0.3)
    published = loop.call(lambda: owner._stamp.seq[STATE]) - start_q
    assert 1 <= published <= 6, published


# ---- drops counted (issue 12) -----------------------------------------------------------------

def test_a_bus_client_counts_frames_it_cannot_decode(live):
    receiver = live.client("recv")
    receiver.subscribe(b"g.")
    receiver.wait_ready()
    sender = live.client("send")
    sender.wait_ready()
    sender.pub.send_multipart([b"g.x", b"\xc1"])
    sender.pub.send_multipart([b"g.x", pack([1, 2])])
    sender.pub.send_multipart([b"g.x", b"a", b"b"])
    sender.pub.send_multipart([b"g.x", pack({"a": "p", "q": 1})])
    topic, body = receiver.recv(DEADLINE_S)
    assert (topic, body["q"]) == (b"g.x", 1)
    assert receiver.bad_frames == 3


def test_frames_pushed_while_their_consumer_is_down_are_counted_as_held(node):
    """A consumer that died (its endpoint stays, as after kill -9): what is sent once its
    connection broke waits for its next incarnation and is counted as held; the next
    incarnation gets it, in order."""
    first = bind_inbox(node.run, "c1", consumes=(DATA,))
    producer = node.actor("prod")
    producer.emit(DATA, 1)
    producer.flush()
    frames = inbox_frames(first, DEADLINE_S)
    assert [unpack(frame)["p"] for _, frame in frames] == [[1]]
    first.close()                          # the consumer dies
    node.run.topic_inbox_path(DATA).touch()  # and its endpoint stays behind (kill -9)

    def held():
        producer.emit(DATA, "x")
        producer.emit(DATA, "y")
        producer.flush()
        return producer.counters["direct_held"]

    assert held() == 2  # the broken connection is seen at the first send
    assert producer.counters["no_consumer"] == 0 and producer.direct.is_down(DATA)
    second = bind_inbox(node.run, "c2", consumes=(DATA,))
    node.on_close(lambda: (second.close(), unlink_inbox(node.run, "c2", (DATA,))))
    producer.direct.retry()  # what an actor's loop does every HOLD_RETRY_MS while it holds
    got = [item for _, frame in inbox_frames(second, DEADLINE_S) for item in unpack(frame)["p"]]
    assert got == ["x", "y"] and producer.direct.holding == 0
    assert not producer.direct.is_down(DATA)
    producer.emit(DATA, "z")
    producer.flush()
    assert producer.counters["direct_held"] == 2  # delivered at once, not held


def inbox_frames(inbox, timeout: float) -> list:
    """[topic, frame]s that reach a bare Inbox (accepting its publishers) until `timeout`
    passes or, once some came, nothing more comes for 0.2 s."""
    import select
    out: list = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        socks = [*inbox.listeners, *inbox.conns.values()]
        ready, _, _ = select.select(socks, [], [], min(left, 0.2) if out else left)
        if not ready:
            if out:
                break
            continue
        for sock in ready:
            if sock in inbox.listeners:
                inbox.accept(sock)
            else:
                frames, gone = inbox.read(sock, 128)
                out += frames
                if gone:
                    inbox.drop(sock)
    return out


def test_a_route_to_a_bad_endpoint_is_a_counted_drop(node):
    producer = node.actor("prod")
    topic = b"ilnp.rx.42.00009"
    for endpoint in ("garbage", "ipc://" + "x" * 300, "tcp://nowhere:notaport"):
        producer.direct.route(topic, endpoint)
        producer.emit(topic, b"seg")
        producer.flush()                   # used to raise out of the loop: the actor died
    assert producer.counters["bad_endpoint"] == 3


def test_every_malformed_request_gets_an_answer_and_a_count(live):
    """A local process can send anything to a request socket: each gets a one-line answer,
    each refusal is counted by kind, and the actor goes on serving."""
    svc, loop = serving(live)
    kept = []

    def wait_then_fail(reply, boom):
        kept.append(reply)      # keeps the reply, then fails: the failure is the answer
        raise ValueError(f"bad {boom!r}")

    svc.command("defer", wait_then_fail, deferred=True)
    svc.command("weird", lambda: {1, 2})            # a result msgpack cannot carry
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    live.on_close(sock.close)
    sock.connect(live.run.ctl("svc"))

    def ask(*parts):
        sock.send_multipart([b"", *parts])
        assert sock.poll(int(DEADLINE_S * 1000)), f"no answer to {parts!r}"
        return unpack(sock.recv_multipart()[-1])

    for raw in (b"\xc1", pack([1]), pack({"no": "cmd"}), b""):
        assert ask(raw) == {"ok": False, "error": "malformed request"}
    assert ask(pack({"cmd": [1]}))["error"] == "svc has no command [1]"
    assert ask(pack({"cmd": "x" * 500}))["error"].endswith("...")
    assert ask(pack({"cmd": "add", 1: 2}))["error"] == "add: argument names must be strings"
    assert ask(pack({"cmd": "add", "a": 1}))["ok"] is False                  # missing argument
    assert ask(pack({"cmd": "add", "a": "x", "b": 1}))["ok"] is False        # TypeError inside
    assert ask(pack({"cmd": "add", "a": 1, "b": 2, "rid": [1]})) == {"ok": True, "result": 3}  # odd rid: not echoed
    assert ask(pack({"cmd": "defer", "boom": 1})) == {"ok": False, "error": "bad 1"}
    loop.call(lambda: kept[0].ok("late"))            # its later answer is ignored
    assert ask(pack({"cmd": "weird"}))["error"] == "internal error: unpackable result"
    assert ask(pack({"cmd": "crash"}))["error"] == "internal error: kaput"
    assert not sock.poll(200)                        # nothing more came (no late answer)
    counters = request(live.run, "svc", "status")["counters"]
    assert (counters["bad_requests"], counters["unknown_commands"], counters["requests_refused"],
            counters["request_errors"]) == (4, 2, 4, 2)
    assert request(live.run, "svc", "add", a=1, b=1) == 2


def test_an_answer_its_callback_cannot_take_is_counted(node):
    serving(node)
    asker = node.actor("asker")
    loop = node.start(asker)
    loop.call(lambda: asker.ask("svc", "ping", lambda ok, result: 1 / 0, 1.0))
    wait_until(lambda: asker.counters["answer_errors"] == 1, what="the answer")
    answers = []
    loop.call(lambda: asker.ask("svc", "add", lambda ok, result: answers.append(result), 1.0, a=1, b=2))
    wait_until(lambda: answers == [3], what="the next answer")


def test_a_reader_that_raises_is_counted_and_the_loop_goes_on(node):
    import socket as pysocket

    actor = node.actor("reader")
    a, b = pysocket.socketpair()
    node.on_close(a.close)
    node.on_close(b.close)
    a.setblocking(False)
    got = []

    def read():
        data = a.recv(100)
        if data == b"boom":
            raise RuntimeError("boom")
        got.append(data)

    actor.add_reader(a, read)
    node.start(actor)
    b.send(b"boom")
    wait_until(lambda: actor.counters["reader_errors"] == 1, what="the failing read")
    b.send(b"fine")
    wait_until(lambda: got == [b"fine"], what="the next read")


def test_a_restarted_actor_reads_its_inbox_only_once_its_required_state_is_in(live):
    """Frames held for an actor while it restarted must not meet a core that knows
    nothing yet: its inbox waits for the state it requires (ilnp-faults: a restarted
    router dropped the held frames of the router node as fwd_no_route, 745 each way)."""
    producer = live.actor("prod")
    prod_loop = live.start(producer)
    cons = live.actor("cons", consumes=(DATA,), requires=(STATE,))
    order = []
    cons.subscribe(STATE, lambda _t, body: order.append(("state", body["v"])))
    cons.subscribe(DATA, lambda _t, body: order.append(("data", body["p"])))
    live.start(cons)
    prod_loop.call(lambda: (producer.emit(DATA, 1), producer.flush()))
    time.sleep(0.3)  # ample for the frame to arrive: it is held, not handled
    assert order == []
    owner = live.actor("owner")
    owner.owns(STATE, lambda: {"v": 5})
    live.start(owner)
    wait_until(lambda: ("data", [1]) in order, what="the data")
    assert order[0] == ("state", 5)  # (an owner may republish it afterwards too)
    assert cons.counters["inbox_hold_timeout"] == 0


def test_without_its_owner_the_inbox_is_read_after_a_bounded_hold(live, monkeypatch):
    monkeypatch.setattr(bus.actor, "INBOX_HOLD_MAX_S", 0.3)
    producer = live.actor("prod")
    prod_loop = live.start(producer)
    cons = live.actor("cons", consumes=(DATA,), requires=(STATE,))
    got = []
    cons.subscribe(DATA, lambda _t, body: got.append(body["p"]))
    live.start(cons)
    prod_loop.call(lambda: (producer.emit(DATA, 1), producer.flush()))
    wait_until(lambda: got, what="the data after the hold")
    assert got == [[1]] and cons.counters["inbox_hold_timeout"] == 1
