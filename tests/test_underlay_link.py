"""The link driving several underlays at once (issue 15 items 1 and 2): joins follow
each locator to its underlay, sends are routed by locator, what each underlay receives
goes up as link.rx with its locator, the status shows each socket, and a restart adopts
every socket from the fd store with what arrived meanwhile. All on `lo` (IPv6 multicast
has no route there: the labs test it, the default here is IPv4 multicast)."""
from __future__ import annotations

import select
import shutil
import socket
import tempfile
import time

import pytest

from actors.config import parse_config
from actors.link.ipv4_broadcast import Ipv4BroadcastUnderlay
from actors.link.ipv4_multicast import Ipv4MulticastUnderlay
from actors.link.main import STORE_NAME, LinkShell, store_name
from actors.proto import topics
from bus import fdstore
from bus.rundir import RunDir
from tests.test_fdstore import Running
from tests.test_underlay_kinds import free_port, receive

A, D, E = 0xA, 0xD, 0xE
TAG = 5


@pytest.fixture
def run_dir():
    path = tempfile.mkdtemp(prefix="ul", dir="/tmp")  # AF_UNIX paths must stay short
    yield RunDir(path)
    shutil.rmtree(path, ignore_errors=True)


class Node:
    """A link on three underlays: 0:0:0:a on the default (IPv4 multicast), 0:0:0:d
    unicast to one peer (a plain socket here), 0:0:0:e on IPv4 broadcast."""

    def __init__(self):
        self.ports = {"default": free_port(), "unicast": free_port(), "broadcast": free_port()}
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))
        self.peer.settimeout(5)
        self.config = parse_config({
            "hostname": "alice", "nid": "ffff:0:0:a", "locators": {"schedule": "0:0:0:a,0:0:0:d,0:0:0:e"},
            "underlay": {"kind": "ipv4-multicast", "interface": "lo", "port": self.ports["default"],
                         "group_tag": TAG, "locators": {
                             "0:0:0:d": {"kind": "unicast", "port": self.ports["unicast"],
                                         "peers": [f"127.0.0.1:{self.peer.getsockname()[1]}"]},
                             "0:0:0:e": {"kind": "ipv4-broadcast", "port": self.ports["broadcast"]}}}})
        # other nodes on this host, on the default's network and on the broadcast one
        self.mc = Ipv4MulticastUnderlay("lo", self.ports["default"], TAG, "127.0.0.1")
        self.mc.join(A)
        self.bc = Ipv4BroadcastUnderlay("lo", self.ports["broadcast"], "127.0.0.1", "127.255.255.255")
        self.bc.join(E)

    def close(self):
        for thing in (self.peer, self.mc, self.bc):
            thing.close()


@pytest.fixture
def node():
    made = Node()
    yield made
    made.close()


def kill(link) -> None:
    """What a kill -9 leaves: the process's descriptors closed, nothing said to anyone."""
    link.close_underlays()
    link.store.close()
    link.actor.close()


def by_kind(link) -> dict:
    return {underlay.kind: underlay for _name, underlay in link.attached}


def join_all(link) -> None:
    link.on_locators(topics.STATE_LOCATORS, {"cur": [A, D, E], "joined": [A, D, E], "leaving": []})


def rx_items(link, count: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    """What the link emits on link.rx, read through the readers its loop polls (and its
    timers: an adopted socket's backlog is read in timed slices before it is polled)."""
    deadline = time.monotonic() + timeout
    got: list = []
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(got)} of {count} on link.rx: {got}"
        link.actor._run_timers()
        ready, _, _ = select.select([u.fileno() for _n, u in link.attached], [], [], min(left, 0.01))
        for fd in ready:
            if fd in link.actor._readers:
                link.actor._readers[fd]()
        got += [tuple(item) for item in link.actor._out.pop(topics.LINK_RX, [])]
    return got


def test_each_locator_joins_on_its_own_underlay_and_sends_are_routed_by_locator(node, run_dir):
    link = LinkShell(node.config, run_dir)
    try:
        kinds = by_kind(link)
        assert set(kinds) == {"ipv4-multicast", "unicast", "ipv4-broadcast"}
        assert link.underlay is kinds["ipv4-multicast"]          # the default
        join_all(link)
        assert {kind: u.joined for kind, u in kinds.items()} == {
            "ipv4-multicast": {A}, "unicast": {D}, "ipv4-broadcast": {E}}
        assert link.joined() == ["0:0:0:a", "0:0:0:d", "0:0:0:e"]
        link.on_tx(topics.LINK_TX, {"p": [[A, b"on a"], [D, b"on d"], [E, b"on e"]]})
        assert link.counters["tx"] == 3
        assert node.peer.recv(100) == b"on d"
        assert receive(node.mc, 1) == [(A, b"on a")]
        assert receive(node.bc, 1) == [(E, b"on e")]
        # a locator leaves: only its underlay follows
        link.on_locators(topics.STATE_LOCATORS, {"cur": [A, E], "joined": [A, E], "leaving": []})
        assert {kind: u.joined for kind, u in kinds.items()} == {
            "ipv4-multicast": {A}, "unicast": set(), "ipv4-broadcast": {E}}
    finally:
        kill(link)


def test_what_every_underlay_receives_goes_up_with_its_locator(node, run_dir):
    link = LinkShell(node.config, run_dir)
    try:
        join_all(link)
        node.mc.send(A, b"from a")
        node.peer.sendto(b"from d", ("127.0.0.1", node.ports["unicast"]))
        node.bc.send(E, b"from e")
        assert sorted(rx_items(link, 3)) == [(A, b"from a"), (D, b"from d"), (E, b"from e")]
        assert link.counters["rx"] == 3
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.sendto(b"forged", ("127.0.0.1", node.ports["unicast"]))
        node.peer.sendto(b"marker", ("127.0.0.1", node.ports["unicast"]))
        assert rx_items(link, 1) == [(D, b"marker")]
        status = link.actor._cmd_status()
        assert status["core"]["rx_unknown_peer"] == 1              # the sum over the underlays
        shown = {u["kind"]: u for u in status["underlays"]}
        assert shown["unicast"]["joined"] == {"0:0:0:d": f"127.0.0.1:{node.peer.getsockname()[1]}"}
        assert shown["unicast"]["core"]["rx_unknown_peer"] == 1
        assert all(u["interface"] == "lo" and u["store"].startswith("link-underlay") for u in shown.values())
        assert shown["ipv4-multicast"]["default"] and not shown["unicast"]["default"]
        assert shown["ipv4-multicast"]["joined"]["0:0:0:a"].startswith("239.")
        assert shown["ipv4-broadcast"]["joined"] == {"0:0:0:e": f"127.255.255.255:{node.ports['broadcast']}"}
        assert (shown["ipv4-broadcast"]["interface"], shown["ipv4-broadcast"]["port"]) == ("lo",
                                                                                         node.ports["broadcast"])
    finally:
        kill(link)


def test_a_restart_adopts_every_underlay_with_what_arrived_meanwhile(node, run_dir):
    running = Running(run_dir.fdstore)
    try:
        first = LinkShell(node.config, run_dir)
        try:
            join_all(first)
            names = {store_name(spec) for spec in node.config.underlays}
            assert STORE_NAME in names and len(names) == 3

            def stored():
                stats = fdstore.store_stats(run_dir) or {}
                return set(stats.get("names", {})) == names

            deadline = time.monotonic() + 5
            while not stored():
                assert time.monotonic() < deadline, "every underlay stored"
                first.on_store()
                time.sleep(0.01)
        finally:
            kill(first)
        node.mc.send(A, b"a meanwhile")
        node.peer.sendto(b"d meanwhile", ("127.0.0.1", node.ports["unicast"]))
        node.bc.send(E, b"e meanwhile")
        second = LinkShell(node.config, run_dir)
        try:
            assert second.counters["fd_adopted"] == 3 and second.counters["fd_fresh"] == 0
            assert {kind: u.joined for kind, u in by_kind(second).items()} == {
                "ipv4-multicast": {A}, "unicast": {D}, "ipv4-broadcast": {E}}
            assert sorted(rx_items(second, 3)) == [(A, b"a meanwhile"), (D, b"d meanwhile"), (E, b"e meanwhile")]
        finally:
            kill(second)
    finally:
        running.close()


def test_an_entry_of_an_underlay_the_config_no_longer_has_is_dropped_at_start(node, run_dir):
    running = Running(run_dir.fdstore)
    stale = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        stale.bind(("::1", 0))
        assert fdstore.store_fds(run_dir, f"{STORE_NAME}.unicast.9.lan9", [stale.fileno()], {"kind": "unicast"})
        assert fdstore.store_fds(run_dir, "not-the-links", [stale.fileno()], {})
        link = LinkShell(node.config, run_dir)
        try:
            names = set(fdstore.store_stats(run_dir)["names"])
            assert f"{STORE_NAME}.unicast.9.lan9" not in names and "not-the-links" in names
        finally:
            kill(link)
    finally:
        stale.close()
        running.close()


def test_without_a_default_a_locator_no_underlay_carries_is_counted(run_dir):
    """Every locator of the schedule rides its own: no default socket is opened, and a
    locator outside the schedule (a hostile frame) has nowhere to go."""
    peer_port = free_port()
    config = parse_config({
        "hostname": "alice", "nid": "ffff:0:0:a", "locators": {"schedule": "0:0:0:d"},
        "underlay": {"interface": "nosuch0",   # never opened: no locator rides the default
                     "locators": {"0:0:0:d": {"kind": "unicast", "interface": "lo", "port": free_port(),
                                              "peers": [f"127.0.0.1:{peer_port}"]}}}})
    link = LinkShell(config, run_dir)
    try:
        assert link.default is None and [u.kind for _n, u in link.attached] == ["unicast"]
        link.on_locators(topics.STATE_LOCATORS, {"cur": [D, A], "joined": [D, A], "leaving": []})
        assert link.joined() == ["0:0:0:d"] and link.counters["join_no_underlay"] == 1
        link.on_tx(topics.LINK_TX, {"p": [[A, b"nowhere"]]})
        assert link.counters["tx_no_underlay"] == 1 and not link.counters["tx"]
        assert link.actor._cmd_status()["underlay"] == "unicast"
    finally:
        kill(link)


def test_the_ipv6_underlay_names_its_interface_and_port_in_the_status(run_dir):
    config = parse_config({"hostname": "alice", "nid": "ffff:0:0:a", "locators": {"schedule": "0:0:0:a"},
                           "underlay": {"interface": "lo", "port": free_port()}})
    link = LinkShell(config, run_dir)
    try:
        (shown,) = link.actor._cmd_status()["underlays"]
        assert (shown["kind"], shown["interface"], shown["port"]) == ("ipv6-multicast", "lo", config.port)
    finally:
        kill(link)


def test_store_names_fit_the_stores_rule():
    config = parse_config({"hostname": "alice", "nid": "ffff:0:0:a", "locators": {"schedule": "0:0:0:a,0:0:0:d"},
                           "underlay": {"interface": "lo", "locators": {
                               "0:0:0:d": {"kind": "ipv4-broadcast", "interface": "eth@0:x", "port": 65535}}}})
    names = [store_name(spec) for spec in config.underlays]
    assert names[0] == STORE_NAME
    assert names[1].startswith(f"{STORE_NAME}.ipv4-broadcast.65535.eth_0_x.")
    assert all(fdstore.NAME.match(name) for name in names)
