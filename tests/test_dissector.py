"""tools/wireshark/ilnp.lua in tshark, without a lab: the original implementation's
capture (tests/golden) with every field checked frame by frame, the [ext] options,
QUIC of the stream relay handed to Wireshark's QUIC dissector, the port preference,
and malformed packets (expert info, never a Lua error). Captures of live nodes, by
ilnp-tap --pcap and on the lab bridge: tests/test_dissector_lab.py."""
from __future__ import annotations

import random

import pytest

from actors.proto import discovery, locator_update, stp
from actors.proto.addr import ALL_NODES, format64
from actors.proto.ilnp import decode, encode, encode_destopts, encode_with_opts
from actors.proto.numbers import NH_DESTOPTS, NH_DISCOVERY, NH_LOCATOR_UPDATE, NH_STP
from tests.dissect import expert_messages, fields, glossary, needs_tshark, problems
from tests.golden_pcap import PCAP, golden_frames
from tools.pcap import PcapWriter, udp_datagram

pytestmark = needs_tshark

HEADER = ["ilnp.version", "ilnp.nh", "ilnp.hop", "ilnp.src_loc", "ilnp.src_nid", "ilnp.dst_loc", "ilnp.dst_nid"]
UPPER = ["stp.srcport", "stp.dstport", "ilnp.disc.nid", "ilnp.disc.loc", "ilnp.disc.solicit",
         "ilnp.disc.hostname", "ilnp.lu.type", "ilnp.lu.locator"]
OPTS = ["ilnp.nonce", "ilnp.seq", "ilnp.sig"]

A_NID, B_NID = 0xFFFF_0000_0000_000A, 0xFFFF_0000_0000_000B
CRYPTO_NID = 0x3A5B_0000_1234_5678


def write_pcap(path, datagrams, port: int = 10000):
    with open(path, "wb") as out:
        writer = PcapWriter(out)
        for i, payload in enumerate(datagrams):
            writer.write(1_700_000_000_000_000_000 + i * 1000, udp_datagram("fe80::1", "ff12::a", port, port, payload))
    return path


def expected_fields(payload: bytes) -> dict[str, list[str]]:
    """What the dissector must show for a well-formed packet, by this project's decoders."""
    packet = decode(payload)
    want = {"ilnp.version": [str(packet.version)], "ilnp.nh": [str(packet.next_header)],
            "ilnp.hop": [str(packet.hop_limit)], "ilnp.src_loc": [format64(packet.src_loc)],
            "ilnp.src_nid": [format64(packet.src_nid)], "ilnp.dst_loc": [format64(packet.dst_loc)],
            "ilnp.dst_nid": [format64(packet.dst_nid)]}
    want.update({name: [] for name in UPPER})
    if packet.next_header == NH_STP:
        src, dst, _ = stp.decode(packet.payload)
        want.update({"stp.srcport": [str(src)], "stp.dstport": [str(dst)]})
    elif packet.next_header == NH_DISCOVERY:
        msg = discovery.decode(packet.payload)
        want.update({"ilnp.disc.nid": [format64(msg.nid)], "ilnp.disc.loc": [format64(msg.loc)],
                     "ilnp.disc.solicit": [str(int(msg.solicitation))], "ilnp.disc.hostname": [msg.hostname]})
    elif packet.next_header == NH_LOCATOR_UPDATE:
        msg = locator_update.decode(packet.payload)
        if isinstance(msg, locator_update.Update):
            want.update({"ilnp.lu.type": ["1"], "ilnp.lu.locator": [format64(loc) for loc in msg.locs]})
        else:
            want["ilnp.lu.type"] = ["0"]
    return want


def test_every_frame_of_the_golden_capture_decodes_as_the_projects_decoders_do():
    frames = golden_frames()
    rows = fields(PCAP, HEADER + UPPER)
    assert len(rows) == len(frames) == 101
    for frame, row in zip(frames, rows):
        assert row == expected_fields(frame.payload), f"golden frame {frame.index + 1}"
    assert problems(PCAP) == []
    assert all(messages == [] for messages in expert_messages(PCAP))  # not even a warning


def test_the_golden_capture_shows_the_readmes_examples():
    """tests/golden/README.md by hand: names, locators, flags, updates and acks."""
    rows = fields(PCAP, HEADER + UPPER)
    solicit = rows[0]  # the router soliciting on locator a
    assert solicit["ilnp.src_nid"] == ["ffff:0:0:d"] and solicit["ilnp.dst_loc"] == ["ff02:0:0:1"]
    assert solicit["ilnp.dst_nid"] == ["0:0:0:0"] and solicit["ilnp.version"] == ["0"]  # the original sends 0
    assert (solicit["ilnp.disc.hostname"], solicit["ilnp.disc.solicit"]) == (["router"], ["1"])
    hosts = {(r["ilnp.disc.hostname"][0], r["ilnp.disc.nid"][0]) for r in rows if r["ilnp.disc.hostname"]}
    assert hosts == {("router", "ffff:0:0:d"), ("bob", "ffff:0:0:b"), ("alice", "ffff:0:0:a")}
    updates = [r for r in rows if r["ilnp.lu.type"] == ["1"]]
    acks = [r for r in rows if r["ilnp.lu.type"] == ["0"]]
    assert updates and all(r["ilnp.src_nid"] == ["ffff:0:0:a"] and r["ilnp.dst_nid"] == ["ffff:0:0:b"]
                           for r in updates)
    assert {loc for r in updates for loc in r["ilnp.lu.locator"]} == {"0:0:0:a", "0:0:0:b", "0:0:0:c"}
    assert acks and all(r["ilnp.src_nid"] == ["ffff:0:0:b"] and r["ilnp.dst_nid"] == ["ffff:0:0:a"] for r in acks)
    heartbeat = [r for r in rows if r["stp.srcport"]]
    assert {(r["stp.srcport"][0], r["stp.dstport"][0]) for r in heartbeat} == {("1000", "1000")}


def test_destination_options_show_nonce_sequence_number_and_signature(tmp_path):
    key_and_sig = bytes(range(32)) + bytes(range(100, 164))
    update = locator_update.encode_update([0xB, 0xC])
    packets = [
        encode_with_opts(0xA, CRYPTO_NID, 0xB, B_NID, NH_LOCATOR_UPDATE, update, 3,
                         {"nonce": b"N" * 12, "seq": 4_000_000_000, "sig": key_and_sig}),
        encode_with_opts(0xB, B_NID, 0xB, CRYPTO_NID, NH_LOCATOR_UPDATE, locator_update.encode_ack(), 3,
                         {"nonce": b"abcd", "seq": 7}),
        encode_with_opts(0xA, A_NID, 0xB, B_NID, NH_STP, stp.encode(49152, 7, b"ping"), 3, {"nonce": b"\1" * 12}),
        # an unknown option whose type says "skip me" (top bits 00) before the nonce
        encode(0xA, A_NID, 0xB, B_NID, NH_DESTOPTS, bytes((NH_STP, 1, 0x1F, 2, 9, 9, 0x8B, 4)) + b"wxyz"
               + bytes((1, 2, 0, 0)) + stp.encode(1, 2, b""), 3),
    ]
    rows = fields(write_pcap(tmp_path / "opts.pcap", packets), HEADER + UPPER + OPTS + ["ilnp.sig.key"])
    first, ack, ping, skipped = rows
    assert first["ilnp.nh"] == ["60"] and first["ilnp.src_nid"] == ["3a5b:0:1234:5678"]
    assert first["ilnp.nonce"] == [(b"N" * 12).hex()] and first["ilnp.seq"] == ["4000000000"]
    assert first["ilnp.sig"] == [key_and_sig.hex()] and first["ilnp.sig.key"] == [bytes(range(32)).hex()]
    assert first["ilnp.lu.type"] == ["1"] and first["ilnp.lu.locator"] == ["0:0:0:b", "0:0:0:c"]
    assert (ack["ilnp.nonce"], ack["ilnp.seq"], ack["ilnp.sig"], ack["ilnp.lu.type"]) == (
        [b"abcd".hex()], ["7"], [], ["0"])
    assert ping["ilnp.seq"] == [] and (ping["stp.srcport"], ping["stp.dstport"]) == (["49152"], ["7"])
    assert skipped["ilnp.nonce"] == [b"wxyz".hex()] and skipped["stp.dstport"] == ["2"]
    assert problems(tmp_path / "opts.pcap") == []


def quic_initial() -> list[bytes]:
    """The first datagrams of a stream relay client (qh3, ALPN ilnp-stream/1): Initial
    packets, its TLS ClientHello spread over them."""
    from qh3.quic.configuration import QuicConfiguration
    from qh3.quic.connection import QuicConnection

    conn = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=["ilnp-stream/1"],
                                                          max_datagram_size=1396))
    conn.connect(("::ffff:0:0:b", 80), now=0.0)
    return [datagram for datagram, _ in conn.datagrams_to_send(now=0.0)]


def test_stream_relay_payloads_go_to_the_quic_dissector(tmp_path):
    initials = quic_initial()
    short = bytes([0x41]) + initials[0][6:14] + b"\x00" * 40  # a 1-RTT packet of that flow
    packets = [
        *(encode(0xA, A_NID, 0xB, B_NID, NH_STP, stp.encode(49152, 80, initial), 3) for initial in initials),
        encode(0xB, B_NID, 0xA, A_NID, NH_STP, stp.encode(80, 49152, short), 3),  # the flow, other way
        encode(0xA, A_NID, 0xB, B_NID, NH_STP, stp.encode(1000, 1000, short), 3),  # another flow: data
        encode(0xA, A_NID, 0xB, B_NID, NH_STP, stp.encode(49152, 7, b"\0" * 56), 3),  # a ping
    ]
    path = write_pcap(tmp_path / "quic.pcap", packets)
    rows = fields(path, ["stp.dstport", "quic.version", "quic.header_form", "tls.handshake.extensions_alpn_str",
                         "ilnp.stp.data"])
    n = len(initials)
    assert all(row["quic.version"] == ["0x00000001"] for row in rows[:n])
    # QUIC decrypted the Initial packets: the ClientHello names the relay's protocol
    assert [alpn for row in rows[:n] for alpn in row["tls.handshake.extensions_alpn_str"]] == ["ilnp-stream/1"]
    assert rows[n]["quic.header_form"] == ["0"] and rows[n]["ilnp.stp.data"] == []
    assert rows[n + 1]["quic.header_form"] == [] and rows[n + 1]["ilnp.stp.data"] == [short.hex()]
    assert rows[n + 2]["quic.header_form"] == [] and rows[n + 2]["stp.dstport"] == ["7"]
    assert problems(path) == []
    # a served port named in the preferences is QUIC from its first packet
    rows = fields(path, ["quic.header_form"], "-o", "ilnp.quic_ports:1000", "-o", "ilnp.quic_heuristic:FALSE")
    assert [r["quic.header_form"] for r in rows] == [[]] * (n + 1) + [["0"], []]


def test_the_udp_port_is_a_preference_and_other_ports_go_by_a_heuristic(tmp_path):
    good = encode(0xA, A_NID, 0xB, B_NID, NH_STP, stp.encode(1, 2, b""), 3)
    off_by_two = good + b"xx"  # its payload length disagrees: not taken on another port
    path = write_pcap(tmp_path / "port.pcap", [good, off_by_two, b"\x60" + bytes(60)], port=10002)

    def decoded(*args):
        return [bool(row["ilnp.src_nid"]) for row in fields(path, ["ilnp.src_nid"], *args)]

    assert decoded() == [True, False, False]  # a header that holds together, on any port
    assert decoded("--disable-heuristic", "ilnp_udp") == [False, False, False]
    assert decoded("--disable-heuristic", "ilnp_udp", "-o", "ilnp.udp_port:10002") == [True, True, True]
    assert problems(path) == []  # what the heuristic left alone is plain UDP, not malformed ILNP


MALFORMED = [
    ("short", b"\x60" + b"\0" * 20, "shorter than the 40-byte header"),
    ("version", b"\x50" + encode(0xA, A_NID, 0xB, B_NID, NH_STP, b"\0\1\0\2", 3)[1:], "neither 0 nor 6"),
    ("length", encode(0xA, A_NID, 0xB, B_NID, NH_STP, b"\0\1\0\2", 3) + b"xx", "payload length 4 but 6"),
    ("next header", encode(0xA, A_NID, 0xB, B_NID, 99, b"?", 3), "next header 99"),
    ("stp", encode(0xA, A_NID, 0xB, B_NID, NH_STP, b"\1", 3), "STP segment of 1 bytes"),
    ("discovery short", encode(0xA, A_NID, ALL_NODES, 0, NH_DISCOVERY, b"\0" * 16, 3), "need at least 17"),
    ("discovery flag", encode(0xA, A_NID, ALL_NODES, 0, NH_DISCOVERY,
                              A_NID.to_bytes(8, "big") + bytes(7) + b"\x0a\x05bob", 3), "neither 0 nor 1"),
    ("discovery name", encode(0xA, A_NID, ALL_NODES, 0, NH_DISCOVERY, A_NID.to_bytes(8, "big") + bytes(8) + b"\1", 3),
     "without a hostname"),
    ("discovery nid", encode(0xA, A_NID, ALL_NODES, 0, NH_DISCOVERY, discovery.encode(B_NID, 0xA, True, "bob"), 3),
     "is not the source NID"),
    ("update empty", encode(0xA, A_NID, 0xB, B_NID, NH_LOCATOR_UPDATE, b"", 3), "empty locator update"),
    ("update type", encode(0xA, A_NID, 0xB, B_NID, NH_LOCATOR_UPDATE, b"\x02", 3), "type 0x02"),
    ("update ragged", encode(0xA, A_NID, 0xB, B_NID, NH_LOCATOR_UPDATE, b"\x01" + bytes(12), 3), "1 + 8 x locators"),
    ("ack trailing", encode(0xA, A_NID, 0xB, B_NID, NH_LOCATOR_UPDATE, b"\x00\x00", 3), "ack with 1 trailing"),
    ("options short", encode(0xA, A_NID, 0xB, B_NID, NH_DESTOPTS, b"\x2a\x00", 3), "shorter than 8 bytes"),
    ("options overrun", encode(0xA, A_NID, 0xB, B_NID, NH_DESTOPTS, b"\x2a\x03" + bytes(6), 3),
     "of 32 bytes but only 8"),
    ("option overrun", encode(0xA, A_NID, 0xB, B_NID, NH_DESTOPTS, b"\x2a\x00\x8b\x0c" + bytes(4), 3),
     "overruns its header"),
    ("nonce length", encode(0xA, A_NID, 0xB, B_NID, NH_DESTOPTS, b"\x2a\x01\x8b\x04abcd" + b"\x8b\x00"
                            + b"\x01\x04" + bytes(4) + b"\0\1\0\2", 3), "nonce option of 0 bytes"),
    ("seq length", encode(0xA, A_NID, 0xB, B_NID, NH_DESTOPTS, b"\x2a\x00\x1e\x02\0\0\x01\x00" + b"\0\1\0\2", 3),
     "sequence option of 2 bytes"),
    ("unknown option", encode(0xA, A_NID, 0xB, B_NID, NH_DESTOPTS, b"\x2a\x00\xc5\x02\0\0\x01\x00" + b"\0\1\0\2", 3),
     "must not be skipped"),
]


def test_malformed_packets_get_expert_info_and_are_decoded_as_far_as_they_go(tmp_path):
    path = write_pcap(tmp_path / "bad.pcap", [datagram for _, datagram, _ in MALFORMED])
    rows = fields(path, ["ilnp.src_nid", "_ws.expert.message", "_ws.lua.error", "ilnp.expert.internal"])
    for (name, _, words), row in zip(MALFORMED, rows):
        assert any(words in message for message in row["_ws.expert.message"]), (name, row["_ws.expert.message"])
        assert row["_ws.lua.error"] == [] and row["ilnp.expert.internal"] == [], name
        if name != "short":
            assert row["ilnp.src_nid"] == ["ffff:0:0:a"], name  # the header is still shown


def test_no_input_makes_the_dissector_raise(tmp_path):
    """Every truncation of packets with each part (options with a signature, each upper
    layer) and random corruptions of them, seeded: decoded or flagged, never a Lua error."""
    whole = [
        encode_with_opts(0xA, CRYPTO_NID, 0xB, B_NID, NH_LOCATOR_UPDATE, locator_update.encode_update([0xB]), 3,
                         {"nonce": b"N" * 12, "seq": 1, "sig": bytes(96)}),
        encode(0xA, A_NID, ALL_NODES, 0, NH_DISCOVERY, discovery.encode(A_NID, 0xA, False, "alice"), 3),
        encode_with_opts(0xA, A_NID, 0xB, B_NID, NH_STP, stp.encode(49152, 80, quic_initial()[0][:300]), 3,
                         {"nonce": b"\2" * 4}),
        encode(0xA, A_NID, 0xB, B_NID, NH_DESTOPTS, encode_destopts(NH_LOCATOR_UPDATE, seq=5) + b"\0", 0),
    ]
    rng = random.Random(14)
    packets = [p[:n] for p in whole for n in range(len(p) + 1) if n < 120 or n % 37 == 0]
    for _ in range(400):
        packet = bytearray(rng.choice(whole))
        for _ in range(rng.randint(1, 6)):
            packet[rng.randrange(len(packet))] = rng.randrange(256)
        packets.append(bytes(packet))
    path = write_pcap(tmp_path / "fuzz.pcap", packets)
    rows = fields(path, ["_ws.lua.error", "ilnp.expert.internal", "ilnp.version"])
    assert len(rows) == len(packets)
    assert [i for i, r in enumerate(rows) if r["_ws.lua.error"] or r["ilnp.expert.internal"]] == []
    assert sum(1 for r in rows if r["ilnp.version"]) > len(packets) // 2  # most still had a header to show


def test_the_field_names_are_the_ones_promised():
    promised = set(HEADER + UPPER + OPTS)
    registered = [line.split("\t") for line in glossary().splitlines() if line.startswith("F\t")]
    assert promised <= {cells[2] for cells in registered if cells[4] == "ilnp"}
    # addresses are text (4 hex groups), not numbers
    types = {cells[2]: cells[3] for cells in registered}
    assert {types[n] for n in ("ilnp.src_loc", "ilnp.src_nid", "ilnp.dst_loc", "ilnp.dst_nid", "ilnp.disc.nid",
                               "ilnp.disc.loc", "ilnp.lu.locator")} == {"FT_STRING"}
