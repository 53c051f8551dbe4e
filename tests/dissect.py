"""Decoding captures with tshark and tools/wireshark/ilnp.lua, for the dissector's tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LUA = REPO / "tools" / "wireshark" / "ilnp.lua"
TSHARK = shutil.which("tshark")
AGGREGATOR = "|"  # between the values of a field that occurs more than once in a frame

needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (make setup installs it)")

# what must never appear: a Lua error, a dissector exception, our own bug trap
PROBLEM_FIELDS = ("_ws.lua.error", "_ws.malformed", "ilnp.expert.internal")


def run_tshark(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """tshark with a configuration of its own (no personal profile, plugins or
    preferences of whoever runs the tests); it must load the dissector cleanly."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": home, "WIRESHARK_CONFIG_DIR": home}
        proc = subprocess.run([TSHARK, *argv], capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"tshark failed ({proc.returncode}): {proc.stderr.strip()}"
    assert "Lua" not in proc.stderr, f"the dissector did not load cleanly: {proc.stderr.strip()}"
    return proc


def tshark(pcap: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """tshark with the dissector on a capture."""
    return run_tshark("-n", "-X", f"lua_script:{LUA}", "-r", str(pcap), *args, timeout=timeout)


def glossary() -> str:
    """`tshark -G fields` with the dissector loaded: every registered field, one a line."""
    return run_tshark("-G", "fields", "-X", f"lua_script:{LUA}").stdout


def fields(pcap: Path, names: list[str], *args: str) -> list[dict[str, list[str]]]:
    """One dict per frame: field name -> its values in the frame (empty list: absent)."""
    argv = ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", f"aggregator={AGGREGATOR}",
            *args]
    for name in ["frame.number", *names]:
        argv += ["-e", name]
    rows = []
    for line in tshark(pcap, *argv).stdout.splitlines():
        cells = line.split("\t")
        assert len(cells) == len(names) + 1, f"unexpected tshark line {line!r}"
        rows.append({name: cell.split(AGGREGATOR) if cell else [] for name, cell in zip(names, cells[1:])})
    return rows


def problems(pcap: Path, *args: str) -> list[str]:
    """Frames with a Lua error, a malformed mark or a dissector bug, and their expert messages."""
    found = []
    for number, row in enumerate(fields(pcap, [*PROBLEM_FIELDS, "_ws.expert.message"], *args), 1):
        if any(row[name] for name in PROBLEM_FIELDS):
            found.append(f"frame {number}: {row['_ws.expert.message']}")
    return found


def expert_messages(pcap: Path, *args: str) -> list[list[str]]:
    return [row["_ws.expert.message"] for row in fields(pcap, ["_ws.expert.message"], *args)]
