"""The node key: an Ed25519 key pair made at first start and kept (0600) in the node's
state directory (PROTOCOL.md, "[ext] Authenticated locator updates").

Several actors start at once and each may be first: the key is written to a private
temporary file and linked into place, so exactly one key wins and every actor reads it.
A damaged key file is moved aside (logged) and a new key made: the node gets a new
cryptographic NID, which is what a wiped state directory means anyway.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from .config import ConfigError, NodeConfig
from .proto.addr import format64, is_cryptographic
from .proto.signature import Signer

KEY_FILE = "node.key"
log = logging.getLogger("nodekey")


def load_or_create(state_dir: str | os.PathLike) -> Ed25519PrivateKey:
    path = Path(state_dir) / KEY_FILE
    for _ in range(3):
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            _create(path)
            continue
        if len(raw) == 32:
            return Ed25519PrivateKey.from_private_bytes(raw)
        aside = path.with_name(f"{KEY_FILE}.bad-{os.getpid()}")
        os.replace(path, aside)
        log.error("event=node_key_damaged moved_to=%s bytes=%d", aside, len(raw))
    raise OSError(f"{path}: cannot create the node key")


def _create(path: Path) -> None:
    raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    fd, name = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=path.parent)  # 0600, unique
    tmp = Path(name)
    try:
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another actor's key got there first: theirs wins
        log.info("event=node_key_created path=%s", path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def node_identity(config: NodeConfig, state_dir: str | os.PathLike) -> tuple[NodeConfig, Signer]:
    """The config with its NID resolved ("auto": the key's), and the node key's signer.

    A configured NID with the cryptographic prefix must be the key's own: peers would
    refuse every update of a node claiming one it cannot sign for."""
    signer = Signer(load_or_create(state_dir))
    if config.nid is None:
        return replace(config, nid=signer.nid), signer
    if is_cryptographic(config.nid) and config.nid != signer.nid:
        raise ConfigError(
            f"{config.path}: nid {format64(config.nid)} has the cryptographic prefix 3 but the"
            f" node key in {state_dir} certifies {format64(signer.nid)}: use nid = \"auto\"")
    return config, signer


def node_signer(config: NodeConfig, state_dir: str | os.PathLike) -> Signer | None:
    """The signer of our updates and acks: only a cryptographic NID's signature means anything."""
    if config.nid is None or not is_cryptographic(config.nid):
        return None
    return node_identity(config, state_dir)[1]


def nonce_key(state_dir: str | os.PathLike) -> bytes:
    """The secret our RFC 6744 nonces are derived from (actors/router/peers.py): a hash of
    the node key, so nonces survive any restart and change only with the key."""
    raw = load_or_create(state_dir).private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return hashlib.sha256(b"ILNPv6-nonce-key" + raw).digest()
