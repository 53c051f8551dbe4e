"""Processes: is it alive, is it ours (in one of the lab's namespaces), stop it.

A process counts as the lab's only when its network namespace is one of the lab's, so
a PID reused by an unrelated process is never signalled.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable


def alive(pid: int) -> bool:
    """True while pid exists and is not a zombie (a daemon's zombie may wait for init)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # state follows the parenthesised command name, which may itself hold spaces
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] not in (b"Z", b"X")


def net_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def read_pidfile(path: os.PathLike) -> int | None:
    try:
        text = open(path).read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 1 else None


def signal_if_ours(pid: int, sig: int, inodes: set[int]) -> bool:
    """Send sig to pid only if it lives in one of the given namespaces."""
    if pid == os.getpid() or net_inode(pid) not in inodes:
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Poll until every pid is gone or the deadline passes; return those still alive."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def children(pids: Iterable[int]) -> list[int]:
    """The processes whose parent is one of pids."""
    parents, found = set(pids), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) in parents:
            found.append(int(entry))
    return found


def stop(pids: Iterable[int], inodes: set[int], timeout: float) -> None:
    """SIGTERM supervisords (ours only), wait up to timeout, then SIGKILL what is left.

    supervisord stops its programs one at a time and notices each exit up to a second
    late (7 s for a node of ten programs), so once it has begun its shutdown (its first
    program gone: it restarts nothing from then on) its programs get SIGTERM all at once.
    Once they are gone supervisord has nothing left to do but notice it (another second):
    it gets SIGKILL then. (SIGKILL to supervisord first left programs that outlived their
    SIGTERM until the timeout: 15 s a lab in CI.)"""
    sent = [p for p in pids if signal_if_ours(p, signal.SIGTERM, inodes)]
    programs = children(sent)
    deadline = time.monotonic() + 1.0
    while programs and time.monotonic() < deadline and all(alive(p) for p in programs):
        time.sleep(0.01)
    for p in programs:
        signal_if_ours(p, signal.SIGTERM, inodes)
    if not wait_gone(programs, timeout):
        for p in sent:
            signal_if_ours(p, signal.SIGKILL, inodes)
    for p in wait_gone(sent, timeout):
        signal_if_ours(p, signal.SIGKILL, inodes)
    wait_gone(sent, 2.0)


def kill_all(list_pids, inodes: set[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL everything list_pids() reports until it reports nothing (forks race us)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in list_pids() if p != os.getpid() and alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        for p in left:
            signal_if_ours(p, signal.SIGKILL, inodes)
        wait_gone(left, 0.5)
