"""Namespace, bridge and veth plumbing, all through iproute2.

Everything is created inside the lab's namespaces: every bridge lives in the lab's
bridge namespace, each veth is made in its host namespace and its peer is put straight
into the bridge namespace, so nothing ever appears in the root namespace or touches
the machine's real interfaces.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .errors import LabError
from .names import NODE_IFACE

NETNS_DIR = Path("/run/netns")


def ip_binary() -> str:
    return shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.path.exists(p)), "ip")


IP = ip_binary()


def ip(*args: str, check: bool = True) -> str:
    """Run `ip ARGS`; on failure raise LabError with ip's own last line."""
    try:
        r = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise LabError("the ip command (iproute2) is not installed") from None
    if check and r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        raise LabError(f"ip {' '.join(args)}: {lines[-1] if lines else f'exit {r.returncode}'}")
    return r.stdout


def exec_argv(ns: str, argv: list[str]) -> list[str]:
    """argv that runs `argv` inside namespace `ns`."""
    return [IP, "netns", "exec", ns, *argv]


def list_namespaces() -> list[str]:
    out = ip("netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespaces_with_prefix(prefix: str) -> list[str]:
    return [ns for ns in list_namespaces() if ns.startswith(prefix)]


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists() and ns in list_namespaces()


def inode(ns: str) -> int | None:
    """The namespace's inode: the identity that /proc/PID/ns/net is compared with."""
    try:
        return os.stat(NETNS_DIR / ns).st_ino
    except OSError:
        return None


def pids(ns: str) -> list[int]:
    out = ip("netns", "pids", ns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def add(ns: str) -> None:
    ip("netns", "add", ns)
    ip("-n", ns, "link", "set", "lo", "up")


def delete(ns: str) -> None:
    ip("netns", "delete", ns, check=False)


def write_sysctls(ns: str, values: dict[str, str]) -> None:
    """Set /proc/sys/net values inside `ns` (sh, so no dependency on procps)."""
    script = "; ".join(f"echo {v} > /proc/sys/{k.replace('.', '/')}" for k, v in values.items())
    r = subprocess.run(exec_argv(ns, ["sh", "-ec", script]), capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise LabError(f"sysctl in {ns} failed: {' '.join(r.stderr.split()) or r.returncode}")


def make_bridge_ns(ns: str) -> None:
    """The namespace the lab's bridges live in."""
    add(ns)
    # The bridges only switch frames; without IPv6 of their own they add no RS/MLD noise.
    write_sysctls(ns, {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"})


def make_bridge(ns: str, device: str) -> None:
    """Bridge `device` in namespace `ns`: a plain L2 switch that floods multicast (no snooping)."""
    ip("-n", ns, "link", "add", device, "type", "bridge", "mcast_snooping", "0")
    ip("-n", ns, "link", "set", device, "up")


def make_host(ns: str) -> None:
    """A host namespace, ready for its veths (attach)."""
    add(ns)
    # DAD off before any veth exists, so its addresses are usable at once.
    write_sysctls(ns, {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"})


def attach(ns: str, iface: str, bridge_ns: str, device: str, peer: str,
           addresses: list[str] = (), unicast_only: bool = False) -> None:
    """Interface `iface` in host namespace `ns`, whose peer `peer` is a port of bridge
    `device` in `bridge_ns`, with `addresses` ("10.1.0.2/24", "fd00:1::2/64").
    unicast_only: the port floods neither multicast nor broadcast to its host (so ARP
    and neighbour discovery cannot work either: see add_neighbour)."""
    ip("-n", ns, "link", "add", iface, "type", "veth", "peer", "name", peer, "netns", bridge_ns)
    ip("-n", bridge_ns, "link", "set", peer, "master", device)
    if unicast_only:
        ip("-n", bridge_ns, "link", "set", peer, "type", "bridge_slave", "mcast_flood", "off",
           "bcast_flood", "off")
    ip("-n", bridge_ns, "link", "set", peer, "up")
    for address in addresses:
        family = "-6" if ":" in address else "-4"
        extra = ["nodad"] if family == "-6" else ["broadcast", "+"]
        ip("-n", ns, family, "addr", "add", address, "dev", iface, *extra)
    ip("-n", ns, "link", "set", iface, "up")


def mac(ns: str, dev: str) -> str | None:
    out = ip("-j", "-n", ns, "link", "show", "dev", dev, check=False)
    try:
        return json.loads(out or "[]")[0].get("address")
    except (ValueError, IndexError, AttributeError):
        return None


def add_neighbour(ns: str, dev: str, address: str, lladdr: str) -> None:
    """A permanent neighbour entry (ARP, IPv6 neighbour discovery): unicast on a bridge
    that floods neither multicast nor broadcast."""
    ip("-n", ns, "neigh", "replace", address, "lladdr", lladdr, "dev", dev, "nud", "permanent")


def set_link(ns: str, dev: str, up: bool) -> None:
    ip("-n", ns, "link", "set", dev, "up" if up else "down")


def link_state(ns: str, dev: str) -> dict | None:
    """{"up": administratively up, "operstate": "UP"/"DOWN"/..., "addresses": [...]}, None if absent."""
    out = ip("-j", "-n", ns, "addr", "show", "dev", dev, check=False)
    try:
        link = json.loads(out or "[]")[0]
    except (ValueError, IndexError):
        return None
    return {"up": "UP" in link.get("flags", []), "operstate": link.get("operstate"),
            "addresses": [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                          if a.get("scope") == "global"]}


def link_local(ns: str, dev: str = NODE_IFACE) -> str | None:
    """The usable (non-tentative) fe80:: address of dev in ns, or None."""
    out = ip("-j", "-n", ns, "-6", "addr", "show", "dev", dev, check=False)
    try:
        links = json.loads(out or "[]")
    except ValueError:
        return None
    for link in links:
        for a in link.get("addr_info", []):
            if a.get("scope") == "link" and a.get("local", "").startswith("fe80:") \
                    and not a.get("tentative") and not a.get("dadfailed"):
                return a["local"]
    return None


def wait_link_local(namespaces: list[str] | list[tuple[str, str]], timeout: float = 10.0) -> None:
    """Until every (namespace, interface) has a usable link-local address (a bare
    namespace: its eth0)."""
    deadline = time.monotonic() + timeout
    pending = [(x, NODE_IFACE) if isinstance(x, str) else tuple(x) for x in namespaces]
    while pending:
        pending = [(ns, dev) for ns, dev in pending if link_local(ns, dev) is None]
        if not pending:
            return
        if time.monotonic() > deadline:
            ns, dev = pending[0]
            raise LabError(f"no usable IPv6 link-local address on {dev} in {ns} after {timeout:g}s")
        time.sleep(0.05)


def links(ns: str) -> list[str]:
    out = ip("-j", "-n", ns, "link", "show", check=False)
    try:
        return [link["ifname"] for link in json.loads(out or "[]")]
    except ValueError:
        return []
