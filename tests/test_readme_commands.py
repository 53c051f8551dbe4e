"""The README's "Running a node" commands work as written on a fresh machine (issue 12
item 7: supervisord refused to start because the run directory did not exist yet).

The commands are taken from the README's first ```sh block of that section and run in
a lab namespace (it has the eth0 that conf/alice.toml names) by a clean shell: no ILNP_*
variables, no virtualenv on PATH, and a fresh, empty /run (a tmpfs mounted in the mount
namespace `ip netns exec` gives the command, so nothing of this machine's /run is seen
or touched). A command that asks for status is retried for a while, as a person would
type it again while the programs start (until it succeeds and shows none STARTING); every other command must succeed the first
time. Before the block's last command (the shutdown) the node must be steady: every
program RUNNING with the same PIDs two seconds apart, ilnp-status answering for every
actor, the run directory 0700.
"""
from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.labutil import REPO, lab_name, write_topology
from tools.lab import Lab

ACTORS = {"broker", "link", "router", "discovery", "mobility", "echo", "proxy", "stream"}


def readme_commands() -> list[str]:
    """The command lines of the first sh block under "## Running a node" (comments dropped)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Running a node"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no ```sh block under ## Running a node"
    return [cmd for cmd in (strip_comment(line) for line in block.group(1).splitlines()) if cmd]


def strip_comment(line: str) -> str:
    """The command without its trailing `# comment` (a # that starts a word, outside quotes)."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


def test_strip_comment():
    assert strip_comment("export PATH=$PWD/.venv/bin:$PATH   # the tools") == "export PATH=$PWD/.venv/bin:$PATH"
    assert strip_comment("echo 'a # b' # c") == "echo 'a # b'"
    assert strip_comment("# only a comment") == ""


def test_the_readme_block_is_what_this_test_expects():
    """Start, status and stop are there (no root needed to check that)."""
    cmds = readme_commands()
    assert any(c.split()[-3:] == ["supervisord", "-c", "supervisord.conf"] or "supervisord -c" in c for c in cmds)
    assert any("status" in c for c in cmds)
    assert "shutdown" in cmds[-1]


def script(cmds: list[str]) -> str:
    *start, stop = cmds
    out = [
        "set -u",
        f"cd {shlex.quote(str(REPO))}",
        # a fresh /run in this mount namespace only (ip netns exec made / a slave)
        "mount -t tmpfs -o mode=0755 readme-run /run || { echo 'SETUP: no tmpfs on /run'; exit 99; }",
        "stopped=0",
        f"cleanup() {{ [ $stopped = 1 ] || eval {shlex.quote(stop)} >/dev/null 2>&1; }}",
        "trap cleanup EXIT",
        'run() { echo "+ $1"; eval "$1" || { echo "FAILED $?: $1"; exit 1; }; }',
        # a status command is typed again until it answers and shows no program still starting
        'retry() { echo "+ $1"; for i in $(seq 150); do out=$(eval "$1" 2>&1) &&'
        ' ! grep -qE "STARTING|BACKOFF" <<<"$out" && { echo "$out"; return 0; };'
        ' sleep 0.2; done; echo "$out"; echo "FAILED (30 s): $1"; exit 1; }',
    ]
    for cmd in start:
        out.append(f"{'retry' if 'status' in cmd else 'run'} {shlex.quote(cmd)}")
    out += [
        "sleep 2",  # steady: a program that dies after its startsecs shows here
        'echo "MODE $(stat -c %a "$ILNP_RUN_DIR")"',
        'echo "STATUS_BEGIN"; supervisorctl -c supervisord.conf status; echo "STATUS_END $?"',
        'echo "ILNP_STATUS_BEGIN"; ilnp-status --json; echo; echo "ILNP_STATUS_END $?"',
        f"run {shlex.quote(stop)}",
        "stopped=1",
        'for i in $(seq 100); do [ -e "$ILNP_RUN_DIR/supervisord.pid" ] || break; sleep 0.1; done',
        '[ -e "$ILNP_RUN_DIR/supervisord.pid" ] && echo "STILL RUNNING" || echo "STOPPED"',
    ]
    return "\n".join(out) + "\n"


def between(text: str, begin: str, end: str) -> str:
    return text.split(begin + "\n", 1)[1].split("\n" + end, 1)[0]


@pytest.fixture
def namespace(tmp_path):
    """A lab with its namespaces and bridge and no node started: alice's namespace has eth0."""
    lab = Lab(lab_name("rd"))
    try:
        lab.up(write_topology(tmp_path, "pair"), start=False)
        yield lab
    finally:
        assert not lab.down()


@pytest.mark.lab
def test_running_a_node_as_the_readme_says(namespace):
    cmds = readme_commands()
    env = ["env", "-i", "HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]
    proc = namespace.exec("alice", [*env, "bash", "-c", script(cmds)], capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert "SETUP:" not in out, out
    assert proc.returncode == 0 and "FAILED" not in out, f"the README commands failed:\n{out}"
    status = between(out, "STATUS_BEGIN", "STATUS_END").splitlines()
    assert "STATUS_END 0" in out, out
    assert status and all(re.match(r"^\S+\s+RUNNING\s+pid \d+,", ln) for ln in status), out
    programs = {ln.split()[0]: ln.split()[3].rstrip(",") for ln in status}
    assert ACTORS <= set(programs), out
    # the same PIDs as when the README's status first showed them all RUNNING: no restarts
    first = [ln for ln in out.split("STATUS_BEGIN")[0].splitlines() if re.match(r"^\S+\s+RUNNING\s+pid \d+,", ln)]
    assert first and {ln.split()[0]: ln.split()[3].rstrip(",") for ln in first} == programs, out
    assert "MODE 700" in out, out
    reports = json.loads(between(out, "ILNP_STATUS_BEGIN", "ILNP_STATUS_END").strip())
    assert ACTORS <= set(json.dumps(reports).replace('"', " ").split()), reports
    assert "STOPPED" in out, out
