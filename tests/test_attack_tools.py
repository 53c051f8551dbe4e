"""ilnp-attack solicit, invent and advert without a LAN: the packets they would send
decode as what they claim to be, and bad arguments are one-line errors (exit non-zero)
before anything is opened. The attacks themselves run on the lab (test_attacks_lab.py)."""
from __future__ import annotations

import json
import random
import time

import pytest

from actors.proto import discovery, ilnp, locator_update, stp
from actors.proto.addr import ALL_NODES, is_cryptographic, parse64
from actors.proto.numbers import ECHO_PORT, NH_DISCOVERY, NH_LOCATOR_UPDATE, NH_STP
from tools.attack import cli as attack_cli
from tools.attack.invent import KINDS, Pacer, invented_nid, invented_packet
from tools.common import run_cli

A = parse64("0:0:0:a")
TARGET = parse64("ffff:0:0:d")


class FakeRogue:
    def __init__(self):
        self.sent: list[tuple[int, bytes]] = []
        self.listening: list[int] = []

    def listen(self, locs):
        self.listening.extend(locs)

    def send(self, loc, datagram, copies=1):
        self.sent.extend([(loc, datagram)] * copies)


@pytest.fixture
def rogue(monkeypatch):
    fake = FakeRogue()
    monkeypatch.setattr(attack_cli.Context, "rogue", lambda self: fake)
    return fake


def run(capsys, *argv) -> tuple[int, str, str]:
    code = run_cli(attack_cli.cli, "ilnp-attack", list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_solicit_sends_a_solicitation_with_the_forged_hop_limit(rogue, capsys):
    code, out, _ = run(capsys, "solicit", "--hop", "255", "--locator", "0:0:0:a", "--count", "2")
    assert code == 0
    summary = json.loads(out)
    assert summary["sent"] == 2 and summary["hop"] == 255
    assert len(rogue.sent) == 2 and {loc for loc, _ in rogue.sent} == {A}
    packet = ilnp.decode(rogue.sent[0][1])
    assert (packet.hop_limit, packet.next_header, packet.dst_loc, packet.dst_nid) == (255, NH_DISCOVERY, ALL_NODES, 0)
    assert packet.src_loc == A and packet.src_nid == parse64(summary["nid"])
    body = discovery.decode(packet.payload)
    assert body.solicitation and body.nid == packet.src_nid and body.loc == A
    assert body.hostname == summary["hostname"]
    assert not is_cryptographic(packet.src_nid)


def test_invent_sends_each_kind_from_a_new_plain_nid(rogue, capsys):
    code, out, _ = run(capsys, "invent", "--packets", "300", "--locator", "0:0:0:a", "--rate", "0",
                       "--target-nid", "ffff:0:0:d", "--seed", "7")
    assert code == 0
    summary = json.loads(out)
    assert summary["sent"] == 300 and summary["kinds"] == {"advert": 100, "ping": 100, "update": 100}
    nids, hostnames = set(), set()
    for loc, datagram in rogue.sent:
        assert loc == A
        packet = ilnp.decode(datagram)  # plain: no destination options
        assert packet.src_loc == A and packet.hop_limit == 3 and not is_cryptographic(packet.src_nid)
        nids.add(packet.src_nid)
        if packet.next_header == NH_DISCOVERY:
            body = discovery.decode(packet.payload)
            assert not body.solicitation and body.nid == packet.src_nid and packet.dst_loc == ALL_NODES
            hostnames.add(body.hostname)
        elif packet.next_header == NH_STP:
            _src, dst, _data = stp.decode(packet.payload)
            assert dst == ECHO_PORT and (packet.dst_loc, packet.dst_nid) == (A, TARGET)
        else:
            assert packet.next_header == NH_LOCATOR_UPDATE
            assert locator_update.decode(packet.payload) == locator_update.Update((A,))
            assert (packet.dst_loc, packet.dst_nid) == (A, TARGET)
    assert len(nids) == 300 and len(hostnames) == 100


def test_advert_claims_a_hostname_with_the_body_nid_equal_to_the_source_nid(rogue, capsys):
    code, out, _ = run(capsys, "advert", "--hostname", "bob", "--locator", "0:0:0:a",
                       "--nid", "ffff:0:0:666", "--interval", "0", "--count", "2")
    assert code == 0 and json.loads(out)["nid"] == "ffff:0:0:666"
    assert len(rogue.sent) == 2
    packet = ilnp.decode(rogue.sent[0][1])
    body = discovery.decode(packet.payload)
    assert (body.hostname, body.nid, body.solicitation) == ("bob", packet.src_nid, False)
    assert packet.src_nid == parse64("ffff:0:0:666") and packet.dst_loc == ALL_NODES


def test_invented_nids_are_plain_and_packets_of_every_kind_decode():
    rng = random.Random(1)
    assert all(not is_cryptographic(invented_nid(rng)) for _ in range(2000))
    for kind in KINDS:
        packet, opts = ilnp.decode_with_opts(invented_packet(kind, rng, A, TARGET, A))
        assert opts is None and packet.version == 6


def test_the_pacer_spreads_packets_over_time():
    pacer = Pacer(1000.0)
    for i in range(50):
        pacer.wait(i)
    assert time.monotonic() - pacer.start >= 0.045


@pytest.mark.parametrize("argv, words", [
    (["solicit", "--locator", "zz"], "--locator"),
    (["solicit", "--locator", "0:0:0:a", "--hop", "256"], "--hop"),
    (["solicit", "--locator", "0:0:0:a", "--listen", "0:0:0:a,"], "--listen"),
    (["solicit"], "--locator"),
    (["invent", "--locator", "0:0:0:a", "--kinds", "advert,bogus"], "--kinds"),
    (["invent", "--locator", "0:0:0:a", "--kinds", "ping"], "--target-nid"),
    (["invent", "--locator", "0:0:0:a", "--packets", "0", "--kinds", "advert"], "--packets"),
    (["invent", "--locator", "0:0:0:a", "--rate", "-1", "--kinds", "advert"], "--rate"),
    (["invent", "--locator", "0:0:0:a", "--target-nid", "x"], "--target-nid"),
    (["advert", "--hostname", "b\x1bob", "--locator", "0:0:0:a"], "--hostname"),
    (["advert", "--hostname", "bob", "--locator", "0:0:0:a", "--nid", "1:2:3"], "--nid"),
])
def test_bad_arguments_are_one_line_errors(rogue, capsys, argv, words):
    code, out, err = run(capsys, *argv)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("ilnp-attack: ") and words in err, err
    assert rogue.sent == []  # nothing went out
