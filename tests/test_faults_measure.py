"""ilnp-faults' arithmetic: outage and loss around a kill, from received packets."""
from tools.experiment.analysis import Packet
from tools.faults.measure import cost

MS = 1_000_000


def packets(rate, seconds, missing=range(0)):
    period = 1000 // rate
    return [Packet(seq, seq * period * MS, (seq + 1) * period * MS + 2 * MS, "", "", "")
            for seq in range(rate * seconds) if seq not in missing]


def test_a_gap_after_the_kill_is_the_outage_and_its_packets_are_lost():
    got = packets(100, 10, missing=range(300, 330))  # 0.3 s silent from 3.0 s
    c = cost(got, 0, 100, 2_900 * MS)
    assert c.lost == 30 and 300 <= c.outage_ms <= 320


def test_no_gap_no_loss_and_the_next_kill_is_not_charged():
    got = packets(100, 10, missing=range(650, 700))
    assert cost(got, 0, 100, 3_000 * MS, next_kill_ns=6_000 * MS) == cost(packets(100, 10), 0, 100, 3_000 * MS)
    assert cost(got, 0, 100, 3_000 * MS).lost == 50  # without the limit, the next kill's loss counts
