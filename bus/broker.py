"""The node's bus: an XSUB/XPUB forwarder on ipc:// endpoints in the run directory.

Publishers connect to bus-in, subscribers to bus-out. Subscriptions travel upstream,
so a publisher sends nothing for a topic nobody watches (the tap costs nothing idle).
"""
from __future__ import annotations

import logging
import os
import signal

import zmq

from .rundir import RunDir, current_netns

log = logging.getLogger("broker")

HWM = 50_000  # frames; data frames hold batches, so this is a lot of packets


def serve(run: RunDir, info: dict) -> None:
    run.create()
    for name in ("bus-in.sock", "bus-out.sock"):
        try:
            os.unlink(run.sock(name))  # a stale endpoint from a killed broker
        except FileNotFoundError:
            pass
    ctx = zmq.Context.instance()
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    for sock in (xsub, xpub):
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
        sock.setsockopt(zmq.LINGER, 0)
    xsub.bind(run.bus_in)
    xpub.bind(run.bus_out)
    os.chmod(run.sock("bus-in.sock"), 0o600)
    os.chmod(run.sock("bus-out.sock"), 0o600)

    def stop(_signum, _frame):
        raise SystemExit(0)

    # before node.json says we are up: a SIGTERM from then on must stop us cleanly
    signal.signal(signal.SIGTERM, stop)
    try:
        run.write_node_info({**info, "pid": os.getpid(), "netns": current_netns()})
        log.info("event=broker_up run_dir=%s", run.path)
        zmq.proxy(xsub, xpub)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        log.info("event=broker_down")
        try:
            run.node_json.unlink()
        except FileNotFoundError:
            pass
        xsub.close()
        xpub.close()
        ctx.term()
