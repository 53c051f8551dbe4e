"""ilnp-tap --json writes NIDs, locators and I-LVs as text (issue 14 item 6), data items
with their fields named (frames.py), bytes as hex; what does not fit a topic's layout
is shown as it came, never raised."""
import json

from actors.proto import topics
from actors.proto.addr import ALL_NODES
from actors.proto.frames import LinkItem, RxItem, TxItem
from actors.proto.ilnp import encode
from tools.tap import frame_json

A_NID, B_NID = 0xFFFF_0000_0000_000A, 0x3123_4567_89AB_CDEF


def test_link_items_name_their_locator_and_the_packets_i_lvs():
    datagram = encode(0xA, A_NID, 0xB, B_NID, 42, b"\0\7\0\7hi", 3)
    body = frame_json(topics.LINK_TX, {"a": "router", "q": 5, "t": 123, "p": [list(LinkItem(0xB, datagram))]})
    assert body == {"a": "router", "q": 5, "t": 123, "p": [{
        "loc": "0:0:0:b", "datagram": datagram.hex(),
        "ilnp": {"src": "0:0:0:a:ffff:0:0:a", "dst": "0:0:0:b:3123:4567:89ab:cdef", "nh": 42, "hop": 3}}]}
    short = frame_json(topics.LINK_RX, {"p": [list(LinkItem(0xA, b"\1\2"))]})["p"][0]
    assert short == {"loc": "0:0:0:a", "datagram": "0102", "ilnp": None}  # no header: said, not guessed


def test_rx_and_tx_items_write_every_address_as_text():
    rx = RxItem(0xA, A_NID, 0xB, B_NID, 0xB, b"\x01\0\0\0\0\0\0\0\x0c",
                {"nonce": b"\xaa" * 12, "seq": 9, "nonce_ok": True})
    assert frame_json(topics.ILNP_RX_LOCATOR_UPDATE, {"p": [list(rx)]})["p"] == [{
        "src": "0:0:0:a:ffff:0:0:a", "dst": "0:0:0:b:3123:4567:89ab:cdef", "arrival_loc": "0:0:0:b",
        "payload": "01000000000000000c", "opts": {"nonce": "aa" * 12, "seq": 9, "nonce_ok": True}}]
    tx = TxItem(0, [ALL_NODES], 43, b"x", 0xC, None)
    assert frame_json(topics.ILNP_TX, {"p": [list(tx)]})["p"] == [{
        "dst_nid": "0:0:0:0", "dst_locs": ["ff02:0:0:1"], "next_header": 43, "payload": "78",
        "via": "0:0:0:c", "opts": None}]
    routed = frame_json(topics.ILNP_TX, {"p": [list(TxItem(B_NID, [0xB, 0xC], 42, b"", None, {"seq": 4}))]})["p"][0]
    assert routed["via"] is None and routed["dst_locs"] == ["0:0:0:b", "0:0:0:c"] and routed["opts"] == {"seq": 4}


def test_state_frames_write_locators_nids_and_sessions_as_text():
    locators = frame_json(topics.STATE_LOCATORS, {"a": "mobility", "q": 1, "cur": [0xB],
                                                  "joined": [0xA, 0xB], "leaving": [0xA]})
    assert locators == {"a": "mobility", "q": 1, "cur": ["0:0:0:b"], "joined": ["0:0:0:a", "0:0:0:b"],
                        "leaving": ["0:0:0:a"]}
    hosts = frame_json(topics.STATE_HOSTS, {"hosts": [["bob", B_NID, [0xB, 0xC], 1500]]})
    assert hosts == {"hosts": [["bob", "3123:4567:89ab:cdef", ["0:0:0:b", "0:0:0:c"], 1500]]}
    sessions = frame_json(topics.STATE_SESSIONS, {"sessions": [[0xB, B_NID], [0xA, A_NID]]})
    assert sessions == {"sessions": ["0:0:0:b:3123:4567:89ab:cdef", "0:0:0:a:ffff:0:0:a"]}
    peer = frame_json(topics.MOB_PEER, {"nid": A_NID, "locs": [0xC], "via": 0xB})
    assert peer == {"nid": "ffff:0:0:a", "locs": ["0:0:0:c"], "via": "0:0:0:b"}
    assert frame_json(topics.MOB_PEER, {"nid": A_NID, "locs": [], "via": None})["via"] is None
    # no addresses in these: as they are
    assert frame_json(topics.STATE_PORTS, {"ports": {7: 123}}) == {"ports": {"7": 123}}
    assert frame_json(topics.STATE_FORWARDING, {"epoch": 3}) == {"epoch": 3}


def test_what_breaks_its_topics_layout_is_shown_as_it_came():
    assert frame_json(topics.STATE_LOCATORS, {"cur": "junk"}) == {"cur": "junk"}
    assert frame_json(topics.STATE_HOSTS, {"hosts": [["bob"]]}) == {"hosts": [["bob"]]}
    assert frame_json(topics.STATE_SESSIONS, {"other": b"\xff"}) == {"other": "ff"}
    mixed = frame_json(topics.ILNP_TX, {"p": [[1, 2], "junk", list(TxItem(1, [2], 42, b"", None))]})["p"]
    assert mixed[:2] == [[1, 2], "junk"] and mixed[2]["dst_nid"] == "0:0:0:1"
    assert frame_json(topics.LINK_RX, {"p": [["no", b"\x01"]]})["p"] == [["no", "01"]]


def test_every_frame_body_is_json():
    bodies = [(topics.LINK_RX, {"p": [[2 ** 64 - 1, b"\xff" * 40]]}), (topics.HELLO, {}),
              (b"unknown.topic", {"x": [b"\0", {1: 2}]})]
    for topic, body in bodies:
        json.dumps(frame_json(topic, body))
    assert frame_json(topics.LINK_RX, bodies[0][1])["p"][0]["loc"] == "ffff:ffff:ffff:ffff"
