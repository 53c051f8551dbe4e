"""Issue 5 on real nodes: a node moves between networks while its flows go on.

Lab "router": alice (mobile, 0:0:0:a-0:0:0:b-0:0:0:c) - router (a, b, c) - bob (0:0:0:b).
The 30 s runs are the dissertation's experiment (tools/experiment) at 100 packets/s each
way with a move every 6 s; the last test forges locator updates on bob's network.
About 2.5 minutes in all on a 2-core machine. The last few tests pin, in the mobility
core, what these runs revealed (no lab).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from actors.proto.addr import format64, parse64
from actors.config import load_config
from bus.client import request
from bus.rundir import RunDir
from tests.labutil import REPO, lab_name, tool_json, wait_discovered, wait_for
from tools.experiment import analysis, orchestrate
from tools.experiment.orchestrate import Params

RATE, DURATION, MOVE, HANDOFF = 100.0, 14.0, 3.0, 1.5
FIGURES = ("sent", "received", "lost", "reordered", "duplicated")
# Reordering when a path gets shorter (a node moving into its peer's network, where a
# packet still on the longer path through the router was overtaken by the next one on
# the direct path: 1 in 3000 in about one run in four) is gone since the router holds a
# peer's sends for router.path_switch_hold when its path gets shorter: none allowed.
KNOWN_REORDERED = 0


def counters(lab, node: str, actor: str) -> dict:
    return request(RunDir(lab.run_dir(node)), actor, "status", timeout=5.0).get("core", {})


def hosts(lab, node: str) -> dict[str, list[str]]:
    return {h["hostname"]: h["locators"] for h in tool_json(lab, node, "ilnp-hosts")}


def assert_lossless(summary: dict) -> None:
    for name, d in summary["directions"].items():
        figures = {k: d[k] for k in FIGURES}
        assert d["sent"] >= 0.95 * RATE * DURATION, f"{name}: the sender fell behind: {figures}"
        assert (d["lost"], d["duplicated"]) == (0, 0) and d["reordered"] <= KNOWN_REORDERED, (
            f"{name}: {figures}, lost runs {d['lost_runs']}; moves {summary['moves']}")
    assert summary["lossless"] is all(
        (d["lost"], d["reordered"], d["duplicated"]) == (0, 0, 0) for d in summary["directions"].values())


def moves_while_sending(summary: dict, node: str) -> list[dict]:
    return [m for m in summary["moves"] if m["node"] == node and 0 < m["t_s"] < DURATION]


@pytest.mark.lab
def test_soft_handoffs_lose_nothing_either_way(make_lab, tmp_path):
    params = Params(rate=RATE, duration=DURATION, move_time=MOVE, handoff_time=HANDOFF)
    lab = make_lab(nodes=params.node_overrides())
    summary = orchestrate.run(lab, params, tmp_path / "out")
    assert_lossless(summary)
    moves = moves_while_sending(summary, "alice")
    assert len(moves) >= 4, f"alice moved only {moves}"
    assert {m["to"] for m in moves} == {"0:0:0:a", "0:0:0:b", "0:0:0:c"}
    assert all(m["leaving"] for m in moves)  # soft: the old set was kept for the handoff
    # traffic really flowed from each of alice's networks, and bob followed every move
    for d in summary["directions"].values():
        by = d["by_locator"]["alice"]
        assert all(by.get(loc, {}).get("received", 0) > RATE for loc in ("0:0:0:a", "0:0:0:b", "0:0:0:c")), by
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    bob_mobility = status["bob"]["mobility"]["core"]
    assert bob_mobility.get("updates_accepted", 0) >= len(moves)
    alice_mobility = status["alice"]["mobility"]["core"]
    assert alice_mobility.get("updates_unacked", 0) == 0, alice_mobility
    for png in ("seq_vs_time.png", "throughput.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.lab
def test_both_nodes_mobile_at_once_lose_nothing(make_lab, tmp_path):
    params = Params(rate=RATE, duration=DURATION, move_time=MOVE, handoff_time=HANDOFF, both_mobile=True)
    lab = make_lab(nodes=params.node_overrides())
    summary = orchestrate.run(lab, params, tmp_path / "out", plots=False)
    assert_lossless(summary)
    assert len(moves_while_sending(summary, "alice")) >= 4
    assert len(moves_while_sending(summary, "bob")) >= 4
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    for node in ("alice", "bob"):
        mob = status[node]["mobility"]["core"]
        # every update found its peer, though the peer itself had moved since the session began
        assert mob.get("updates_unacked", 0) == 0 and mob.get("updates_acked", 0) >= 4, (node, mob)


@pytest.mark.lab
def test_hard_handoff_loss_is_measured_and_reported(tmp_path):
    """The CLI end to end, handoff 0: it exits 0 and its figures agree with the raw CSVs."""
    from tools.lab import Lab

    name, out = lab_name("hx"), tmp_path / "out"
    argv = [sys.executable, "-m", "tools.experiment.cli", "--rate", str(RATE), "--duration", str(DURATION),
            "--move-time", str(MOVE), "--handoff-time", "0", "--out", str(out), "--lab", name, "--no-plots"]
    try:
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=DURATION + 90)
    finally:
        left = Lab(name).down()
    assert not left, f"lab {name} left behind: {left}"
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "alice: now in" not in proc.stderr  # hard: never both sets
    assert " s  alice\u2192bob sent" in proc.stderr  # progress was shown while it ran
    summary = json.loads((out / "summary.json").read_text())
    moves = moves_while_sending(summary, "alice")
    assert len(moves) >= 4 and not any(m["leaving"] for m in moves)
    for sender, receiver in (("alice", "bob"), ("bob", "alice")):
        d = summary["directions"][f"{sender}->{receiver}"]
        assert d["sent"] == summary["generators"][sender]["sent"] >= 0.95 * RATE * DURATION
        # recount from the raw CSV: nothing hidden, nothing invented
        rows = analysis.read_packets(out / f"{sender}_to_{receiver}.csv")
        arrived = {p.seq for p in rows}
        missing = [s for s in range(d["sent"]) if s not in arrived]
        assert d["lost"] == d["sent"] - d["received"] == len(missing)
        assert d["lost_seqs"] == missing[:len(d["lost_seqs"])]
        assert d["duplicated"] == len(rows) - len(arrived)
        by = d["by_locator"]["alice"]
        assert sum(f["lost"] for f in by.values()) == d["lost"]
        assert sum(f["sent"] for f in by.values()) == d["sent"]
    # the report names the loss; the last line is the per-direction figures as JSON
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures == {k: {f: d[f] for f in FIGURES} for k, d in summary["directions"].items()}


FORGE = r"""
import socket, sys
from actors.link.ipv6_multicast import multicast_group
from actors.proto.locator_update import encode_update
from actors.proto.ilnp import encode, encode_destopts
from actors.proto.numbers import NH_DESTOPTS, NH_LOCATOR_UPDATE
src_loc, src_nid, dst_loc, dst_nid, new_loc, tag, port = (int(x, 0) for x in sys.argv[1:8])
nonce = bytes.fromhex(sys.argv[8])
body = encode_update([new_loc])
if nonce:
    payload = encode_destopts(NH_LOCATOR_UPDATE, nonce, 0x7FFFFFFF) + body
    datagram = encode(src_loc, src_nid, dst_loc, dst_nid, NH_DESTOPTS, payload, 3)
else:
    datagram = encode(src_loc, src_nid, dst_loc, dst_nid, NH_LOCATOR_UPDATE, body, 3)
ifindex = socket.if_nametoindex("eth0")
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
s.sendto(datagram, (multicast_group(dst_loc, tag), port, 0, ifindex))
"""


def forge_update(lab, from_node: str, claimed_nid: str, to_loc: str, to_nid: str, new_loc: str,
                 nonce: bytes, underlay) -> None:
    """A raw locator update on to_loc's network, sent by a plain socket in from_node's namespace."""
    args = [hex(parse64("0:0:0:e")), hex(parse64(claimed_nid)), hex(parse64(to_loc)), hex(parse64(to_nid)),
            hex(parse64(new_loc)), str(underlay.group_tag), str(underlay.port), nonce.hex()]
    proc = lab.exec(from_node, [sys.executable, "-c", FORGE, *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.lab
def test_forged_locator_update_does_not_redirect_a_session(make_lab):
    # bob refuses updates from peers that never showed a nonce (the configurable policy)
    lab = make_lab(nodes={"alice": {"locators": {"handoff_time": 1.0}},
                          "bob": {"mobility": {"accept_updates_without_nonce": False}}})
    wait_discovered(lab, [("alice", "bob"), ("bob", "alice"), ("bob", "router")])
    # a session alice -> bob; its first packets carry alice's nonce
    assert tool_json(lab, "alice", "ilnp-ping", "-c", "3", "-i", "0.2", "bob")["received"] == 3
    # ilnp-move: alice moves on command; her update (with the nonce) redirects bob
    state = tool_json(lab, "alice", "ilnp-move", "0:0:0:c")
    assert state["cur"] == ["0:0:0:c"] and state["leaving"] == ["0:0:0:a"]
    wait_for(lambda: hosts(lab, "bob").get("alice") == ["0:0:0:c"], 10, "bob to follow alice to 0:0:0:c")
    assert counters(lab, "bob", "mobility").get("updates_accepted", 0) >= 1
    wait_for(lambda: counters(lab, "alice", "mobility").get("updates_acked", 0) >= 1, 10, "bob's ack")

    # a flow bob -> alice runs while the forgeries arrive
    receiver = lab.popen("alice", [sys.executable, "-m", "tools.trafficgen", "--local-port", "5001",
                                   "--duration", "9", "--idle-stop", "1.0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sender = None
    try:
        assert '"ready"' in receiver.stderr.readline()
        sender = lab.popen("bob", [sys.executable, "-m", "tools.trafficgen", "--peer", "alice",
                                   "--peer-port", "5001", "--rate", "100", "--duration", "5", "--size", "1396",
                                   "--progress"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the flow is running: the sender's first progress line reports packets sent
        wait_for(lambda: json.loads(sender.stderr.readline() or "{}").get("sent", 0) > 0, 10,
                 "the flow bob -> alice to be running")
        before = counters(lab, "bob", "mobility")
        underlay = load_config(lab.run_dir("bob") / "node.toml")
        alice_nid = format64(load_config(lab.run_dir("alice") / "node.toml").nid)
        bob_nid = format64(underlay.nid)
        router_nid = format64(load_config(lab.run_dir("router") / "node.toml").nid)
        # right NID, no nonce; right NID, wrong nonce: both must be refused
        forge_update(lab, "router", alice_nid, "0:0:0:b", bob_nid, "0:0:0:e", b"", underlay)
        forge_update(lab, "router", alice_nid, "0:0:0:b", bob_nid, "0:0:0:e", b"\x5a" * 12, underlay)
        # a peer that never sent a nonce: bob's policy here is to refuse
        forge_update(lab, "router", router_nid, "0:0:0:b", bob_nid, "0:0:0:e", b"", underlay)
        wait_for(lambda: counters(lab, "bob", "mobility").get("update_bad_nonce", 0)
                 >= before.get("update_bad_nonce", 0) + 2, 10, "bob to count two bad nonces")
        wait_for(lambda: counters(lab, "bob", "mobility").get("update_no_nonce_refused", 0)
                 >= before.get("update_no_nonce_refused", 0) + 1, 10, "bob to refuse the nonce-less update")
        after = counters(lab, "bob", "mobility")
        assert after.get("updates_accepted") == before.get("updates_accepted")
        bob_hosts = hosts(lab, "bob")
        assert bob_hosts["alice"] == ["0:0:0:c"] and "0:0:0:e" not in bob_hosts.get("router", [])
        sent = json.loads(sender.communicate(timeout=30)[0].strip().splitlines()[-1])
        got = json.loads(receiver.communicate(timeout=30)[0].strip().splitlines()[-1])
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    # the flow went on to alice's real locator, whole and in order
    assert sent["sent"] >= 450
    assert (got["received"], got["duplicated"], got["reordered"]) == (sent["sent"], 0, 0)
    assert hosts(lab, "bob")["alice"] == ["0:0:0:c"]


# ---- what the lab runs revealed, pinned in the mobility core (no lab needed) ------------------

def _moved_core(sessions, hosts_rows):
    from actors.mobility.core import MobilityCore, SendUpdate

    a, b = 0xA, 0xB
    core = MobilityCore(0xFFFF_0000_0000_0001, [[a], [b]], 60000, 2000)
    core.start(0)
    core.set_sessions(sessions)
    core.set_hosts(hosts_rows)
    return core, [t for t in core.move([b], 1000) if isinstance(t, SendUpdate)]


BOB = 0xFFFF_0000_0000_000B


@pytest.mark.parametrize("sessions", [[[0xA, BOB], [0xC, BOB]], [[0xC, BOB], [0xA, BOB]]])
def test_update_goes_where_the_host_table_says_the_peer_is(sessions):
    # the router's sessions name every locator the peer used lately, sorted, not by recency;
    # discovery's table (mob.peer applied) knows the peer is in a now
    core, tx = _moved_core(sessions, [["bob", BOB, [0xA], 0]])
    assert [t.dst_locs for t in tx] == [(0xA, 0xC)]


def test_retries_follow_the_host_table_when_the_peer_moves_meanwhile():
    core, tx = _moved_core([[0xC, BOB]], [["bob", BOB, [0xC], 0]])
    assert tx[0].dst_locs == (0xC,)
    core.set_hosts([["bob", BOB, [0xD], 0]])
    retry = core.on_timer(2000)
    assert [t.dst_locs for t in retry if hasattr(t, "dst_locs")] == [(0xD, 0xC)]


def test_bad_host_rows_are_counted_and_skipped():
    core, _ = _moved_core([[0xC, BOB]], [["bob", "x", [0xA], 0], ["eve"], ["bob", BOB, [0xA], 0]])
    assert core.counters["bad_host_entry"] == 2
