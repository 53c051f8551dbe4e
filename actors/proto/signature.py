"""[ext] Self-certifying NIDs and signed locator updates (PROTOCOL.md, "[ext] Authenticated
locator updates").

The rule, in one place: a cryptographic NID (top 4 bits 0011) is the prefix followed by
the first 60 bits of SHA-256("ILNPv6-NID" || public key); an update or ack from it
carries option 0x3E = public key (32) || Ed25519 signature (64) over
"ILNPv6-LU" || source NID || destination NID || sequence number || nonce (or empty) ||
body. Ed25519 comes from the `cryptography` package (OpenSSL), never hand-written.
"""
from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .addr import CRYPTO_NID_PREFIX, is_cryptographic
from .ilnp import SIG_OPTION_LEN

NID_CONTEXT = b"ILNPv6-NID"
UPDATE_CONTEXT = b"ILNPv6-LU"
PUBLIC_KEY_LEN = 32
_IDS = struct.Struct(">QQI")
_LOW60 = (1 << 60) - 1

# Why a signed update is refused (the receiver counts each): stable names.
NO_SIGNATURE = "sig_missing"
NO_SEQUENCE = "sig_no_seq"
WRONG_KEY = "sig_wrong_key"
BAD_SIGNATURE = "sig_invalid"


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def nid_of(public_key: bytes) -> int:
    """The cryptographic NID a 32-byte Ed25519 public key certifies."""
    digest = hashlib.sha256(NID_CONTEXT + public_key).digest()
    return (CRYPTO_NID_PREFIX << 60) | (int.from_bytes(digest[:8], "big") >> 4 & _LOW60)


def signed_message(src_nid: int, dst_nid: int, seq: int, nonce: bytes | None, body: bytes) -> bytes:
    return UPDATE_CONTEXT + _IDS.pack(src_nid, dst_nid, seq) + (nonce or b"") + bytes(body)


class Signer:
    """A node key that signs its updates and acks (the router holds one)."""

    def __init__(self, key: Ed25519PrivateKey):
        self._key = key
        self.public_key = public_bytes(key)
        self.nid = nid_of(self.public_key)

    def sign(self, src_nid: int, dst_nid: int, seq: int, nonce: bytes | None, body: bytes) -> bytes:
        """The 96-byte signature option value."""
        return self.public_key + self._key.sign(signed_message(src_nid, dst_nid, seq, nonce, body))


def check(src_nid: int, dst_nid: int, seq: int | None, nonce: bytes | None, body: bytes,
          sig: bytes | None) -> str | None:
    """None when the update or ack from cryptographic `src_nid` is genuine, else the reason.

    Cheap checks first: a stranger's bogus packets cost a hash, not a verification."""
    if sig is None:
        return NO_SIGNATURE
    if seq is None:
        return NO_SEQUENCE
    if len(sig) != SIG_OPTION_LEN or nid_of(sig[:PUBLIC_KEY_LEN]) != src_nid:
        return WRONG_KEY
    try:
        Ed25519PublicKey.from_public_bytes(sig[:PUBLIC_KEY_LEN]).verify(
            sig[PUBLIC_KEY_LEN:], signed_message(src_nid, dst_nid, seq, nonce, body))
    except (InvalidSignature, ValueError):
        return BAD_SIGNATURE
    return None


__all__ = ["Signer", "check", "nid_of", "is_cryptographic", "signed_message", "public_bytes",
           "NO_SIGNATURE", "NO_SEQUENCE", "WRONG_KEY", "BAD_SIGNATURE"]
