"""The Lab: bring a topology up in namespaces, run things as its nodes, tear it down.

    from tools.lab import Lab, running

    with running("pair", name="t1") as lab:            # up; always down at the end
        lab.exec("alice", ["supervisorctl", "-c", "supervisord.conf", "status"], check=True)
        p = lab.popen("bob", ["ilnp-tap"], stdout=subprocess.PIPE)
        lab.run_dir("alice"), lab.env("alice"), lab.namespace("alice")
        lab.address("alice", "lan1"); lab.set_link("alice", "lan1", up=False)

Every method needs root. Errors are LabError with a one-line message.
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import tomli_w

from . import netns, procs
from .errors import LabError
from .names import (BRIDGE, REPO_ROOT, RUN_BASE, bridge_ns, check_lab_name,
                    host_ns, lab_dir, node_dir, ns_prefix, peer_name)
from .node import NodeRef, node_env, popen_in, program_states, run_in, start_supervisord, wait_running
from .state import read_state, write_state
from .topology import Topology, load_topology, one_line

DEFAULT_LAB = "ilnp"
STOP_TIMEOUT = 15.0    # supervisord stops its programs first (their stopwaitsecs)


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("ilnp-lab needs root (it creates network namespaces): run it as root or with sudo")


class Lab:
    """One named lab. `name` defaults to $ILNP_LAB or "ilnp"; `supervisord_conf` to
    <repo>/supervisord.conf (tests may pass a throwaway one; it is kept in the state)."""

    def __init__(self, name: str | None = None, *, repo: Path = REPO_ROOT,
                 supervisord_conf: Path | str | None = None):
        self.name = check_lab_name(name or os.environ.get("ILNP_LAB") or DEFAULT_LAB)
        self.repo = Path(repo).resolve()
        self.supervisord_conf = Path(supervisord_conf or self.repo / "supervisord.conf").resolve()
        self._made = False     # this object brought the lab up, so its `with` block downs it

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        if self._made:
            self.down()

    def __repr__(self) -> str:
        return f"Lab({self.name!r})"

    # ---- queries -------------------------------------------------------------

    def exists(self) -> bool:
        """Anything of this lab present: its run dir or a namespace with its prefix."""
        return lab_dir(self.name).exists() or bool(netns.namespaces_with_prefix(ns_prefix(self.name)))

    def state(self) -> dict | None:
        return read_state(self.name)

    def nodes(self) -> list[str]:
        return list((self.state() or {}).get("nodes", {}))

    def node(self, name: str) -> NodeRef:
        state = self.state()
        if not state:
            raise LabError(f"lab {self.name} is not up")
        nodes = state.get("nodes", {})
        if name not in nodes:
            raise LabError(f"unknown node {name!r} in lab {self.name} (nodes: {', '.join(nodes) or 'none'})")
        entry = nodes[name]
        return NodeRef(lab=self.name, name=name, namespace=entry["namespace"], run_dir=Path(entry["run_dir"]),
                       repo=Path(state.get("repo", self.repo)),
                       supervisord_conf=Path(state.get("supervisord_conf", self.supervisord_conf)))

    def run_dir(self, node: str) -> Path:
        return self.node(node).run_dir

    def namespace(self, node: str) -> str:
        return self.node(node).namespace

    def env(self, node: str) -> dict[str, str]:
        """os.environ plus ILNP_CONF, ILNP_RUN_DIR, ILNP_NODE, ILNP_LAB, PATH, PYTHONPATH."""
        return node_env(self.node(node))

    def links(self, node: str) -> dict[str, dict]:
        """The node's host's interfaces, one per bridge, in order:
        {bridge: {"peer": ..., "addresses": ["10.1.0.2/24", "fd00:1::2/64"]}}."""
        self.node(node)                       # not up, unknown node: its one-line error
        state = self.state() or {}
        host = state["nodes"][node]["host"]
        return _host_links(state["hosts"][host])

    def address(self, node: str, bridge: str, family: str = "ipv4") -> str:
        """The node's address on `bridge` ("ipv4" or "ipv6"), without its prefix length."""
        links = self.links(node)
        if bridge not in links:
            raise LabError(f"node {node} is not on bridge {bridge!r} (its bridges: {', '.join(links)})")
        for address in links[bridge].get("addresses", []):
            if (":" in address) == (family == "ipv6"):
                return address.split("/")[0]
        raise LabError(f"bridge {bridge} gives no {family} address (its topology declares no {family} subnet)")

    def set_link(self, node: str, bridge: str, up: bool) -> None:
        """Set the node's interface to `bridge` up or down (a cable pulled, and put back).
        Nodes sharing the host lose it too: it is the host's."""
        require_root()
        links = self.links(node)
        if bridge not in links:
            raise LabError(f"node {node} is not on bridge {bridge!r} (its bridges: {', '.join(links)})")
        netns.set_link(self.namespace(node), bridge, up)

    def argv(self, node: str, argv: list[str]) -> list[str]:
        """The argv that runs `argv` in the node's namespace (use with env=lab.env(node))."""
        return netns.exec_argv(self.namespace(node), list(argv))

    # ---- running things as a node ---------------------------------------------

    def exec(self, node: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run(argv) in the node's namespace, env and cwd=repo.
        kwargs go to subprocess.run; env= is merged on top of the node's environment."""
        require_root()
        return run_in(self.node(node), argv, **kwargs)

    def popen(self, node: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """subprocess.Popen(argv) like exec(); the caller waits for or kills it
        (down() kills whatever is left in the lab's namespaces)."""
        require_root()
        return popen_in(self.node(node), argv, **kwargs)

    def programs(self, node: str) -> dict[str, str] | None:
        """{program: supervisor state} of a node, None if its supervisord does not answer."""
        require_root()
        return program_states(self.node(node))

    # ---- up ---------------------------------------------------------------------

    def up(self, topology: str | Path, *, start: bool = True, timeout: float = 30.0) -> dict:
        """Build the topology and start every node; wait until all programs are RUNNING.
        start=False builds namespaces, bridge and run dirs only. Any failure downs the
        lab before the LabError is raised. Returns the state."""
        require_root()
        topo = load_topology(topology, self.repo)          # bad input fails before anything is made
        if start and not self.supervisord_conf.is_file():
            raise LabError(f"no supervisord config at {self.supervisord_conf}")
        if self.exists():
            raise LabError(f"lab {self.name} already exists (ilnp-lab --lab {self.name} down)")
        RUN_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
        try:
            os.mkdir(lab_dir(self.name), 0o700)            # the claim: one up per lab name
        except FileExistsError:
            raise LabError(f"lab {self.name} already exists (ilnp-lab --lab {self.name} down)") from None
        self._made = True
        try:
            os.chmod(lab_dir(self.name), 0o700)
            self._build(topo, start, timeout)
        except BaseException:
            try:
                self.down()
            except Exception:
                pass          # the first error is the one worth reporting
            raise
        return self.state()

    def _build(self, topo: Topology, start: bool, timeout: float) -> None:
        hosts = topo.hosts()
        bns = bridge_ns(self.name)
        state = {
            "lab": self.name, "phase": "plumbing", "topology": str(topo.path), "repo": str(self.repo),
            "supervisord_conf": str(self.supervisord_conf), "started": start,
            "bridge": {"namespace": bns, "bridge": topo.bridges[0].device},
            "bridges": {b.name: {"device": b.device, "unicast_only": b.unicast_only,
                                 "ipv4": b.ipv4 and str(b.ipv4), "ipv6": b.ipv6 and str(b.ipv6)}
                        for b in topo.bridges},
            "hosts": {h: _host_entry(topo, self.name, i, h) for i, h in enumerate(hosts)},
            "nodes": {n.name: {"host": n.host, "namespace": host_ns(self.name, n.host),
                               "bridges": list(n.bridges),
                               "run_dir": str(node_dir(self.name, n.name)),
                               "conf": str(node_dir(self.name, n.name) / "node.toml"),
                               "supervisord_pid": None} for n in topo.nodes},
        }
        write_state(self.name, state)
        for spec in topo.nodes:
            run_dir = node_dir(self.name, spec.name)
            os.mkdir(run_dir, 0o700)
            os.chmod(run_dir, 0o700)
            conf = run_dir / "node.toml"
            conf.write_text(tomli_w.dumps(spec.config))
            check_node_config(spec.name, conf)

        netns.make_bridge_ns(bns)
        for b in topo.bridges:
            netns.make_bridge(bns, b.device)
        for entry in state["hosts"].values():
            netns.make_host(entry["namespace"])
            entry["netns_inode"] = netns.inode(entry["namespace"])
            write_state(self.name, state)
            for bridge, link in entry["links"].items():
                spec = topo.bridge(bridge)
                netns.attach(entry["namespace"], bridge, bns, spec.device, link["peer"],
                             link["addresses"], spec.unicast_only)
        _static_neighbours(topo, state["hosts"])
        netns.wait_link_local([(e["namespace"], b) for e in state["hosts"].values() for b in e["links"]])

        if start:
            state["phase"] = "starting"
            refs = [self.node(n.name) for n in topo.nodes]
            pids = {}
            for ref in refs:
                pids[ref.name] = start_supervisord(ref, timeout)
                state["nodes"][ref.name]["supervisord_pid"] = pids[ref.name]
                write_state(self.name, state)
            wait_running(refs, pids, timeout)
        state["phase"] = "up"
        write_state(self.name, state)

    # ---- down -------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop every node, kill what is left in the lab's namespaces, delete veths, bridge,
        namespaces, run dirs and state. Best effort and idempotent; works without a state
        file. Returns what could not be removed (empty when all is gone)."""
        require_root()
        self._made = False
        lab, state = self.name, self.state() or {}
        hosts = state.get("hosts", {}) if isinstance(state.get("hosts"), dict) else {}
        namespaces = set(netns.namespaces_with_prefix(ns_prefix(lab)))
        inodes = {netns.inode(ns) for ns in namespaces}
        inodes |= {h.get("netns_inode") for h in hosts.values() if isinstance(h, dict)}
        inodes.discard(None)

        # supervisords first (they stop their programs), by recorded PID and by pidfile
        pids = {n.get("supervisord_pid") for n in state.get("nodes", {}).values() if isinstance(n, dict)}
        pids |= {procs.read_pidfile(p) for p in lab_dir(lab).glob("*/supervisord.pid")}
        procs.stop({p for p in pids if isinstance(p, int)}, inodes, STOP_TIMEOUT)
        for ns in namespaces:
            procs.kill_all(lambda ns=ns: netns.pids(ns), inodes)

        bns = bridge_ns(lab)
        if bns in namespaces:
            for h in hosts.values():
                for link in _host_links(h).values():
                    if isinstance(link, dict) and isinstance(link.get("peer"), str):
                        netns.ip("-n", bns, "link", "del", link["peer"], check=False)
            bridges = state.get("bridges") if isinstance(state.get("bridges"), dict) else {}
            devices = {b.get("device") for b in bridges.values() if isinstance(b, dict)} | {BRIDGE}
            for device in devices:
                if isinstance(device, str):
                    netns.ip("-n", bns, "link", "del", device, check=False)
        for ns in sorted(namespaces, key=lambda n: n == bns):        # hosts first, bridge last
            netns.delete(ns)
        shutil.rmtree(lab_dir(lab), ignore_errors=True)

        left = [f"namespace {ns}" for ns in netns.namespaces_with_prefix(ns_prefix(lab))]
        if lab_dir(lab).exists():
            left.append(f"directory {lab_dir(lab)}")
        return left

    # ---- status -----------------------------------------------------------------

    def status(self) -> dict:
        """The state plus what is live now: namespaces present, supervisord alive, programs."""
        require_root()
        state = self.state()
        if state is None:
            if self.exists():
                raise LabError(f"lab {self.name} is half made (no state file): ilnp-lab --lab {self.name} down")
            raise LabError(f"lab {self.name} is not up")
        present = set(netns.list_namespaces())
        state["bridge"]["present"] = state["bridge"]["namespace"] in present
        for h in state["hosts"].values():
            h["present"] = h["namespace"] in present
            for bridge, link in _host_links(h).items():
                live = netns.link_state(h["namespace"], bridge) if h["present"] else None
                link["present"], link["up"] = live is not None, bool(live and live["up"])
        for name, n in state["nodes"].items():
            pid = n.get("supervisord_pid")
            n["supervisord_alive"] = bool(pid) and procs.alive(pid)
            n["programs"] = program_states(self.node(name), timeout=5) if n["supervisord_alive"] else None
        return state


def _host_entry(topo: Topology, lab: str, index: int, host: str) -> dict:
    """A host's state: its namespace and, per bridge, its veth's peer and addresses
    ("iface"/"peer": its first link, as before there were several)."""
    bridges = topo.host_bridges(host)
    links = {b: {"peer": peer_name(index, host, j),
                 "addresses": [a for _, a in sorted(topo.addresses(host, b).items())]}
             for j, b in enumerate(bridges)}
    return {"namespace": host_ns(lab, host), "number": topo.host_number(host), "iface": bridges[0],
            "peer": links[bridges[0]]["peer"], "links": links, "netns_inode": None}


def _host_links(entry) -> dict:
    """A host's links from its state entry (a state of a lab made before there were
    several bridges has only "iface" and "peer")."""
    if not isinstance(entry, dict):
        return {}
    links = entry.get("links")
    if isinstance(links, dict):
        return links
    if isinstance(entry.get("iface"), str):
        return {entry["iface"]: {"peer": entry.get("peer"), "addresses": []}}
    return {}


def _static_neighbours(topo: Topology, hosts: dict) -> None:
    """On a bridge that floods neither multicast nor broadcast, ARP and neighbour
    discovery cannot work: every host there gets a permanent entry for every other
    host's addresses."""
    for bridge in topo.bridges:
        if not bridge.unicast_only:
            continue
        members = [(h, e) for h, e in hosts.items() if bridge.name in e["links"]]
        macs = {h: netns.mac(e["namespace"], bridge.name) for h, e in members}
        for h, e in members:
            for other, _ in members:
                if other == h:
                    continue
                for address in topo.addresses(other, bridge.name).values():
                    netns.add_neighbour(e["namespace"], bridge.name, address.split("/")[0], macs[other])


@contextmanager
def running(topology: str | Path, name: str | None = None, **kwargs):
    """`with running("pair", name="t1") as lab:` up (Lab kwargs: repo, supervisord_conf;
    up kwargs: start, timeout), yield the Lab, always down. Never downs a lab it did not make."""
    up_kwargs = {k: kwargs.pop(k) for k in ("start", "timeout") if k in kwargs}
    lab = Lab(name, **kwargs)
    lab.up(topology, **up_kwargs)
    try:
        yield lab
    finally:
        lab.down()


def check_node_config(name: str, path: Path) -> None:
    """Validate with actors.config.load_config when the project has it (imported lazily)."""
    try:
        cfg = importlib.import_module("actors.config")
    except ModuleNotFoundError as e:
        if e.name in ("actors", "actors.config"):
            return
        raise LabError(f"cannot check node configs: {one_line(e)}") from None
    except Exception as e:
        raise LabError(f"cannot check node configs: actors.config: {type(e).__name__}: {one_line(e)}") from None
    load = getattr(cfg, "load_config", None)
    if load is None:
        return
    config_error = getattr(cfg, "ConfigError", None)
    try:
        load(path)
    except Exception as e:
        if config_error is not None and isinstance(e, config_error):
            raise LabError(f"node {name}: {one_line(e)}") from None
        raise LabError(f"node {name}: config check failed: {type(e).__name__}: {one_line(e)}") from None
