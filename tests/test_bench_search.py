"""ilnp-bench's lossless-rate search (tools/benchsuite.search) and its row format,
driven by a fake trial: no lab, no timing."""
from __future__ import annotations

from dataclasses import replace

from tools.benchsuite import KEYS, QUICK, SCENARIOS, empty_row, search, table

PLAN = replace(QUICK, start_pps=5000, refine=1)


def fake_trial(capacity: float, sender_max: float = 1e9, tried: list | None = None):
    """A path lossless up to `capacity`/s whose sender reaches at most `sender_max`/s."""
    def run(rate: float) -> dict:
        if tried is not None:
            tried.append(rate)
        achieved = min(rate, sender_max)
        lossless = achieved <= capacity
        return {"rate": rate, "achieved_pps": achieved, "sent": int(achieved), "lost": 0 if lossless else 1,
                "reordered": 0, "duplicated": 0, "lossless": lossless, "cpu_us_per_packet": 50.0}
    return run


def test_doubling_then_bisecting_finds_the_rate_between_lossless_and_lossy():
    tried = []
    plan = replace(PLAN, refine=3)
    best, trial = search(fake_trial(27_000, tried=tried), plan, lambda s: None, "x")
    assert tried[:4] == [5000, 10000, 20000, 40000]      # doubling until the first loss
    assert tried[4:] == [30000, 25000, 27500]            # then bisecting
    assert best == 25000 and trial["rate"] == 25000


def test_a_path_lossy_from_the_start_is_halved_until_lossless():
    best, _ = search(fake_trial(1500), PLAN, lambda s: None, "x")
    assert 0 < best <= 1500


def test_a_sender_that_falls_short_ends_the_search_at_what_it_achieved():
    tried = []
    best, trial = search(fake_trial(1e9, sender_max=30_000, tried=tried), PLAN, lambda s: None, "x")
    assert tried == [5000, 10000, 20000, 40000] and best == 30_000 and trial["sender_bound"]


def test_nothing_lossless_at_all_is_zero():
    best, trial = search(fake_trial(0), PLAN, lambda s: None, "x")
    assert best == 0 and trial is None


def test_every_row_has_every_key_and_the_table_shows_each_scenario():
    rows = [empty_row(name) | {"lossless_pps": 1000.0} for name in SCENARIOS]
    assert all(tuple(row)[:len(KEYS)] == KEYS for row in rows)
    lines = table(rows)
    assert len(lines) == 1 + len(SCENARIOS)
    assert all(name in line for name, line in zip(SCENARIOS, lines[1:]))
