"""supervisord seen from the node's tools: the `supervision` event listener, its file, and
supervisord's XML-RPC.

supervisord keeps no restart counter, so `[eventlistener:supervision]` in supervisord.conf
runs `python -m tools.supervision`: supervisord sends it every PROCESS_STATE event of
every program (itself included). It keeps, per program,

- `starts`: every STARTING; `restarts`: a STARTING that follows a death (from EXITED,
  BACKOFF or FATAL: a crash, a kill, a failed start), not an operator's stop/start;
- `last_exit`: when (`time`), how (`status`: supervisord's own words, "exit status 1",
  "terminated by SIGKILL", read from its log), `expected`, and how long it had run
  (`ran_s`), for every death (EXITED, or BACKOFF: a start that failed);
- `revivals`: FATAL programs it started again (below),

and writes them to `RUN_DIR/supervision.json` (atomically, on every change) with
supervisord's PID, so `ilnp-status` never mixes counts of an earlier supervisord with
this one's. A restarted listener takes the counts over from the file (same supervisord);
supervisord buffers the events of its downtime (`buffer_size`) and delivers them then.

Revival: supervisord gives up on a program that fails `startretries` starts in a row
(FATAL) and never tries again by itself. The listener starts a FATAL program again once
it has been FATAL for `--revive-after` seconds (default 60; it waits for events with a
timeout, so no tick is needed), through XML-RPC `startProcess`; supervisord then gives it a new round of `startretries`
tries. A cause that goes away (a port freed, an interface up) is healed within about a
minute; a permanent one stays visible as FATAL, with its revivals, in `ilnp-status`.

Optional programs (actors/registry.py OPTIONAL, e.g. metrics) are not in supervisord.conf:
at its start the listener reads the node's config ($ILNP_CONF) and, for each one the
config enables, copies its block (supervisord.d/NAME.conf) into RUN_DIR/programs/, which
supervisord.conf includes, and has supervisord read it and start it (XML-RPC
reloadConfig, addProcessGroup); a block the config no longer enables is removed, and so
is its program. A node whose config enables none costs nothing here.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import socket
import sys
import time
import xmlrpc.client
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bus.rundir import RunDir, write_atomic

FILE = "supervision.json"
SOCKET = "supervisor.sock"          # supervisord.conf's [unix_http_server] file, in the run dir
VERSION = 1
LISTENER = "supervision"            # the listener's own program name in supervisord.conf
REVIVE_AFTER = 60.0
RESTART_FROM = frozenset({"EXITED", "BACKOFF", "FATAL"})  # a STARTING from these follows a death
DEATHS = frozenset({"EXITED", "BACKOFF"})                  # a program that ended by itself
SPAWN_ERROR = 50                    # supervisor.xmlrpc.Faults.SPAWN_ERROR
LOG_TAIL = 16384                    # bytes of supervisord's log searched for an exit's cause
_EXITED = re.compile(r"exited: (\S+) \((.*?); (not )?expected\)")
TEMPLATES = Path(__file__).resolve().parents[1] / "supervisord.d"  # optional programs' blocks
PROGRAMS_DIR = "programs"           # in the run dir: supervisord.conf's [include]


# ---- the counts: pure, events in, a saved form out --------------------------------------

class Tracker:
    """Per-program counts from supervisord's PROCESS_STATE events; no I/O, time passed in."""

    def __init__(self, supervisord_pid: int, revive_after: float | None = REVIVE_AFTER,
                 saved: dict | None = None):
        self.supervisord_pid = supervisord_pid
        self.revive_after = revive_after
        self.programs: dict[str, dict[str, Any]] = {}
        if isinstance(saved, dict) and saved.get("version") == VERSION \
                and saved.get("supervisord_pid") == supervisord_pid and isinstance(saved.get("programs"), dict):
            for name, entry in saved["programs"].items():
                if isinstance(entry, dict):
                    self.programs[str(name)] = self._taken_over(entry)

    @staticmethod
    def _new() -> dict[str, Any]:
        return {"state": None, "since": None, "starts": 0, "restarts": 0, "revivals": 0,
                "started_at": None, "last_exit": None, "next_revival": None}

    @classmethod
    def _taken_over(cls, saved: dict) -> dict[str, Any]:
        """A saved entry, each field of its type or left at its default."""
        entry = cls._new()
        for key, default in entry.items():
            value = saved.get(key)
            if key in ("starts", "restarts", "revivals"):
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            elif key in ("since", "started_at", "next_revival"):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif key == "state":
                ok = isinstance(value, str)
            else:
                ok = isinstance(value, dict)
            entry[key] = value if ok else default
        return entry

    def _entry(self, name: str) -> dict[str, Any]:
        return self.programs.setdefault(name, self._new())

    def on_state(self, name: str, state: str, from_state: str, now: float,
                 status: str | None = None, expected: bool | None = None) -> None:
        """PROCESS_STATE_<state> for program `name` (from `from_state`) at `now` (epoch s)."""
        entry = self._entry(name)
        entry["state"], entry["since"] = state, now
        if state == "STARTING":
            entry["starts"] += 1
            if from_state in RESTART_FROM:
                entry["restarts"] += 1
            entry["started_at"] = now
        elif state in DEATHS and from_state in ("STARTING", "RUNNING"):
            started = entry.get("started_at")
            entry["last_exit"] = {
                "time": now, "status": status, "state": state,
                "expected": bool(expected) if state == "EXITED" and expected is not None else False,
                "ran_s": round(now - started, 3) if isinstance(started, (int, float)) else None}
        entry["next_revival"] = self._later(now) if state == "FATAL" else None

    def _later(self, now: float) -> float | None:
        return None if self.revive_after is None else now + self.revive_after

    def next_due(self) -> float | None:
        """When the next revival is due (epoch s), if any program waits for one."""
        times = [e["next_revival"] for e in self.programs.values()
                 if e.get("state") == "FATAL" and isinstance(e.get("next_revival"), (int, float))]
        return min(times, default=None)

    def due(self, now: float) -> list[str]:
        """FATAL programs whose revival is due."""
        return [name for name, e in self.programs.items()
                if e.get("state") == "FATAL" and e.get("next_revival") is not None and now >= e["next_revival"]]

    def revived(self, name: str, now: float, started: bool) -> None:
        entry = self._entry(name)
        entry["next_revival"] = self._later(now)  # tried again then, if it is still FATAL
        if started:
            entry["revivals"] += 1

    def snapshot(self, now: float) -> dict:
        return {"version": VERSION, "supervisord_pid": self.supervisord_pid, "updated": now,
                "revive_after": self.revive_after, "programs": self.programs}


def exit_status(log_tail: str, name: str) -> tuple[str | None, bool | None]:
    """supervisord's words for the last exit of `name` in its log ("exit status 1",
    "terminated by SIGKILL") and whether it was expected; (None, None) if not found."""
    found = (None, None)
    for match in _EXITED.finditer(log_tail):
        if match.group(1) == name:
            found = (match.group(2), match.group(3) is None)
    return found


def parse_headers(line: str) -> dict[str, str]:
    """`a:1 b:2` -> {"a": "1", "b": "2"} (supervisord's event header and payload lines)."""
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


# ---- supervisord's XML-RPC --------------------------------------------------------------

@contextmanager
def _timeout(seconds: float):
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)   # supervisor's unix transport takes no timeout of its own
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def rpc(serverurl: str) -> xmlrpc.client.ServerProxy:
    """A proxy for supervisord's XML-RPC at `unix:///path/supervisor.sock`."""
    from supervisor.xmlrpc import SupervisorTransport
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=SupervisorTransport(None, None, serverurl))


def socket_path(run: RunDir) -> Path:
    return run.path / SOCKET


class SupervisorUnreachable(RuntimeError):
    """supervisord does not answer on the node's socket (one line)."""


def query(run: RunDir, timeout: float = 3.0) -> dict:
    """{"pid": supervisord's PID, "programs": [getProcessInfo, ...]} of the node's supervisord."""
    path = socket_path(run)
    if not path.exists():
        raise SupervisorUnreachable(f"no supervisord socket at {path}")
    try:
        with _timeout(timeout):
            server = rpc(f"unix://{path}")
            return {"pid": server.supervisor.getPID(), "programs": server.supervisor.getAllProcessInfo()}
    except (OSError, xmlrpc.client.Error) as exc:
        raise SupervisorUnreachable(f"supervisord does not answer at {path}: {exc}") from None


def read_counts(run: RunDir, supervisord_pid: int | None = None) -> dict | None:
    """The listener's file, or None when it is missing, unreadable, or of another supervisord."""
    try:
        data = json.loads((run.path / FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("programs"), dict):
        return None
    if supervisord_pid is not None and data.get("supervisord_pid") != supervisord_pid:
        return None
    return data


# ---- optional programs -------------------------------------------------------------------

def sync_program_files(directory: Path, optional: set[str], wanted: set[str]) -> bool:
    """RUN_DIR/programs/NAME.conf for each wanted optional program (its template's copy),
    none for the other optional ones; True when a file was written or removed."""
    changed = False
    for name in sorted(optional):
        path = directory / f"{name}.conf"
        if name in wanted:
            text = (TEMPLATES / f"{name}.conf").read_bytes()
            try:
                same = path.read_bytes() == text
            except OSError:
                same = False
            if not same:
                directory.mkdir(mode=0o700, exist_ok=True)
                write_atomic(path, text)
                changed = True
        elif path.exists():
            path.unlink()
            changed = True
    return changed


# ---- the listener -----------------------------------------------------------------------

def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} supervision {message}", file=sys.stderr, flush=True)


class Listener:
    """The shell: supervisord's event listener protocol on stdin/stdout, the file, RPC."""

    def __init__(self, run: RunDir, serverurl: str | None, revive_after: float | None,
                 stdin=None, stdout=None):
        self.run = run
        self.path = run.path / FILE
        self.server = rpc(serverurl) if serverurl else None
        self.stdin = stdin or sys.stdin.buffer
        self.stdout = stdout or sys.stdout.buffer
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            saved = None
        self.tracker = Tracker(os.getppid(), revive_after, saved)

    def serve(self) -> None:
        self.add_optional()
        ready = False
        while True:
            if not ready:
                self.stdout.write(b"READY\n")
                self.stdout.flush()
                ready = True
            # supervisord sends an event only when we said READY and we answer each one
            # before the next, so nothing waits in stdin's buffer when we wait on its fd
            due = self.tracker.next_due()
            timeout = None if due is None else max(0.0, due - time.time())
            if not select.select([self.stdin], [], [], timeout)[0]:
                self.revive(time.time())
                continue
            line = self.stdin.readline()
            if not line:
                return                      # supervisord went away
            headers = parse_headers(line.decode("utf-8", "replace"))
            payload = self.stdin.read(int(headers.get("len", "0"))).decode("utf-8", "replace")
            try:
                self.handle(headers.get("eventname", ""), payload)
            except Exception as exc:        # never die on one event: it would be sent again
                _log(f"event={headers.get('eventname')} error={type(exc).__name__}: {exc}")
            self.stdout.write(b"RESULT 2\nOK")
            self.stdout.flush()
            ready = False

    def handle(self, event: str, payload: str) -> None:
        now = time.time()
        if event.startswith("PROCESS_STATE_"):
            fields = parse_headers(payload.split("\n", 1)[0])
            name, state = fields.get("processname", ""), event.removeprefix("PROCESS_STATE_")
            status = expected = None
            if state in DEATHS:
                status, expected = self._exit_status(name)
                if "expected" in fields:                  # EXITED says it itself
                    expected = fields["expected"] == "1"
            self.tracker.on_state(name, state, fields.get("from_state", ""), now, status, expected)
            self.save(now)

    def revive(self, now: float) -> None:
        due = self.tracker.due(now)
        for name in due:
            self.tracker.revived(name, now, self._start(name))
        if due:
            self.save(now)

    def _exit_status(self, name: str) -> tuple[str | None, bool | None]:
        if self.server is None:
            return None, None
        try:
            with _timeout(5.0):
                tail = self.server.supervisor.readLog(-LOG_TAIL, 0)
        except (OSError, xmlrpc.client.Error):
            return None, None
        return exit_status(tail, name)

    def _start(self, name: str) -> bool:
        if self.server is None:
            return False
        try:
            with _timeout(5.0):
                self.server.supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as exc:
            _log(f"event=revive program={name} refused={exc.faultString}")
            return exc.faultCode == SPAWN_ERROR   # started, and failed at once
        except (OSError, xmlrpc.client.Error) as exc:
            _log(f"event=revive program={name} error={exc}")
            return False
        _log(f"event=revive program={name} after_s={self.tracker.revive_after:g}")
        return True

    def add_optional(self) -> None:
        """Have supervisord run the optional programs the node's config enables, and only those."""
        if not os.environ.get("ILNP_CONF"):
            return  # not a node's supervisord (a test's): no config, nothing optional
        # imported here: the listener of a supervisord that runs no node stays light
        from actors.config import ConfigError, load_config
        from actors.registry import OPTIONAL, enabled_optional
        try:
            wanted = {entry.name for entry in enabled_optional(load_config())}
        except ConfigError as exc:
            _log(f"event=optional_programs error={exc}")  # the actors fail on it too, louder
            return
        optional = {entry.name for entry in OPTIONAL}
        changed = sync_program_files(self.run.path / PROGRAMS_DIR, optional, wanted)
        if not (wanted or changed) or self.server is None:
            return
        try:
            with _timeout(5.0):
                [[added, _changed, removed]] = self.server.supervisor.reloadConfig()
                for name in removed:
                    if name in optional:
                        self.server.supervisor.stopProcessGroup(name)
                        self.server.supervisor.removeProcessGroup(name)
                        _log(f"event=optional_removed program={name}")
                for name in added:
                    if name in optional:
                        self.server.supervisor.addProcessGroup(name)
                        _log(f"event=optional_added program={name}")
        except (OSError, xmlrpc.client.Error, ValueError) as exc:
            _log(f"event=optional_programs error={exc}")

    def save(self, now: float) -> None:
        try:
            write_atomic(self.path, json.dumps(self.tracker.snapshot(now), sort_keys=True).encode())
        except OSError as exc:
            _log(f"event=save_failed path={self.path} error={exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.supervision",
                                     description="supervisord event listener: restart counts, FATAL revival")
    parser.add_argument("--revive-after", type=float, default=REVIVE_AFTER, metavar="S",
                        help="start a FATAL program again after S seconds, and every S seconds (0: never)")
    args = parser.parse_args(argv)
    run_dir = os.environ.get("ILNP_RUN_DIR")
    if not run_dir:
        print("supervision: ILNP_RUN_DIR is not set", file=sys.stderr)
        return 2
    revive_after = args.revive_after if args.revive_after > 0 else None
    Listener(RunDir(run_dir), os.environ.get("SUPERVISOR_SERVER_URL"), revive_after).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
