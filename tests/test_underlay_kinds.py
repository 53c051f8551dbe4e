"""The IPv4 multicast, IPv4 broadcast and unicast underlays on the loopback interface
(issue 15 item 1): what each carries, what it drops and counts, and the handover of
its sockets to the next link. Nothing leaves this host: every socket is on `lo`.

Absence is tested with a marker: datagrams on one socket arrive in order, so once a
marker sent after the datagram that must not arrive is in, that one would have been
seen first."""
from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time

import pytest

from actors.config import ConfigError, parse_config
from actors.link.ipv4_broadcast import Ipv4BroadcastUnderlay
from actors.link.ipv4_multicast import Ipv4MulticastUnderlay, ipv4_multicast_group
from actors.link.kinds import adopt_underlay, open_underlay
from actors.link.unicast import UnicastUnderlay
from tests.labutil import REPO

A, B, D, E = 0xA, 0xB, 0xD, 0xE
TAG = 7


def free_port() -> int:
    """A UDP port free for IPv4 and IPv6 alike (a dual-stack socket held it)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        return sock.getsockname()[1]


def config_for(kind: str, port: int, schedule: str = "0:0:0:a", **entry):
    """A node on `lo` whose locator 0:0:0:a rides `kind` on `port`."""
    return parse_config({"hostname": "alice", "nid": "ffff:0:0:a", "locators": {"schedule": schedule},
                         "underlay": {"interface": "lo", "port": port, "group_tag": TAG,
                                      "locators": {"0:0:0:a": {"kind": kind, **entry}}}})


def receive(underlay, count: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    """Datagrams the underlay passes up, until `count` of them (deadline: a failure)."""
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(got)} of {count} datagrams within {timeout} s: {got}"
        select.select([underlay.fileno()], [], [], left)
        got += underlay.recv_batch(64)
    return got


def settle(underlay, counter: str, value: int, timeout: float = 5.0) -> list:
    """Read until counters[counter] reaches `value`; what was passed up meanwhile."""
    got: list = []
    deadline = time.monotonic() + timeout
    while underlay.counters[counter] < value:
        left = deadline - time.monotonic()
        assert left > 0, f"{counter} {underlay.counters[counter]}, not {value}, within {timeout} s"
        select.select([underlay.fileno()], [], [], left)
        got += underlay.recv_batch(64)
    return got


@pytest.fixture
def closing():
    opened = []
    yield opened.append
    for thing in opened:
        thing.close()


# ---- IPv4 multicast -------------------------------------------------------------------

def test_the_ipv4_group_of_a_locator_is_fixed_by_tag_and_locator():
    """The mapping is wire contract (docs/PROTOCOL.md): pinned here."""
    assert ipv4_multicast_group(0xA, 0) == "239.204.11.187"
    assert ipv4_multicast_group(0xA, 7) == "239.11.136.215"
    assert ipv4_multicast_group(0xA, 0x10007) == ipv4_multicast_group(0xA, 7)   # the tag is 16 bits
    groups = {ipv4_multicast_group(loc, 0) for loc in range(1, 200)}
    assert len(groups) == 199 and all(g.startswith("239.") for g in groups)


def test_ipv4_multicast_carries_a_locator_between_two_nodes_of_one_host(closing):
    port = free_port()
    alice = Ipv4MulticastUnderlay("lo", port, TAG, "127.0.0.1")
    bob = Ipv4MulticastUnderlay("lo", port, TAG, "127.0.0.1")
    for u in (alice, bob):
        closing(u)
        u.join(A)
    assert alice.send(A, b"hello bob") is True
    assert receive(bob, 1) == [(A, b"hello bob")]
    assert settle(alice, "rx_own", 1) == []          # multicast loopback of our own: dropped
    assert bob.addresses() == {A: ipv4_multicast_group(A, TAG)}


def test_ipv4_multicast_receives_only_the_groups_it_joined_and_of_its_tag(closing):
    port = free_port()
    alice = Ipv4MulticastUnderlay("lo", port, TAG, "127.0.0.1")
    bob = Ipv4MulticastUnderlay("lo", port, TAG, "127.0.0.1")
    other_overlay = Ipv4MulticastUnderlay("lo", port, TAG + 1, "127.0.0.1")
    for u in (alice, bob, other_overlay):
        closing(u)
    alice.join(A), alice.join(B), bob.join(A), other_overlay.join(A)
    assert alice.send(B, b"on b") and other_overlay.send(A, b"another overlay") and alice.send(A, b"marker")
    assert receive(bob, 1) == [(A, b"marker")]
    assert not bob.counters["rx_unknown_group"]       # not even delivered: IP_MULTICAST_ALL off
    bob.leave(A)
    bob.join(B)
    assert alice.send(A, b"left") and alice.send(B, b"marker 2")
    assert receive(bob, 1) == [(B, b"marker 2")]


def test_two_locators_with_one_ipv4_group_are_refused_not_mixed(closing):
    seen: dict[str, int] = {}
    for loc in range(1, 1 << 16):   # the birthday bound of 24 bits: a pair turns up within a few thousand
        group = ipv4_multicast_group(loc, TAG)
        if group in seen:
            first, second = seen[group], loc
            break
        seen[group] = loc
    underlay = Ipv4MulticastUnderlay("lo", free_port(), TAG, "127.0.0.1")
    closing(underlay)
    underlay.join(first)
    with pytest.raises(OSError, match="also the group of"):
        underlay.join(second)
    assert underlay.joined == {first}


def test_ipv4_multicast_sends_on_a_locator_left_a_moment_ago_and_says_so(closing):
    port = free_port()
    alice = Ipv4MulticastUnderlay("lo", port, TAG, "127.0.0.1")
    bob = Ipv4MulticastUnderlay("lo", port, TAG, "127.0.0.1")
    closing(alice), closing(bob)
    bob.join(A)
    assert alice.send(A, b"not joined by alice") is False
    assert receive(bob, 1) == [(A, b"not joined by alice")]


# ---- IPv4 broadcast -------------------------------------------------------------------

def test_the_broadcast_address_of_an_interface_without_one_configured_is_its_subnets():
    underlay = open_underlay(config_for("ipv4-broadcast", free_port()).underlays[0],
                             config_for("ipv4-broadcast", 1))
    try:
        assert (underlay.source, underlay.broadcast) == ("127.0.0.1", "127.255.255.255")
    finally:
        underlay.close()


def test_ipv4_broadcast_carries_its_locator_and_drops_its_own(closing):
    port = free_port()
    alice = Ipv4BroadcastUnderlay("lo", port, "127.0.0.1", "127.255.255.255")
    bob = Ipv4BroadcastUnderlay("lo", port, "127.0.0.1", "127.255.255.255")
    for u in (alice, bob):
        closing(u)
        u.join(D)
    assert alice.send(D, b"to all")
    assert receive(bob, 1) == [(D, b"to all")]
    assert settle(alice, "rx_own", 1) == []


def test_ipv4_broadcast_carries_one_locator(closing):
    port = free_port()
    alice = Ipv4BroadcastUnderlay("lo", port, "127.0.0.1", "127.255.255.255")
    bob = Ipv4BroadcastUnderlay("lo", port, "127.0.0.1", "127.255.255.255")
    closing(alice), closing(bob)
    alice.join(D), bob.join(D)
    with pytest.raises(OSError, match="one locator per broadcast port"):
        alice.join(E)
    assert alice.joined == {D}
    # a frame for another locator would arrive as D's: not sent
    assert alice.send(E, b"for e") is False and alice.counters["tx_other_locator"] == 1
    alice.send(D, b"marker")
    assert receive(bob, 1) == [(D, b"marker")]
    # left a moment ago (the router had not heard yet): still goes, and says so
    alice.leave(D)
    assert alice.send(D, b"after leaving") is False
    assert receive(bob, 1) == [(D, b"after leaving")]


def test_ipv4_broadcast_drops_what_is_not_a_broadcast_and_what_arrives_unjoined(closing):
    port = free_port()
    bob = Ipv4BroadcastUnderlay("lo", port, "127.0.0.1", "127.255.255.255")
    alice = Ipv4BroadcastUnderlay("lo", free_port(), "127.0.0.1", "127.255.255.255")
    closing(bob), closing(alice)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.sendto(b"unicast to the port", ("127.0.0.1", port))
    assert settle(bob, "rx_not_broadcast", 1) == []
    alice.dest = ("127.255.255.255", port)   # alice on bob's port
    alice.join(D)
    alice.send(D, b"bob has not joined")
    assert settle(bob, "rx_not_joined", 1) == []


# ---- unicast --------------------------------------------------------------------------

def test_unicast_carries_a_locator_to_its_peers_over_ipv4_and_ipv6(closing):
    pa, pb = free_port(), free_port()
    alice = UnicastUnderlay("lo", pa, {D: (("::ffff:127.0.0.1", pb),), E: (("::1", pb),)})
    bob = UnicastUnderlay("lo", pb, {D: (("::ffff:127.0.0.1", pa),), E: (("::1", pa),)})
    for u in (alice, bob):
        closing(u)
        u.join(D), u.join(E)
    assert alice.send(D, b"over ipv4") and alice.send(E, b"over ipv6")
    assert receive(bob, 2) == [(D, b"over ipv4"), (E, b"over ipv6")]   # the peer says the locator
    assert bob.send(D, b"back")
    assert receive(alice, 1) == [(D, b"back")]
    assert bob.addresses() == {D: f"127.0.0.1:{pa}", E: f"[::1]:{pa}"}


def test_unicast_sends_each_frame_to_every_peer_of_the_locator(closing):
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    for peer in peers:
        closing(peer)
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(5)
    alice = UnicastUnderlay("lo", free_port(), {D: tuple(("::ffff:127.0.0.1", p.getsockname()[1]) for p in peers[:2]),
                                                E: (("::ffff:127.0.0.1", peers[2].getsockname()[1]),)})
    closing(alice)
    alice.join(D)
    assert alice.send(D, b"to both")
    assert [peer.recv(100) for peer in peers[:2]] == [b"to both", b"to both"]
    assert alice.send(E, b"e is not joined") is False    # sent all the same, and said
    assert peers[2].recv(100) == b"e is not joined"


def test_a_datagram_from_an_address_not_in_the_peer_list_is_dropped_and_counted(closing):
    """A stranger must not inject: not another host, not another port of a peer's host.
    Seen failing before the peer filter (every datagram went up as the locator's)."""
    pa, pb = free_port(), free_port()
    alice = UnicastUnderlay("lo", pa, {D: (("::ffff:127.0.0.1", pb),)})
    closing(alice)
    alice.join(D)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:   # the peer's host, another port
        stranger.sendto(b"forged", ("127.0.0.1", pa))
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("::1", pb))                                       # the peer's port, another address
        stranger.sendto(b"forged too", ("::1", pa))
    assert settle(alice, "rx_unknown_peer", 2) == []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", pb))
        peer.sendto(b"genuine", ("127.0.0.1", pa))
    assert receive(alice, 1) == [(D, b"genuine")]
    assert alice.counters["rx_unknown_peer"] == 2


def test_a_peer_of_a_locator_not_joined_is_counted_not_passed_up(closing):
    pa, pb = free_port(), free_port()
    alice = UnicastUnderlay("lo", pa, {D: (("::ffff:127.0.0.1", pb),)})
    closing(alice)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", pb))
        peer.sendto(b"too early", ("127.0.0.1", pa))
        assert settle(alice, "rx_not_joined", 1) == []
        alice.join(D)
        alice.leave(D)
        peer.sendto(b"too late", ("127.0.0.1", pa))
        assert settle(alice, "rx_not_joined", 2) == []
    with pytest.raises(OSError, match="no peers"):
        alice.join(E)


def test_unicast_is_bound_to_its_interface(closing):
    underlay = UnicastUnderlay("lo", free_port(), {D: (("::1", 1),)})
    closing(underlay)
    if os.geteuid() != 0:
        pytest.skip("SO_BINDTODEVICE needs root")
    bound = underlay.sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0")
    assert bound == b"lo" and not underlay.counters["bind_to_device_refused"]


# ---- handover to the next link (what the fd store keeps meanwhile) -------------------

def _sender(kind: str, port: int, peer_port: int):
    """Something that sends on locator 0:0:0:a to the node under test."""
    if kind == "ipv4-multicast":
        other = Ipv4MulticastUnderlay("lo", port, TAG, "127.0.0.1")
        other.join(A)
        return other, lambda data: other.send(A, data)
    if kind == "ipv4-broadcast":
        other = Ipv4BroadcastUnderlay("lo", port, "127.0.0.1", "127.255.255.255")
        other.join(A)
        return other, lambda data: other.send(A, data)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", peer_port))
    return other, lambda data: other.sendto(data, ("127.0.0.1", port))


@pytest.mark.parametrize("kind", ["ipv4-multicast", "ipv4-broadcast", "unicast"])
def test_the_next_link_adopts_the_sockets_and_reads_what_arrived_meanwhile(kind, closing):
    port, peer_port = free_port(), free_port()
    entry = {"peers": [f"127.0.0.1:{peer_port}"]} if kind == "unicast" else {}
    config = config_for(kind, port, **entry)
    spec = config.underlays[0]
    first = open_underlay(spec, config)
    first.join(A)
    kept = [os.dup(fd) for fd in first.handover_fds()]    # what the store keeps
    meta = first.handover_meta(first.joined)
    first.close()                                         # the link dies
    sender, send = _sender(kind, port, peer_port)
    closing(sender)
    send(b"while no link runs")
    second = adopt_underlay(spec, config, meta, kept)
    assert second is not None
    closing(second)
    assert second.joined == {A} and not second.counters["adopt_join_errors"]
    assert receive(second, 1) == [(A, b"while no link runs")]
    if kind != "unicast":
        second.send(A, b"mine")                           # still its own: same send socket
        assert settle(second, "rx_own", 1) == []


@pytest.mark.parametrize("kind", ["ipv4-multicast", "ipv4-broadcast", "unicast"])
@pytest.mark.parametrize("what", ["another port", "another kind", "garbage metadata", "not sockets"])
def test_what_does_not_fit_is_not_adopted_and_its_descriptors_are_closed(kind, what):
    port, peer_port = free_port(), free_port()
    entry = {"peers": [f"127.0.0.1:{peer_port}"]} if kind == "unicast" else {}
    config = config_for(kind, port, **entry)
    first = open_underlay(config.underlays[0], config)
    kept = [os.dup(fd) for fd in first.handover_fds()]
    meta = first.handover_meta([A])
    first.close()
    if what == "another port":
        config = config_for(kind, free_port(), **entry)
    elif what == "another kind":
        meta = {**meta, "kind": "ipv6-multicast"}
    elif what == "garbage metadata":
        meta = {**meta, "joined": "everything", "port": "x"}
    else:
        for fd in kept:
            os.close(fd)
        kept = [os.open("/dev/null", os.O_RDONLY) for _ in kept]
    assert adopt_underlay(config.underlays[0], config, meta, kept) is None
    for fd in kept:
        with pytest.raises(OSError):
            os.fstat(fd)                                   # closed, not leaked


def test_an_ipv4_underlay_on_an_interface_without_an_ipv4_address_is_one_line(tmp_path):
    """A fresh network namespace (unshare -n): its lo is down, without 127.0.0.1. The
    namespace ends with the process."""
    if os.geteuid() != 0:
        pytest.skip("unshare -n needs root")
    conf = tmp_path / "node.toml"
    conf.write_text('hostname = "alice"\nnid = "ffff:0:0:a"\n[locators]\nschedule = "0:0:0:a"\n'
                    '[underlay]\ninterface = "lo"\n[underlay.locators."0:0:0:a"]\nkind = "ipv4-broadcast"\n')
    proc = subprocess.run(["unshare", "-n", sys.executable, "-m", "actors.run", "link"], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ILNP_CONF": str(conf), "ILNP_RUN_DIR": str(tmp_path)})
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in err, err
    assert f"{conf}: underlay.interface: interface 'lo' has no IPv4 address" in err


def test_a_missing_interface_is_a_config_error_for_every_kind():
    for kind in ("ipv4-multicast", "ipv4-broadcast", "unicast", "ipv6-multicast"):
        entry = {"peers": ["127.0.0.1:1"]} if kind == "unicast" else {}
        config = parse_config({"hostname": "alice", "nid": "ffff:0:0:a", "locators": {"schedule": "0:0:0:a"},
                               "underlay": {"interface": "lo", "locators": {
                                   "0:0:0:a": {"kind": kind, "interface": "nosuch9", **entry}}}}, "n.toml")
        with pytest.raises(ConfigError, match=r"""^n.toml: underlay.locators."0:0:0:a".interface: no interface"""):
            open_underlay(config.underlays[0], config)
