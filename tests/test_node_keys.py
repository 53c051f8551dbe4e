"""[ext] Node keys and self-certifying NIDs (PROTOCOL.md "Authenticated locator updates"):
the NID rule, the key file, nid = "auto"."""
import os
import stat
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors import nodekey
from actors.config import ConfigError, parse_config
from actors.proto import signature
from actors.proto.addr import is_cryptographic, parse64

BASE = {"hostname": "alice", "locators": {"schedule": "0:0:0:a"}}


def test_nid_of_a_key_has_the_prefix_and_60_bits_of_the_hash():
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    pub = signature.public_bytes(key)
    nid = signature.nid_of(pub)
    assert nid >> 60 == 0x3 and is_cryptographic(nid)
    import hashlib
    top60 = int.from_bytes(hashlib.sha256(b"ILNPv6-NID" + pub).digest()[:8], "big") >> 4
    assert nid & ((1 << 60) - 1) == top60
    assert signature.nid_of(bytes(32)) != nid


@pytest.mark.parametrize("nid,crypto", [("3000:0:0:1", True), ("3fff:ffff:ffff:ffff", True),
                                        ("ffff:0:0:a", False), ("0:0:0:3", False), ("2fff:0:0:0", False)])
def test_only_the_0011_prefix_is_cryptographic(nid, crypto):
    assert is_cryptographic(parse64(nid)) is crypto


def test_signature_check_by_reason():
    signer = signature.Signer(Ed25519PrivateKey.generate())
    other = signature.Signer(Ed25519PrivateKey.generate())
    args = (signer.nid, 0xB, 7, b"n" * 12, b"\x01" + bytes(8))
    sig = signer.sign(*args)
    assert signature.check(*args[:2], 7, args[3], args[4], sig) is None
    assert signature.check(*args[:2], 7, args[3], args[4], None) == signature.NO_SIGNATURE
    assert signature.check(*args[:2], None, args[3], args[4], sig) == signature.NO_SEQUENCE
    assert signature.check(*args[:2], 7, args[3], args[4], other.sign(*args)) == signature.WRONG_KEY
    for changed in ((signer.nid, 0xC, 7, b"n" * 12, args[4]),       # another destination
                    (signer.nid, 0xB, 8, b"n" * 12, args[4]),       # another sequence number
                    (signer.nid, 0xB, 7, b"m" * 12, args[4]),       # another nonce
                    (signer.nid, 0xB, 7, None, args[4]),            # nonce stripped
                    (signer.nid, 0xB, 7, b"n" * 12, b"\x01" + bytes(7) + b"\x01")):  # other locators
        assert signature.check(*changed, sig) == signature.BAD_SIGNATURE
    bogus = sig[:32] + bytes(64)
    assert signature.check(*args[:2], 7, args[3], args[4], bogus) == signature.BAD_SIGNATURE


def test_key_is_made_once_kept_private_and_reloaded(tmp_path):
    first = nodekey.load_or_create(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / nodekey.KEY_FILE).st_mode)
    assert mode == 0o600
    again = nodekey.load_or_create(tmp_path)
    assert signature.public_bytes(first) == signature.public_bytes(again)
    assert [p.name for p in tmp_path.iterdir()] == [nodekey.KEY_FILE]  # no temporary left


def test_actors_starting_together_agree_on_one_key(tmp_path):
    keys, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        keys.append(signature.public_bytes(nodekey.load_or_create(tmp_path)))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(keys) == 8


def test_a_damaged_key_is_moved_aside_and_replaced(tmp_path):
    (tmp_path / nodekey.KEY_FILE).write_bytes(b"not a key")
    key = nodekey.load_or_create(tmp_path)
    assert len(signature.public_bytes(key)) == 32
    assert any(p.name.startswith("node.key.bad-") for p in tmp_path.iterdir())


def test_nid_auto_is_the_keys_nid(tmp_path):
    config = parse_config({**BASE, "nid": "auto"}, "alice.toml")
    assert config.nid is None
    resolved, signer = nodekey.node_identity(config, tmp_path)
    assert resolved.nid == signer.nid and is_cryptographic(resolved.nid)
    assert nodekey.node_identity(config, tmp_path)[0].nid == resolved.nid  # kept across restarts
    assert nodekey.node_signer(resolved, tmp_path).nid == resolved.nid


def test_a_plain_nid_signs_nothing(tmp_path):
    config = parse_config({**BASE, "nid": "ffff:0:0:a"}, "alice.toml")
    assert nodekey.node_identity(config, tmp_path)[0].nid == 0xFFFF_0000_0000_000A
    assert nodekey.node_signer(config, tmp_path) is None


def test_a_cryptographic_nid_the_key_does_not_certify_is_a_config_error(tmp_path):
    config = parse_config({**BASE, "nid": "3000:0:0:1"}, "alice.toml")
    with pytest.raises(ConfigError, match=r"^alice.toml: nid 3000:0:0:1 has the cryptographic prefix"):
        nodekey.node_identity(config, tmp_path)
