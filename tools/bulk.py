"""Bulk TCP source and sink for `ilnp-bench --streams` (run inside lab nodes).

    python -m tools.bulk source --bind ADDR --port P --bytes N   serve N bytes per connection
    python -m tools.bulk sink --connect HOST:PORT --count K      K connections at once, read all

The sink prints one JSON line: {"connections", "bytes", "seconds", "mb_per_s", "errors"}.
"""
from __future__ import annotations

import json
import socket
import sys
import threading
import time

CHUNK = b"\xa5" * 65536


def source(bind: str, port: int, total: int) -> None:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((bind, port))
    server.listen(64)
    print(json.dumps({"ready": True}), file=sys.stderr, flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_send, args=(conn, total), daemon=True).start()


def _send(conn: socket.socket, total: int) -> None:
    try:
        left = total
        while left > 0:
            left -= conn.send(CHUNK[:min(left, len(CHUNK))])
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # until the reader closes
    except OSError:
        pass
    finally:
        conn.close()


def sink(host: str, port: int, count: int, timeout: float) -> dict:
    got, errors = [0] * count, []

    def read(i: int) -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout) as conn:
                while data := conn.recv(262144):
                    got[i] += len(data)
        except OSError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=read, args=(i,)) for i in range(count)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    total = sum(got)
    return {"connections": count, "bytes": total, "seconds": round(seconds, 3),
            "mb_per_s": round(total / seconds / 1e6, 2), "errors": errors}


def main(argv: list[str]) -> int:
    if argv[:1] == ["source"]:
        opts = dict(zip(argv[1::2], argv[2::2]))
        source(opts["--bind"], int(opts["--port"]), int(opts["--bytes"]))
        return 0
    if argv[:1] == ["sink"]:
        opts = dict(zip(argv[1::2], argv[2::2]))
        host, _, port = opts["--connect"].rpartition(":")
        print(json.dumps(sink(host.strip("[]"), int(port), int(opts.get("--count", 1)),
                              float(opts.get("--timeout", 60)))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
