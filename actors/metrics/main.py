"""The metrics program: a node's figures for Prometheus, on loopback, when `[metrics]
port` is set (an optional program: actors/registry.py OPTIONAL, supervisord.d/metrics.conf).

Nothing is gathered until someone scrapes: then every actor is asked for its `status`
(and discovery for its `hosts`, mobility for its `moves`) without blocking the loop,
supervision.json gives each program's starts and restarts, and exposition.render
writes the answer. Scrapes that come while one is gathered wait for it, and one within
REUSE_S of the last gets the same figures: a flood of scrapes costs the actors at most
a status request each per REUSE_S. The data path is untouched: this program reads what
the actors count anyway.
"""
from __future__ import annotations

import json
import logging
import os
import time

from bus.rundir import RunDir

from ..config import NodeConfig
from ..registry import ACTORS, enabled_optional, open_actor
from . import exposition
from .http import HttpServer, listen

log = logging.getLogger("metrics")
SUPERVISION_FILE = "supervision.json"   # the supervision listener's counts (tools/supervision.py)
ASK_TIMEOUT_S = 1.0                     # an actor that has not answered by then is shown down
REUSE_S = 0.5                           # scrapes closer together than this share their figures
RETRY_BIND_S = 5.0                      # the port taken: tried again this often, never a crash loop


class MetricsShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.run = run
        self.port = config.metrics_port
        self.actor = actor = open_actor("metrics", run)
        self.targets = [e.name for e in ACTORS if e.serves_requests] + \
                       [e.name for e in enabled_optional(config) if e.serves_requests]
        self.server: HttpServer | None = None
        self.cached: tuple[float, bytes] | None = None   # (when, rendered figures)
        self.waiting: list = []                          # done(body) callbacks of this gathering
        self.pending: dict[str, bool] = {}
        self.snapshot: dict = {}
        self.started = 0.0
        actor.status_extra = lambda: {"port": self.port, "listening": self.server is not None,
                                      "connections": len(self.server.conns) if self.server else 0}
        self._bind()

    def _bind(self) -> None:
        try:
            listeners = listen(self.port)
        except OSError as exc:
            self.actor.counters["bind_errors"] += 1
            log.error("event=metrics_bind_failed port=%d error=%r retry_s=%g", self.port, exc.strerror, RETRY_BIND_S)
            self.actor.call_later(RETRY_BIND_S, self._bind)
            return
        self.server = HttpServer(self.actor, listeners, self.scrape, exposition.CONTENT_TYPE, self.actor.counters)
        log.info("event=metrics_listening port=%d addresses=%s", self.port,
                 ",".join(s.getsockname()[0] for s in listeners))

    # ---- one scrape -------------------------------------------------------------------
    def scrape(self, done) -> None:
        now = time.monotonic()
        if self.cached is not None and now - self.cached[0] < REUSE_S and not self.waiting:
            done(self.cached[1])
            return
        self.waiting.append(done)
        if len(self.waiting) > 1:
            return  # a gathering is under way: this scrape gets its figures too
        self.started = now
        self.snapshot = {"actors": {}, "moves": None, "hosts": None}
        self.pending = {}
        for actor in self.targets:
            self._ask(actor, "status", lambda ok, result, actor=actor: self._status(actor, ok, result))
        self._ask("discovery", "hosts", self._hosts)
        self._ask("mobility", "moves", self._moves)

    def _ask(self, actor: str, cmd: str, callback) -> None:
        key = f"{actor}.{cmd}"
        self.pending[key] = True

        def answered(ok, result):
            if self.pending.pop(key, None):
                callback(ok, result)
                if not self.pending:
                    self._finish()
        self.actor.ask(actor, cmd, answered, timeout_s=ASK_TIMEOUT_S)

    def _status(self, actor: str, ok, result) -> None:
        self.snapshot["actors"][actor] = result if ok is True and isinstance(result, dict) else {"error": str(result)}

    def _hosts(self, ok, result) -> None:
        if ok is True and isinstance(result, list):
            self.snapshot["hosts"] = len(result)

    def _moves(self, ok, result) -> None:
        if ok is True and isinstance(result, list):
            self.snapshot["moves"] = result

    def _finish(self) -> None:
        self.snapshot["programs"] = read_programs(self.run)
        self.snapshot["now"] = time.time()
        self.snapshot["duration_s"] = round(time.monotonic() - self.started, 4)
        try:
            body = exposition.render(self.snapshot)
        except Exception:  # a bug here must not take the endpoint down: say so in the answer
            self.actor.counters["render_errors"] += 1
            log.exception("event=render_error")
            body = b"# the figures could not be rendered: see the metrics program's log\n"
        self.cached = (time.monotonic(), body)
        waiting, self.waiting = self.waiting, []
        for done in waiting:
            done(body)


def read_programs(run: RunDir) -> dict | None:
    """The supervision listener's per-program counts, if they are this supervisord's
    (our parent: supervisord runs us); None otherwise."""
    try:
        data = json.loads((run.path / SUPERVISION_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("supervisord_pid") != os.getppid():
        return None
    programs = data.get("programs")
    return programs if isinstance(programs, dict) else None


def main(config: NodeConfig, run: RunDir) -> None:
    if config.metrics_port is None:
        raise SystemExit(f"ilnp-actor metrics: {config.path}: [metrics] port is not set: nothing to serve")
    shell = MetricsShell(config, run)
    try:
        shell.actor.run()
    finally:
        if shell.server is not None:
            shell.server.close()
