"""Node configuration: one TOML file per node, validated at start.

Every error is one line naming the file, the key and what is wrong (ConfigError).
Times are seconds in the file and milliseconds (ints) in the loaded config.
"""
from __future__ import annotations

import ipaddress
import json
import math
import os
import socket
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .proto.addr import AddressError, format64, parse64, parse_schedule
from .proto.discovery import HOSTNAME_RULE, valid_hostname
from .registry import config_sections

CONF_ENV = "ILNP_CONF"
AUTO_NID = "auto"  # nid = "auto": the cryptographic NID of the node key
# actors/link/kinds.py implements each (a test checks)
UNDERLAY_KINDS = ("ipv6-multicast", "ipv4-multicast", "ipv4-broadcast", "unicast")
UNICAST = "unicast"
BROADCAST = "ipv4-broadcast"
MAX_UNDERLAY_SOCKETS = 8   # (kind, interface, port) a node opens at most: each is an fd store name
MAX_LOCATOR_UNDERLAYS = 64  # [underlay.locators."<loc>"] entries
MAX_PEERS = 64              # peers of one unicast locator


class ConfigError(ValueError):
    """A configuration that cannot run: one line, naming file and key."""


@dataclass(frozen=True)
class Emulation:
    drop: float = 0.0
    duplicate: float = 0.0
    delay_ms: int = 0


@dataclass(frozen=True)
class UnderlaySpec:
    """One underlay socket of the node: a (kind, interface, port), and the locators
    listed for it under [underlay.locators] (the default one, `default`, also carries
    every locator of the schedule listed nowhere)."""
    kind: str
    interface: str
    port: int
    interface_key: str             # the config key its interface came from (for errors)
    default: bool = False
    locators: tuple[int, ...] = ()  # listed under [underlay.locators], in this schedule
    # unicast: (locator, peers) with each peer (host, port), host as a dual-stack IPv6
    # socket reports it (an IPv4 peer is ::ffff:a.b.c.d): what it sends to and receives from
    peers: tuple[tuple[int, tuple[tuple[str, int], ...]], ...] = ()


@dataclass(frozen=True)
class NodeConfig:
    path: str
    hostname: str
    nid: int | None  # None: "auto", resolved from the node key (actors/nodekey.py) at start
    schedule: list[list[int]]
    move_time_ms: int = 20_000
    handoff_time_ms: int = 10_000
    underlay_kind: str = "ipv6-multicast"
    interface: str = "eth0"
    port: int = 10000
    group_tag: int = 0
    mtu: int = 1440
    multicast_loop: bool = True
    hop_limit: int = 3
    route_lifetime_ms: int = 30_000
    session_lifetime_ms: int = 30_000
    duplicate_hold_ms: int = 500
    path_switch_hold_ms: int = 50
    wait_time_ms: int = 30_000
    max_hosts: int = 1024
    update_retries: int = 3
    update_interval_ms: int = 1000
    nonce_length: int = 12
    accept_updates_without_nonce: bool = True
    stream_bind: str = "127.0.0.1"
    stream_idle_timeout_ms: int = 30_000
    stream_keepalive_ms: int = 10_000
    proxy_port: int = 10001
    proxy_bind: str = "127.0.0.1"
    metrics_port: int | None = None  # [metrics] port: the Prometheus endpoint on loopback (None: off)
    emulate: Emulation = field(default_factory=Emulation)
    # the underlay sockets to open (underlay_specs): the default's first when it is used
    underlays: tuple[UnderlaySpec, ...] = ()


def _seconds(v: float) -> int:
    return int(round(v * 1000))


MAX_SECONDS = 365 * 24 * 3600  # a time key's ceiling (timers and poll timeouts are bounded ints)


def _address(v: str) -> bool:
    """An IP address, or a name this host resolves (what a socket can be bound to)."""
    if not v or len(v) > 253 or not v.isprintable() or any(c.isspace() for c in v):
        return False
    try:
        ipaddress.ip_address(v)
        return True
    except ValueError:
        pass
    try:
        return bool(socket.getaddrinfo(v, None, type=socket.SOCK_DGRAM))
    except (OSError, UnicodeError):
        return False


# key path -> (type, field name, converter or None, check or None, what the check wants)
_SPEC: dict[str, tuple] = {
    "hostname": (str, "hostname", None, valid_hostname, HOSTNAME_RULE),
    "nid": (str, "nid", lambda v: None if v == AUTO_NID else parse64(v), None, ""),
    "locators.schedule": (str, "schedule", parse_schedule, None, ""),
    "locators.move_time": ((int, float), "move_time_ms", _seconds, lambda v: v > 0, "> 0"),
    "locators.handoff_time": ((int, float), "handoff_time_ms", _seconds, lambda v: v >= 0, ">= 0"),
    "underlay.kind": (str, "underlay_kind", None, lambda v: v in UNDERLAY_KINDS, " or ".join(UNDERLAY_KINDS)),
    "underlay.interface": (str, "interface", None, lambda v: 0 < len(v) <= 15, "an interface name"),
    "underlay.port": (int, "port", None, lambda v: 1 <= v <= 65535, "1-65535"),
    "underlay.group_tag": (int, "group_tag", None, lambda v: -1 <= v <= 0xFFFF,
                           "0-65535, or -1 for the user id modulo 2^16"),
    "underlay.mtu": (int, "mtu", None, lambda v: 64 <= v <= 65507, "64-65507"),
    "underlay.multicast_loop": (bool, "multicast_loop", None, None, ""),
    "router.hop_limit": (int, "hop_limit", None, lambda v: 1 <= v <= 255, "1-255"),
    "router.route_lifetime": ((int, float), "route_lifetime_ms", _seconds, lambda v: v > 0, "> 0"),
    "router.duplicate_hold": ((int, float), "duplicate_hold_ms", _seconds, lambda v: 0 <= v <= 10, "0-10 (0: off)"),
    "router.path_switch_hold": ((int, float), "path_switch_hold_ms", _seconds, lambda v: 0 <= v <= 1, "0-1 (0: off)"),
    "router.session_lifetime": ((int, float), "session_lifetime_ms", _seconds, lambda v: v > 0, "> 0"),
    "discovery.wait_time": ((int, float), "wait_time_ms", _seconds, lambda v: v > 0, "> 0"),
    "discovery.max_hosts": (int, "max_hosts", None, lambda v: 1 <= v <= 1_000_000, "1-1000000"),
    "mobility.update_retries": (int, "update_retries", None, lambda v: 0 <= v <= 100, "0-100"),
    "mobility.update_interval": ((int, float), "update_interval_ms", _seconds, lambda v: v > 0, "> 0"),
    "mobility.nonce_length": (int, "nonce_length", None, lambda v: v in (4, 12), "4 or 12"),
    "mobility.accept_updates_without_nonce": (bool, "accept_updates_without_nonce", None, None, ""),
    "stream.bind": (str, "stream_bind", None, _address, "an IP address or a host name this host resolves"),
    "stream.idle_timeout": ((int, float), "stream_idle_timeout_ms", _seconds, lambda v: 1 <= v <= 3600, "1-3600"),
    "stream.keepalive": ((int, float), "stream_keepalive_ms", _seconds, lambda v: 0.1 <= v <= 600, "0.1-600"),
    "proxy.port": (int, "proxy_port", None, lambda v: 1 <= v <= 65535, "1-65535"),
    "proxy.bind": (str, "proxy_bind", None, _address, "an IP address or a host name this host resolves"),
    "metrics.port": (int, "metrics_port", None, lambda v: 1 <= v <= 65535, "1-65535 (on 127.0.0.1 and ::1)"),
    "link.emulate.drop": ((int, float), "drop", float, lambda v: 0 <= v <= 1, "0-1"),
    "link.emulate.duplicate": ((int, float), "duplicate", float, lambda v: 0 <= v <= 1, "0-1"),
    "link.emulate.delay": ((int, float), "delay_ms", _seconds, lambda v: 0 <= v <= 10, "0-10 seconds"),
}
_REQUIRED = ("hostname", "nid", "locators.schedule")
_EMULATION_FIELDS = {"drop", "duplicate", "delay_ms"}


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _checked(path: str, key: str, raw: Any, typ, check, wants: str) -> None:
    """ConfigError unless `raw` is of `typ` (a bool is not an int) and passes `check`."""
    if isinstance(raw, bool) and typ is not bool or not isinstance(raw, typ):
        want = "number" if typ == (int, float) else getattr(typ, "__name__", str(typ))
        raise ConfigError(f"{path}: {key} must be a {want}, got {raw!r}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ConfigError(f"{path}: {key} must be a finite number, got {raw!r}")
    if check is not None and not check(raw):
        raise ConfigError(f"{path}: {key} must be {wants}, got {raw!r}")


def parse_config(table: dict, path: str = "<config>") -> NodeConfig:
    """Validate a parsed TOML table into a NodeConfig (ConfigError on anything wrong)."""
    table, listed = _take_locator_underlays(table, path)
    flat = _flatten(table)
    sections = config_sections()
    for key in flat:
        section = key.split(".")[0] if "." in key else ""
        if section and section not in sections:
            raise ConfigError(f"{path}: unknown section [{section}] (no actor reads it), in key {key!r}")
        if key not in _SPEC:
            raise ConfigError(f"{path}: unknown key {key!r}")
    for key in _REQUIRED:
        if key not in flat:
            raise ConfigError(f"{path}: missing required key {key!r}")
    values: dict[str, Any] = {}
    emulation: dict[str, Any] = {}
    for key, raw in flat.items():
        typ, name, convert, check, wants = _SPEC[key]
        _checked(path, key, raw, typ, None, wants)
        if convert is _seconds and raw > MAX_SECONDS:
            raise ConfigError(f"{path}: {key} must be at most {MAX_SECONDS} (365 days), got {raw!r}")
        if convert is _seconds and 0 < raw < 0.001:
            least = "0 or at least 0.001" if check is None or check(0) else "at least 0.001"
            raise ConfigError(f"{path}: {key} must be {least} (1 ms: times count whole milliseconds),"
                              f" got {raw!r}")
        if check is not None and not check(raw):
            raise ConfigError(f"{path}: {key} must be {wants}, got {raw!r}")
        try:
            value = convert(raw) if convert else raw
        except AddressError as exc:
            raise ConfigError(f"{path}: {key}: {exc}") from None
        (emulation if name in _EMULATION_FIELDS else values)[name] = value
    if values.get("group_tag", 0) == -1:
        values["group_tag"] = os.getuid() % 65536
    config = NodeConfig(path=path, emulate=Emulation(**emulation), **values)
    return replace(config, underlays=_underlay_specs(config, listed))


# ---- [underlay.locators."<loc>"]: a locator on an underlay of its own ------------------

_LOCATOR_UNDERLAY_KEYS = ("kind", "interface", "port", "peers")
_PEER_FORM = "host:port (an IPv4 address:port or [IPv6 address]:port)"


def _locator_key(name: str) -> str:
    return f"underlay.locators.{json.dumps(name)}"  # as written in the file, quoted


def _take_locator_underlays(table: dict, path: str) -> tuple[dict, dict[int, tuple[str, dict]]]:
    """The table without underlay.locators, and its entries by locator: (name, entry)."""
    underlay = table.get("underlay")
    if not isinstance(underlay, dict) or "locators" not in underlay:
        return table, {}
    raw = underlay["locators"]
    table = {**table, "underlay": {k: v for k, v in underlay.items() if k != "locators"}}
    if not isinstance(raw, dict):
        raise ConfigError(f'{path}: underlay.locators must be tables like [underlay.locators."0:0:0:d"],'
                          f" got {raw!r}")
    if len(raw) > MAX_LOCATOR_UNDERLAYS:
        raise ConfigError(f"{path}: underlay.locators: {len(raw)} locators, at most {MAX_LOCATOR_UNDERLAYS}")
    listed: dict[int, tuple[str, dict]] = {}
    for name, entry in raw.items():
        key = _locator_key(name)
        try:
            loc = parse64(name)
        except AddressError as exc:
            raise ConfigError(f"{path}: {key}: not a locator: {exc}") from None
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: {key} must be a table ({', '.join(_LOCATOR_UNDERLAY_KEYS)}), got {entry!r}")
        for sub in entry:
            if sub not in _LOCATOR_UNDERLAY_KEYS:
                raise ConfigError(f"{path}: unknown key '{key}.{sub}' (an underlay locator has"
                                  f" {', '.join(_LOCATOR_UNDERLAY_KEYS)})")
        if loc in listed:
            raise ConfigError(f"{path}: {key}: locator {format64(loc)} is listed twice"
                              f" (also as {json.dumps(listed[loc][0])})")
        listed[loc] = (name, entry)
    return table, listed


def parse_peer(text: str) -> tuple[str, int]:
    """`10.9.0.2:10000` or `[fd00:9::2]:10000` -> (host, port), the host as a dual-stack
    IPv6 socket reports it (::ffff:10.9.0.2 for IPv4). ValueError with the reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host or len(text) > 64:
        raise ValueError(f"is not {_PEER_FORM}")
    try:
        if host.startswith("[") and host.endswith("]"):
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(host[1:-1])
        else:
            ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"is not {_PEER_FORM}") from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None or ip.is_link_local:
            raise ValueError("is link-local: give a global or unique local (fdxx:) address")
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    if ip.is_multicast or ip.is_unspecified or str(ip) == "255.255.255.255":
        raise ValueError("is not a unicast address")
    if not 1 <= int(port) <= 65535:
        raise ValueError("has a port outside 1-65535")
    if isinstance(ip, ipaddress.IPv4Address):
        return f"::ffff:{ip}", int(port)
    return socket.inet_ntop(socket.AF_INET6, ip.packed), int(port)


def _peers(path: str, key: str, raw: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f'{path}: {key}.peers must be a list of "{_PEER_FORM}", got {raw!r}')
    if len(raw) > MAX_PEERS:
        raise ConfigError(f"{path}: {key}.peers: {len(raw)} peers, at most {MAX_PEERS}")
    peers: list[tuple[str, int]] = []
    for i, text in enumerate(raw):
        if not isinstance(text, str):
            raise ConfigError(f"{path}: {key}.peers[{i}] must be a str ({_PEER_FORM}), got {text!r}")
        try:
            peer = parse_peer(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: {key}.peers[{i}]: {json.dumps(text)} {exc}") from None
        if peer in peers:
            raise ConfigError(f"{path}: {key}.peers[{i}]: {json.dumps(text)} is listed twice")
        peers.append(peer)
    return tuple(peers)


def _underlay_specs(config: NodeConfig, listed: dict[int, tuple[str, dict]]) -> tuple[UnderlaySpec, ...]:
    """The sockets the node opens: one per (kind, interface, port) that a locator of its
    schedule rides. A locator listed under [underlay.locators] rides its own; every other
    one the default ([underlay]), which is opened only if some locator rides it. Entries
    for locators outside the schedule are checked, not opened."""
    path = config.path
    if config.underlay_kind == UNICAST:
        raise ConfigError(f'{path}: underlay.kind: "unicast" needs its peers: give them under'
                          f' [underlay.locators."<locator>"]')
    schedule = [loc for step in config.schedule for loc in step]
    defaulted = sorted({loc for loc in schedule if loc not in listed})
    groups: dict[tuple[str, str, int], dict[str, Any]] = {}
    owner: dict[tuple[str, str, int], str] = {}   # the key that opened each group, for errors
    if defaulted:
        if config.underlay_kind == BROADCAST and len(defaulted) > 1:
            raise ConfigError(f"{path}: underlay.kind: ipv4-broadcast carries one locator, and the schedule puts"
                              f" {len(defaulted)} on it ({', '.join(map(format64, defaulted))}): list the others"
                              f' under [underlay.locators."<locator>"] with ports of their own')
        key = (config.underlay_kind, config.interface, config.port)
        groups[key] = {"interface_key": "underlay.interface", "default": True, "locators": [], "peers": []}
        owner[key] = "[underlay]"
    for loc, (name, entry) in listed.items():
        lkey = _locator_key(name)
        kind = entry.get("kind", config.underlay_kind)
        _checked(path, f"{lkey}.kind", kind, str, lambda v: v in UNDERLAY_KINDS, " or ".join(UNDERLAY_KINDS))
        interface = entry.get("interface", config.interface)
        _checked(path, f"{lkey}.interface", interface, str, *_SPEC["underlay.interface"][3:])
        port = entry.get("port", config.port)
        _checked(path, f"{lkey}.port", port, int, *_SPEC["underlay.port"][3:])
        if kind == UNICAST:
            peers = _peers(path, lkey, entry.get("peers"))
        elif "peers" in entry:
            raise ConfigError(f"{path}: {lkey}.peers: only a unicast locator has peers (kind is {kind!r})")
        else:
            peers = ()
        if loc not in schedule:
            continue
        key = (kind, interface, port)
        group = groups.get(key)
        if group is None:
            if len(groups) >= MAX_UNDERLAY_SOCKETS:
                raise ConfigError(f"{path}: {lkey}: more than {MAX_UNDERLAY_SOCKETS} underlay sockets"
                                  f" (kind, interface, port); locators may share one")
            group = groups[key] = {"interface_key": f"{lkey}.interface" if "interface" in entry
                                   else "underlay.interface", "default": False, "locators": [], "peers": []}
            owner[key] = lkey
        elif kind == BROADCAST:
            raise ConfigError(f"{path}: {lkey}.port: {owner[key]} rides ipv4-broadcast on {interface} port {port}"
                              f" already, and a broadcast cannot tell locators apart: give this one another port")
        for i, peer in enumerate(peers):
            for other, others in group["peers"]:
                if peer in others:
                    raise ConfigError(f"{path}: {lkey}.peers[{i}]: {json.dumps(entry['peers'][i])} is a peer of"
                                      f" {format64(other)} on the same socket (unicast, {interface}, port {port}):"
                                      f" its datagrams could not tell their locator")
        group["locators"].append(loc)
        if peers:
            group["peers"].append((loc, peers))
    return tuple(UnderlaySpec(kind, interface, port, g["interface_key"], g["default"], tuple(g["locators"]),
                              tuple(g["peers"])) for (kind, interface, port), g in groups.items())


def load_config(path: str | os.PathLike | None = None) -> NodeConfig:
    """Load the node config from `path` or $ILNP_CONF."""
    path = path or os.environ.get(CONF_ENV)
    if not path:
        raise ConfigError(f"no node config: give a path or set {CONF_ENV}")
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    return parse_config(table, str(Path(path)))
