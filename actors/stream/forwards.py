"""The relay's forwards: their rules, and their file (they survive kill -9 and a restart)."""
from __future__ import annotations

from dataclasses import dataclass

from ..statefile import StateFile
from .core import Forward

SAVED_VERSION = 1


class ForwardError(ValueError):
    """A forward command that cannot be done: one line."""


@dataclass(frozen=True)
class Listen:
    """listen: a local TCP port -> (remote host, its served STP port)."""
    local_port: int
    host: str
    stp_port: int
    bind: str = "127.0.0.1"


def _port(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ForwardError(f"bad {what} {value!r}: must be 1-65535")
    return value


def _host(value, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value.encode()) <= 255 or not value.isprintable() \
            or any(c.isspace() for c in value):
        raise ForwardError(f"bad {what} {value!r}: 1-255 printable characters, no spaces")
    return value


def check_saved(saved) -> None:
    """The shape of stream-forwards.json (what ForwardTable._save writes); ValueError: the reason."""
    if not isinstance(saved, dict) or saved.get("version") != SAVED_VERSION:
        raise ValueError(f"not an object with \"version\": {SAVED_VERSION}")
    for kind, key, fields in (("serve", "stp_port", (("stp_port", _port), ("host", _host), ("port", _port))),
                              ("listen", "local_port", (("local_port", _port), ("host", _host),
                                                        ("stp_port", _port), ("bind", _host)))):
        entries = saved.get(kind, [])
        if not isinstance(entries, list):
            raise ValueError(f"{kind}: not a list")
        seen = set()
        for entry in entries:
            if not isinstance(entry, dict):
                raise ValueError(f"{kind}: {entry!r:.60} is not an object")
            for name, check in fields:
                if name == "bind" and name not in entry:
                    continue  # older files: the default bind
                check(entry.get(name), f"{kind} {name}")
            if entry[key] in seen:
                raise ValueError(f"{kind}: {key} {entry[key]} appears twice")
            seen.add(entry[key])


class ForwardTable:
    def __init__(self, store: StateFile):
        self.store = store
        self._serve: dict[int, Forward] = {}
        self._listen: dict[int, Listen] = {}
        self.bad_saved = 0
        saved = store.load() or {}
        for entry in saved.get("serve", []) if isinstance(saved, dict) else []:
            try:
                self._serve.setdefault(_port(entry["stp_port"], "STP port"), Forward(
                    entry["stp_port"], _host(entry["host"], "host"), _port(entry["port"], "port")))
            except (ForwardError, KeyError, TypeError):
                self.bad_saved += 1
        for entry in saved.get("listen", []) if isinstance(saved, dict) else []:
            try:
                self._listen.setdefault(_port(entry["local_port"], "local port"), Listen(
                    entry["local_port"], _host(entry["host"], "host"), _port(entry["stp_port"], "STP port"),
                    _host(entry.get("bind", "127.0.0.1"), "bind address")))
            except (ForwardError, KeyError, TypeError):
                self.bad_saved += 1

    def serves(self) -> list[Forward]:
        return [self._serve[p] for p in sorted(self._serve)]

    def listens(self) -> list[Listen]:
        return [self._listen[p] for p in sorted(self._listen)]

    def served_ports(self) -> set[int]:
        return set(self._serve)

    def add_serve(self, stp_port, host, port) -> Forward:
        forward = Forward(_port(stp_port, "STP port"), _host(host, "host"), _port(port, "port"))
        old = self._serve.get(forward.stp_port)
        if old is not None and old != forward:
            raise ForwardError(f"STP port {forward.stp_port} already serves {old.host}:{old.port}"
                               f" (delete it first)")
        self._serve[forward.stp_port] = forward
        self._save(lambda: self._serve.pop(forward.stp_port) if old is None else None)
        return forward

    def check_listen(self, local_port, host, stp_port, bind) -> Listen:
        entry = Listen(_port(local_port, "local port"), _host(host, "remote host"), _port(stp_port, "STP port"),
                       _host(bind, "bind address"))
        old = self._listen.get(entry.local_port)
        if old is not None:
            raise ForwardError(f"local port {entry.local_port} already forwards to {old.host}:{old.stp_port}"
                               f" (delete it first)")
        return entry

    def add_listen(self, entry: Listen) -> None:
        self._listen[entry.local_port] = entry
        self._save(lambda: self._listen.pop(entry.local_port))

    def remove_serve(self, stp_port) -> Forward:
        forward = self._serve.pop(_port(stp_port, "STP port"), None)
        if forward is None:
            raise ForwardError(f"nothing is served on STP port {stp_port}")
        self._save(lambda: self._serve.__setitem__(forward.stp_port, forward))
        return forward

    def remove_listen(self, local_port) -> Listen:
        entry = self._listen.pop(_port(local_port, "local port"), None)
        if entry is None:
            raise ForwardError(f"no forward listens on local port {local_port}")
        self._save(lambda: self._listen.__setitem__(entry.local_port, entry))
        return entry

    def _save(self, undo) -> None:
        try:
            self.store.save({"version": SAVED_VERSION,
                             "serve": [{"stp_port": f.stp_port, "host": f.host, "port": f.port} for f in self.serves()],
                             "listen": [{"local_port": e.local_port, "host": e.host, "stp_port": e.stp_port,
                                         "bind": e.bind} for e in self.listens()]})
        except OSError as exc:
            undo()
            raise ForwardError(f"cannot save the forwards to {self.store.path}: {exc.strerror or exc}") from None

    @staticmethod
    def describe_serve(forward: Forward, bound: bool) -> dict:
        return {"kind": "serve", "stp_port": forward.stp_port, "to": f"{forward.host}:{forward.port}",
                "bound": bound}

    @staticmethod
    def describe_listen(entry: Listen) -> dict:
        return {"kind": "listen", "local_port": entry.local_port, "bind": entry.bind,
                "to": f"{entry.host}:{entry.stp_port}"}
