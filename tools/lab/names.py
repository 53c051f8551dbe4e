"""Names and places of a lab: repo root, run directories, namespace and interface names.

Lab names carry no dash, so `<lab>-` is an unambiguous prefix: the namespaces of lab
`t1` can never be mistaken for those of a lab `t1x` or `t1-x`.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import LabError

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_BASE = Path("/run/ilnp")
BRIDGE_HOST = "br"        # the bridge's namespace is <lab>-br, so no host may be called br
BRIDGE = "br0"            # the default bridge's device (a topology without [bridges])
NODE_IFACE = "eth0"       # the veth end inside every host namespace on the default bridge
IFNAMSIZ = 15             # Linux limit on interface names (without the NUL)

_LAB = re.compile(r"^[A-Za-z0-9_]{1,12}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
# a bridge's name is the interface name inside its hosts: no dash, so never a veth peer's
_BRIDGE = re.compile(r"^[a-z][a-z0-9_]{0,14}$")


def check_lab_name(name: str) -> str:
    if not _LAB.match(name or ""):
        raise LabError(f"bad lab name {name!r}: 1-12 letters, digits or _ (no dash)")
    return name


def check_name(kind: str, name: str) -> str:
    """Node and host names become directory and namespace names."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise LabError(f"bad {kind} name {name!r}: 1-32 letters, digits, _ or -, starting with a letter or digit")
    if kind == "host" and name == BRIDGE_HOST:
        raise LabError(f"host name {BRIDGE_HOST!r} is reserved for the bridge namespace")
    return name


def check_bridge_name(name: str) -> str | None:
    """None when `name` can name a bridge, else why not."""
    if not isinstance(name, str) or not _BRIDGE.match(name):
        return "1-15 lower-case letters, digits or _, starting with a letter (an interface name)"
    if name == "lo":
        return "lo is the loopback interface"
    return None


def bridge_ns(lab: str) -> str:
    return f"{lab}-{BRIDGE_HOST}"


def host_ns(lab: str, host: str) -> str:
    return f"{lab}-{host}"


def ns_prefix(lab: str) -> str:
    return f"{lab}-"


def peer_name(index: int, host: str, link: int = 0) -> str:
    """The bridge-side veth end of host number `index` on its link number `link` (its
    bridges in order): v3-alice, v3b1-alice, ... (unique by the numbers before the dash)."""
    return (f"v{index}-{host}" if link == 0 else f"v{index}b{link}-{host}")[:IFNAMSIZ]


def lab_dir(lab: str) -> Path:
    return RUN_BASE / lab


def node_dir(lab: str, node: str) -> Path:
    return lab_dir(lab) / node


def state_file(lab: str) -> Path:
    return lab_dir(lab) / "lab.json"
