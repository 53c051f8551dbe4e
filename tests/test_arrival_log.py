"""The router's arrival log (actors/router/arrivals.py): data per arrival locator, for
mobility's handoff figures; bounded."""
from __future__ import annotations

from actors.router.arrivals import ArrivalLog

A, B, C = 0xA, 0xB, 0xC


def test_counts_first_and_last_arrival_and_the_others_at_the_first():
    log = ArrivalLog()
    log.joined([A])
    for t in (10, 20, 30):
        log.now = t
        log.note(A)
    log.joined([A, B])
    log.now = 40
    log.note(B)
    log.now = 45
    log.note(A)
    assert log.view() == {A: [4, 10, 45, {}], B: [1, 40, 40, {A: 3}]}


def test_a_locator_joined_again_starts_afresh_and_one_left_is_kept():
    log = ArrivalLog()
    log.joined([A, B])
    log.now = 5
    log.note(A)
    log.note(B)
    log.joined([B])          # a left: kept (its late arrivals are still asked for)
    assert A in log.view()
    log.joined([A, B])       # a joined again
    assert A not in log.view() and log.view()[B][0] == 1


def test_bounded_dropping_locators_not_joined_least_recently_heard_first():
    log = ArrivalLog(max_locators=3)
    log.joined([0x100])
    for i, loc in enumerate([1, 2, 3, 0x100, 4]):
        log.now = i
        log.note(loc)
    assert set(log.view()) == {3, 0x100, 4}
