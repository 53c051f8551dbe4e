"""The lab's state file, RUN_BASE/<lab>/lab.json, written atomically (tmp + os.replace).

    {"lab": "ilnp", "phase": "plumbing" | "starting" | "up",
     "topology": "/abs/path.toml", "repo": "/abs/repo", "supervisord_conf": "/abs/supervisord.conf",
     "bridge": {"namespace": "ilnp-br", "bridge": "br0"},      # the first bridge's device
     "bridges": {"eth0": {"device": "br0", "ipv4": null, "ipv6": null, "unicast_only": false}},
     "hosts": {"alice": {"namespace": "ilnp-alice", "number": 1, "iface": "eth0", "peer": "v0-alice",
                         "links": {"eth0": {"peer": "v0-alice", "addresses": []}},
                         "netns_inode": 4026532345}},
     "nodes": {"alice": {"host": "alice", "namespace": "ilnp-alice", "bridges": ["eth0"],
                         "run_dir": "/run/ilnp/ilnp/alice", "conf": ".../node.toml",
                         "supervisord_pid": 1234 | null}}}

"iface" and "peer" are the host's first link (a state of a lab made before there were
several bridges has only those).

It is written before anything is made and updated as things are made, so `down` knows
what to undo even after an `up` that failed half way.
"""
from __future__ import annotations

import json
import os

from .names import state_file


def read_state(lab: str) -> dict | None:
    """The lab's state, or None when there is none or it is unreadable."""
    try:
        with open(state_file(lab)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(lab: str, data: dict) -> None:
    path = state_file(lab)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
