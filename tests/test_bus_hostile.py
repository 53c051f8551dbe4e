"""Issue 12 deliverable 2: every actor survives any frame or request a local process can
send (bad types, missing keys, undecodable bodies, bad endpoints), each dropped and
counted, and deliverable 5's per-item drops: one bad item in a data batch costs that
item only (`bad_items`), never the rest of the batch.

No root: each actor's real shell is built in a short run directory under /tmp (no
broker, no loop; the link on the loopback interface), and its registered handlers are
driven the way the loop drives them (`Actor._dispatch` for frames, `_handle_request`
for requests) with generated bodies: hypothesis msgpack values (st.recursive), the
right keys with values of every wrong type, huge ints, nested lists, bytes where str is
expected. A handler that raises is a bug here even though the runtime would catch it
(`handler_errors`): the shell itself must drop and count what it cannot use, and keep
the good items of the same batch. Requests may be refused, never fail inside
(`request_errors`). After each run the actor still answers `status`.

The lab test at the end runs `ilnp-attack bus-garbage` on alice while alice pings bob:
no actor restarts, the ping goes on, the counters account for the frames.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import socket
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.config import parse_config
from actors.proto import ilnp as wire
from actors.proto import stp, topics
from actors.proto.frames import LinkItem, RxItem, TxItem
from bus.codec import pack, unpack
from bus.rundir import RunDir

A, B, C = 0xA, 0xB, 0xC
ME = 0xFFFF_0000_0000_000D
PEER = 0xFFFF_0000_0000_00B0
U64 = (1 << 64) - 1

# ---- generated values ---------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=U64),              # msgpack's whole range
    st.sampled_from([0, 1, 7, -1, A, C, U64, 1 << 63, ME, PEER, 65535, 65536, 1 << 31]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["0:0:0:a", "ipc:///nowhere", "", "status", "a" * 200]),
    st.binary(max_size=48))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-3, 3)), inner, max_size=4)),
    max_leaves=20)
KEYS = ("a", "q", "p", "joined", "leaving", "cur", "sessions", "hosts", "ports", "epoch", "nid", "locs", "via")


def bodies(item_arity: int | None = None):
    """A frame body: some of the keys every handler reads, with any values; for a data
    topic, a batch `p` whose items have about the right arity and any contents."""
    body = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)
    if item_arity is None:
        return body
    item = st.one_of(values, st.lists(values, min_size=item_arity - 1, max_size=item_arity + 1))
    return st.builds(lambda b, p: {**b, "p": p}, body, st.lists(item, max_size=6))


# ---- the shells ---------------------------------------------------------------------------

def free_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        return sock.getsockname()[1]


class Shells:
    """Every actor's shell, built as its main() builds it, in one run directory."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="hb", dir="/tmp")  # ipc paths must stay short
        self.run = RunDir(self.path)
        self.config = parse_config({
            "hostname": "alice", "nid": "ffff:0:0:d", "locators": {"schedule": "0:0:0:a"},
            "underlay": {"interface": "lo", "port": free_udp_port()},
            "proxy": {"port": free_udp_port()}})
        from actors.discovery.main import DiscoveryShell
        from actors.echo.main import EchoShell
        from actors.link.main import LinkShell
        from actors.mobility.main import MobilityShell
        from actors.proxy.main import ProxyShell
        from actors.router.main import RouterShell
        from actors.stream.main import StreamShell
        self.shells = {}
        for name, cls in (("link", LinkShell), ("router", RouterShell), ("discovery", DiscoveryShell),
                          ("mobility", MobilityShell), ("echo", EchoShell), ("proxy", ProxyShell),
                          ("stream", StreamShell)):
            self.shells[name] = cls(self.config, self.run)

    def actor(self, name: str):
        return self.shells[name].actor

    def close(self) -> None:
        for shell in self.shells.values():
            for closer in ("underlay", "sock"):
                thing = getattr(shell, closer, None)
                if thing is not None:
                    thing.close()
            shell.actor.close()
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.fixture(scope="module")
def shells():
    made = Shells()
    try:
        yield made
    finally:
        made.close()


def handlers(shells) -> list[tuple[str, bytes]]:
    out = []
    for name, shell in shells.shells.items():
        for prefix, _handler in shell.actor._handlers:
            if prefix != b"hello":
                out.append((name, prefix))
    return out


SUBSCRIPTIONS = [  # (actor, topic prefix, items' arity or None for state and control)
    ("link", topics.STATE_LOCATORS, None), ("link", topics.LINK_TX, 2),
    ("router", topics.LINK_RX, 2), ("router", topics.ILNP_TX, 6), ("router", topics.STATE_LOCATORS, None),
    ("router", topics.MOB_PEER, None),
    ("discovery", topics.ILNP_RX_DISCOVERY, 7), ("discovery", topics.STATE_LOCATORS, None),
    ("discovery", topics.MOB_PEER, None), ("discovery", topics.STATE_FORWARDING, None),
    ("mobility", topics.STATE_SESSIONS, None), ("mobility", topics.STATE_HOSTS, None),
    ("mobility", topics.ILNP_RX_LOCATOR_UPDATE, 7), ("mobility", topics.STATE_LINKS, None),
    ("echo", topics.stp_rx(7), 7), ("echo", topics.STATE_PORTS, None),
    ("proxy", topics.STATE_HOSTS, None), ("proxy", topics.STATE_PORTS, None),
    ("stream", topics.STATE_HOSTS, None), ("stream", topics.STATE_PORTS, None),
]


def test_the_list_covers_every_handler_the_shells_register(shells):
    listed = {(actor, prefix) for actor, prefix, _ in SUBSCRIPTIONS}
    registered = set(handlers(shells))
    stp_ports = {(a, p) for a, p in registered - listed if p.startswith(topics.ILNP_RX + b"42.")}
    assert registered - listed - stp_ports == set()   # the proxy's and stream's ports: below
    assert listed <= registered


def drive(actor, topic: bytes, body) -> None:
    before = actor.counters["handler_errors"]
    try:
        raw = pack(body)
    except (TypeError, ValueError, OverflowError):
        return
    actor._dispatch([topic, raw])
    actor._out.clear()  # what it emitted goes nowhere (no loop, no flush)
    assert actor.counters["handler_errors"] == before, f"a {topic!r} handler raised on {body!r}"


HYPOTHESIS = settings(max_examples=50, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                             HealthCheck.data_too_large])


@pytest.mark.parametrize("actor_name,topic,arity", SUBSCRIPTIONS,
                         ids=[f"{a}-{t.decode()}" for a, t, _ in SUBSCRIPTIONS])
def test_a_handler_drops_and_counts_what_it_cannot_use(shells, actor_name, topic, arity):
    actor = shells.actor(actor_name)

    @HYPOTHESIS
    @given(body=bodies(arity))
    def run(body):
        drive(actor, topic, body)

    run()
    status = unpack(pack(actor._cmd_status()))
    assert status["actor"] == actor_name


def test_the_proxy_and_stream_ports_drop_what_they_cannot_use(shells):
    for name, port in (("proxy", 5000), ("stream", 5001)):
        shells.shells[name]._follow(port)  # as for a mapping, a served port
        actor = shells.actor(name)
        ports = [p for p, _h in actor._handlers if p.startswith(topics.ILNP_RX + b"42.")]
        assert ports, f"{name} follows no STP port"

        @HYPOTHESIS
        @given(body=bodies(7))
        def run(body):
            drive(actor, ports[0], body)

        run()


def commands(shells) -> list[tuple[str, str]]:
    return sorted((name, cmd) for name, shell in shells.shells.items() for cmd in shell.actor._commands)


def test_every_command_is_fuzzed(shells):
    assert {c for _a, c in commands(shells)} >= {"status", "ping", "joined", "bind", "unbind", "move",
                                                 "map", "serve", "listen", "resolve"}


@pytest.mark.parametrize("actor_name", ["link", "router", "discovery", "mobility", "echo", "proxy", "stream"])
def test_every_request_is_answered_and_none_fails_inside(shells, actor_name):
    actor = shells.actor(actor_name)
    names = sorted(actor._commands)

    def args_of(cmd):
        fn = actor._commands[cmd]
        params = [p for p in inspect.signature(fn).parameters if p != "reply"]
        return st.dictionaries(st.sampled_from(params + ["rid", "extra"]) if params else st.just("extra"),
                               values, max_size=len(params) + 1)

    @HYPOTHESIS
    @given(data=st.data())
    def run(data):
        cmd = data.draw(st.sampled_from(names + [None]))
        req = data.draw(args_of(cmd)) if cmd else data.draw(st.dictionaries(st.sampled_from(KEYS), values))
        if cmd:
            req["cmd"] = cmd
        before = actor.counters["request_errors"]
        try:
            raw = pack(req)
        except (TypeError, ValueError, OverflowError):
            return
        _rid, reply = actor._handle_request(b"fuzz", raw)
        actor._out.clear()
        assert reply is None or set(reply) >= {"ok"}
        if reply is not None:
            pack(reply)  # it can be sent
        assert actor.counters["request_errors"] == before, f"{cmd} failed inside on {req!r}: {reply}"

    run()
    _rid, reply = actor._handle_request(b"fuzz", pack({"cmd": "status"}))
    assert reply["ok"] and reply["result"]["actor"] == actor_name


# ---- one bad item costs one item --------------------------------------------------------------

def test_one_bad_item_in_a_link_rx_batch_costs_that_item(shells):
    router = shells.shells["router"]
    router.on_locators(topics.STATE_LOCATORS, {"joined": [A], "leaving": []})
    router.core.ports.bind(7, os.getpid())
    ping1, ping2 = (wire.encode(A, PEER, A, ME, 42, stp.encode(40000, 7, data), 3) for data in (b"1", b"2"))
    before = router.core.counters["delivered"], router.actor.counters["bad_items"]
    items = [[A, ping1], ["x", ping1], [A], [A, "text"], [[A], ping1], [A, ping2]]
    router.actor._dispatch([topics.LINK_RX, pack({"a": "link", "q": 1, "p": items})], from_broker=False)
    delivered = [item for topic, batch in router.actor._out.items() if topic == topics.stp_rx(7) for item in batch]
    router.actor._out.clear()
    assert len(delivered) == 2                                   # the two good pings, around the bad ones
    assert router.actor.counters["bad_items"] - before[1] == 4


def test_one_bad_item_in_a_link_tx_batch_costs_that_item(shells):
    link = shells.shells["link"]
    sent = []
    real_send = link.underlay.send
    link.underlay.send = lambda loc, datagram: sent.append((loc, datagram)) or True
    try:
        before = link.actor.counters["bad_items"]
        items = [[A, b"one"], [A, "str"], None, [A, b"x", b"extra"], [-1, b"neg"], [1 << 64, b"big"], [C, b"two"]]
        link.on_tx(topics.LINK_TX, {"p": items})
    finally:
        link.underlay.send = real_send
    assert sent == [(A, b"one"), (C, b"two")]
    assert link.actor.counters["bad_items"] - before == 5


@pytest.mark.parametrize("actor_name,topic", [("discovery", topics.ILNP_RX_DISCOVERY),
                                              ("mobility", topics.ILNP_RX_LOCATOR_UPDATE),
                                              ("echo", topics.stp_rx(7))])
def test_one_bad_item_in_an_rx_batch_costs_that_item(shells, actor_name, topic):
    shell = shells.shells[actor_name]
    seen = []
    if actor_name == "echo":
        good = RxItem(A, PEER, A, ME, A, stp.encode(40000, 7, b"ping"), None)
    else:
        good = RxItem(A, PEER, A, ME, A, b"\x00" * 8, None)
    core = getattr(shell, "core", None)
    if core is not None:
        real = core.receive
        core.receive = lambda *args: seen.append(args) or []
    try:
        before = shell.actor.counters["bad_items"]
        bad = [["x"] * 7, [A, PEER, A, ME, A, "payload", None], [A] * 3, None, [A, PEER, A, ME, "loc", b"", None]]
        shell.actor._dispatch([topic, pack({"p": [list(good), *bad, list(good)]})], from_broker=False)
    finally:
        if core is not None:
            core.receive = real
    if actor_name == "echo":
        seen = [i for i in shell.actor._out.get(topics.ILNP_TX, [])]
    shell.actor._out.clear()
    assert len(seen) == 2
    assert shell.actor.counters["bad_items"] - before == 5
    assert shell.actor.counters["handler_errors"] == 0


def test_a_bad_state_body_is_dropped_whole_and_counted(shells):
    """A state frame is all or nothing: a locator set with one bad locator is not half
    applied (it is the owner's whole state, and this one is not it)."""
    link, router, discovery = (shells.shells[n] for n in ("link", "router", "discovery"))
    router.on_locators(topics.STATE_LOCATORS, {"joined": [A], "leaving": []})
    for body in ({"joined": [A, "b"], "leaving": []}, {"joined": A, "leaving": []}, {"joined": [A, 1 << 64], "leaving": []},
                 {"joined": [A], "leaving": [[C]]}, {"joined": [True], "leaving": []},
                 {}, {"joined": [A]}, {"leaving": []}):   # a key missing: not the owner's body either
        for shell in (link, router, discovery):
            before = shell.actor.counters["bad_bodies"]
            shell.on_locators(topics.STATE_LOCATORS, body)
            assert shell.actor.counters["bad_bodies"] == before + 1, (shell.actor.name, body)
    assert router.core.table.joined == {A}


def test_a_bind_with_a_bad_inbox_is_refused_and_never_saved(shells):
    """It used to be saved in stp-ports.json and kill the router at its first datagram for
    the port, again after every restart."""
    router = shells.shells["router"]
    run = shells.run
    good = run.inbox("echo")
    for inbox in ("garbage", "ipc://" + "x" * 200, "tcp://127.0.0.1:1", "ipc:///tmp/elsewhere/in-x.sock",
                  run.inbox("../x"), f"ipc://{run.path}/ctl-router.sock", 5, b"ipc://x", ["x"]):
        _rid, reply = router.actor._handle_request(b"x", pack({"cmd": "bind", "port": 9, "pid": 1, "inbox": inbox}))
        assert reply["ok"] is False and "inbox" in reply["error"], (inbox, reply)
    for pid in (0, -1, 1 << 40, "1", 1.5, True):
        _rid, reply = router.actor._handle_request(b"x", pack({"cmd": "bind", "port": 9, "pid": pid, "inbox": good}))
        assert reply["ok"] is False and "pid" in reply["error"], (pid, reply)
    saved = (run.path / "stp-ports.json")
    assert "9" not in (json.loads(saved.read_text()) if saved.exists() else {})
    assert router.actor.counters["request_errors"] == 0
    _rid, reply = router.actor._handle_request(b"x", pack({"cmd": "bind", "port": 9, "pid": 1, "inbox": good}))
    assert reply == {"ok": True, "result": 9}
    router.actor._handle_request(b"x", pack({"cmd": "unbind", "port": 9, "pid": 1}))


def test_the_link_counts_the_kernels_receive_drops():
    """SO_RXQ_OVFL: what the kernel dropped because the link's socket buffer was full is
    read from each datagram's ancillary data (rx_kernel_drops)."""
    from actors.link.ipv6_multicast import Ipv6MulticastUnderlay

    port = free_udp_port()
    underlay = Ipv6MulticastUnderlay("lo", port, 0)
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        underlay.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a few datagrams fill it
        sent = 400
        for i in range(sent):
            tx.sendto(b"x" * 200, ("::1", port))
        while True:  # unicast to ::1 has no group: each datagram read is counted rx_unknown_group
            before = underlay.counters["rx_unknown_group"]
            underlay.recv_batch(64)
            if underlay.counters["rx_unknown_group"] == before:
                break
        received = underlay.counters["rx_unknown_group"]
        assert 0 < received < sent
        # the count rides on datagrams queued after the drops: the next one brings it
        tx.sendto(b"next", ("::1", port))
        underlay.recv_batch(64)
        assert underlay.counters["rx_unknown_group"] == received + 1
        assert underlay.counters["rx_kernel_drops"] == sent - received
    finally:
        tx.close()
        underlay.close()


# ---- on the lab: ilnp-attack bus-garbage ------------------------------------------------------

DROPS = ("bad_frames", "bad_bodies", "bad_items", "unhandled", "bad_senders")
REFUSALS = ("bad_requests", "unknown_commands", "requests_refused", "request_errors")


def counted(status: dict, names) -> dict[str, int]:
    return {actor: sum(s.get("counters", {}).get(n, 0) for n in names) for actor, s in status.items()
            if isinstance(s, dict) and "counters" in s}


@pytest.mark.lab
def test_bus_garbage_on_alice_while_she_pings_bob(make_lab):
    from actors.registry import consumer_of
    from tests.labutil import supervisor_pids, tool, tool_json, wait_discovered

    lab = make_lab(base="pair")
    wait_discovered(lab, [("alice", "bob")])
    assert tool_json(lab, "alice", "ilnp-ping", "-c", "3", "-i", "0.2", "bob")["received"] == 3
    pids = supervisor_pids(lab, "alice")
    assert all(state == "RUNNING" for state, _pid in pids.values())
    before = tool_json(lab, "alice", "ilnp-status")
    pinger = lab.popen("alice", ["ilnp-ping", "-c", "50", "-i", "0.1", "-W", "1", "--json", "bob"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    attack = json.loads(tool(lab, "alice", "ilnp-attack", "bus-garbage", "--frames", "150", "--seed", "12",
                             timeout=120).stdout.strip().splitlines()[-1])
    out, err = pinger.communicate(timeout=60)
    assert out.strip(), err
    ping = json.loads(out)
    after = tool_json(lab, "alice", "ilnp-status")
    print(f"\nattack: {attack}\nping: sent {ping['sent']} received {ping['received']}")
    assert supervisor_pids(lab, "alice") == pids          # no actor restarted
    assert ping["received"] >= ping["sent"] - 2           # the ping went on

    # every request to every actor was refused in one line, and counted once
    assert attack["accepted"] == 0 and attack["total_requests"] > 0
    refused_before, refused_after = counted(before, REFUSALS), counted(after, REFUSALS)
    for endpoint, got in attack["requests"].items():
        actor = endpoint[len("ctl-"):-len(".sock")]
        assert got["unanswered"] == 0 and got["refused"] == got["sent"], (endpoint, got)
        assert refused_after[actor] - refused_before[actor] == got["sent"], actor
        assert after[actor]["counters"].get("request_errors", 0) == before[actor]["counters"].get("request_errors", 0)

    # each frame pushed to an actor's inbox is one drop there; the bus's reach every subscriber
    drops_before, drops_after = counted(before, DROPS), counted(after, DROPS)
    pushed: dict[str, int] = {}
    for endpoint, n in attack["frames"].items():
        name = endpoint[len("in-"):-len(".sock")]
        actor = consumer_of(name[2:].encode()) if name.startswith("t-") else name
        if actor in drops_after:
            pushed[actor] = pushed.get(actor, 0) + n
    assert set(pushed) >= {"link", "router", "discovery", "mobility", "echo"}
    for actor, n in pushed.items():
        assert drops_after[actor] - drops_before[actor] >= n, (actor, n, drops_after[actor] - drops_before[actor])
    total = sum(drops_after[a] - drops_before[a] for a in drops_after)
    assert total >= attack["total_frames"], (total, attack["total_frames"])
    errors_before, errors_after = counted(before, ("handler_errors", "item_errors")), counted(after, ("handler_errors", "item_errors"))
    assert errors_after == errors_before
    # and the node's state is as it was: the link on mobility's locators
    locators = tool_json(lab, "alice", "ilnp-status")
    assert locators["link"]["joined"] == ["0:0:0:a"]
