"""The transport benchmark runs and prints its four lines (figures, no speed asserted)."""
from __future__ import annotations

import subprocess
import sys


def test_bench_transport_prints_each_transport_and_scheduling():
    proc = subprocess.run([sys.executable, "-m", "tools.bench_transport", "--count", "20", "--gap", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split("SCHED_BATCH=")[0].strip() for line in lines] == ["zmq ipc"] * 2 + ["unix seqpacket"] * 2
    assert all("round trip p50" in line and line.rstrip().endswith("us") for line in lines)
