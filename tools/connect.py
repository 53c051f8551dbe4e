"""`ilnp-connect REMOTE_HOST STP_PORT`: one stream over the overlay on stdin/stdout.

    ssh -o ProxyCommand="ilnp-connect bob 9999" user@bob

It asks the node's stream relay (RUN_DIR/stream.sock) for a stream to REMOTE_HOST's
forward at STP_PORT, then copies stdin to the stream and the stream to stdout; end of
stdin half-closes the stream. A failure (unknown host, refused far service, lost
connection) is one line on stderr and exit 1.
"""
from __future__ import annotations

import os
import socket
import sys
import threading

import click

from .common import node, run_cli, run_dir_option

PROG = "ilnp-connect"
CONNECT_SOCKET = "stream.sock"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("remote_host")
@click.argument("stp_port")
@run_dir_option
def cli(remote_host, stp_port, run_dir):
    """Connect stdin/stdout to REMOTE_HOST's forward at STP_PORT."""
    if not stp_port.isdigit() or not 1 <= int(stp_port) <= 65535:
        raise click.UsageError(f"bad STP port {stp_port!r}: must be a number 1-65535")
    if not remote_host or any(c.isspace() for c in remote_host) or not remote_host.isprintable():
        raise click.UsageError(f"bad remote host {remote_host!r}")
    path = node(run_dir).path / CONNECT_SOCKET
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        raise click.ClickException(f"the node's stream relay is not running ({path}: {exc.strerror})") from None
    sock.sendall(f"CONNECT {remote_host} {int(stp_port)}\n".encode())
    status, rest = read_status(sock)
    if status != "OK":
        raise click.ClickException(status.removeprefix("ERR ") or "the relay closed the stream")
    out = sys.stdout.buffer
    if rest:
        out.write(rest)
        out.flush()
    threading.Thread(target=copy_stdin, args=(sock,), daemon=True).start()
    while data := sock.recv(65536):
        out.write(data)
        out.flush()
    return 0


def read_status(sock: socket.socket) -> tuple[str, bytes]:
    """The relay's first line (OK, or ERR reason) and what came after it."""
    buf = b""
    while b"\n" not in buf:
        data = sock.recv(4096)
        if not data:
            return buf.decode("utf-8", "replace").strip(), b""
        buf += data
    line, _, rest = buf.partition(b"\n")
    return line.decode("utf-8", "replace").strip(), rest


def copy_stdin(sock: socket.socket) -> None:
    fd = sys.stdin.fileno()
    try:
        while data := os.read(fd, 65536):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # end of input: half-close, keep reading replies
    except OSError:
        pass


def run(argv: list[str] | None = None) -> int:
    return run_cli(cli, PROG, argv)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
