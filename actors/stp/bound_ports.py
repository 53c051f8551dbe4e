"""A PortBinder run inside an actor's loop: the one shell of the port-binding machine.

Asks the router without blocking (Actor.ask), follows its `state.ports` table, runs
the machine's retry timer, and tells its owner what became of each wish through
`on_event(Bound | Refused | Unanswered | Lost)`. Used by the echo, the proxy and the
stream relay; an application (StpSocket) drives the same machine with blocking requests.
"""
from __future__ import annotations

import os
from typing import Callable

from bus.actor import Actor, CoreTimer, monotonic_ms

from ..proto import topics
from .binding import AskBind, AskUnbind, PortBinder

ROUTER = "router"  # the actor that owns the STP port registry
TIMEOUT_S = 1.0


class BoundPorts:
    def __init__(self, actor: Actor, on_event: Callable[[object], None] = lambda event: None):
        self.actor = actor
        self.machine = PortBinder(os.getpid())
        self.on_event = on_event
        self.inbox = actor.run_dir.inbox(actor.name)  # where the router pushes our segments
        self.timer = CoreTimer(actor, self.machine.next_deadline, lambda now: self.do(self.machine.on_timer(now)))
        actor.subscribe(topics.STATE_PORTS, self._on_ports)

    def want(self, port: int) -> None:
        self.do(self.machine.want(port, monotonic_ms()))

    def release(self, port: int) -> None:
        self.do(self.machine.release(port, monotonic_ms()))

    def is_bound(self, port: int) -> bool:
        return self.machine.is_bound(port)

    def refusal(self, port: int) -> str | None:
        return self.machine.refusal(port)

    def _on_ports(self, _topic: bytes, body: dict) -> None:
        table = body.get("ports")
        if isinstance(table, dict):
            self.do(self.machine.on_router_ports(table, monotonic_ms()))

    def do(self, actions: list) -> None:
        machine, now = self.machine, monotonic_ms
        for action in actions:
            kind, port = type(action), action.port
            if kind is AskBind:
                self.actor.ask(ROUTER, "bind", lambda ok, res, port=port: self.do(
                    machine.on_bind_reply(port, ok, res, now())), TIMEOUT_S,
                    port=port, pid=machine.owner, inbox=self.inbox)
            elif kind is AskUnbind:
                self.actor.ask(ROUTER, "unbind", lambda ok, _res, port=port: self.do(
                    machine.on_unbind_reply(port, ok, now())), TIMEOUT_S, port=port, pid=machine.owner)
            else:
                self.on_event(action)
        self.timer.arm()
