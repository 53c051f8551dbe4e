"""Locator update wire format (PROTOCOL.md, next header 44)."""
import pytest
from hypothesis import given, strategies as st

from actors.proto.locator_update import (
    Ack, LocatorUpdateWireError, Update, decode, encode_ack, encode_update)

locators = st.integers(min_value=0, max_value=2**64 - 1)


def test_update_layout():
    body = encode_update([0xA, 0xFFFF_0000_0000_000B])
    assert body == bytes.fromhex("01" "000000000000000a" "ffff00000000000b")
    assert decode(body) == Update((0xA, 0xFFFF_0000_0000_000B))


def test_ack_layout():
    assert encode_ack() == b"\x00"
    assert decode(b"\x00") == Ack()


def test_decode_accepts_bytearray_and_memoryview():
    body = encode_update([7])
    assert decode(bytearray(body)) == Update((7,))
    assert decode(memoryview(body)) == Update((7,))


@pytest.mark.parametrize("body, why", [
    (b"", "empty"),
    (b"\x02" + bytes(8), "unknown type"),
    (b"\xff", "unknown type"),
    (b"\x01", "no locator"),
    (b"\x01" + bytes(7), "not 1 + 8k"),
    (b"\x01" + bytes(9), "not 1 + 8k"),
    (b"\x00\x00", "ack with trailing bytes"),
    (b"\x00" + bytes(8), "ack with trailing bytes"),
])
def test_decode_rejects(body, why):
    with pytest.raises(LocatorUpdateWireError):
        decode(body)


def test_wire_error_is_a_value_error():
    assert issubclass(LocatorUpdateWireError, ValueError)


@pytest.mark.parametrize("locs", [[], [-1], [2**64]])
def test_encode_rejects_bad_locators(locs):
    with pytest.raises(LocatorUpdateWireError):
        encode_update(locs)


@given(st.lists(locators, min_size=1, max_size=40))
def test_update_round_trip(locs):
    body = encode_update(locs)
    assert len(body) == 1 + 8 * len(locs)
    assert decode(body) == Update(tuple(locs))


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_the_wire_error(data):
    try:
        msg = decode(data)
    except LocatorUpdateWireError:
        return
    # Whatever decodes re-encodes to the same bytes: the format has one spelling.
    assert (encode_ack() if msg == Ack() else encode_update(msg.locs)) == data
