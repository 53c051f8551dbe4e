"""One small interface over the QUIC library, so that it can be swapped.

qh3 (aioquic's API, a native core) is used as a sans-I/O state machine: datagrams in,
datagrams out, time passed in. Its addresses must look like IP addresses, so a peer
is addressed by its NID written as an IPv6 address (`::ffff:0:0:b`) and its STP port:
neither changes when a node moves (ILNP carries the move below QUIC).
"""
from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from qh3._hazmat import Buffer
from qh3.quic import events as qe
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection
from qh3.quic.packet import pull_quic_header

ALPN = "ilnp-stream/1"
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
    """The handshake completed."""


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


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for this node's relay, made once and kept (0600)."""
    cert_path, key_path = directory / "stream-cert.pem", directory / "stream-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ilnp-node")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    for path, data in ((key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption())),
                       (cert_path, cert.public_bytes(serialization.Encoding.PEM))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        tmp.replace(path)
    return cert_path, key_path


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

    def __init__(self, settings: Settings, peer: tuple[str, int], *, cert: tuple[Path, Path] | None = None,
                 original_cid: bytes | None = None):
        config = QuicConfiguration(
            is_client=cert is None, alpn_protocols=[ALPN], max_datagram_size=settings.max_datagram,
            probe_datagram_size=False, idle_timeout=settings.idle_timeout_s,
            max_stream_data=settings.max_stream_data, max_data=settings.max_data,
            connection_id_length=CID_LENGTH)
        if cert is None:
            # Plain NIDs carry no key to check a certificate against: encrypted, not
            # authenticated (the relay says so).
            config.verify_mode = ssl.CERT_NONE
            config.server_name = "ilnp-node"
        else:
            config.load_cert_chain(str(cert[0]), str(cert[1]))
        self.peer = peer
        self.is_client = cert is None
        self._conn = QuicConnection(configuration=config, original_destination_connection_id=original_cid)
        self._closed = False

    def connect(self, now: float) -> None:
        self._conn.connect(self.peer, now)

    def receive(self, datagram: bytes, now: float) -> None:
        self._conn.receive_datagram(datagram, self.peer, now)

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
                out.append(Connected())
            elif kind is qe.ConnectionTerminated and not self._closed:
                self._closed = True
                out.append(Closed(event.reason_phrase or f"error {event.error_code}"))
        return out
