"""STP segment: | src port (2) | dst port (2) | data |."""
import pytest
from hypothesis import given, strategies as st

from actors.proto import stp as wire
from actors.proto.stp import StpError

PORT = st.integers(0, 65535)


def test_layout():
    seg = wire.encode(1000, 0xABCD, b"hi")
    assert seg == b"\x03\xe8\xab\xcdhi"
    assert wire.decode(seg) == (1000, 0xABCD, b"hi")


def test_empty_data_is_valid():
    assert wire.decode(wire.encode(0, 65535, b"")) == (0, 65535, b"")


@pytest.mark.parametrize("src, dst", [(-1, 1), (1, 65536), (70000, 0)])
def test_ports_out_of_range(src, dst):
    with pytest.raises(StpError):
        wire.encode(src, dst, b"")


@pytest.mark.parametrize("seg", [b"", b"\x00", b"\x00\x01\x02"])
def test_short_segment(seg):
    with pytest.raises(StpError):
        wire.decode(seg)


@given(PORT, PORT, st.binary(max_size=200))
def test_round_trip(src, dst, data):
    assert wire.decode(wire.encode(src, dst, data)) == (src, dst, data)


@given(st.binary(max_size=20))
def test_random_bytes_decode_or_raise_stp_error(data):
    try:
        src, dst, rest = wire.decode(data)
    except StpError:
        assert len(data) < 4
        return
    assert wire.encode(src, dst, rest) == data
