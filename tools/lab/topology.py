"""Lab topology files: which bridges, which nodes on which host, with which node config.

    [defaults]              # deep-merged into every node's config (optional)
    discovery.wait_time = 30.0
    [bridges.lan1]          # optional: without [bridges] there is one bridge, eth0
    ipv4 = "10.1.0.0/24"    # optional: each host on it gets an address of this subnet
    ipv6 = "fd00:1::/64"    # optional: the same from a ULA prefix (fc00::/7)
    unicast_only = false    # optional: true = the bridge floods no multicast and no
                            # broadcast (a routed network's stand-in; neighbours are static)
    [nodes.alice]
    conf = "../alice.toml"  # node config, relative to the topology file
    host = "alice"          # optional namespace key (default: the node name);
                            # nodes with the same host share one namespace
    bridges = ["lan1"]      # the bridges its host is attached to (required when the
                            # topology has several; a host has the union of its nodes')
    [nodes.alice.set]       # optional overrides, deep-merged last
    locators.schedule = "0:0:0:a"

Inside a host's namespace the veth to bridge X is named X. Hosts are numbered from 1
in the order they first appear in the file, and host N gets address N of every subnet
of every bridge it is on (10.1.0.N/24, fd00:1::N/64): deterministic, so a node config
can name its unicast peers.

A node's config is conf, then [defaults], then [nodes.X.set], merged in that order.
underlay.interface is the node's first bridge unless [defaults] or `set` names another
of its bridges; a per-locator underlay.locators."L".interface must be one of them too.
Multicast loopback is on only where several nodes share a host (unless the topology
sets it). Every error is one line naming the file and the key.
"""
from __future__ import annotations

import copy
import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LabError
from .names import BRIDGE, NODE_IFACE, REPO_ROOT, check_bridge_name, check_name

_TOP_KEYS = {"defaults", "nodes", "bridges"}
_NODE_KEYS = {"conf", "host", "set", "bridges"}
_BRIDGE_KEYS = {"ipv4", "ipv6", "unicast_only"}
_ULA = ipaddress.ip_network("fc00::/7")


@dataclass(frozen=True)
class BridgeSpec:
    """One bridge: `name` is the interface inside its hosts, `device` the bridge itself."""
    name: str
    device: str
    ipv4: ipaddress.IPv4Network | None = None
    ipv6: ipaddress.IPv6Network | None = None
    unicast_only: bool = False

    def addresses(self, number: int) -> dict[str, str]:
        """Host number `number`'s interface addresses on this bridge, with prefix length."""
        return {family: f"{net.network_address + number}/{net.prefixlen}"
                for family, net in (("ipv4", self.ipv4), ("ipv6", self.ipv6)) if net is not None}


DEFAULT_BRIDGE = BridgeSpec(NODE_IFACE, BRIDGE)   # the one bridge of a topology without [bridges]


@dataclass(frozen=True)
class NodeSpec:
    name: str
    host: str
    conf_path: Path
    config: dict = field(hash=False, compare=False)   # merged node config, ready to write
    bridges: tuple[str, ...] = (NODE_IFACE,)


@dataclass(frozen=True)
class Topology:
    path: Path
    nodes: tuple[NodeSpec, ...]
    bridges: tuple[BridgeSpec, ...] = (DEFAULT_BRIDGE,)

    def hosts(self) -> list[str]:
        """Host names in first-seen order (stable veth numbering)."""
        return list(dict.fromkeys(n.host for n in self.nodes))

    def host_number(self, host: str) -> int:
        """From 1, in first-seen order: the last part of the host's addresses."""
        return self.hosts().index(host) + 1

    def host_bridges(self, host: str) -> list[str]:
        """The bridges a host is attached to: its nodes' bridges, in first-seen order."""
        return list(dict.fromkeys(b for n in self.nodes if n.host == host for b in n.bridges))

    def bridge(self, name: str) -> BridgeSpec:
        return next(b for b in self.bridges if b.name == name)

    def addresses(self, host: str, bridge: str) -> dict[str, str]:
        """{"ipv4": "10.1.0.2/24", "ipv6": "fd00:1::2/64"} (those the bridge has)."""
        return self.bridge(bridge).addresses(self.host_number(host))


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
    bridges = _bridges(path, data)
    specs = tuple(_node_spec(path, name, entry, defaults, bridges) for name, entry in nodes.items())
    _loopback_only_where_shared(specs, defaults, nodes)
    topo = Topology(path=path, nodes=specs, bridges=bridges)
    _check_room(topo)
    return topo


def _bridges(path: Path, data: dict) -> tuple[BridgeSpec, ...]:
    if "bridges" not in data:
        return (DEFAULT_BRIDGE,)
    table = _table(data["bridges"], f"topology {path}: bridges")
    if not table:
        raise LabError(f"topology {path}: bridges: no [bridges.NAME] table (leave bridges out for"
                       f" the one default bridge {NODE_IFACE})")
    out: list[BridgeSpec] = []
    for name, entry in table.items():
        where = f"topology {path}: bridges.{name}"
        why = check_bridge_name(name)
        if why:
            raise LabError(f"{where}: bad bridge name {name!r}: {why}")
        entry = _table(entry, where)
        unknown = set(entry) - _BRIDGE_KEYS
        if unknown:
            raise LabError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}"
                           f" (allowed: {', '.join(sorted(_BRIDGE_KEYS))})")
        unicast_only = entry.get("unicast_only", False)
        if not isinstance(unicast_only, bool):
            raise LabError(f"{where}.unicast_only: must be true or false, got {unicast_only!r}")
        spec = BridgeSpec(name, name, _subnet(where, entry, "ipv4"), _subnet(where, entry, "ipv6"), unicast_only)
        for other in out:
            for family in ("ipv4", "ipv6"):
                mine, theirs = getattr(spec, family), getattr(other, family)
                if mine is not None and theirs is not None and mine.overlaps(theirs):
                    raise LabError(f"{where}.{family}: {mine} overlaps bridges.{other.name}.{family} {theirs}")
        out.append(spec)
    return tuple(out)


def _subnet(where: str, entry: dict, family: str):
    """The bridge's subnet of one family: private IPv4 or ULA IPv6, room for a host."""
    raw = entry.get(family)
    if raw is None:
        return None
    key = f"{where}.{family}"
    if not isinstance(raw, str):
        raise LabError(f"{key}: must be a subnet such as {'10.1.0.0/24' if family == 'ipv4' else 'fd00:1::/64'},"
                       f" got {raw!r}")
    try:
        net = ipaddress.ip_network(raw, strict=True)
    except ValueError as e:
        raise LabError(f"{key}: {raw!r} is not a subnet: {one_line(e)}") from None
    if family == "ipv4":
        if net.version != 4 or not net.is_private or net.is_loopback or net.is_link_local \
                or net.is_multicast or net.prefixlen > 30:
            raise LabError(f"{key}: {raw!r} must be a private IPv4 subnet (RFC 1918) of /30 or wider")
    elif net.version != 6 or not net.subnet_of(_ULA) or net.prefixlen > 126:
        raise LabError(f"{key}: {raw!r} must be an IPv6 ULA subnet (fc00::/7) of /126 or wider")
    return net


def _check_room(topo: Topology) -> None:
    """Host N takes address N of each subnet of its bridges: it must be a host address."""
    for host in topo.hosts():
        number = topo.host_number(host)
        for name in topo.host_bridges(host):
            bridge = topo.bridge(name)
            for family, net in (("ipv4", bridge.ipv4), ("ipv6", bridge.ipv6)):
                if net is not None and number > net.num_addresses - 2:
                    raise LabError(f"topology {topo.path}: bridges.{name}.{family}: {net} has no"
                                   f" address {number} for host {host} (host {number} in file order)")


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


def _node_spec(topo: Path, name: str, entry, defaults: dict, bridges: tuple[BridgeSpec, ...]) -> NodeSpec:
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
    mine = _node_bridges(topo, name, entry, bridges)
    overrides = _table(entry.get("set", {}), f"{where}: [set]")
    conf_path = (topo.parent / conf).resolve()
    config = load_toml(conf_path, f"node {name}: conf")
    config = deep_merge(deep_merge(config, defaults), overrides)
    underlay = config.setdefault("underlay", {})
    if not isinstance(underlay, dict):
        raise LabError(f"node {name}: underlay must be a table in {conf_path}")
    _place_interfaces(topo, name, underlay, mine, defaults, overrides)
    return NodeSpec(name=name, host=host, conf_path=conf_path, config=config, bridges=mine)


def _node_bridges(topo: Path, name: str, entry: dict, bridges: tuple[BridgeSpec, ...]) -> tuple[str, ...]:
    key = f"topology {topo}: nodes.{name}.bridges"
    known = [b.name for b in bridges]
    if "bridges" not in entry:
        if len(known) > 1:
            raise LabError(f"{key}: required when the topology has several bridges ({', '.join(known)})")
        return tuple(known)
    value = entry["bridges"]
    if not isinstance(value, list) or not value or not all(isinstance(b, str) for b in value):
        raise LabError(f"{key}: must be a non-empty list of bridge names, got {value!r}")
    for b in value:
        if b not in known:
            raise LabError(f"{key}: unknown bridge {b!r} (bridges: {', '.join(known)})")
    if len(set(value)) != len(value):
        raise LabError(f"{key}: a bridge is listed twice in {value!r}")
    return tuple(value)


def _place_interfaces(topo: Path, name: str, underlay: dict, mine: tuple[str, ...],
                      defaults: dict, overrides: dict) -> None:
    """underlay.interface: the node's first bridge, unless the topology names another of
    its bridges; every interface a node config names must be one of its bridges."""
    def chosen(table: dict):
        u = table.get("underlay")
        return u.get("interface") if isinstance(u, dict) else None

    where = f"topology {topo}: nodes.{name}"
    named = chosen(overrides) or chosen(defaults)
    if named is not None:
        if named not in mine:
            src = "set" if chosen(overrides) else "defaults"
            raise LabError(f"{where}.{src}.underlay.interface: {named!r} is not one of the node's bridges"
                           f" ({', '.join(mine)})")
        underlay["interface"] = named
    else:
        underlay["interface"] = mine[0]
    locators = underlay.get("locators")
    if isinstance(locators, dict):
        for loc, table in locators.items():
            iface = table.get("interface") if isinstance(table, dict) else None
            if iface is not None and iface not in mine:
                raise LabError(f"{where}: underlay.locators.\"{loc}\".interface: {iface!r} is not one of"
                               f" the node's bridges ({', '.join(mine)})")


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise LabError(f"{where} must be a table")
    return value


def one_line(err: object) -> str:
    return " ".join(str(err).split())
