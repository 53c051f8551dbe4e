"""ilnp-bench's headline figure: the highest rate that every lower rate also sustained."""
from tools.bench import _best


def rows(*flags):
    return [{"rate": 10000.0 * (i + 1), "lossless": ok} for i, ok in enumerate(flags)]


def test_a_lossless_step_after_a_lossy_one_does_not_count():
    assert _best(rows(True, True, False, True)) == 20000.0


def test_all_lossless_and_none_lossless():
    assert _best(rows(True, True, True)) == 30000.0
    assert _best(rows(False, True)) == 0
