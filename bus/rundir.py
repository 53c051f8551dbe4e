"""A node's run directory: bus endpoints, request sockets, the fd store, node.json, and finding a node."""
from __future__ import annotations

import json
import os
from pathlib import Path

BASE_ENV = "ILNP_RUN_BASE"
RUN_DIR_ENV = "ILNP_RUN_DIR"
DEFAULT_BASE = "/run/ilnp"


class NodeNotFound(RuntimeError):
    """No running node could be found or chosen."""


def base_dir() -> Path:
    return Path(os.environ.get(BASE_ENV, DEFAULT_BASE))


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def sock(self, name: str) -> Path:
        return self.path / name

    @property
    def bus_in(self) -> str:
        return f"ipc://{self.path / 'bus-in.sock'}"

    @property
    def bus_out(self) -> str:
        return f"ipc://{self.path / 'bus-out.sock'}"

    def ctl_path(self, actor: str) -> Path:
        return self.path / f"ctl-{actor}.sock"

    def ctl(self, actor: str) -> str:
        return f"ipc://{self.ctl_path(actor)}"

    def inbox_path(self, name: str) -> Path:
        return self.path / f"in-{name}.sock"

    def inbox(self, name: str) -> str:
        """Where an actor (or application) receives its data frames directly."""
        return f"ipc://{self.inbox_path(name)}"

    def is_inbox(self, endpoint) -> bool:
        """Whether `endpoint` is an inbox of this node (what inbox() gives for some name):
        anything else, pushed to, would connect us somewhere else or fail."""
        if not isinstance(endpoint, str):
            return False
        head, tail = f"ipc://{self.path}/in-", ".sock"
        if not (endpoint.startswith(head) and endpoint.endswith(tail)):
            return False
        name = endpoint[len(head):len(endpoint) - len(tail)]
        return 0 < len(name) <= 64 and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)

    def topic_inbox_path(self, topic: bytes) -> Path:
        return self.path / f"in-t-{topic.decode('ascii', 'replace')}.sock"

    def topic_inbox(self, topic: bytes) -> str:
        """Where the one consumer of a data topic receives it (it binds this endpoint)."""
        return f"ipc://{self.topic_inbox_path(topic)}"

    @property
    def fdstore(self) -> Path:
        """The fd store's socket (bus/fdstore.py): descriptors kept across restarts."""
        return self.path / "fdstore.sock"

    @property
    def node_json(self) -> Path:
        return self.path / "node.json"

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)  # only the node's user may attach to its bus

    def broker_running(self) -> bool:
        info = self.read_node_info()
        return bool(info) and pid_alive(int(info.get("pid", 0))) and (self.path / "bus-out.sock").exists()

    def read_node_info(self) -> dict:
        try:
            return json.loads(self.node_json.read_text())
        except (OSError, ValueError):
            return {}

    def write_node_info(self, info: dict) -> None:
        write_atomic(self.node_json, json.dumps(info, indent=1).encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so a reader sees the old or the new content, never half, and so the
    new content survives a crash once this returns: the data is fsynced, renamed into
    place, and the directory fsynced (the rename itself is on disk). A failed write
    leaves no temporary file; a kill mid-write leaves `.NAME.PID.tmp` (see remove_stale_tmp)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename in directory `path` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stale_tmp_files(path: Path) -> list[Path]:
    """Temporary files write_atomic left for `path` (`.NAME.PID.tmp`) whose writer is gone:
    killed mid-write. A live other writer's is not stale; ours (a reused PID) is."""
    path = Path(path)
    prefix, found = f".{path.name}.", []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):-len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid() or not pid_alive(int(pid)):
            found.append(path.parent / name)
    return sorted(found)


def remove_stale_tmp(path: Path) -> list[Path]:
    """Remove the stale temporary files of `path` (at its owner's start); returns them."""
    removed = []
    for tmp in stale_tmp_files(path):
        try:
            os.unlink(tmp)
        except OSError:  # gone already, or not ours to remove
            continue
        removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def current_netns() -> int:
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


def find_run_dir(explicit: str | os.PathLike | None = None) -> RunDir:
    """--run-dir, else ILNP_RUN_DIR, else the one node running in this network namespace."""
    chosen = explicit or os.environ.get(RUN_DIR_ENV)
    if chosen:
        run = RunDir(chosen)
        if not run.broker_running():
            raise NodeNotFound(f"node not running at {run.path} (no live broker there)")
        return run
    netns = current_netns()
    found = []
    base = base_dir()
    for node_json in sorted(base.glob("**/node.json")) if base.exists() else []:
        run = RunDir(node_json.parent)
        info = run.read_node_info()
        if info.get("netns") == netns and run.broker_running():
            found.append(run)
    if not found:
        raise NodeNotFound(f"no node running in this network namespace (searched {base}); "
                           f"give --run-dir or set {RUN_DIR_ENV}")
    if len(found) > 1:
        names = ", ".join(str(r.path) for r in found)
        raise NodeNotFound(f"several nodes run here ({names}); choose one with --run-dir")
    return found[0]
