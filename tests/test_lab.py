"""ilnp-lab: topology loading (no root), then real namespaces, bridge, multicast and
supervisord (root). Every root test uses its own lab name and always downs it."""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools.lab import Lab, LabError, running
from tools.lab import cli, netns, procs
from tools.lab.names import IFNAMSIZ, REPO_ROOT, lab_dir, peer_name
from tools.lab.topology import deep_merge, load_topology

IS_ROOT = os.geteuid() == 0
_root_only = pytest.mark.skipif(not IS_ROOT or not shutil.which("ip"),
                                reason="needs root and iproute2 (network namespaces)")


def needs_root(test):
    """Real namespaces: marked `lab` (deselect with -m 'not lab') and skipped unless root."""
    return pytest.mark.lab(_root_only(test))


lead_conf = pytest.mark.skipif(not (REPO_ROOT / "supervisord.conf").is_file(),
                               reason="no supervisord.conf in the repo yet")


# ---- helpers ------------------------------------------------------------------

def node_conf(dir: Path, name: str, nid: str) -> Path:
    """A small valid node config of our own (independent of conf/*.toml)."""
    path = dir / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""\
        hostname = "{name}"
        nid = "{nid}"
        [locators]
        schedule = "0:0:0:a"
        [underlay]
        interface = "wlan7"
        port = 10000
    """))
    return path


def topology(dir: Path, nodes: dict[str, dict], head: str = "") -> Path:
    """nodes: name -> {"host": ..., "conf": ...}; confs default to our own small ones."""
    lines = [head]
    for i, (name, opts) in enumerate(nodes.items()):
        conf = opts.get("conf") or node_conf(dir, name, f"ffff:0:0:{i + 1:x}").name
        lines.append(f'[nodes.{name}]\nconf = "{conf}"')
        if "host" in opts:
            lines.append(f'host = "{opts["host"]}"')
    path = dir / "topo.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


SUPERVISOR_HEAD = """\
[unix_http_server]
file=%(ENV_ILNP_RUN_DIR)s/supervisor.sock
[supervisord]
logfile=%(ENV_ILNP_RUN_DIR)s/supervisord.log
pidfile=%(ENV_ILNP_RUN_DIR)s/supervisord.pid
childlogdir=%(ENV_ILNP_RUN_DIR)s
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://%(ENV_ILNP_RUN_DIR)s/supervisor.sock
"""


def supervisor_conf(dir: Path, programs: str) -> Path:
    path = dir / "supervisord.conf"
    path.write_text(SUPERVISOR_HEAD + textwrap.dedent(programs))
    return path


# env, pwd and namespace inode of the program, then live until stopped
GOOD_PROGRAMS = """\
[program:probe]
command=sh -c 'env > "$ILNP_RUN_DIR/env.txt"; pwd > "$ILNP_RUN_DIR/pwd.txt"; readlink /proc/self/ns/net > "$ILNP_RUN_DIR/ns.txt"; exec sleep 600'
startsecs=0
[program:sleeper]
command=sleep 600
startsecs=0
"""
BROKEN_PROGRAMS = GOOD_PROGRAMS + """\
[program:boom]
command=sh -c 'echo boom-went-the-node >&2; exit 3'
startsecs=1
startretries=0
"""


def lab_namespaces(name: str) -> list[str]:
    return [ns for ns in netns.list_namespaces() if ns.startswith(name + "-")]


def processes_in(inodes: set[int]) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()
            and procs.net_inode(int(p)) in inodes and procs.alive(int(p))]


def root_links() -> set[str]:
    return {link["ifname"] for link in json.loads(netns.ip("-j", "link", "show"))}


def processes_of_lab(name: str) -> list[int]:
    """Processes the lab started: every one of them has ILNP_LAB=<name> in its environment."""
    found = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{p}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"ILNP_LAB={name}".encode() in env and procs.alive(int(p)):
            found.append(int(p))
    return found


def assert_nothing_left(name: str, inodes: set[int] = frozenset(), links_before: set[str] | None = None):
    assert lab_namespaces(name) == []
    assert not lab_dir(name).exists()
    assert processes_in(set(inodes)) == []
    assert processes_of_lab(name) == []
    if links_before is not None:
        assert root_links() == links_before


def ilnp_lab(*args: str, input: str | None = None, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env.pop("ILNP_LAB", None)
    return subprocess.run([sys.executable, "-m", "tools.lab", *args], cwd=REPO_ROOT, env=env,
                          input=input, capture_output=True, text=True, timeout=120, **kw)


def assert_one_line_error(r: subprocess.CompletedProcess, *words: str):
    assert r.returncode != 0, r
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture
def lab_name():
    """A fresh lab name; whatever the test left is downed, then checked gone."""
    name = "t" + secrets.token_hex(4)
    yield name
    Lab(name).down()
    assert_nothing_left(name)


# ---- topology (no root) --------------------------------------------------------

def test_deep_merge_merges_tables_and_replaces_values():
    base = {"a": {"x": 1, "y": {"z": 2}}, "b": 1}
    assert deep_merge(base, {"a": {"y": {"w": 3}}, "b": {"t": 1}}) == \
        {"a": {"x": 1, "y": {"z": 2, "w": 3}}, "b": {"t": 1}}
    assert base == {"a": {"x": 1, "y": {"z": 2}}, "b": 1}        # not mutated


def test_topology_merges_conf_then_defaults_then_set(tmp_path):
    node_conf(tmp_path, "alice", "ffff:0:0:a")
    path = tmp_path / "t.toml"
    path.write_text(textwrap.dedent("""\
        [defaults]
        discovery.wait_time = 3.0
        locators.schedule = "0:0:0:c"
        [nodes.alice]
        conf = "alice.toml"
        [nodes.alice.set]
        locators.schedule = "0:0:0:b"
        [nodes.bob]
        conf = "alice.toml"
        host = "alice"
    """))
    topo = load_topology(path)
    alice, bob = topo.nodes
    assert alice.config["discovery"]["wait_time"] == 3.0
    assert alice.config["locators"]["schedule"] == "0:0:0:b"          # set beats defaults
    assert bob.config["locators"]["schedule"] == "0:0:0:c"            # defaults beat conf
    # forced veth name; loopback on: alice and bob share a host
    assert alice.config["underlay"] == {"interface": "eth0", "port": 10000, "multicast_loop": True}
    assert (alice.host, bob.host) == ("alice", "alice")
    assert topo.hosts() == ["alice"]


def test_multicast_loopback_is_off_only_for_a_node_alone_on_its_host(tmp_path):
    node_conf(tmp_path, "alice", "ffff:0:0:a")
    path = tmp_path / "t.toml"
    path.write_text(textwrap.dedent("""\
        [nodes.alice]
        conf = "alice.toml"
        [nodes.bob]
        conf = "alice.toml"
        host = "shared"
        [nodes.carol]
        conf = "alice.toml"
        host = "shared"
        [nodes.dave]
        conf = "alice.toml"
        [nodes.dave.set]
        underlay.multicast_loop = true
    """))
    loops = {n.name: n.config["underlay"]["multicast_loop"] for n in load_topology(path).nodes}
    assert loops == {"alice": False, "bob": True, "carol": True, "dave": True}


@pytest.mark.parametrize("text, words", [
    ("[nodes.alice]\nconf = 'missing.toml'\n", ["missing.toml", "not found"]),
    ("[nodes.alice]\nconf = 'ok.toml'\nhots = 'x'\n", ["unknown key", "hots"]),
    ("[nodes.alice]\nconf = 'ok.toml'\nhost = 'br'\n", ["reserved"]),
    ("[nodes.al/ice]\nconf = 'ok.toml'\n", ["bad TOML"]),
    ("[nodes.'a b']\nconf = 'ok.toml'\n", ["bad node name"]),
    ("[nodes.alice]\n", ["needs conf"]),
    ("[nodes]\n", ["no [nodes.NAME]"]),
    ("[nodse.alice]\nconf = 'ok.toml'\n", ["unknown key", "nodse"]),
    ("nodes = 3\n", ["must be a table"]),
])
def test_bad_topologies_are_one_line_errors(tmp_path, text, words):
    node_conf(tmp_path, "ok", "ffff:0:0:1")
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(LabError) as err:
        load_topology(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert all(w in msg for w in words), msg


def test_repo_topologies_load_and_resolve_by_name():
    if not (REPO_ROOT / "conf" / "alice.toml").is_file():
        pytest.skip("conf/alice.toml not written yet")
    schedules = {name: {n.name: (n.host, n.config["locators"]["schedule"]) for n in load_topology(name).nodes}
                 for name in ("pair", "router", "twohost")}
    assert schedules["pair"] == {"alice": ("alice", "0:0:0:a"), "bob": ("bob", "0:0:0:a")}
    assert schedules["router"] == {"alice": ("alice", "0:0:0:a"), "bob": ("bob", "0:0:0:b"),
                                   "router": ("router", "0:0:0:a,0:0:0:b,0:0:0:c")}
    assert schedules["twohost"] == {"alice": ("shared", "0:0:0:a"), "bob": ("shared", "0:0:0:a")}
    twohost = load_topology("twohost").nodes
    assert twohost[0].config["proxy"]["port"] != twohost[1].config["proxy"]["port"]


def test_unknown_topology_name_lists_the_known_ones():
    with pytest.raises(LabError, match="unknown topology 'nosuch'.*known:"):
        load_topology("nosuch")


def test_peer_names_fit_the_kernel_limit_and_stay_unique():
    names = {peer_name(i, "a-very-long-host-name-indeed") for i in range(100)}
    assert len(names) == 100
    assert max(map(len, names)) <= IFNAMSIZ


@pytest.mark.parametrize("argv", [["up", "pair"], ["down"], ["status"], ["exec", "alice", "--", "true"]])
def test_not_root_is_a_one_line_error(monkeypatch, capsys, argv):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.run(["--lab", "tnotroot", *argv]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "needs root" in err[0], err


# ---- plumbing (root) --------------------------------------------------------------

@needs_root
def test_plumbing_up_down_leaves_nothing(tmp_path, lab_name):
    links_before = root_links()
    lab = Lab(lab_name)
    lab.up(topology(tmp_path, {"alice": {}, "bob": {}}), start=False)
    br, a, b = f"{lab_name}-br", f"{lab_name}-alice", f"{lab_name}-bob"
    assert sorted(lab_namespaces(lab_name)) == sorted([br, a, b])
    bridge = json.loads(netns.ip("-j", "-d", "-n", br, "link", "show", "br0"))[0]
    assert bridge["linkinfo"]["info_data"]["mcast_snooping"] == 0
    ports = json.loads(netns.ip("-j", "-n", br, "link", "show", "master", "br0"))
    assert sorted(p["ifname"] for p in ports) == ["v0-alice", "v1-bob"]
    for ns in (a, b):
        assert netns.link_local(ns, "eth0", ).startswith("fe80:")      # usable, not tentative
        assert sorted(netns.links(ns)) == ["eth0", "lo"]
    assert root_links() == links_before                                # nothing in the root ns
    assert oct(lab_dir(lab_name).stat().st_mode & 0o777) == "0o700"
    assert oct(lab.run_dir("alice").stat().st_mode & 0o777) == "0o700"
    assert "interface = \"eth0\"" in (lab.run_dir("alice") / "node.toml").read_text()

    inodes = {netns.inode(ns) for ns in (br, a, b)}
    stray = lab.popen("alice", ["sleep", "600"])                     # down must kill it
    assert lab.down() == []
    assert stray.wait(timeout=10) != 0
    assert_nothing_left(lab_name, inodes, links_before)
    assert Lab(lab_name).down() == []                                  # idempotent


MCAST_RECV = """
import socket, struct, sys
group, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", port))
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
             socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", socket.if_nametoindex("eth0")))
s.settimeout(10)
print("ready", flush=True)
data, addr = s.recvfrom(100)
print(data.decode(), addr[0].split("%")[0], flush=True)
"""
MCAST_SEND = """
import socket, struct, sys, time
group, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex("eth0"))
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
for _ in range(200):
    s.sendto(b"hello-from-alice", (group, port))
    time.sleep(0.05)
"""


@needs_root
def test_multicast_reaches_other_namespace_and_same_host_instance(tmp_path, lab_name):
    # carol shares alice's namespace: the "two instances on one host" case
    with running(topology(tmp_path, {"alice": {}, "bob": {}, "carol": {"host": "alice"}}),
                 name=lab_name, start=False) as lab:
        group, port = "ff12:0:77:0:0:0:0:a", random.randint(20000, 30000)
        receivers = {n: lab.popen(n, [sys.executable, "-c", MCAST_RECV, group, str(port)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for n in ("bob", "carol")}
        for p in receivers.values():
            assert p.stdout.readline().strip() == "ready"
        sender = lab.popen("alice", [sys.executable, "-c", MCAST_SEND, group, str(port)])
        try:
            got = {n: p.communicate(timeout=15) for n, p in receivers.items()}
        finally:
            sender.kill()
            sender.wait()
        alice_ll = netns.link_local(lab.namespace("alice"))
        for n, (out, err) in got.items():
            assert out.split() == ["hello-from-alice", alice_ll], (n, out, err)
    assert_nothing_left(lab_name)


# ---- nodes with a throwaway supervisord (root) ---------------------------------------

@needs_root
def test_up_starts_supervisord_in_the_namespace_with_the_node_env(tmp_path, lab_name):
    conf = supervisor_conf(tmp_path, GOOD_PROGRAMS)
    lab = Lab(lab_name, supervisord_conf=conf)
    with lab:
        lab.up(topology(tmp_path, {"alice": {}, "bob": {"host": "alice"}}), timeout=20)
        state = lab.status()
        inode = state["hosts"]["alice"]["netns_inode"]
        for node in ("alice", "bob"):
            assert lab.programs(node) == {"probe": "RUNNING", "sleeper": "RUNNING"}
            n = state["nodes"][node]
            assert n["supervisord_alive"] and procs.net_inode(n["supervisord_pid"]) == inode
            run_dir = lab.run_dir(node)
            env = dict(line.split("=", 1) for line in (run_dir / "env.txt").read_text().splitlines()
                       if "=" in line)
            assert env["ILNP_NODE"] == node and env["ILNP_RUN_DIR"] == str(run_dir)
            assert env["ILNP_CONF"] == str(run_dir / "node.toml")
            assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
            assert (run_dir / "pwd.txt").read_text().strip() == str(REPO_ROOT)
            assert (run_dir / "ns.txt").read_text().strip() == f"net:[{inode}]"
        r = lab.exec("bob", ["supervisorctl", "-c", str(conf), "status"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.count("RUNNING") == 2
        pids = [n["supervisord_pid"] for n in state["nodes"].values()]
        pids += processes_in({inode})
    assert_nothing_left(lab_name, {inode})
    assert not any(procs.alive(p) for p in pids)


@needs_root
def test_failed_up_names_node_and_program_and_leaves_nothing(tmp_path, lab_name):
    conf = supervisor_conf(tmp_path, BROKEN_PROGRAMS)
    topo = topology(tmp_path, {"alice": {}, "bob": {}})
    links_before = root_links()
    r = ilnp_lab("--lab", lab_name, "up", str(topo), "--supervisord-conf", str(conf), "--timeout", "20")
    assert_one_line_error(r, "node alice", "program boom", "boom-went-the-node")
    assert_nothing_left(lab_name, links_before=links_before)
    r = ilnp_lab("--lab", lab_name, "down")                          # down after a failed up: fine
    assert r.returncode == 0 and r.stderr == ""


@needs_root
def test_a_program_dying_just_after_startsecs_fails_up(tmp_path, lab_name):
    """RUNNING for a moment is not up: every program must keep its PID for a while."""
    conf = supervisor_conf(tmp_path, GOOD_PROGRAMS + textwrap.dedent("""\
        [program:flappy]
        command=sh -c 'sleep 1.3; exit 1'
        startsecs=1
        autorestart=true
        """))
    with pytest.raises(LabError) as err:
        Lab(lab_name, supervisord_conf=conf).up(topology(tmp_path, {"alice": {}}), timeout=6)
    assert "node alice: program flappy is" in str(err.value)
    assert_nothing_left(lab_name)


@needs_root
@pytest.mark.parametrize("case", ["missing conf", "invalid node config", "bad supervisord.conf"])
def test_up_failing_at_any_step_leaves_nothing(tmp_path, lab_name, case):
    topo = topology(tmp_path, {"alice": {}, "bob": {}})
    conf = supervisor_conf(tmp_path, GOOD_PROGRAMS)
    if case == "missing conf":
        (tmp_path / "bob.toml").unlink()
        words = ["bob.toml", "not found"]
    elif case == "invalid node config":
        pytest.importorskip("actors.config")
        (tmp_path / "bob.toml").write_text((tmp_path / "bob.toml").read_text().replace("ffff:0:0:2", "zz"))
        words = ["node bob", "nid"]
    else:
        conf.write_text("[supervisord\n")                           # fails after the plumbing
        words = ["node alice", "supervisord exited", "Error:"]
    with pytest.raises(LabError) as err:
        Lab(lab_name, supervisord_conf=conf).up(topo, timeout=20)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert "\n" not in str(err.value)
    assert_nothing_left(lab_name)


@needs_root
def test_up_twice_is_an_error_and_keeps_the_first(tmp_path, lab_name):
    topo = topology(tmp_path, {"alice": {}})
    Lab(lab_name).up(topo, start=False)
    r = ilnp_lab("--lab", lab_name, "up", str(topo), "--no-start")
    assert_one_line_error(r, "already exists")
    assert sorted(lab_namespaces(lab_name)) == [f"{lab_name}-alice", f"{lab_name}-br"]
    with pytest.raises(LabError, match="already exists"):
        with running(topo, name=lab_name, start=False):
            pass
    assert lab_namespaces(lab_name), "a failed `running` must not down a lab it did not make"


@needs_root
def test_down_without_state_file_removes_the_lab_namespaces(tmp_path, lab_name):
    other = "u" + secrets.token_hex(4)                                  # must survive
    topo = topology(tmp_path, {"alice": {}, "bob": {}})
    Lab(lab_name).up(topo, start=False)
    try:
        Lab(other).up(topo, start=False)
        stray = Lab(lab_name).popen("bob", ["sleep", "600"])
        shutil.rmtree(lab_dir(lab_name))                              # no state at all
        r = ilnp_lab("--lab", lab_name, "down")
        assert r.returncode == 0, r.stderr
        assert stray.wait(timeout=10) != 0
        assert_nothing_left(lab_name)
        assert len(lab_namespaces(other)) == 3
    finally:
        Lab(other).down()
    assert_nothing_left(other)


@needs_root
def test_exec_passes_stdio_env_cwd_and_exit_code(tmp_path, lab_name):
    Lab(lab_name).up(topology(tmp_path, {"alice": {}, "bob": {}}), start=False)
    script = 'read x; echo "got $x $ILNP_NODE $(pwd)"; readlink /proc/self/ns/net; echo oops >&2; exit 7'
    r = ilnp_lab("--lab", lab_name, "exec", "bob", "--", "sh", "-c", script, input="hi\n")
    assert r.returncode == 7
    out = r.stdout.splitlines()
    assert out[0] == f"got hi bob {REPO_ROOT}"
    assert out[1] == f"net:[{netns.inode(f'{lab_name}-bob')}]"
    assert r.stderr == "oops\n"
    r = ilnp_lab("--lab", lab_name, "exec", "alice", "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + 15


@needs_root
def test_status_text_and_json(tmp_path, lab_name):
    Lab(lab_name).up(topology(tmp_path, {"alice": {}, "bob": {"host": "shared"}}), start=False)
    st = json.loads(ilnp_lab("--lab", lab_name, "status", "--json").stdout)
    assert st["phase"] == "up" and st["bridge"]["present"]
    assert {h: v["namespace"] for h, v in st["hosts"].items()} == \
        {"alice": f"{lab_name}-alice", "shared": f"{lab_name}-shared"}
    assert st["nodes"]["bob"]["run_dir"] == str(lab_dir(lab_name) / "bob")
    text = ilnp_lab("--lab", lab_name, "status").stdout
    assert f"{lab_name}-shared" in text and "not started" in text


@pytest.fixture(scope="module")
def cli_lab(tmp_path_factory):
    """One plumbing-only lab for the table of bad inputs."""
    if not IS_ROOT:
        pytest.skip("needs root")
    dir = tmp_path_factory.mktemp("cli")
    name = "t" + secrets.token_hex(4)
    with running(topology(dir, {"alice": {}, "bob": {}}), name=name, start=False):
        yield name, dir
    assert_nothing_left(name)


BAD_INPUTS = [
    (["up", "nosuch"], ["unknown topology 'nosuch'"]),
    (["up", "{dir}/bad.toml"], ["bad TOML"]),
    (["up", "{dir}/nofile.toml"], ["not found"]),
    (["up"], ["Missing argument"]),
    (["exec", "carol", "--", "true"], ["unknown node 'carol'", "alice, bob"]),
    (["exec", "alice", "true"], ["needs --"]),
    (["exec", "alice", "--"], ["usage"]),
    (["exec"], ["needs --"]),
    (["bogus"], ["No such command"]),
    (["status", "--lab", "x"], ["No such option"]),
]


@needs_root
@pytest.mark.parametrize("argv, words", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_cli_inputs_are_one_line_errors(cli_lab, argv, words):
    name, dir = cli_lab
    (dir / "bad.toml").write_text("[nodes.alice\n")
    r = ilnp_lab("--lab", name, *[a.format(dir=dir) for a in argv])
    assert_one_line_error(r, *words)
    assert len(lab_namespaces(name)) == 3                             # the lab is untouched


@needs_root
@pytest.mark.parametrize("argv, words", [
    (["--lab", "bad-name", "status"], ["bad lab name"]),
    (["--lab", "tnolab", "status"], ["not up"]),
    (["--lab", "tnolab", "exec", "alice", "--", "true"], ["not up"]),
])
def test_cli_errors_without_a_lab(argv, words):
    assert_one_line_error(ilnp_lab(*argv), *words)


# ---- the real node (the lead's supervisord.conf and conf/*.toml) -----------------------

@needs_root
@lead_conf
@pytest.mark.parametrize("topo", ["pair", "router", "twohost"])
def test_real_nodes_run_every_program(lab_name, topo):
    r = ilnp_lab("--lab", lab_name, "up", topo, "--timeout", "60")
    assert r.returncode == 0, r.stderr
    st = json.loads(ilnp_lab("--lab", lab_name, "status", "--json").stdout)
    inodes = {h["netns_inode"] for h in st["hosts"].values()}
    for node, n in st["nodes"].items():
        assert n["programs"] and set(n["programs"].values()) == {"RUNNING"}, (node, n["programs"])
        r = ilnp_lab("--lab", lab_name, "exec", node, "--", "supervisorctl", "-c", "supervisord.conf", "status")
        assert r.returncode == 0 and "RUNNING" in r.stdout, r.stdout + r.stderr
    r = ilnp_lab("--lab", lab_name, "down")
    assert r.returncode == 0 and r.stderr == ""
    assert_nothing_left(lab_name, inodes)
