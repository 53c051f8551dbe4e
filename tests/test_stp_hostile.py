"""An application's STP socket takes frames any local process could publish: a host table
or a data frame without the layout is dropped and counted, never raised into the
application (issue 12: a malformed state.hosts used to crash it at the next send)."""
from __future__ import annotations

from collections import deque

import pytest

from actors.stp import api
from actors.stp.replica import HostReplica
from actors.proto import topics

GOOD_ROW = ["bob", 0xB, [0xB0]]


@pytest.mark.parametrize("rows", [
    [["bob"]],                                  # short
    [[1, 0xB, [0xB0]]],                         # hostname not text
    [["bob", "11", [0xB0]]],                    # NID not an integer
    [["bob", -1, [0xB0]]],                      # NID out of range
    [["bob", 1 << 64, [0xB0]]],
    [["bob", 0xB, 7]],                          # locators not a list
    [["bob", 0xB, ["a"]]],                      # a locator not an integer
    [None], [7], ["bob"],
])
def test_a_bad_row_is_skipped_and_counted_and_the_good_ones_kept(rows):
    replica = HostReplica()
    replica.load(rows + [GOOD_ROW])
    assert replica.bad_rows == 1
    assert replica.resolve("bob") == (0xB, [0xB0])


@pytest.mark.parametrize("table", [7, "bob", {"bob": 1}, b"x"])
def test_a_table_that_is_not_a_list_leaves_the_copy_as_it_was(table):
    replica = HostReplica()
    replica.load([GOOD_ROW])
    replica.load(table)
    assert replica.bad_rows == 1
    assert replica.resolve("bob") == (0xB, [0xB0])


class _FakeBus:
    def __init__(self, frames):
        self.frames = deque(frames)

    def recv(self, timeout):
        return self.frames.popleft() if self.frames else None


def _socket(frames) -> api.StpSocket:
    sock = api.StpSocket.__new__(api.StpSocket)  # no node: only the receive path
    sock.bus = _FakeBus(frames)
    sock.hosts = HostReplica()
    sock.hosts.load([GOOD_ROW])
    sock._inbox = deque()
    sock.dropped_malformed = 0
    return sock


def test_frames_without_the_layout_are_dropped_and_counted_and_a_good_datagram_still_arrives():
    from actors.proto.stp import encode
    good_item = [0xB0, 0xB, 0xA0, 0xA, 0xA0, encode(7, 9, b"hello")]
    sock = _socket([
        (topics.STATE_HOSTS, [1, 2]),                 # body not a map
        (topics.STATE_HOSTS, {"hosts": 5}),           # table not a list
        (topics.STATE_HOSTS, {"hosts": [["x"], GOOD_ROW]}),  # a bad row, a good one
        (topics.stp_rx(9), "garbage"),
        (topics.stp_rx(9), {"p": 3}),                 # batch not a list
        (topics.stp_rx(9), {"p": [[1, 2], good_item]}),  # one bad item, then a good one
    ])
    sock._pump(0)
    assert sock.dropped_malformed == 4
    assert sock.hosts.bad_rows == 2 and sock.hosts.resolve("bob") == (0xB, [0xB0])
    assert [entry[0] for entry in sock._inbox] == [b"hello"]
