"""The ILNPv6 header and the [ext] destination options header (PROTOCOL.md).

Per-packet path: precompiled Structs, no dicts in the hot decoders. `unpack_header`
is the router's fast path (a plain validated tuple); `decode` is the readable one.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from .numbers import NH_DESTOPTS

HEADER_LEN = 40
HEADER = struct.Struct("!IHBBQQQQ")  # version|tc|flow, payload length, nh, hop, 4 x 64-bit
_unpack_header_from = HEADER.unpack_from
_pack_header = HEADER.pack

VERSIONS = (0, 6)  # the original sends 0; we send 6

OPT_PAD1 = 0x00
OPT_PADN = 0x01
OPT_NONCE = 0x8B  # RFC 6744 ILNP Nonce
OPT_SEQ = 0x1E  # RFC 4727 experimental: top bits 00, so unknowing nodes skip it
OPT_SIG = 0x3E  # [ext] signature: RFC 4727 experimental, top bits 00 (PROTOCOL.md)
NONCE_LENGTHS = (4, 12)
SIG_OPTION_LEN = 96  # 32-byte Ed25519 public key + 64-byte signature

_SEQ_OPTION = struct.Struct("!BBI")
_U32 = struct.Struct("!I")
_ONE_BYTE = [bytes((i,)) for i in range(256)]


class WireError(ValueError):
    """Bytes that are not a valid ILNPv6 packet (or destination options header)."""


class Packet(NamedTuple):
    version: int
    traffic_class: int
    flow_label: int
    next_header: int
    hop_limit: int
    src_loc: int
    src_nid: int
    dst_loc: int
    dst_nid: int
    payload: bytes


def encode(src_loc: int, src_nid: int, dst_loc: int, dst_nid: int, next_header: int,
           payload: bytes, hop_limit: int, version: int = 6,
           traffic_class: int = 0, flow_label: int = 0) -> bytes:
    """Header + payload. Raises WireError for values that do not fit their fields."""
    if version != 6 and version != 0:
        raise WireError(f"version {version} is not 0 or 6")
    if traffic_class or flow_label:
        if not (0 <= traffic_class <= 0xFF and 0 <= flow_label <= 0xFFFFF):
            raise WireError("traffic class or flow label out of range")
    try:
        head = _pack_header((version << 28) | (traffic_class << 20) | flow_label,
                            len(payload), next_header, hop_limit,
                            src_loc, src_nid, dst_loc, dst_nid)
    except struct.error as exc:
        raise WireError(f"header field out of range: {exc}") from None
    return head + payload


def unpack_header(datagram: bytes) -> tuple:
    """Validated raw fields: (ver_tc_flow, payload_len, nh, hop, src_loc, src_nid, dst_loc, dst_nid)."""
    size = len(datagram)
    if size < HEADER_LEN:
        raise WireError(f"datagram of {size} bytes is shorter than the 40-byte header")
    fields = _unpack_header_from(datagram)
    if fields[1] != size - HEADER_LEN:
        raise WireError(f"payload length {fields[1]} but {size - HEADER_LEN} bytes follow the header")
    version = fields[0] >> 28
    if version != 6 and version != 0:
        raise WireError(f"version {version} is not 0 or 6")
    return fields


def decode(datagram: bytes) -> Packet:
    vtf, _plen, nh, hop, src_loc, src_nid, dst_loc, dst_nid = unpack_header(datagram)
    return Packet(vtf >> 28, (vtf >> 20) & 0xFF, vtf & 0xFFFFF, nh, hop,
                  src_loc, src_nid, dst_loc, dst_nid, datagram[HEADER_LEN:])


def set_hop_limit(datagram: bytes, hop_limit: int) -> bytes:
    """The same datagram with only its hop limit rewritten (forwarding keeps the version)."""
    return datagram[:7] + _ONE_BYTE[hop_limit] + datagram[8:]


# --- [ext] destination options header ------------------------------------------------

def encode_destopts(inner_next_header: int, nonce: bytes | None = None, seq: int | None = None,
                    sig: bytes | None = None) -> bytes:
    """RFC 8200 destination options: nh, hdr ext len, [nonce], [seq], [signature], padding
    to 8 octets.

    The nonce goes first, so the 4-byte sequence value lands 4n+2 aligned."""
    if not 0 <= inner_next_header <= 0xFF:
        raise WireError(f"next header {inner_next_header} out of range")
    out = bytearray((inner_next_header, 0))
    if nonce is not None:
        if len(nonce) not in NONCE_LENGTHS:
            raise WireError(f"nonce of {len(nonce)} bytes (must be 4 or 12)")
        out += _ONE_BYTE[OPT_NONCE] + _ONE_BYTE[len(nonce)]
        out += nonce
    if seq is not None:
        if not 0 <= seq <= 0xFFFFFFFF:
            raise WireError(f"sequence number {seq} is not a 32-bit unsigned")
        out += _SEQ_OPTION.pack(OPT_SEQ, 4, seq)
    if sig is not None:
        if len(sig) != SIG_OPTION_LEN:
            raise WireError(f"signature option of {len(sig)} bytes (must be {SIG_OPTION_LEN})")
        out += _ONE_BYTE[OPT_SIG] + _ONE_BYTE[SIG_OPTION_LEN]
        out += sig
    pad = -len(out) % 8
    if pad == 1:
        out.append(OPT_PAD1)
    elif pad:
        out += bytes((OPT_PADN, pad - 2)) + bytes(pad - 2)
    out[1] = len(out) // 8 - 1
    return bytes(out)


def decode_destopts(data: bytes) -> tuple[int, bytes | None, int | None, bytes | None, bytes]:
    """-> (inner next header, nonce or None, seq or None, signature option or None, the rest).

    Unknown options whose type starts with bits 00 are skipped (RFC 8200 4.2); any other
    unknown option, a malformed length or a truncated header raises WireError."""
    if len(data) < 8:
        raise WireError("destination options header shorter than 8 bytes")
    end = (data[1] + 1) * 8
    if end > len(data):
        raise WireError(f"destination options header of {end} bytes but only {len(data)} present")
    nonce = seq = sig = None
    i = 2
    while i < end:
        opt = data[i]
        if opt == OPT_PAD1:
            i += 1
            continue
        if i + 2 > end:
            raise WireError("option truncated")
        start = i + 2
        i = start + data[i + 1]
        if i > end:
            raise WireError("option overruns its header")
        if opt == OPT_NONCE:
            if i - start not in NONCE_LENGTHS:
                raise WireError(f"nonce option of {i - start} bytes (must be 4 or 12)")
            nonce = bytes(data[start:i])
        elif opt == OPT_SEQ:
            if i - start != 4:
                raise WireError(f"sequence option of {i - start} bytes (must be 4)")
            seq = _U32.unpack_from(data, start)[0]
        elif opt == OPT_SIG:
            if i - start != SIG_OPTION_LEN:
                raise WireError(f"signature option of {i - start} bytes (must be {SIG_OPTION_LEN})")
            sig = bytes(data[start:i])
        elif opt != OPT_PADN and opt & 0xC0:
            raise WireError(f"unknown option type {opt:#04x} that must not be skipped")
    return data[0], nonce, seq, sig, data[end:]


def encode_with_opts(src_loc: int, src_nid: int, dst_loc: int, dst_nid: int, next_header: int,
                     payload: bytes, hop_limit: int, opts: dict | None, version: int = 6) -> bytes:
    """A packet with opts {"nonce": bytes|None, "seq": int|None, "sig": bytes|None}:
    header(nh=60) + destopts + payload. Plain packet when opts is None or holds none."""
    nonce = seq = sig = None
    if opts:
        nonce = opts.get("nonce")
        seq = opts.get("seq")
        sig = opts.get("sig")
    if nonce is None and seq is None and sig is None:
        return encode(src_loc, src_nid, dst_loc, dst_nid, next_header, payload, hop_limit, version)
    return encode(src_loc, src_nid, dst_loc, dst_nid, NH_DESTOPTS,
                  encode_destopts(next_header, nonce, seq, sig) + payload, hop_limit, version)


def decode_with_opts(datagram: bytes) -> tuple[Packet, dict | None]:
    """-> (packet with the inner next header and payload, {"nonce", "seq", "sig"} or None if plain)."""
    packet = decode(datagram)
    if packet.next_header != NH_DESTOPTS:
        return packet, None
    inner, nonce, seq, sig, rest = decode_destopts(packet.payload)
    return packet._replace(next_header=inner, payload=rest), {"nonce": nonce, "seq": seq, "sig": sig}
