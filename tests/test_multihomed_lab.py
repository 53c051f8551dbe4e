"""A multihomed node on the lab (issue 15 item 3, conf/lab/multihomed.toml): alice holds
0:0:0:a on lan1 (her primary) and 0:0:0:b on lan2; the router joins a, b and c; bob is
on c. Her peers send to her primary; when its cable is pulled (`ilnp-lab link alice lan1
down`) the link says so, 0:0:0:a is withdrawn and bob told, and a stream in flight
completes byte-exact over lan2; with the cable back the primary is offered again.
The failover time and the datagram loss are figures, not asserted here:
`python -m tools.lab.failover` (docs/NOTES.md)."""
from __future__ import annotations

import time

import pytest

from bus.client import request
from tests.labutil import is_root, lab_name, tool, tool_json, wait_discovered, wait_for, write_topology
from tests.test_proxy_e2e import stop
from tests.test_underlays_lab import Stream, big, sha256  # noqa: F401 (big is a fixture)

pytestmark = pytest.mark.lab

A, B = 0xA, 0xB


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not is_root():
        pytest.skip("lab tests need root (network namespaces)")
    from tools.lab import Lab

    lab = Lab(lab_name("mh"))
    try:
        lab.up(write_topology(tmp_path_factory.mktemp("topo"), "multihomed"), timeout=90)
        wait_discovered(lab, [("alice", "bob"), ("bob", "alice")], timeout=30)
        yield lab
    finally:
        left = lab.down()
        assert not left, f"lab {lab.name} left behind: {left}"


@pytest.fixture
def cable(lab):
    """Pull alice's lan1 cable with cable(False); it is always put back afterwards."""
    yield lambda up: lab.set_link("alice", "lan1", up)
    lab.set_link("alice", "lan1", True)
    wait_for(lambda: alice_locators(lab)["cur"] == ["0:0:0:a", "0:0:0:b"], 10, "0:0:0:a offered again")


def alice_locators(lab) -> dict:
    return request(str(lab.run_dir("alice")), "mobility", "locators", timeout=2.0)


def bob_sees_alice(lab) -> list[str]:
    rows = {h["hostname"]: h["locators"] for h in tool_json(lab, "bob", "ilnp-hosts")}
    return rows.get("alice", [])


def arrivals(lab) -> dict[int, list]:
    """alice's router: data delivered per arrival locator [count, first ms, last ms, ...]."""
    return request(str(lab.run_dir("alice")), "router", "status", timeout=2.0)["arrivals"]


def test_peers_send_to_the_primary(lab):
    """A new session peer is told alice's order, and keeps it between discovery's refreshes."""
    assert tool_json(lab, "alice", "ilnp-ping", "-c", "3", "-i", "0.1", "bob")["received"] == 3
    wait_for(lambda: bob_sees_alice(lab) == ["0:0:0:a", "0:0:0:b"], 10, "bob to rank alice's primary first")
    before = arrivals(lab).get(A, [0])[0]
    assert tool_json(lab, "bob", "ilnp-ping", "-c", "5", "-i", "0.1", "alice")["received"] == 5
    assert arrivals(lab)[A][0] >= before + 5            # bob's pings came on the primary
    assert bob_sees_alice(lab) == ["0:0:0:a", "0:0:0:b"]


def test_a_pulled_cable_withdraws_its_locator_and_bob_is_told(lab, cable):
    assert tool_json(lab, "alice", "ilnp-ping", "-c", "2", "-i", "0.1", "bob")["received"] == 2
    cable(False)
    wait_for(lambda: alice_locators(lab)["cur"] == ["0:0:0:b"], 5, "alice to withdraw 0:0:0:a")
    status = tool_json(lab, "alice", "ilnp-status")
    assert status["link"]["down"] == ["lan1"]
    assert status["link"]["joined"] == ["0:0:0:b"]
    assert status["mobility"]["core"]["locators_withdrawn"] >= 1
    wait_for(lambda: bob_sees_alice(lab) == ["0:0:0:b"], 10, "bob to hear of it")
    assert tool_json(lab, "bob", "ilnp-ping", "-c", "3", "-i", "0.1", "alice")["received"] == 3
    cable(True)
    wait_for(lambda: bob_sees_alice(lab) == ["0:0:0:a", "0:0:0:b"], 10, "bob to have the primary back first")


def test_a_stream_in_flight_completes_byte_exact_when_the_primary_dies(lab, cable, big, tmp_path):
    """bob serves 20 MB; alice's client (socat) reads it through the stream relays; when
    2 MB have arrived her primary's cable is pulled. It completes, sha256 identical, and
    what arrived after the pull came on 0:0:0:b."""
    path, digest = big
    stream = Stream(lab, "bob", "alice", path)
    out = tmp_path / "got"
    client = stream.start(out)
    try:
        wait_for(lambda: out.exists() and out.stat().st_size >= 2_000_000, 60, "the first 2 MB")
        pulled_ms = int(time.monotonic() * 1000)      # CLOCK_MONOTONIC, as the router's arrival log
        cable(False)
        _, err = client.communicate(timeout=180)
        assert client.returncode == 0, err
    finally:
        stop(client)
        stream.close()
    assert out.stat().st_size == path.stat().st_size
    assert sha256(out) == digest
    seen = arrivals(lab)
    assert seen[B][2] > pulled_ms and seen[B][0] > 100      # the rest came on lan2's locator
    assert seen[A][2] <= pulled_ms + 1000                    # nothing on the dead one after the pull
    assert tool_json(lab, "alice", "ilnp-status")["mobility"]["core"]["locators_withdrawn"] >= 1
