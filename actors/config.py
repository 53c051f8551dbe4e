"""Node configuration: one TOML file per node, validated at start.

Every error is one line naming the file, the key and what is wrong (ConfigError).
Times are seconds in the file and milliseconds (ints) in the loaded config.
"""
from __future__ import annotations

import ipaddress
import math
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .proto.addr import AddressError, parse64, parse_schedule
from .proto.discovery import HOSTNAME_RULE, valid_hostname
from .registry import config_sections

CONF_ENV = "ILNP_CONF"
AUTO_NID = "auto"  # nid = "auto": the cryptographic NID of the node key
UNDERLAY_KINDS = ("ipv6-multicast",)  # actors/link/kinds.py implements each (a test checks)


class ConfigError(ValueError):
    """A configuration that cannot run: one line, naming file and key."""


@dataclass(frozen=True)
class Emulation:
    drop: float = 0.0
    duplicate: float = 0.0
    delay_ms: int = 0


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
    emulate: Emulation = field(default_factory=Emulation)


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


def parse_config(table: dict, path: str = "<config>") -> NodeConfig:
    """Validate a parsed TOML table into a NodeConfig (ConfigError on anything wrong)."""
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
        if isinstance(raw, bool) and typ is not bool or not isinstance(raw, typ):
            want = "number" if typ == (int, float) else getattr(typ, "__name__", str(typ))
            raise ConfigError(f"{path}: {key} must be a {want}, got {raw!r}")
        if isinstance(raw, float) and not math.isfinite(raw):
            raise ConfigError(f"{path}: {key} must be a finite number, got {raw!r}")
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
    return NodeConfig(path=path, emulate=Emulation(**emulation), **values)


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
