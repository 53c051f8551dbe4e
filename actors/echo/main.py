"""The echo actor: answers every STP datagram to port 7 to its sender (for ilnp-ping)."""
from __future__ import annotations

import logging

from bus.codec import is_u64
from bus.rundir import RunDir

from ..config import NodeConfig
from ..proto import topics
from ..proto.frames import TxItem
from ..proto.numbers import ECHO_PORT, NH_STP
from ..proto.stp import StpError, decode, encode
from ..registry import open_actor
from ..stp.binding import Bound, Refused
from ..stp.bound_ports import BoundPorts

log = logging.getLogger("echo")


class EchoShell:
    def __init__(self, config: NodeConfig, run: RunDir):
        self.actor = open_actor("echo", run)
        self.actor.subscribe(topics.stp_rx(ECHO_PORT), self.on_rx, direct=True)
        self.ports = BoundPorts(self.actor, self.on_binding)
        self.ports.want(ECHO_PORT)

    def on_binding(self, event) -> None:
        if type(event) is Bound:
            log.info("event=bound port=%d", event.port)
        elif type(event) is Refused:
            log.warning("event=bind_refused port=%d reason=%r", event.port, event.reason)

    def on_rx(self, _topic: bytes, body: dict) -> None:
        for item in self.actor.items(body):
            try:
                src_loc, src_nid, _dst_loc, _dst_nid, arrival, payload, _opts = item  # frames.RxItem
                if not (is_u64(src_loc) and is_u64(src_nid) and is_u64(arrival) and type(payload) is bytes):
                    raise TypeError
            except (TypeError, ValueError):
                self.actor.counters["bad_items"] += 1  # this item only: the rest of the batch goes on
                continue
            try:
                src_port, dst_port, data = decode(payload)
            except (StpError, TypeError, ValueError):
                self.actor.counters["malformed"] += 1
                continue
            self.actor.emit(topics.ILNP_TX, TxItem(src_nid, [src_loc], NH_STP, encode(dst_port, src_port, data)))
            self.actor.counters["echoed"] += 1


def main(config: NodeConfig, run: RunDir) -> None:
    EchoShell(config, run).actor.run()
