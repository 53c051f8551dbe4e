"""ilnp-lab: overlay nodes in network namespaces joined by bridges, on one machine.

Python API (every call needs root; errors are LabError with a one-line message):

    from tools.lab import Lab, LabError, running

    with running("pair", name="t1") as lab:     # up, yield, always down
        lab.exec("alice", ["supervisorctl", "-c", "supervisord.conf", "status"])
        p = lab.popen("bob", ["ilnp-tap"], stdout=subprocess.PIPE)

    lab = Lab("t1")                             # name defaults to $ILNP_LAB or "ilnp"
    lab.up("conf/lab/router.toml", timeout=30)  # or start=False for plumbing only
    lab.nodes(); lab.env("alice"); lab.run_dir("alice"); lab.namespace("alice")
    lab.argv("alice", ["ping", "-6", ...])      # argv to run in the node's namespace
    lab.programs("alice")                       # {program: "RUNNING", ...}
    lab.links("r1"); lab.address("r1", "wan")   # its interfaces; "10.9.0.2" (or family="ipv6")
    lab.set_link("alice", "lan1", up=False)     # a cable pulled (and put back with up=True)
    lab.status(); lab.down()                    # down returns what it could not remove

CLI: tools.lab.cli:main (console script ilnp-lab), or `python -m tools.lab`.
"""
from .errors import LabError
from .lab import DEFAULT_LAB, Lab, running

__all__ = ["DEFAULT_LAB", "Lab", "LabError", "running"]
