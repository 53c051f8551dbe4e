"""Discovery body wire format: layout, validation, decoder properties."""
import pytest
from hypothesis import given, strategies as st

from actors.proto.discovery import (
    FIXED_LEN, MAX_HOSTNAME_BYTES, BadHostname, DiscoveryMessage, DiscoveryWireError, decode, encode,
    valid_hostname)

ROUTER = 0xFFFF_0000_0000_000D
LOC_A = 0xA


def test_layout_matches_protocol():
    body = encode(ROUTER, LOC_A, True, "router")
    assert body == bytes.fromhex("ffff00000000000d" "000000000000000a" "01") + b"router"
    assert encode(ROUTER, LOC_A, False, "router")[16] == 0


def test_decode_fields():
    body = bytes.fromhex("ffff00000000000d000000000000000b00") + b"b-o_b.1"
    assert decode(body) == DiscoveryMessage(ROUTER, 0xB, False, "b-o_b.1")


def test_decode_accepts_memoryview():
    body = encode(ROUTER, LOC_A, True, "router")
    assert decode(memoryview(body)) == decode(body)


@pytest.mark.parametrize("body, why, bad_name", [
    (b"", "short", False),
    (bytes(16), "short", False),
    (bytes(17), "no hostname", False),
    (bytes(16) + b"\x02x", "flag 2", False),
    (bytes(16) + b"\xffx", "flag 255", False),
    (bytes(17) + b"\xff\xfe", "bad utf-8", False),
    (bytes(17) + b"\xed\xa0\x80", "utf-8 surrogate", False),
    (bytes(17) + b"al\nice", "newline", True),
    (bytes(17) + b"\x1b[31m", "terminal escape", True),
    (bytes(17) + b"a\x00", "nul", True),
    (bytes(17) + "a\u0085".encode(), "C1 control", True),
    (bytes(17) + "bøb".encode(), "a letter outside ASCII", True),
    (bytes(17) + b"bob smith", "space", True),
    (bytes(17) + b"a" * (MAX_HOSTNAME_BYTES + 1), "too long", True),
])
def test_decode_rejects(body, why, bad_name):
    with pytest.raises(DiscoveryWireError) as err:
        decode(body)
    assert isinstance(err.value, BadHostname) == bad_name, why


def test_longest_hostname_accepted():
    name = "x" * MAX_HOSTNAME_BYTES
    assert MAX_HOSTNAME_BYTES == 63
    assert decode(encode(1, 2, False, name)).hostname == name


@pytest.mark.parametrize("nid, loc, name", [
    (-1, 0, "a"), (1 << 64, 0, "a"), (0, 1 << 64, "a"),
    (0, 0, ""), (0, 0, "a\tb"), (0, 0, "\ud800"), (0, 0, "x" * 64), (0, 0, b"bytes"), (0, 0, "é"),
])
def test_encode_rejects(nid, loc, name):
    with pytest.raises(DiscoveryWireError):
        encode(nid, loc, True, name)


def test_error_is_a_value_error():
    assert issubclass(DiscoveryWireError, ValueError)


u64 = st.integers(0, (1 << 64) - 1)
hostnames = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.",
    min_size=1, max_size=MAX_HOSTNAME_BYTES)


@given(u64, u64, st.booleans(), hostnames)
def test_roundtrip(nid, loc, solicitation, name):
    body = encode(nid, loc, solicitation, name)
    assert len(body) == FIXED_LEN + len(name.encode())
    assert decode(body) == DiscoveryMessage(nid, loc, solicitation, name)


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_own_error(data):
    try:
        msg = decode(data)
    except DiscoveryWireError:
        return
    # Whatever decodes is canonical: encoding it gives back the same bytes.
    assert encode(msg.nid, msg.loc, msg.solicitation, msg.hostname) == data


@given(st.binary(min_size=17, max_size=17).map(lambda b: b[:16] + bytes([b[16] % 2])),
       st.binary(min_size=1, max_size=40))
def test_near_valid_bodies_only_raise_own_error(fixed, tail):
    # Valid fixed part, arbitrary hostname bytes: exercises the UTF-8 and hostname-rule checks.
    try:
        msg = decode(fixed + tail)
    except DiscoveryWireError:
        return
    assert msg.hostname.encode() == tail and valid_hostname(msg.hostname)
