"""ProxyCore: the mapping table's rules, the per-datagram decisions, persistence."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.proxy.core import (
    DeliverLocal, Dropped, Mapping, MappingError, ProxyCore, SendStp, check_host, check_port, max_payload,
)
from actors.proto.stp import decode, encode

PROXY_PORT = 10001
BOB = ["bob", 0xFFFF_0000_0000_000B, [0xB, 0xC], 1000]     # a state.hosts row
CAROL = ["carol", 0xFFFF_0000_0000_000C, [0xC], 500]
BOB_NID, CAROL_NID = BOB[1], CAROL[1]
LO = "127.0.0.1"                   # where a local application sends from


def core_with(*maps: tuple[int, str, int], hosts=(BOB,), bind: str = "127.0.0.1") -> ProxyCore:
    core = ProxyCore(PROXY_PORT, mtu=1440, bind=bind)
    core.load_hosts(list(hosts))
    for local, host, remote in maps:
        core.put(core.check_map(local, host, remote))
    return core


# ---- validation -----------------------------------------------------------------

@pytest.mark.parametrize("value", [0, -1, 65536, 1 << 40, "5000", 5000.0, None, True, False])
def test_bad_ports_are_refused(value):
    with pytest.raises(MappingError, match="must be 1-65535"):
        check_port(value, "local port")


@pytest.mark.parametrize("value", [1, 7, 5000, 65535])
def test_good_ports_pass(value):
    assert check_port(value, "local port") == value


@pytest.mark.parametrize("value", ["", "a" * 256, "bob\n", "bob\x00", None, 42, b"bob"])
def test_bad_hosts_are_refused(value):
    with pytest.raises(MappingError, match="bad remote host"):
        check_host(value)


def test_max_payload_leaves_room_for_both_headers():
    assert max_payload(1440) == 1396
    assert ProxyCore(PROXY_PORT, mtu=1280).max_payload == 1236


def test_the_proxy_port_cannot_be_a_local_port():
    with pytest.raises(MappingError, match="proxy port itself"):
        ProxyCore(PROXY_PORT).check_map(PROXY_PORT, "bob", 6000)


def test_a_mapped_port_is_not_moved_without_replace():
    core = core_with((5000, "bob", 6000))
    with pytest.raises(MappingError, match=r"already mapped to bob:6000.*--replace"):
        core.check_map(5000, "carol", 6000)
    with pytest.raises(MappingError, match="already mapped"):
        core.check_map(5000, "bob", 6001)
    assert core.get(5000) == Mapping(5000, "bob", 6000)


def test_mapping_again_to_the_same_place_is_fine():
    core = core_with((5000, "bob", 6000))
    assert core.check_map(5000, "bob", 6000) == Mapping(5000, "bob", 6000)


def test_replace_moves_a_mapping_and_reports_the_old_one():
    core = core_with((5000, "bob", 6000), hosts=(BOB, CAROL))
    new = core.check_map(5000, "carol", 7000, replace=True)
    assert core.put(new) == Mapping(5000, "bob", 6000)
    [send] = core.from_local(LO, 5000, b"x")
    assert send.nid == CAROL[1] and decode(send.segment) == (5000, 7000, b"x")


def test_check_map_changes_nothing():
    core = core_with()
    core.check_map(5000, "bob", 6000)
    assert core.mappings() == [] and core.get(5000) is None


def test_remove():
    core = core_with((5000, "bob", 6000), (5001, "bob", 6001))
    assert core.remove(5000) == Mapping(5000, "bob", 6000)
    assert core.ports() == [5001]
    with pytest.raises(MappingError, match="local port 5000 is not mapped"):
        core.remove(5000)
    with pytest.raises(MappingError, match="bad local port"):
        core.remove(0)
    assert core.from_local(LO, 5000, b"x") == [Dropped("unmapped", 5000, 1)]


def test_mappings_are_listed_by_port():
    core = core_with((5002, "bob", 1), (5000, "bob", 2), (5001, "carol", 3))
    assert [m.local_port for m in core.mappings()] == [5000, 5001, 5002]


# ---- local datagram -> overlay ---------------------------------------------------

def test_a_mapped_datagram_goes_over_stp_from_its_port_to_the_remote_port():
    core = core_with((5000, "bob", 6000))
    [send] = core.from_local(LO, 5000, b"hello")
    assert send == SendStp(BOB[1], BOB[2], encode(5000, 6000, b"hello"))
    assert core.counters["to_overlay"] == 1


def test_a_memoryview_datagram_is_copied_into_the_segment():
    core = core_with((5000, "bob", 6000))
    buf = bytearray(b"abcdef")
    [send] = core.from_local(LO, 5000, memoryview(buf)[:3])
    buf[:3] = b"XYZ"  # the shell reuses its receive buffer
    assert decode(send.segment) == (5000, 6000, b"abc") and isinstance(send.segment, bytes)


def test_unmapped_source_port_is_dropped_and_counted():
    core = core_with((5000, "bob", 6000))
    assert core.from_local(LO, 5001, b"abc") == [Dropped("unmapped", 5001, 3)]
    assert core.counters["unmapped"] == 1 and core.counters["to_overlay"] == 0


@pytest.mark.parametrize("size", [0, 1, 1395, 1396])
def test_every_size_up_to_the_largest_payload_is_sent(size):
    core = core_with((5000, "bob", 6000))
    data = bytes(range(256)) * 6
    [send] = core.from_local(LO, 5000, data[:size])
    assert decode(send.segment)[2] == data[:size]


@pytest.mark.parametrize("size", [1397, 1500, 65507])
def test_oversize_is_dropped_and_counted(size):
    core = core_with((5000, "bob", 6000))
    assert core.from_local(LO, 5000, bytes(size)) == [Dropped("oversize", 5000, size)]
    assert core.counters["oversize"] == 1 and core.counters["to_overlay"] == 0


def test_a_host_not_yet_discovered_is_accepted_then_works_when_it_appears():
    core = core_with((5000, "carol", 6000))
    assert not core.resolved(5000)
    assert core.from_local(LO, 5000, b"early") == [Dropped("host_unknown", 5000, 5)]
    assert core.counters["host_unknown"] == 1
    core.load_hosts([BOB, CAROL])
    assert core.resolved(5000)
    [send] = core.from_local(LO, 5000, b"late")
    assert send.nid == CAROL[1] and send.locs == CAROL[2]


def test_resolution_follows_the_remote_moving():
    core = core_with((5000, "bob", 6000))
    moved = ["bob", BOB[1], [0xD], 10]
    core.load_hosts([moved])
    [send] = core.from_local(LO, 5000, b"x")
    assert send.locs == [0xD]


def test_a_host_that_disappears_stops_the_flow():
    core = core_with((5000, "bob", 6000))
    core.load_hosts([CAROL])
    assert core.from_local(LO, 5000, b"x") == [Dropped("host_unknown", 5000, 1)]


def test_a_mapping_added_after_the_hosts_resolves_at_once():
    core = ProxyCore(PROXY_PORT)
    core.load_hosts([BOB])
    core.put(core.check_map(5000, "bob", 6000))
    assert core.resolved(5000)


# ---- overlay segment -> local ------------------------------------------------------

def test_an_stp_segment_for_a_mapped_port_goes_to_that_local_port():
    core = core_with((5000, "bob", 6000), (5001, "bob", 6001))
    assert core.from_overlay(BOB_NID, encode(6001, 5001, b"reply")) == [DeliverLocal(5001, b"reply")]
    assert core.from_overlay(BOB_NID, encode(6000, 5000, b"")) == [DeliverLocal(5000, b"")]
    assert core.counters["to_local"] == 2


def test_an_stp_segment_for_an_unmapped_port_is_dropped():
    core = core_with((5000, "bob", 6000))
    assert core.from_overlay(BOB_NID, encode(6000, 5002, b"x")) == []
    assert core.counters["stp_unmapped"] == 1


@pytest.mark.parametrize("segment", [b"", b"\x00", b"\x00\x01\x02"])
def test_a_short_stp_segment_is_counted_not_raised(segment):
    core = core_with((5000, "bob", 6000))
    assert core.from_overlay(BOB_NID, segment) == []
    assert core.counters["stp_malformed"] == 1


@given(st.binary(max_size=64))
def test_any_segment_never_raises(segment):
    core = core_with((5000, "bob", 6000))
    out = core.from_overlay(BOB_NID, segment)
    if len(segment) >= 4 and segment[2:4] == (5000).to_bytes(2, "big"):
        if segment[:2] == (6000).to_bytes(2, "big"):
            assert out == [DeliverLocal(5000, segment[4:])]
        else:
            [drop] = out
            assert drop.reason == "from_unmapped_remote"
    else:
        assert out == []


@given(st.lists(st.tuples(st.integers(1, 40), st.binary(max_size=8)), max_size=30))
def test_no_datagram_crosses_over_between_mappings(flows):
    """With many mappings, each datagram leaves with its own port pair, and each reply
    comes back to exactly the port it was addressed to."""
    core = core_with(*((5000 + i, "bob", 6000 + i) for i in range(1, 41)))
    for i, data in flows:
        [send] = core.from_local(LO, 5000 + i, data)
        assert decode(send.segment) == (5000 + i, 6000 + i, data)
        assert core.from_overlay(BOB_NID, encode(6000 + i, 5000 + i, data)) == [DeliverLocal(5000 + i, data)]


# ---- who may send into the overlay (issue 11: loopback, or the bind address's host) ----

@pytest.mark.parametrize("source", ["127.0.0.1", "127.1.2.3", "127.255.255.254", "::1",
                                    "::ffff:127.0.0.1", "::ffff:127.9.9.9"])
def test_loopback_sources_are_accepted(source):
    core = core_with((5000, "bob", 6000))
    [send] = core.from_local(source, 5000, b"x")
    assert isinstance(send, SendStp) and core.counters["from_foreign_source"] == 0


@pytest.mark.parametrize("source", ["10.0.0.5", "192.168.1.1", "fe80::1", "fe80::1%eth0", "2001:db8::1",
                                    "::ffff:10.0.0.5", "0.0.0.0", "::", "not an address", ""])
def test_a_foreign_source_is_refused_counted_and_named(source):
    core = core_with((5000, "bob", 6000))
    assert core.from_local(source, 5000, b"abc") == [Dropped("from_foreign_source", 5000, 3, source)]
    assert core.counters["from_foreign_source"] == 1 and core.counters["to_overlay"] == 0


def test_a_foreign_source_is_refused_before_anything_else_is_looked_at():
    core = core_with((5000, "carol", 6000))    # unresolved, and port 5001 unmapped, and oversize
    for port, size in ((5000, 3), (5001, 3), (5000, 5000)):
        assert core.from_local("10.0.0.5", port, bytes(size))[0].reason == "from_foreign_source"
    assert core.counters == {"from_foreign_source": 3}


@pytest.mark.parametrize("bind,source", [("10.0.0.1", "10.0.0.1"), ("10.0.0.1", "::ffff:10.0.0.1"),
                                         ("2001:db8::7", "2001:db8::7"), ("::ffff:10.0.0.1", "10.0.0.1")])
def test_the_bind_addresss_own_host_is_accepted_when_it_is_not_loopback(bind, source):
    core = core_with((5000, "bob", 6000), bind=bind)
    assert isinstance(core.from_local(source, 5000, b"x")[0], SendStp)
    assert isinstance(core.from_local("127.0.0.1", 5000, b"x")[0], SendStp)   # loopback still is
    assert core.from_local("10.0.0.2", 5000, b"x")[0].reason == "from_foreign_source"


@pytest.mark.parametrize("bind", ["127.0.0.1", "::1", "0.0.0.0", "::"])
def test_a_loopback_or_wildcard_bind_accepts_loopback_only(bind):
    core = core_with((5000, "bob", 6000), bind=bind)
    assert core.from_local("10.0.0.1", 5000, b"x")[0].reason == "from_foreign_source"
    assert core.from_local("0.0.0.0", 5000, b"x")[0].reason == "from_foreign_source"
    assert isinstance(core.from_local("127.0.0.1", 5000, b"x")[0], SendStp)


def test_many_foreign_sources_keep_the_verdict_cache_bounded():
    core = core_with((5000, "bob", 6000))
    for i in range(5000):
        core.from_local(f"10.{i >> 8 & 255}.{i & 255}.1", 5000, b"x")
    assert core.counters["from_foreign_source"] == 5000
    assert len(core._source_ok) <= 1024
    assert isinstance(core.from_local(LO, 5000, b"x")[0], SendStp)


# ---- who may deliver to a mapped port: its mapped remote (NID and STP port) ---------

def test_the_mapped_remote_is_delivered():
    core = core_with((5000, "bob", 6000))
    assert core.from_overlay(BOB_NID, encode(6000, 5000, b"hi")) == [DeliverLocal(5000, b"hi")]
    assert core.counters["from_unmapped_remote"] == 0


def test_another_nid_is_refused_counted_and_named():
    core = core_with((5000, "bob", 6000), hosts=(BOB, CAROL))
    assert core.from_overlay(CAROL_NID, encode(6000, 5000, b"evil")) == \
        [Dropped("from_unmapped_remote", 5000, 4, "[ffff:0:0:c]:6000")]
    assert core.counters["from_unmapped_remote"] == 1 and core.counters["to_local"] == 0


def test_an_unknown_nid_is_refused():
    core = core_with((5000, "bob", 6000))
    assert core.from_overlay(0x1234, encode(6000, 5000, b"x"))[0].reason == "from_unmapped_remote"


def test_the_mapped_remote_from_another_stp_port_is_refused():
    """A reply from the remote's service comes from REMOTE_PORT; anything else on bob
    (another application, another mapping) does not reach this one."""
    core = core_with((5000, "bob", 6000))
    assert core.from_overlay(BOB_NID, encode(6001, 5000, b"x")) == \
        [Dropped("from_unmapped_remote", 5000, 1, "[ffff:0:0:b]:6001")]
    assert core.counters["from_unmapped_remote"] == 1


def test_a_remote_not_yet_discovered_cannot_deliver():
    """Nothing to check the source against: refused (fail closed) until the host is known."""
    core = core_with((5000, "carol", 7000))
    assert core.from_overlay(CAROL_NID, encode(7000, 5000, b"early")) == \
        [Dropped("from_unresolved_remote", 5000, 5, "[ffff:0:0:c]:7000")]
    assert core.counters["from_unresolved_remote"] == 1
    core.load_hosts([BOB, CAROL])
    assert core.from_overlay(CAROL_NID, encode(7000, 5000, b"late")) == [DeliverLocal(5000, b"late")]


def test_the_accepted_nid_follows_the_host_table():
    """The check is against what REMOTE_HOST resolves to now: a new NID for the name
    replaces the old one, and a host that disappears delivers nothing."""
    core = core_with((5000, "bob", 6000))
    new_bob = ["bob", 0xFFFF_0000_0000_00BB, [0xB], 0]
    core.load_hosts([new_bob])
    assert core.from_overlay(BOB_NID, encode(6000, 5000, b"x"))[0].reason == "from_unmapped_remote"
    assert core.from_overlay(new_bob[1], encode(6000, 5000, b"x")) == [DeliverLocal(5000, b"x")]
    core.load_hosts([CAROL])
    assert core.from_overlay(new_bob[1], encode(6000, 5000, b"x"))[0].reason == "from_unresolved_remote"


def test_replace_moves_the_accepted_remote_too():
    core = core_with((5000, "bob", 6000), hosts=(BOB, CAROL))
    core.put(core.check_map(5000, "carol", 7000, replace=True))
    assert core.from_overlay(BOB_NID, encode(6000, 5000, b"x"))[0].reason == "from_unmapped_remote"
    assert core.from_overlay(CAROL_NID, encode(7000, 5000, b"x")) == [DeliverLocal(5000, b"x")]


# ---- --any-remote ------------------------------------------------------------------------

def test_any_remote_accepts_every_nid_and_port():
    core = ProxyCore(PROXY_PORT)
    core.load_hosts([BOB, CAROL])
    core.put(core.check_map(5000, "bob", 6000, any_remote=True))
    for nid, src in ((BOB_NID, 6000), (CAROL_NID, 6000), (BOB_NID, 1234), (0x99, 1)):
        assert core.from_overlay(nid, encode(src, 5000, b"hi")) == [DeliverLocal(5000, b"hi")]
    assert core.counters["to_local"] == 4 and core.counters["from_unmapped_remote"] == 0


def test_any_remote_accepts_even_before_its_host_is_known_and_still_sends_to_it():
    core = ProxyCore(PROXY_PORT)
    core.put(core.check_map(5000, "bob", 6000, any_remote=True))
    assert core.from_overlay(CAROL_NID, encode(9, 5000, b"x")) == [DeliverLocal(5000, b"x")]
    assert core.from_local(LO, 5000, b"reply") == [Dropped("host_unknown", 5000, 5)]
    core.load_hosts([BOB, CAROL])
    [send] = core.from_local(LO, 5000, b"reply")           # replies go to REMOTE_HOST:REMOTE_PORT
    assert send == SendStp(BOB_NID, BOB[2], encode(5000, 6000, b"reply"))


def test_any_remote_does_not_open_the_local_side():
    core = ProxyCore(PROXY_PORT)
    core.load_hosts([BOB])
    core.put(core.check_map(5000, "bob", 6000, any_remote=True))
    assert core.from_local("10.0.0.5", 5000, b"x")[0].reason == "from_foreign_source"


def test_any_remote_is_part_of_the_mapping():
    core = core_with(hosts=(BOB,))
    mapping = core.check_map(5000, "bob", 6000, any_remote=True)
    assert mapping == Mapping(5000, "bob", 6000, any_remote=True) != Mapping(5000, "bob", 6000)
    assert mapping.as_dict() == {"local_port": 5000, "remote_host": "bob", "remote_port": 6000,
                                 "any_remote": True}
    assert Mapping(5000, "bob", 6000).as_dict()["any_remote"] is False
    assert str(mapping) == "5000 -> bob:6000 (any remote)" and str(Mapping(5000, "bob", 6000)) == "5000 -> bob:6000"


def test_changing_any_remote_needs_replace():
    core = core_with((5000, "bob", 6000))
    with pytest.raises(MappingError, match=r"already mapped to bob:6000 without --any-remote.*--replace"):
        core.check_map(5000, "bob", 6000, any_remote=True)
    core.put(core.check_map(5000, "bob", 6000, replace=True, any_remote=True))
    assert core.get(5000).any_remote
    with pytest.raises(MappingError, match=r"already mapped to bob:6000 with --any-remote.*--replace"):
        core.check_map(5000, "bob", 6000)
    assert core.check_map(5000, "bob", 6000, any_remote=True).any_remote   # the same again: fine


@pytest.mark.parametrize("value", [1, "yes", None, 0])
def test_any_remote_must_be_a_bool(value):
    with pytest.raises(MappingError, match="bad any_remote"):
        ProxyCore(PROXY_PORT).check_map(5000, "bob", 6000, any_remote=value)


# ---- persistence -----------------------------------------------------------------

def test_saved_mappings_come_back_through_json():
    core = core_with((5001, "carol", 7), (5000, "bob", 6000))
    saved = json.loads(json.dumps(core.saved()))
    again = ProxyCore(PROXY_PORT)
    assert again.restore(saved) == [Mapping(5000, "bob", 6000), Mapping(5001, "carol", 7)]
    assert again.mappings() == core.mappings()
    assert again.counters["bad_saved"] == 0


def test_restore_skips_bad_entries_and_counts_them():
    saved = {"version": 1, "mappings": [
        {"local_port": 5000, "remote_host": "bob", "remote_port": 6000},
        {"local_port": 0, "remote_host": "bob", "remote_port": 6000},
        {"local_port": 5001, "remote_host": "", "remote_port": 6000},
        {"local_port": 5002, "remote_port": 6000},
        {"local_port": 5000, "remote_host": "carol", "remote_port": 1},   # a second 5000
        {"local_port": PROXY_PORT, "remote_host": "bob", "remote_port": 1},
        "junk",
    ]}
    core = ProxyCore(PROXY_PORT)
    assert core.restore(saved) == [Mapping(5000, "bob", 6000)]
    assert core.counters["bad_saved"] == 6


@pytest.mark.parametrize("saved", [None, [], {"version": 2, "mappings": []}, {"version": 1}, "x"])
def test_restore_of_an_unknown_shape_is_counted(saved):
    core = ProxyCore(PROXY_PORT)
    assert core.restore(saved) == []
    assert core.counters["bad_saved"] == 1


def test_restored_mappings_resolve_with_the_hosts_already_known():
    core = ProxyCore(PROXY_PORT)
    core.load_hosts([BOB])
    core.restore({"version": 1, "mappings": [{"local_port": 5000, "remote_host": "bob", "remote_port": 6}]})
    [send] = core.from_local(LO, 5000, b"x")
    assert isinstance(send, SendStp)


def test_the_any_remote_flag_comes_back_through_json():
    core = core_with((5001, "carol", 7), (5000, "bob", 6000))
    core.put(core.check_map(5002, "bob", 6002, any_remote=True))
    saved = json.loads(json.dumps(core.saved()))
    assert saved["version"] == 1
    assert [m["any_remote"] for m in saved["mappings"]] == [False, False, True]
    again = ProxyCore(PROXY_PORT)
    assert again.restore(saved) == [Mapping(5000, "bob", 6000), Mapping(5001, "carol", 7),
                                    Mapping(5002, "bob", 6002, any_remote=True)]
    assert again.counters["bad_saved"] == 0


def test_an_old_file_without_the_flag_loads_as_mapped_remote_only():
    old_file = {"version": 1, "mappings": [{"local_port": 5000, "remote_host": "bob", "remote_port": 6000}]}
    core = ProxyCore(PROXY_PORT)
    core.load_hosts([BOB, CAROL])
    assert core.restore(old_file) == [Mapping(5000, "bob", 6000, any_remote=False)]
    assert core.from_overlay(CAROL_NID, encode(6000, 5000, b"x"))[0].reason == "from_unmapped_remote"


@pytest.mark.parametrize("flag", ["true", 1, None, [True]])
def test_a_saved_entry_with_a_bad_flag_is_skipped_and_counted(flag):
    saved = {"version": 1, "mappings": [
        {"local_port": 5000, "remote_host": "bob", "remote_port": 6000, "any_remote": flag},
        {"local_port": 5001, "remote_host": "bob", "remote_port": 6001, "any_remote": True}]}
    core = ProxyCore(PROXY_PORT)
    assert core.restore(saved) == [Mapping(5001, "bob", 6001, any_remote=True)]
    assert core.counters["bad_saved"] == 1
