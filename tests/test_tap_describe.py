"""ilnp-tap's one-line description of a frame reads items by their layout (frames.py)."""
from actors.proto import topics
from actors.proto.addr import ALL_NODES
from actors.proto.frames import LinkItem, RxItem, TxItem
from actors.proto.ilnp import encode
from tools.tap import describe


def test_data_items_are_described_by_their_fields():
    datagram = encode(0xA, 0xFFFF_0000_0000_000A, 0xB, 0xFFFF_0000_0000_000B, 42, b"\0" * 8, 3)
    link = describe(topics.LINK_RX, {"a": "link", "q": 3, "p": [list(LinkItem(0xA, datagram))] * 2})
    assert link == "link.rx link#3 [2] 0:0:0:a 0:0:0:a:ffff:0:0:a -> 0:0:0:b:ffff:0:0:b nh 42 hop 3 48B (+1 more)"
    rx = describe(topics.stp_rx(7), {"a": "router", "q": 1,
                                     "p": [list(RxItem(0xA, 0x1, 0xB, 0x2, 0xB, b"abcd", None))]})
    assert rx.endswith("0:0:0:a:0:0:0:1 -> 0:0:0:b:0:0:0:2 on 0:0:0:b 4B")
    tx = describe(topics.ILNP_TX, {"a": "discovery", "q": 9, "p": [list(TxItem(0, [ALL_NODES], 43, b"x", 0xC))]})
    assert tx.endswith("to ff02:0:0:1:0:0:0:0 nh 43 1B via 0:0:0:c")


def test_an_item_of_the_wrong_shape_is_shown_raw_not_raised():
    out = describe(topics.ILNP_TX, {"a": "x", "q": 1, "p": [[1, 2], "junk"]})
    assert out.endswith("[2] [1, 2] (+1 more)")
    assert describe(topics.LINK_TX, {"a": "x", "q": 1, "p": [["no", "int"]]}).endswith("['no', 'int']")
