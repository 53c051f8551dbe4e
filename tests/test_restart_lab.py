"""Issue 12 acceptance: kill -9 each actor in turn, on alice and on the router, broker
included, while alice and bob talk through the router by ping, through the UDP proxy
and through the stream relay: after every kill the traffic resumes, mappings and
forwards are still there, and an open stream either completes byte-exact or ends with
an error, never hangs. What each restart costs is measured by `ilnp-faults`
(docs/RELIABILITY.md), not asserted here."""
from __future__ import annotations

import hashlib
import select
import subprocess
import sys
import time

import pytest

from actors.registry import ACTORS
from tests.labutil import kill_actor, tool, tool_json, wait_discovered, wait_for

pytestmark = pytest.mark.lab

PROXY_PORT = 10001
SIZE = 8 * 1024 * 1024
RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 6000))
print("ready", flush=True)
while True:
    data, _ = s.recvfrom(2048)
    print(data.decode(), flush=True)
"""
SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 5000))
s.sendto(sys.argv[1].encode(), ("127.0.0.1", %d))
""" % PROXY_PORT


@pytest.fixture
def lab(make_lab, tmp_path):
    lab = make_lab()
    wait_discovered(lab, [("alice", "bob"), ("bob", "alice")])
    tool(lab, "alice", "ilnp-map", "5000", "bob", "6000")
    tool(lab, "bob", "ilnp-map", "6000", "alice", "5000")
    www = tmp_path / "www"
    www.mkdir()
    (www / "file").write_bytes(bytes(range(256)) * (SIZE // 256))
    lab.http = lab.popen("bob", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                                 str(www), "8080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tool(lab, "bob", "ilnp-forward", "serve", "80", "--to", "127.0.0.1:8080")
    tool(lab, "alice", "ilnp-forward", "listen", "8081", "bob", "80")
    lab.want = hashlib.sha256((www / "file").read_bytes()).hexdigest()
    lab.out = tmp_path
    yield lab
    lab.http.kill()
    lab.http.wait()


def fetch(lab, name: str, *extra: str) -> subprocess.Popen:
    return lab.popen("alice", ["curl", "-sS", "--max-time", "60", "--speed-limit", "1000", "--speed-time", "15",
                               *extra, "-o", str(lab.out / name), "http://127.0.0.1:8081/file"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def fetched(lab, name: str) -> str:
    return hashlib.sha256((lab.out / name).read_bytes()).hexdigest()


def test_every_actor_killed_in_turn_traffic_resumes_and_nothing_is_lost(lab):
    maps = tool_json(lab, "alice", "ilnp-map", "--list")
    forwards = {n: tool_json(lab, n, "ilnp-forward", "list") for n in ("alice", "bob")}
    receiver = lab.popen("bob", [sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "ready"
        for node in ("alice", "router"):
            for actor in (a.name for a in ACTORS):
                label = f"{node}-{actor}"
                stream = fetch(lab, label, "--limit-rate", "2M") if actor == "stream" else None
                if stream is not None:
                    time.sleep(1.0)  # the transfer is under way when the relay dies
                kill_actor(lab, node, actor)
                # ping resumes
                wait_for(lambda: tool(lab, "alice", "ilnp-ping", "-c", "1", "-W", "1", "bob",
                                      check=False).returncode == 0, 15, f"ping after killing {label}")
                # the proxy flow resumes: a datagram from alice's port 5000 reaches bob's 6000
                deadline = time.monotonic() + 15
                while True:
                    tool(lab, "alice", sys.executable, "-c", SEND, label)
                    line = _line(receiver, 0.5)
                    if line == label:
                        break
                    assert time.monotonic() < deadline, f"the proxy flow after killing {label}"
                # an open stream completed or ended with an error; a new one works
                if stream is not None:
                    _, err = stream.communicate(timeout=90)  # curl's own limits end a stalled one
                    if stream.returncode == 0:
                        assert fetched(lab, label) == lab.want, label
                    else:
                        assert err.strip(), f"{label}: curl failed without saying why"
                again = fetch(lab, label + "-after")
                _, err = again.communicate(timeout=90)
                assert again.returncode == 0 and fetched(lab, label + "-after") == lab.want, (label, err)
                assert tool_json(lab, "alice", "ilnp-map", "--list") == maps, label
                assert {n: tool_json(lab, n, "ilnp-forward", "list") for n in ("alice", "bob")} == forwards
    finally:
        receiver.kill()
        receiver.wait()


def _line(proc, timeout: float) -> str | None:
    """The next line of proc's stdout within timeout (None when nothing came)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else None
