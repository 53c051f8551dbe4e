"""Locator selection on real nodes (PROTOCOL.md "[ext] Forwarding safeguards", issue 11 item 7).

Lab "router": alice (0:0:0:a) - router (a, b, c) - bob (0:0:0:b). The router holds three
locators; alice knows it at all three and has a route to b (bob's packets come from
there through the router). A probe sent to the router at b (or c) goes out on a, the
only network alice has, and the router's arrival rule drops it: it is addressed to a
locator the router has joined but it arrived on another. Alice must pick a, the
locator she shares with it.
"""
from __future__ import annotations

import pytest

from bus.client import request
from bus.rundir import RunDir
from tests.labutil import tool, tool_json, wait_discovered, wait_for

pytestmark = pytest.mark.lab


def _router_locators_at_alice(lab) -> list[str]:
    rows = {h["hostname"]: h["locators"] for h in tool_json(lab, "alice", "ilnp-hosts")}
    return rows.get("router", [])


def _core(lab, node: str) -> dict:
    return request(RunDir(lab.run_dir(node)), "router", "status", timeout=5.0).get("core", {})


def test_ping_router_from_alice_reaches_a_node_with_several_locators(make_lab):
    # alice solicits seldom, so her solicitations (flooded to b) do not keep bob from
    # soliciting: the router's answers to bob name b and go out on a too, so alice
    # knows the router at a and b and has a choice to make.
    lab = make_lab(base="router", nodes={"alice": {"discovery": {"wait_time": 60.0}}})
    wait_discovered(lab, [("alice", "router"), ("alice", "bob"), ("bob", "alice")])
    # her host table lists the router's locators newest first, and the order changes
    # with each answer the router sends: ping when b comes first, the case that failed
    # (alice has a route to b, through a, learned from bob's packets)
    # A solicitation on b (sent from bob's namespace, as bob's own would be) makes the
    # router answer naming b, flooded on a too; sent each round so the case does not
    # wait on bob's timer (under load it could take longer than the deadline).
    def b_first():
        tool(lab, "bob", "ilnp-attack", "solicit", "--locator", "0:0:0:b", "--hop", "2")
        return _router_locators_at_alice(lab)[:2] == ["0:0:0:b", "0:0:0:a"]

    wait_for(b_first, 60, "alice to know the router at b, then a")
    dropped_before = _core(lab, "router").get("dup_arrival", 0)
    result = tool_json(lab, "alice", "ilnp-ping", "-c", "10", "-i", "0.1", "router")
    print(f"\n[ilnp-ping router from alice] router at {_router_locators_at_alice(lab)}: {result}")
    assert result["received"] == 10 and result["loss_pct"] == 0, result
    assert _core(lab, "router").get("dup_arrival", 0) == dropped_before  # nothing for the arrival rule
    # and bob, one network away, is still reached through the router
    assert tool_json(lab, "alice", "ilnp-ping", "-c", "3", "-i", "0.1", "bob")["loss_pct"] == 0
