"""`ilnp-status`: every program of a running node as supervisord sees it (state, PID,
uptime, restarts, last exit), every actor's counters (frames, drops, errors) and the
node's last moves (mobility's handoff figures). `--watch`: a live view (tools/watch.py).

Exit status 0 when every program is RUNNING, 1 when one is not (STARTING, BACKOFF,
EXITED, FATAL, STOPPED...) or supervisord does not answer; `--json` too. A node that is
not running at all is a one-line error. Restarts and last exits come from the
supervision event listener (tools/supervision.py), states from supervisord's XML-RPC.
"""
from __future__ import annotations

import time

import click

from actors.registry import ACTORS, OPTIONAL
from bus.client import RequestError, request
from bus.rundir import NodeNotFound, RunDir, find_run_dir

from .common import OneLineCommand, json_option, print_json, run_dir_option, say
from .memory import process_memory, total
from .supervision import LISTENER, SupervisorUnreachable, query, read_counts

ALIVE = ("STARTING", "RUNNING", "STOPPING")   # states in which a program has a process
REGISTERED = {e.name for e in ACTORS}          # programs every node runs (missing: not RUNNING)
SUPERVISORD = "supervisord"                    # the node's process that is not a program


@click.command(cls=OneLineCommand)
@run_dir_option
@json_option
@click.option("--watch", is_flag=True,
              help="A live view refreshed in place (Ctrl-C ends it); with --json, one object a line per refresh.")
@click.option("--interval", type=click.FloatRange(min=0.1, max=3600), default=None, metavar="S",
              help="Seconds between refreshes of --watch (default 2).")
def main(run_dir, as_json, watch, interval):
    """Show each program's supervisord state, restarts and last exit, each actor's counters
    and the last moves. Exits 1 when a program is not RUNNING."""
    if interval is not None and not watch:
        raise click.UsageError("--interval goes with --watch")
    if watch:
        from .watch import watch as live
        return live(run_dir, as_json, 2.0 if interval is None else interval)
    run, supervisor, error = find_node(run_dir)
    counts = read_counts(run, supervisor["pid"]) if supervisor else None
    actors = ask_actors(run, supervisor)
    report = build_report(actors, supervisor, error, counts, time.time())
    if supervisor:
        attach_memory(report, supervisor["pid"], process_memory)
    moves = last_moves(run, actors)
    if moves is not None and "mobility" in report:
        report["mobility"]["moves"] = moves
    if as_json:
        print_json(report)
    else:
        for line in format_report(report):
            click.echo(line)
        if moves:
            click.echo("")
            for line in format_moves(moves):
                click.echo(line)
    down = not_running(report)
    if down:
        say("ilnp-status", "not RUNNING: " + ", ".join(f"{name} ({state})" for name, state in down))
        return 1
    return 0


def ask_actors(run: RunDir, supervisor: dict | None, timeout: float = 2.0) -> dict[str, dict]:
    """Every actor's status ({"error": ...} for one that is down or does not answer): the
    registered ones, and the optional ones supervisord runs."""
    states = {p["name"]: p["statename"] for p in supervisor["programs"]} if supervisor else {}
    names = [e.name for e in ACTORS if e.serves_requests] + \
            [e.name for e in OPTIONAL if e.serves_requests and e.name in states]
    actors = {}
    for actor in names:
        if actor in states and states[actor] not in ALIVE:
            actors[actor] = {"error": f"actor {actor} is not running ({states[actor]})"}
            continue
        try:
            actors[actor] = request(run, actor, "status", timeout=timeout)
        except RequestError as exc:
            actors[actor] = {"error": str(exc)}
    return actors


def last_moves(run: RunDir, actors: dict[str, dict], timeout: float = 2.0) -> list | None:
    """Mobility's last moves (None when it is down)."""
    if "error" in actors.get("mobility", {"error": ""}):
        return None
    try:
        moves = request(run, "mobility", "moves", timeout=timeout)
    except RequestError:
        return None
    return moves if isinstance(moves, list) else None


def format_moves(moves: list, limit: int = 5) -> list[str]:
    """The last `limit` moves, newest last, one line each (times after the move's start):
    `#3 12:01:05 command 0:0:0:a -> 0:0:0:b  updates 2/2 acked (last 12 ms)  first packet
    40 ms on 0:0:0:b  lost 0 waited 2 late 0  window 2.0s settled`."""
    lines = [f"last moves ({min(limit, len(moves))} of {len(moves)} kept, newest last):"]
    for move in moves[-limit:]:
        lines.append("  " + move_line(move))
    return lines


def move_line(move: dict) -> str:
    return "  ".join(move_parts(move))


def move_parts(move: dict) -> list[str]:
    """A move's line in parts: what moved, its updates, its first packet, its window's figures."""
    updates = [u for u in move.get("updates") or () if isinstance(u, dict)]
    acks = [u["acked_ms"] for u in updates if _number(u.get("acked_ms"))]
    started = move.get("started_at")
    when = time.strftime("%H:%M:%S", time.localtime(started)) if _number(started) else "?"
    parts = [f"#{move.get('id', '?')} {when} {move.get('cause', '?')} "
             f"{','.join(move.get('old') or ()) or '-'} -> {','.join(move.get('new') or ()) or '-'}"]
    text = f"updates {len(acks)}/{len(updates)} acked"
    if acks:
        text += f" (last {max(acks)} ms)"
    parts.append(text)
    if _number(move.get("first_packet_ms")):
        parts.append(f"first packet {move['first_packet_ms']} ms on {move.get('first_packet_loc')}")
    else:
        parts.append("first packet -" if move.get("open") else "no packet on the new locators")
    figures = [f"{key} {move.get(name) if move.get(name) is not None else '?'}"
               for key, name in (("lost", "lost"), ("waited", "waited"), ("late", "late_on_old"))]
    parts.append(" ".join(figures))
    if move.get("open"):
        parts.append("window open")
    else:
        window = move.get("window_ms")
        parts.append(f"window {window / 1000:.1f}s {move.get('closed_by')}" if _number(window) else "window ?")
    return parts


def find_node(run_dir: str | None) -> tuple[RunDir, dict | None, str | None]:
    """The node, what its supervisord says (or None and why not). A node whose broker is
    down but whose supervisord answers is still shown: the broker is then not RUNNING."""
    try:
        run = find_run_dir(run_dir)
    except NodeNotFound as exc:
        if not run_dir:
            raise click.ClickException(str(exc)) from None
        try:
            return RunDir(run_dir), query(RunDir(run_dir)), None
        except SupervisorUnreachable:
            raise click.ClickException(str(exc)) from None
    try:
        return run, query(run), None
    except SupervisorUnreachable as exc:
        return run, None, str(exc)


def build_report(actors: dict[str, dict], supervisor: dict | None, error: str | None,
                 counts: dict | None, now: float) -> dict[str, dict]:
    """{program: {...actor status (counters), "supervisor": {...}}}: every program
    supervisord runs and every registered actor, in start order."""
    report: dict[str, dict] = {}
    programs = {p["name"]: p for p in supervisor["programs"]} if supervisor else {}
    names = [e.name for e in ACTORS] + [LISTENER]      # start order, then what else supervisord runs
    names += sorted(set(programs) - set(names))
    if supervisor is not None:
        names = [n for n in names if n in programs or n in actors or n in REGISTERED]
    counted = (counts or {}).get("programs", {})
    for name in names:
        entry = dict(actors.get(name, {}))
        if supervisor is None:
            entry["supervisor"] = {"state": None, "error": error or "supervisord does not answer"}
        elif name not in programs:
            entry["supervisor"] = {"state": None, "error": "not a program of supervisord"}
        else:
            entry["supervisor"] = program_view(programs[name], counted.get(name) if counts else None,
                                               counts is not None, now)
        report[name] = entry
    return report


def attach_memory(report: dict[str, dict], supervisord_pid: int | None, read) -> None:
    """Each program's PSS and RSS (`memory` in its supervisor view), and supervisord as
    one more process of the node, which carries the node's total (`node_memory`)."""
    memories = []
    for entry in report.values():
        pid = entry["supervisor"].get("pid")
        if pid:
            entry["supervisor"]["memory"] = read(pid)
            memories.append(entry["supervisor"]["memory"])
    if supervisord_pid:
        own = read(supervisord_pid)
        memories.append(own)
        view = {"state": "RUNNING", "pid": supervisord_pid, "uptime_s": None, "spawnerr": None,
                "restarts": None, "starts": None, "revivals": None, "last_exit": None,
                "next_try_s": None, "memory": own}  # the keys a program's view has
        report[SUPERVISORD] = {"supervisor": view, "node_memory": total(memories)}


def program_view(info: dict, counted: dict | None, have_counts: bool, now: float) -> dict:
    """One program: supervisord's getProcessInfo and the listener's counts, as shown."""
    state = info.get("statename")
    start, sup_now = info.get("start") or 0, info.get("now") or now
    view = {
        "state": state,
        "pid": info.get("pid") or None,
        "uptime_s": int(sup_now - start) if state in ALIVE and start else None,   # whole seconds
        "spawnerr": info.get("spawnerr") or None,
        "restarts": None, "starts": None, "revivals": None, "last_exit": None, "next_try_s": None,
    }
    if have_counts:
        counted = counted or {}
        view.update({key: _count(counted.get(key)) for key in ("restarts", "starts", "revivals")})
        last = counted.get("last_exit")
        if isinstance(last, dict) and _number(last.get("time")):
            view["last_exit"] = {**last, "ago_s": round(max(0.0, now - last["time"]), 1),
                                 "ran_s": last.get("ran_s") if _number(last.get("ran_s")) else None,
                                 "status": last.get("status") if isinstance(last.get("status"), str) else None}
        revival = counted.get("next_revival")
        if state == "FATAL" and _number(revival):
            view["next_try_s"] = round(max(0.0, revival - now), 1)
    return view


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def not_running(report: dict[str, dict]) -> list[tuple[str, str]]:
    """(program, state) of every program that is not RUNNING (state None: unknown)."""
    return [(name, entry["supervisor"].get("state") or "unknown") for name, entry in report.items()
            if entry["supervisor"].get("state") != "RUNNING"]


def format_report(report: dict[str, dict]) -> list[str]:
    lines = [f"{'program':12} {'state':9} {'pid':>7} {'uptime':>8} {'restarts':>8} {'PSS MB':>7}  last exit"]
    errors = set()
    for name, entry in report.items():
        sup = entry["supervisor"]
        if name == SUPERVISORD:
            continue  # not a program: its memory is in the total below
        if sup.get("error"):
            errors.add(sup["error"])
        pid = str(sup.get("pid") or "-")
        restarts = "?" if sup.get("restarts") is None else str(sup["restarts"])
        memory = sup.get("memory")
        pss = f"{memory['pss_kb'] / 1024:.1f}" if memory else "-"
        line = (f"{name:12} {sup.get('state') or '?':9} {pid:>7} {duration(sup.get('uptime_s')):>8}"
                f" {restarts:>8} {pss:>7}  {last_exit(sup)}")
        lines.append(line.rstrip())
    lines += [f"supervisord: {e}" for e in sorted(errors)]
    node_memory = report.get(SUPERVISORD, {}).get("node_memory")
    if node_memory:
        lines.append(f"memory: PSS {node_memory['pss_mb']} MB, RSS {node_memory['rss_mb']} MB "
                     f"({node_memory['processes']} processes, supervisord included)")
    lines.append("")
    for name, status in report.items():
        status = {k: v for k, v in status.items() if k != "supervisor"}
        if not status or name == SUPERVISORD:
            continue
        if "error" in status:
            lines.append(f"{name:12} DOWN  {status['error']}")
            continue
        merged = {**status.get("counters", {}), **status.get("core", {})}
        counters = " ".join(f"{k}={v}" for k, v in sorted(merged.items()))
        lines.append(f"{name:12} pid {status.get('pid', '?'):<7} up {status.get('uptime_s', 0):>8.1f}s  {counters}")
    return lines


def last_exit(sup: dict) -> str:
    """`12s ago: terminated by SIGKILL (ran 1m05s)`, plus supervisord's spawn error and,
    for a FATAL program, when the listener tries it again."""
    parts = []
    last = sup.get("last_exit")
    if last:
        ran = f" (ran {duration(last['ran_s'])})" if last.get("ran_s") is not None else ""
        parts.append(f"{duration(last.get('ago_s'))} ago: {last.get('status') or 'exited'}{ran}")
    if sup.get("state") != "RUNNING" and sup.get("spawnerr"):
        parts.append(sup["spawnerr"])
    if sup.get("next_try_s") is not None:
        parts.append(f"next try in {duration(sup['next_try_s'])}")
    if sup.get("revivals"):
        parts.append(f"revived {sup['revivals']}x")
    return "; ".join(parts) or "-"


def duration(seconds: float | None) -> str:
    """0.4s, 12.0s (12s for an int), 5m03s, 2h07m, 3d04h; "-" for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds}s" if isinstance(seconds, int) else f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


if __name__ == "__main__":
    main()
