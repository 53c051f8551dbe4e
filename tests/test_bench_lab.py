"""`ilnp-bench --quick --json` runs every scenario on real labs and writes a row with every
key for each (issue 13). Nothing here asserts a speed: figures vary with the machine."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.labutil import REPO, lab_name
from tools.benchsuite import KEYS, SCENARIOS

pytestmark = pytest.mark.lab


def test_quick_bench_writes_every_scenario_with_its_keys(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "tools.bench", "--quick", "--lab", lab_name("b"),
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [row["scenario"] for row in rows] == list(SCENARIOS)
    for row in rows:
        assert set(KEYS) <= set(row), row
    by_name = {row["scenario"]: row for row in rows}
    for name in ("underlay", "pair-1way", "router-1way", "router-2way", "proxy-1way"):
        assert by_name[name]["lossless_pps"] > 0, by_name[name]       # each path carried traffic
        assert by_name[name]["rtt_p50_ms"] is not None, by_name[name]
    for name in ("stream-1", "stream-8"):
        assert by_name[name]["mb_per_s"] > 0, by_name[name]
    assert by_name["mobility-2way"]["reordered"] is not None
    assert by_name["router-1way"]["pss_mb_per_node"] > 0 and by_name["router-1way"]["cpu_us_per_packet"] > 0
    assert "scenario" in proc.stdout and "router-2way" in proc.stdout       # the table
    assert "router-1way" in proc.stderr                                     # progress while it runs
