"""The fd store program: bus.fdstore serving this node's run directory.

It keeps descriptors that must outlive the process that opened them: the link's
underlay sockets, so that a kill -9 of the link loses no traffic (the kernel keeps the
socket, its multicast memberships and what arrives meanwhile; the next link takes it
back). A program of its own, started before the link, because it must not die with it.
"""
from __future__ import annotations

from bus.fdstore import serve
from bus.rundir import RunDir

from ..config import NodeConfig


def main(config: NodeConfig, run: RunDir) -> None:
    run.create()
    serve(run.fdstore)
