"""Issue 4 on real nodes: discovery, forwarding through a router, STP applications, two nodes on one host.

Lab "router": alice (0:0:0:a) - router (a, b, c) - bob (0:0:0:b), fast discovery timers.
Lab "twohost": alice and bob in one namespace, both on 0:0:0:a.
One lab per topology for the whole module (bringing labs up and down is the slow part).
"""
from __future__ import annotations

import time

import pytest

from bus.client import request
from bus.rundir import RunDir
from tests.labutil import FAST, lab_name, tool, tool_json, wait_discovered, write_topology
from tests.stp_app import App, payload, sizes

pytestmark = pytest.mark.lab

WAIT_TIME = FAST["discovery"]["wait_time"]
STREAM = 20          # datagrams per direction
LARGEST = 1440 - 40 - 4   # the most STP data one datagram carries (MTU - ILNPv6 header - STP header)


def _lab(tmp_path_factory, base: str, prefix: str):
    from tools.lab import Lab

    lab = Lab(lab_name(prefix))
    try:
        lab.up(write_topology(tmp_path_factory.mktemp(base), base), timeout=30)
        lab.up_at = time.monotonic()
        yield lab
    finally:
        left = lab.down()
        assert not left, f"lab {lab.name} left behind: {left}"


@pytest.fixture(scope="module")
def router_lab(tmp_path_factory):
    yield from _lab(tmp_path_factory, "router", "ov")


@pytest.fixture(scope="module")
def twohost_lab(tmp_path_factory):
    yield from _lab(tmp_path_factory, "twohost", "tw")


def ask(lab, node: str, actor: str, cmd: str, **args):
    """A request to a node's actor straight from the test (its sockets are files in the run dir)."""
    return request(RunDir(lab.run_dir(node)), actor, cmd, timeout=5.0, **args)


def router_counter(lab, node: str, name: str) -> int:
    return ask(lab, node, "router", "status").get("core", {}).get(name, 0)


def hosts(lab, node: str) -> dict[str, list[str]]:
    """hostname -> locators, from the node's ilnp-hosts."""
    return {h["hostname"]: h["locators"] for h in tool_json(lab, node, "ilnp-hosts")}


def exchange(lab, a: tuple[str, int], b: tuple[str, int], tag: str = "") -> None:
    """An app on node a[0] port a[1] and one on b[0] port b[1] send STREAM datagrams to each
    other at once; each must receive exactly the other's, in order, from the right address."""
    (node_a, port_a), (node_b, port_b) = a, b
    apps = []
    try:
        app_a = App.start(lab, node_a, port_a, "--to", f"{node_b}:{port_b}", "--send", str(STREAM),
                          "--tag", f"{tag}{node_a}", "--size", str(LARGEST), "--expect", str(STREAM), "--go")
        apps.append(app_a)
        app_b = App.start(lab, node_b, port_b, "--to", f"{node_a}:{port_a}", "--send", str(STREAM),
                          "--tag", f"{tag}{node_b}", "--size", str(LARGEST), "--expect", str(STREAM), "--go")
        apps.append(app_b)
        for app in apps:
            app.wait_event("ready")  # bound and the peer resolved: nothing sent can find no port
        for app in apps:
            app.go()
        for app in apps:
            assert app.finish() == 0, f"app on {app.node}: {app.events}"
        for app, (peer, peer_port) in ((app_a, b), (app_b, a)):
            want = [(peer, peer_port, payload(f"{tag}{peer}", i, s))
                    for i, s in enumerate(sizes(STREAM, LARGEST))]
            assert app.received() == want, f"{app.node} got the wrong datagrams"
    finally:
        for app in apps:
            app.kill()


# ---- lab "router": alice - router - bob ----------------------------------------------------

def test_hostnames_resolve_within_one_solicitation_round(router_lab):
    # Each node solicits on joining and then every wait_time/2..wait_time; an answer or a
    # flooded solicitation teaches the others, so one wait_time after the lab is up is enough.
    left = max(1.0, router_lab.up_at + WAIT_TIME + 2.0 - time.monotonic())
    wait_discovered(router_lab, [("alice", "bob"), ("bob", "alice"), ("alice", "router"),
                                 ("bob", "router"), ("router", "alice"), ("router", "bob")], timeout=left)
    assert hosts(router_lab, "alice")["bob"] == ["0:0:0:b"]
    assert hosts(router_lab, "bob")["alice"] == ["0:0:0:a"]
    out = tool(router_lab, "alice", "ilnp-hosts").stdout
    assert "bob" in out and "ffff:0:0:b" in out


def test_ping_goes_through_the_router(router_lab):
    wait_discovered(router_lab, [("alice", "bob")])
    before = router_counter(router_lab, "router", "forwarded")
    result = tool_json(router_lab, "alice", "ilnp-ping", "-c", "3", "-i", "0.2", "bob")
    assert result["received"] == 3 and result["loss_pct"] == 0
    # alice (a) and bob (b) share no network: every probe and every reply crossed the router
    assert router_counter(router_lab, "router", "forwarded") - before >= 6
    routes = {loc: iface for loc, iface, _expiry in ask(router_lab, "alice", "router", "routes")}
    assert routes.get("0:0:0:b") == "0:0:0:a", f"alice's routes: {routes}"
    routes = {loc: iface for loc, iface, _expiry in ask(router_lab, "bob", "router", "routes")}
    assert routes.get("0:0:0:a") == "0:0:0:b", f"bob's routes: {routes}"


def test_stp_apps_exchange_both_ways_in_order(router_lab):
    wait_discovered(router_lab, [("alice", "bob"), ("bob", "alice")])
    before = router_counter(router_lab, "router", "forwarded")
    exchange(router_lab, ("alice", 7301), ("bob", 7302))
    assert router_counter(router_lab, "router", "forwarded") - before >= 2 * STREAM


def test_two_apps_on_one_node_do_not_cross(router_lab):
    wait_discovered(router_lab, [("alice", "bob"), ("bob", "alice")])
    apps = []
    try:
        # bob answers every datagram to whoever sent it; alice runs two apps at once
        echo = App.start(router_lab, "bob", 7200, "--echo", "--expect", str(2 * STREAM))
        apps.append(echo)
        echo.wait_event("bound")
        ones = {}
        for port, tag in ((7201, "one"), (7202, "two")):
            ones[port] = App.start(router_lab, "alice", port, "--to", "bob:7200", "--send", str(STREAM),
                                   "--tag", tag, "--size", str(LARGEST), "--expect", str(STREAM), "--go")
            apps.append(ones[port])
        for app in ones.values():
            app.wait_event("ready")
        for app in ones.values():
            app.go()
        for app in apps:
            assert app.finish() == 0, f"app on {app.node}: {app.events}"
        for port, tag in ((7201, "one"), (7202, "two")):
            want = [("bob", 7200, payload(tag, i, s)) for i, s in enumerate(sizes(STREAM, LARGEST))]
            assert ones[port].received() == want, f"alice:{port} got another app's datagrams or lost some"
            # bob saw each app's stream from that app's port, in order
            from_port = [data for host, p, data in echo.received() if (host, p) == ("alice", port)]
            assert from_port == [d for _h, _p, d in want]
        assert len(echo.received()) == 2 * STREAM
    finally:
        for app in apps:
            app.kill()


def test_port_held_by_a_live_process_is_a_clear_error(router_lab):
    holder = App.start(router_lab, "alice", 7100, "--go")
    try:
        assert holder.wait_event("bound")["port"] == 7100
        second = App.start(router_lab, "alice", 7100)
        assert second.finish() == 2
        error = second.wait_event("error")["error"]
        assert "7100" in error and "already bound" in error, error
        assert not any(e["event"] == "bound" for e in second.events)
        holder.go()
        assert holder.finish() == 0
    finally:
        holder.kill()
    # once the holder is gone the port is free again
    third = App.start(router_lab, "alice", 7100, "--go")
    try:
        assert third.wait_event("bound")["port"] == 7100
        third.go()
        assert third.finish() == 0
    finally:
        third.kill()


# ---- lab "twohost": alice and bob in one namespace ------------------------------------------

def test_two_nodes_on_one_host(twohost_lab):
    lab = twohost_lab
    assert lab.namespace("alice") == lab.namespace("bob")
    assert lab.run_dir("alice") != lab.run_dir("bob")
    wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
    assert hosts(lab, "alice")["bob"] == ["0:0:0:a"]
    assert hosts(lab, "bob")["alice"] == ["0:0:0:a"]
    for src, dst in (("alice", "bob"), ("bob", "alice")):
        result = tool_json(lab, src, "ilnp-ping", "-c", "3", "-i", "0.1", dst)
        assert result["received"] == 3, f"{src} -> {dst}: {result}"
    exchange(lab, ("alice", 7401), ("bob", 7402))
    # each instance saw the other's packets, not only its own looped back
    assert router_counter(lab, "alice", "delivered") > 0
    assert router_counter(lab, "bob", "delivered") > 0
