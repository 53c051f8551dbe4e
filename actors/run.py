"""`ilnp-actor NAME`: run one actor of the node named by $ILNP_CONF in $ILNP_RUN_DIR."""
from __future__ import annotations

import importlib
import logging
import os
import sys

from bus.rundir import RUN_DIR_ENV, RunDir

from .config import ConfigError, load_config
from .nodekey import node_identity
from .registry import BY_NAME


def setup_logging(name: str) -> None:
    logging.basicConfig(
        stream=sys.stdout, level=os.environ.get("ILNP_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)s {name} %(message)s")


def batch_scheduling() -> None:
    """SCHED_BATCH: the kernel stops preempting others the moment a datagram or frame
    wakes us, so we wake a little later to more work: bigger batches, fewer context
    switches, with no timer (and no lower priority: batch only affects wakeups).
    Threads started later (zmq's I/O thread) inherit it. ILNP_SCHED_BATCH=0 turns it off."""
    if os.environ.get("ILNP_SCHED_BATCH", "1") == "0" or not hasattr(os, "SCHED_BATCH"):
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in BY_NAME:
        print(f"usage: ilnp-actor {{{'|'.join(BY_NAME)}}}", file=sys.stderr)
        return 2
    name = argv[0]
    setup_logging(name)
    batch_scheduling()
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        print(f"ilnp-actor: {RUN_DIR_ENV} is not set", file=sys.stderr)
        return 2
    try:
        config = node_identity(load_config(), run_dir)[0]
    except ConfigError as exc:
        print(f"ilnp-actor {name}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ilnp-actor {name}: node key: {exc}", file=sys.stderr)
        return 2
    module = importlib.import_module(BY_NAME[name].module)
    module.main(config, RunDir(run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
