"""What a node's processes cost in memory: PSS (shared pages divided among the processes
that map them, so a node's figures add up: libpython is not counted once per actor) and
RSS beside it, from /proc/PID/smaps_rollup."""
from __future__ import annotations


def process_memory(pid: int) -> dict | None:
    """{"pss_kb", "rss_kb"} of one process, or None (gone, or not ours to read)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            text = f.read()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Rss"):
            try:
                found[key.lower() + "_kb"] = int(rest.split()[0])
            except (IndexError, ValueError):
                return None
    return found if len(found) == 2 else None


def total(memories) -> dict:
    """The sum of several processes' figures, in MB (those that could not be read left out)."""
    read = [m for m in memories if m]
    return {"pss_mb": round(sum(m["pss_kb"] for m in read) / 1024, 1),
            "rss_mb": round(sum(m["rss_kb"] for m in read) / 1024, 1),
            "processes": len(read)}
