"""Lab topology files: which nodes run, on which host, with which node config.

    [defaults]              # deep-merged into every node's config (optional)
    discovery.wait_time = 30.0
    [nodes.alice]
    conf = "../alice.toml"  # node config, relative to the topology file
    host = "alice"          # optional namespace key (default: the node name);
                            # nodes with the same host share one namespace
    [nodes.alice.set]       # optional overrides, deep-merged last
    locators.schedule = "0:0:0:a"

A node's config is conf, then [defaults], then [nodes.X.set], merged in that order,
underlay.interface is forced to the veth inside the namespace, and multicast loopback
is on only where several nodes share a host (unless the topology sets it).
"""
from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LabError
from .names import NODE_IFACE, REPO_ROOT, check_name

_TOP_KEYS = {"defaults", "nodes"}
_NODE_KEYS = {"conf", "host", "set"}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    host: str
    conf_path: Path
    config: dict = field(hash=False, compare=False)   # merged node config, ready to write


@dataclass(frozen=True)
class Topology:
    path: Path
    nodes: tuple[NodeSpec, ...]

    def hosts(self) -> list[str]:
        """Host names in first-seen order (stable veth numbering)."""
        return list(dict.fromkeys(n.host for n in self.nodes))


def resolve_topology(arg: str | Path, repo: Path = REPO_ROOT) -> Path:
    """A path to a file, or a bare name looked up as conf/lab/NAME.toml in the repo."""
    path = Path(arg)
    if path.is_file():
        return path.resolve()
    text = str(arg)
    if "/" not in text and not text.endswith(".toml"):
        named = repo / "conf" / "lab" / f"{text}.toml"
        if named.is_file():
            return named.resolve()
        known = sorted(p.stem for p in (repo / "conf" / "lab").glob("*.toml"))
        raise LabError(f"unknown topology {text!r}: no file {text!r} and no {named}"
                       f" (known: {', '.join(known) or 'none'})")
    raise LabError(f"topology file {text} not found")


def load_toml(path: Path, what: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise LabError(f"{what} {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise LabError(f"{what} {path}: bad TOML: {one_line(e)}") from None
    except OSError as e:
        raise LabError(f"{what} {path}: {e.strerror}") from None


def deep_merge(base: dict, over: dict) -> dict:
    """A new dict: `over` on top of `base`, tables merged key by key, other values replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_topology(arg: str | Path, repo: Path = REPO_ROOT) -> Topology:
    path = resolve_topology(arg, repo)
    data = load_toml(path, "topology")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise LabError(f"topology {path}: unknown key(s) {', '.join(sorted(unknown))}"
                       f" (allowed: {', '.join(sorted(_TOP_KEYS))})")
    defaults = _table(data.get("defaults", {}), f"topology {path}: [defaults]")
    nodes = _table(data.get("nodes", {}), f"topology {path}: [nodes]")
    if not nodes:
        raise LabError(f"topology {path} has no [nodes.NAME] tables")
    specs = tuple(_node_spec(path, name, entry, defaults) for name, entry in nodes.items())
    _loopback_only_where_shared(specs, defaults, nodes)
    return Topology(path=path, nodes=specs)


def _loopback_only_where_shared(specs, defaults: dict, nodes: dict) -> None:
    """A node alone in its namespace needs no multicast loopback (nobody local to hear
    it): turning it off saves the kernel a copy of every datagram. Where several nodes
    share a host it stays on. An explicit setting in the topology wins."""
    per_host: dict[str, int] = {}
    for spec in specs:
        per_host[spec.host] = per_host.get(spec.host, 0) + 1
    for spec in specs:
        explicit = ("multicast_loop" in defaults.get("underlay", {})
                    or "multicast_loop" in nodes[spec.name].get("set", {}).get("underlay", {}))
        if not explicit:
            spec.config["underlay"]["multicast_loop"] = per_host[spec.host] > 1


def _node_spec(topo: Path, name: str, entry, defaults: dict) -> NodeSpec:
    check_name("node", name)
    where = f"topology {topo}: node {name}"
    entry = _table(entry, where)
    unknown = set(entry) - _NODE_KEYS
    if unknown:
        raise LabError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}"
                       f" (allowed: {', '.join(sorted(_NODE_KEYS))})")
    conf = entry.get("conf")
    if not isinstance(conf, str) or not conf:
        raise LabError(f"{where}: needs conf = \"path/to/node.toml\"")
    host = check_name("host", entry.get("host", name))
    overrides = _table(entry.get("set", {}), f"{where}: [set]")
    conf_path = (topo.parent / conf).resolve()
    config = load_toml(conf_path, f"node {name}: conf")
    config = deep_merge(deep_merge(config, defaults), overrides)
    underlay = config.setdefault("underlay", {})
    if not isinstance(underlay, dict):
        raise LabError(f"node {name}: underlay must be a table in {conf_path}")
    underlay["interface"] = NODE_IFACE
    return NodeSpec(name=name, host=host, conf_path=conf_path, config=config)


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise LabError(f"{where} must be a table")
    return value


def one_line(err: object) -> str:
    return " ".join(str(err).split())
