"""ILNPv6 header and [ext] destination options: layout, validation, round trips."""
import pytest
from hypothesis import given, settings, strategies as st

from actors.proto import ilnp as wire
from actors.proto.ilnp import WireError

U64 = st.integers(0, 2**64 - 1)
A, B = 0xA, 0xB
ALICE, BOB = 0xFFFF_0000_0000_000A, 0xFFFF_0000_0000_000B


def test_header_layout_field_by_field():
    d = wire.encode(A, ALICE, B, BOB, 42, b"xyz", 3, version=6, traffic_class=0xAB, flow_label=0x12345)
    assert len(d) == 43
    assert d[0:4] == bytes.fromhex("6ab12345")
    assert d[4:6] == b"\x00\x03"  # payload length
    assert d[6] == 42 and d[7] == 3
    assert d[8:16] == A.to_bytes(8, "big") and d[16:24] == ALICE.to_bytes(8, "big")
    assert d[24:32] == B.to_bytes(8, "big") and d[32:40] == BOB.to_bytes(8, "big")
    assert d[40:] == b"xyz"
    p = wire.decode(d)
    assert (p.version, p.traffic_class, p.flow_label) == (6, 0xAB, 0x12345)
    assert (p.next_header, p.hop_limit, p.src_loc, p.src_nid, p.dst_loc, p.dst_nid, p.payload) == (
        42, 3, A, ALICE, B, BOB, b"xyz")


def test_default_version_is_6_and_0_is_accepted():
    assert wire.encode(A, ALICE, B, BOB, 42, b"", 3)[0] >> 4 == 6
    d0 = wire.encode(A, ALICE, B, BOB, 42, b"", 3, version=0)
    assert d0[0] == 0 and wire.decode(d0).version == 0


@pytest.mark.parametrize("version", [1, 4, 5, 7, 15])
def test_other_versions_are_rejected(version):
    d = bytearray(wire.encode(A, ALICE, B, BOB, 42, b"ab", 3))
    d[0] = (version << 4) | (d[0] & 0x0F)
    with pytest.raises(WireError, match="version"):
        wire.decode(bytes(d))
    with pytest.raises(WireError):
        wire.encode(A, ALICE, B, BOB, 42, b"", 3, version=version)


def test_short_datagram_is_rejected():
    d = wire.encode(A, ALICE, B, BOB, 42, b"", 3)
    with pytest.raises(WireError, match="shorter"):
        wire.decode(d[:39])
    with pytest.raises(WireError):
        wire.decode(b"")


@pytest.mark.parametrize("cut, extra", [(1, b""), (0, b"!"), (3, b"")])
def test_payload_length_must_match_the_datagram(cut, extra):
    d = wire.encode(A, ALICE, B, BOB, 42, b"abc", 3)
    with pytest.raises(WireError, match="payload length"):
        wire.decode(d[:len(d) - cut] + extra)


def test_encode_rejects_out_of_range_fields():
    with pytest.raises(WireError):
        wire.encode(2**64, ALICE, B, BOB, 42, b"", 3)
    with pytest.raises(WireError):
        wire.encode(A, ALICE, B, BOB, 256, b"", 3)
    with pytest.raises(WireError):
        wire.encode(A, ALICE, B, BOB, 42, b"", -1)
    with pytest.raises(WireError):
        wire.encode(A, ALICE, B, BOB, 42, bytes(65536), 3)
    with pytest.raises(WireError):
        wire.encode(A, ALICE, B, BOB, 42, b"", 3, flow_label=1 << 20)


def test_set_hop_limit_changes_only_that_byte():
    d = wire.encode(A, ALICE, B, BOB, 44, b"\x01" + bytes(8), 3, version=0)
    f = wire.set_hop_limit(d, 2)
    assert f[7] == 2 and f[:7] == d[:7] and f[8:] == d[8:]
    assert wire.decode(f).version == 0  # a forwarder keeps the sender's version


# --- destination options -------------------------------------------------------------

NONCE12 = bytes(range(1, 13))


def test_destopts_with_nonce_and_seq_layout():
    h = wire.encode_destopts(44, NONCE12, 7)
    # nh, len, nonce TLV (2+12), seq TLV (2+4) = 22 -> PadN of 2 to 24 bytes
    assert len(h) == 24 and h[0] == 44 and h[1] == 2
    assert h[2:4] == b"\x8b\x0c" and h[4:16] == NONCE12
    assert h[16:22] == b"\x1e\x04\x00\x00\x00\x07"
    assert h[22:24] == b"\x01\x00"
    assert wire.decode_destopts(h + b"body") == (44, NONCE12, 7, None, b"body")


@pytest.mark.parametrize("nonce, seq, size", [
    (None, None, 8), (b"abcd", None, 8), (NONCE12, None, 16), (None, 1, 8), (b"abcd", 1, 16)])
def test_destopts_padded_to_8_octets(nonce, seq, size):
    h = wire.encode_destopts(42, nonce, seq)
    assert len(h) == size and h[1] == size // 8 - 1
    assert wire.decode_destopts(h) == (42, nonce, seq, None, b"")


def test_destopts_pad1_is_used_for_a_single_byte_gap():
    # nh, len, unknown skippable option 0x3f of 3 bytes (5 bytes) -> 7, then one Pad1
    h = bytes([42, 0, 0x3F, 3, 1, 2, 3, 0])
    assert wire.decode_destopts(h) == (42, None, None, None, b"")


def test_unknown_option_with_top_bits_00_is_skipped():
    h = bytes([42, 1, 0x3F, 4, 9, 9, 9, 9]) + b"\x8b\x04abcd" + bytes([1, 0])
    assert wire.decode_destopts(h + b"x") == (42, b"abcd", None, None, b"x")


@pytest.mark.parametrize("opt_type", [0x40, 0x7F, 0x80, 0xC2, 0xFF])
def test_unknown_option_with_other_top_bits_is_dropped(opt_type):
    h = bytes([42, 0, opt_type, 4, 0, 0, 0, 0])
    with pytest.raises(WireError, match="unknown option"):
        wire.decode_destopts(h)


@pytest.mark.parametrize("bad", [
    bytes([42, 0, 0x8B, 5, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0, 0])[:8],   # overruns the header
    bytes([42, 1, 0x8B, 5, 1, 2, 3, 4, 5] + [0] * 7),                  # nonce of 5 bytes
    bytes([42, 0, 0x1E, 2, 0, 0, 1, 0]),                               # seq of 2 bytes
    bytes([42, 0, 0, 0, 0, 0, 0, 1]),                                  # truncated TLV at the end
    bytes([42, 1, 0, 0, 0, 0, 0, 0]),                                  # says 16 bytes, has 8
    bytes([42, 0, 0, 0]),                                              # shorter than 8
])
def test_malformed_destopts_raise_wire_error(bad):
    with pytest.raises(WireError):
        wire.decode_destopts(bad)


def test_encode_destopts_validates():
    with pytest.raises(WireError):
        wire.encode_destopts(42, b"12345", None)
    with pytest.raises(WireError):
        wire.encode_destopts(42, None, 2**32)
    with pytest.raises(WireError):
        wire.encode_destopts(42, None, -1)


def test_packet_with_opts_round_trip_and_plain_without():
    d = wire.encode_with_opts(A, ALICE, B, BOB, 44, b"\x00", 3, {"nonce": NONCE12, "seq": 5})
    assert d[6] == 60 and wire.decode(d).payload[0] == 44
    p, opts = wire.decode_with_opts(d)
    assert (p.next_header, p.payload, opts) == (44, b"\x00", {"nonce": NONCE12, "seq": 5, "sig": None})
    plain = wire.encode_with_opts(A, ALICE, B, BOB, 44, b"\x00", 3, {"nonce": None, "seq": None})
    assert plain == wire.encode(A, ALICE, B, BOB, 44, b"\x00", 3)
    assert wire.decode_with_opts(plain)[1] is None


# --- properties ----------------------------------------------------------------------

@given(src_loc=U64, src_nid=U64, dst_loc=U64, dst_nid=U64, nh=st.integers(0, 255),
       hop=st.integers(0, 255), version=st.sampled_from([0, 6]), tc=st.integers(0, 255),
       fl=st.integers(0, 0xFFFFF), payload=st.binary(max_size=300))
def test_header_round_trip(src_loc, src_nid, dst_loc, dst_nid, nh, hop, version, tc, fl, payload):
    d = wire.encode(src_loc, src_nid, dst_loc, dst_nid, nh, payload, hop, version, tc, fl)
    assert wire.decode(d) == (version, tc, fl, nh, hop, src_loc, src_nid, dst_loc, dst_nid, payload)


@given(st.binary(max_size=120))
def test_random_bytes_decode_or_raise_wire_error(data):
    try:
        p = wire.decode(data)
    except WireError:
        return
    assert p.version in (0, 6) and len(p.payload) == len(data) - 40


@given(st.binary(min_size=40, max_size=120))
@settings(max_examples=300)
def test_random_headers_with_consistent_length(data):
    # force a consistent payload length so decoding goes past the length check
    data = data[:4] + (len(data) - 40).to_bytes(2, "big") + data[6:]
    try:
        p = wire.decode(data)
    except WireError as exc:
        assert "version" in str(exc)
        return
    assert wire.encode(p.src_loc, p.src_nid, p.dst_loc, p.dst_nid, p.next_header, p.payload,
                       p.hop_limit, p.version, p.traffic_class, p.flow_label) == data


@given(nh=st.integers(0, 255), nonce=st.none() | st.binary(min_size=4, max_size=4) | st.binary(min_size=12, max_size=12),
       seq=st.none() | st.integers(0, 2**32 - 1), rest=st.binary(max_size=50))
def test_destopts_round_trip(nh, nonce, seq, rest):
    h = wire.encode_destopts(nh, nonce, seq)
    assert len(h) % 8 == 0
    assert wire.decode_destopts(h + rest) == (nh, nonce, seq, None, rest)


@given(st.binary(max_size=64))
@settings(max_examples=500)
def test_random_destopts_decode_or_raise_wire_error(data):
    try:
        nh, nonce, seq, _sig, rest = wire.decode_destopts(data)
    except WireError:
        return
    assert nonce is None or len(nonce) in (4, 12)
    assert seq is None or 0 <= seq < 2**32
    assert len(rest) <= len(data) - 8


@given(st.binary(max_size=200))
def test_random_bytes_decode_with_opts_never_raise_other_errors(data):
    try:
        wire.decode_with_opts(data)
    except WireError:
        pass
