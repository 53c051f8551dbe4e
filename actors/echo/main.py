"""The echo actor: answers every STP datagram to port 7 to its sender (for ilnp-ping)."""
from __future__ import annotations

import logging
import os

from bus import topics
from bus.actor import Actor
from bus.client import RequestError, request
from bus.rundir import RunDir

from ..config import NodeConfig
from ..stp.wire import StpError, decode, encode

log = logging.getLogger("echo")
ECHO_PORT = 7


class EchoShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.run = run
        self.actor = Actor("echo", run)
        self.bound = False
        self.actor.subscribe(topics.stp_rx(ECHO_PORT), self.on_rx)
        self.actor.call_later(0, self.bind)

    def bind(self) -> None:
        """Bind port 7 with the router; retried until the router answers."""
        try:
            request(self.run, "router", "bind", port=ECHO_PORT, pid=os.getpid(),
                    inbox=self.run.inbox("echo"), timeout=1.0)
            self.bound = True
            log.info("event=bound port=%d", ECHO_PORT)
        except RequestError as exc:
            self.actor.counters["bind_retries"] += 1
            if self.actor.counters["bind_retries"] % 20 == 1:
                log.info("event=bind_retry reason=%r", str(exc))
            self.actor.call_later(0.2, self.bind)

    def on_rx(self, _topic: bytes, body: dict) -> None:
        for item in body.get("p", ()):
            src_loc, src_nid, payload = item[0], item[1], item[5]
            try:
                src_port, dst_port, data = decode(payload)
            except StpError:
                self.actor.counters["malformed"] += 1
                continue
            self.actor.emit(topics.ILNP_TX, [src_nid, [src_loc], topics.NH_STP,
                                             encode(dst_port, src_port, data), None, None])
            self.actor.counters["echoed"] += 1


def main(config: NodeConfig, run: RunDir) -> None:
    EchoShell(config, run).actor.run()
