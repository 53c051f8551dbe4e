"""The broker program: bus.broker with this node's identity written to node.json."""
from __future__ import annotations

from bus.broker import serve
from bus.rundir import RunDir

from ..proto.addr import format64
from ..config import NodeConfig


def main(config: NodeConfig, run: RunDir) -> None:
    serve(run, {"hostname": config.hostname, "nid": format64(config.nid), "conf": config.path})
