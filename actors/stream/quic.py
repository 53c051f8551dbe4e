"""One small interface over the QUIC library, so that it can be swapped.

qh3 (aioquic's API, a native core) is used as a sans-I/O state machine: datagrams in,
datagrams out, time passed in. Its addresses must look like IP addresses, so a peer
is addressed by its NID written as an IPv6 address (`::ffff:0:0:b`) and its STP port:
neither changes when a node moves (ILNP carries the move below QUIC).
"""
from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID
from qh3._hazmat import Buffer
from qh3.quic import events as qe
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection
from qh3.quic.packet import pull_quic_header
from qh3.tls import SignatureAlgorithm

from ..proto.addr import is_cryptographic
from ..proto.signature import nid_of, public_bytes

ALPN = "ilnp-stream/1"
WRONG_KEY = "certificate key does not certify the NID"
CID_LENGTH = 8


@dataclass(frozen=True, slots=True)
class StreamData:
    stream_id: int
    data: bytes
    end: bool


@dataclass(frozen=True, slots=True)
class StreamReset:
    stream_id: int
    code: int


@dataclass(frozen=True, slots=True)
class Connected:
    """The handshake completed; authenticated: the server's certificate key certifies its
    (cryptographic) NID. A plain NID's stream is encrypted, not authenticated."""
    authenticated: bool = False


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


@dataclass(frozen=True)
class Settings:
    max_datagram: int = 1396          # the STP payload limit
    idle_timeout_s: float = 30.0
    max_stream_data: int = 4 << 20    # per stream, bytes in flight towards us
    max_data: int = 16 << 20          # per connection


def peer_address(nid: int, port: int) -> tuple[str, int]:
    """QUIC's view of a peer: its NID as an IPv6 address, and its STP port."""
    return (":".join(f"{(nid >> s) & 0xFFFF:x}" for s in (112, 96, 80, 64, 48, 32, 16, 0)), port)


def nid_of_address(address: str) -> int:
    """The NID back from peer_address()."""
    return int(ipaddress.IPv6Address(address)) & ((1 << 64) - 1)


# Ed25519 first: our servers' certificates carry the node key. The rest for servers of
# earlier versions of this relay (P-256 certificates).
SIGNATURE_ALGORITHMS = [SignatureAlgorithm.ED25519, SignatureAlgorithm.ECDSA_SECP256R1_SHA256,
                        SignatureAlgorithm.RSA_PSS_RSAE_SHA256]


def make_certificate(node_key: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    """(certificate, key) PEM of this node's relay: self-signed with the node key, made in
    memory at each start (nothing more to keep on disk), so that a client can check that
    its key hashes to our NID (PROTOCOL.md, "[ext] Stream relay")."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ilnp-node")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(node_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(node_key, None))
    key_pem = node_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def certified_nid(der_certificate: bytes) -> int | None:
    """The cryptographic NID a peer's certificate key certifies (None: not an Ed25519 key)."""
    try:
        key = x509.load_der_x509_certificate(der_certificate).public_key()
    except ValueError:
        return None
    return nid_of(public_bytes(key)) if isinstance(key, Ed25519PublicKey) else None


def initial_cid(datagram: bytes) -> bytes | None:
    """The destination connection ID of a client's first (Initial) packet, or None."""
    if len(datagram) < 1200 or not datagram[0] & 0x80:
        return None  # only a long-header Initial of full size opens a connection
    try:
        return pull_quic_header(Buffer(data=datagram), CID_LENGTH).destination_cid
    except (ValueError, Exception):  # noqa: B014 - the native parser raises its own types
        return None


class QuicLink:
    """One QUIC connection. Time is float seconds (the core passes now_ms / 1000)."""

    def __init__(self, settings: Settings, peer: tuple[str, int], *, cert: tuple[bytes, bytes] | None = None,
                 original_cid: bytes | None = None):
        config = QuicConfiguration(
            is_client=cert is None, alpn_protocols=[ALPN], max_datagram_size=settings.max_datagram,
            probe_datagram_size=False, idle_timeout=settings.idle_timeout_s,
            max_stream_data=settings.max_stream_data, max_data=settings.max_data,
            connection_id_length=CID_LENGTH, signature_algorithms=SIGNATURE_ALGORITHMS)
        if cert is None:
            # No CA: the TLS library checks that the server holds its certificate's key;
            # we check that the key certifies the NID (receive), or say the stream is
            # only encrypted when the NID is plain.
            config.verify_mode = ssl.CERT_NONE
            config.server_name = "ilnp-node"
        else:
            config.load_cert_chain(cert[0], cert[1])
        self.peer = peer
        self.is_client = cert is None
        self._expect_nid = nid_of_address(peer[0]) if self.is_client else None
        self.authenticated = False
        self._conn = QuicConnection(configuration=config, original_destination_connection_id=original_cid)
        self._closed = False

    def connect(self, now: float) -> None:
        self._conn.connect(self.peer, now)

    def receive(self, datagram: bytes, now: float) -> None:
        self._conn.receive_datagram(datagram, self.peer, now)

    def _check_peer(self) -> bool:
        """At the handshake's end (the relay takes events before it sends datagrams, so
        before a byte of a stream leaves): a cryptographic NID's certificate must carry
        the key that NID certifies. False: refused, the connection is closing."""
        if not self.is_client or not is_cryptographic(self._expect_nid):
            return True
        cert = self._conn.get_peercert()
        if cert is not None and certified_nid(cert.public_bytes()) == self._expect_nid:
            self.authenticated = True
            return True
        self._conn.close(error_code=0x0128, reason_phrase=WRONG_KEY)
        return False
    def datagrams(self, now: float) -> list[bytes]:
        return [data for data, _addr in self._conn.datagrams_to_send(now)]

    def timer(self) -> float | None:
        return self._conn.get_timer()

    def on_timer(self, now: float) -> None:
        self._conn.handle_timer(now)

    def open_stream(self) -> int:
        return self._conn.get_next_available_stream_id()

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self._conn.send_stream_data(stream_id, data, end)

    def reset(self, stream_id: int, code: int) -> None:
        self._conn.reset_stream(stream_id, code)

    def backlog(self, stream_id: int) -> int:
        """Bytes of this stream queued and not yet sent once (the sender's back-pressure)."""
        return self._conn.get_send_buffer_size(stream_id)

    def ping(self, uid: int) -> None:
        self._conn.send_ping(uid)

    def close(self, reason: str = "") -> None:
        self._conn.close(error_code=0, reason_phrase=reason)

    def events(self) -> list:
        out = []
        while (event := self._conn.next_event()) is not None:
            kind = type(event)
            if kind is qe.StreamDataReceived:
                out.append(StreamData(event.stream_id, event.data, event.end_stream))
            elif kind is qe.StreamReset:
                out.append(StreamReset(event.stream_id, event.error_code))
            elif kind is qe.HandshakeCompleted:
                if self._check_peer():
                    out.append(Connected(self.authenticated))
                else:
                    self._closed = True
                    out.append(Closed(WRONG_KEY))
            elif kind is qe.ConnectionTerminated and not self._closed:
                self._closed = True
                out.append(Closed(event.reason_phrase or f"error {event.error_code}"))
        return out
