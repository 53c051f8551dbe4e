"""The proxy's local UDP socket."""
from __future__ import annotations

import socket

SOCKET_BUFFER = 4 << 20        # bytes; the kernel caps it at rmem_max / wmem_max


def open_proxy_socket(bind: str, port: int) -> tuple[socket.socket, str]:
    """The proxy's UDP socket (non-blocking) and the loopback address replies go to."""
    family = socket.getaddrinfo(bind, port, type=socket.SOCK_DGRAM)[0][0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass
    try:
        sock.bind((bind, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind the proxy port {bind}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock, "::1" if family == socket.AF_INET6 else "127.0.0.1"
