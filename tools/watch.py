"""`ilnp-status --watch`: a live view of a node, refreshed in place.

Every `--interval` seconds it asks what `ilnp-status` asks (supervisord, the
supervision listener's counts, every actor's status) and more: mobility's locators
and last moves, discovery's hosts, the router's sessions, the proxy's mappings, the
stream relay's forwards. Rates (packets in, out, forwarded, delivered, sent; drops by
reason) are the change since the previous refresh over the time between them.

In a terminal the view is redrawn in place with ANSI escapes (cursor home, clear to the
end of each line); `--json` writes one object a line per refresh instead. Ctrl-C (or
SIGTERM) ends it cleanly (exit 0, cursor shown again). A node that is not running is a
one-line error at start; one that stops while watched is said in the view, which goes
on until it is back or Ctrl-C.
"""
from __future__ import annotations

import json
import shutil
import signal
import sys
import time

import click

from actors.metrics import figures
from actors.proto.addr import format64
from bus.client import RequestError, request
from bus.rundir import RunDir

from .status import SUPERVISORD, ask_actors, build_report, duration, find_node, move_parts
from .supervision import SupervisorUnreachable, query, read_counts

ASK_TIMEOUT = 1.0
MOVES_SHOWN = 3
PACKET_KINDS = ("in", "out", "forwarded", "delivered", "sent")


class _Stop(Exception):
    """SIGTERM: end the view as Ctrl-C does."""


def watch(run_dir: str | None, as_json: bool, interval: float) -> int:
    run, _supervisor, _error = find_node(run_dir)  # not running: the one-line error, exit 1
    screen = None if as_json else Screen(sys.stdout)
    previous = None

    def stop(_signum, _frame):
        raise _Stop

    old_term = signal.signal(signal.SIGTERM, stop)
    try:
        if screen:
            screen.start()
        while True:
            snap = gather(run)
            view = build_view(snap, previous)
            if as_json:
                click.echo(json.dumps(view, sort_keys=True, default=str))
            else:
                screen.draw(render(view, interval))
            previous = snap
            time.sleep(interval)
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if screen:
            screen.stop()


# ---- gathering -----------------------------------------------------------------------------

def gather(run: RunDir) -> dict:
    """Everything one refresh shows, as the node answered (errors included)."""
    snap: dict = {"time": time.time(), "mono": time.monotonic(), "run_dir": str(run.path)}
    if not run.broker_running():
        snap["error"] = f"node not running at {run.path}"
    try:
        supervisor, error = query(run, timeout=2.0), None
    except SupervisorUnreachable as exc:
        supervisor, error = None, str(exc)
    if supervisor is None and "error" in snap:
        return snap
    counts = read_counts(run, supervisor["pid"]) if supervisor else None
    actors = ask_actors(run, supervisor, timeout=ASK_TIMEOUT) if "error" not in snap else {}
    snap["report"] = build_report(actors, supervisor, error, counts, snap["time"])
    snap["actors"] = actors
    info = run.read_node_info()
    snap["node"] = {"hostname": info.get("hostname"), "nid": info.get("nid")} if isinstance(info, dict) else {}
    for key, actor, cmd in (("locators", "mobility", "locators"), ("moves", "mobility", "moves"),
                            ("hosts", "discovery", "hosts"), ("sessions", "router", "sessions"),
                            ("proxy", "proxy", "list"), ("forwards", "stream", "forwards")):
        if figures.answered(actors.get(actor)):
            try:
                snap[key] = request(run, actor, cmd, timeout=ASK_TIMEOUT)
            except RequestError:
                pass
    return snap


def build_view(snap: dict, previous: dict | None) -> dict:
    """What one refresh shows (the --json object): plain values, rates per second."""
    view: dict = {"time": round(snap["time"], 3), "node": snap.get("node", {}), "run_dir": snap["run_dir"]}
    if "error" in snap:
        view["error"] = snap["error"]
    report = snap.get("report") or {}
    actors = snap.get("actors") or {}
    programs = {}
    for name, entry in report.items():
        if name == SUPERVISORD:
            continue
        sup = entry.get("supervisor", {})
        status = actors.get(name)
        programs[name] = {"state": sup.get("state"), "pid": sup.get("pid"), "uptime_s": sup.get("uptime_s"),
                          "restarts": sup.get("restarts"),
                          "in_sync": status.get("in_sync") if figures.answered(status) else None,
                          "error": status.get("error") if isinstance(status, dict) and "error" in status
                          else sup.get("error")}
    view["programs"] = programs
    locs = snap.get("locators")
    view["locators"] = {"current": locs.get("cur", []), "leaving": locs.get("leaving", [])} \
        if isinstance(locs, dict) else None
    view["hosts"] = [{"hostname": r[0], "nid": format64(r[1]), "locators": [format64(x) for x in r[2]],
                      "age_s": round(r[3] / 1000, 1)}
                     for r in snap.get("hosts") or () if _host_row(r)]
    view["sessions"] = [{"locator": s[0], "nid": s[1], "idle_s": _idle(s[2])}
                        for s in snap.get("sessions") or () if isinstance(s, list) and len(s) == 3]
    proxy = snap.get("proxy")
    view["mappings"] = proxy.get("mappings", []) if isinstance(proxy, dict) else []
    forwards = snap.get("forwards")
    view["forwards"] = (forwards.get("serve", []) + forwards.get("listen", [])) if isinstance(forwards, dict) else []
    view["totals"] = figures.packets(actors)
    view["drops"] = {f"{a}.{r}": v for (a, r), v in sorted(figures.drops(actors).items())}
    view["rates"], view["drop_rates"] = _rates(snap, previous)
    moves = snap.get("moves")
    view["moves"] = moves[-MOVES_SHOWN:] if isinstance(moves, list) else []
    return view


def _host_row(row) -> bool:
    return (isinstance(row, list) and len(row) == 4 and isinstance(row[1], int)
            and isinstance(row[2], list) and all(isinstance(x, int) for x in row[2]) and figures.number(row[3]))


def _idle(last) -> float | None:
    """The router's sessions say when each was last active (its monotonic ms): seconds since."""
    if not figures.number(last):
        return None
    return round(max(0.0, time.monotonic() * 1000 - last) / 1000, 1)


def _rates(snap: dict, previous: dict | None) -> tuple[dict, dict]:
    if not previous or "actors" not in previous or "actors" not in snap:
        return {}, {}
    dt = snap["mono"] - previous["mono"]
    if dt <= 0:
        return {}, {}
    now, before = figures.packets(snap["actors"]), figures.packets(previous["actors"])
    rates = {k: round(max(0, now[k] - before[k]) / dt, 1) for k in now
             if now[k] is not None and before.get(k) is not None}
    drops_now, drops_before = figures.drops(snap["actors"]), figures.drops(previous["actors"])
    drop_rates = {f"{a}.{r}": round(max(0, v - drops_before.get((a, r), 0)) / dt, 1)
                  for (a, r), v in sorted(drops_now.items()) if v - drops_before.get((a, r), 0) > 0}
    return rates, drop_rates


# ---- the text view ----------------------------------------------------------------------------

def render(view: dict, interval: float) -> list[str]:
    node = view.get("node") or {}
    stamp = time.strftime("%H:%M:%S", time.localtime(view["time"]))
    lines = [f"ilnp-status --watch  {node.get('hostname') or '?'} ({node.get('nid') or '?'})  "
             f"{stamp}  every {interval:g}s  Ctrl-C ends"]
    if view.get("error"):
        lines += ["", view["error"]]
        return lines
    lines += ["", f"{'program':12} {'state':9} {'pid':>7} {'uptime':>8} {'restarts':>8}  sync"]
    for name, p in view["programs"].items():
        sync = "-" if p["in_sync"] is None else ("yes" if p["in_sync"] else "NO")
        restarts = "?" if p["restarts"] is None else str(p["restarts"])
        lines.append(f"{name:12} {p['state'] or '?':9} {str(p['pid'] or '-'):>7} {duration(p['uptime_s']):>8}"
                     f" {restarts:>8}  {sync}")
    locs = view.get("locators")
    lines.append("")
    if locs is None:
        lines.append("locators: ? (mobility does not answer)")
    else:
        lines.append(f"locators: current {','.join(locs['current']) or '-'}   leaving {','.join(locs['leaving']) or '-'}")
    rates, totals = view.get("rates") or {}, view.get("totals") or {}
    lines.append("packets/s  " + "  ".join(f"{k} {rates[k]:g}" if k in rates else f"{k} -" for k in PACKET_KINDS))
    lines.append("  total    " + "  ".join(f"{k} {int(totals[k])}" if totals.get(k) is not None else f"{k} ?"
                                            for k in PACKET_KINDS))
    drop_rates, drops = view.get("drop_rates") or {}, view.get("drops") or {}
    lines.append("drops/s    " + ("  ".join(f"{k} {v:g}" for k, v in drop_rates.items()) or "none"))
    lines.append("  total    " + ("  ".join(f"{k} {int(v)}" for k, v in drops.items() if v) or "none"))
    lines += ["", f"hosts ({len(view['hosts'])}):"]
    lines += [f"  {h['hostname']:16} {h['nid']:20} {','.join(h['locators']):24} {h['age_s']:>6}s"
              for h in view["hosts"][:10]]
    lines += [f"sessions ({len(view['sessions'])}):"]
    lines += [f"  {s['nid']:20} at {s['locator']:12} idle {s['idle_s']}s" for s in view["sessions"][:10]]
    lines += [f"proxy mappings ({len(view['mappings'])}):"]
    lines += [f"  {m.get('local_port')} -> {m.get('remote_host')}:{m.get('remote_port')}"
              f"{'' if m.get('bound') else ' (not bound)'}" for m in view["mappings"][:10] if isinstance(m, dict)]
    lines += [f"forwards ({len(view['forwards'])}):"]
    lines += [f"  {f.get('kind')} {f.get('stp_port', f.get('local_port'))} -> {f.get('to')}"
              for f in view["forwards"][:10] if isinstance(f, dict)]
    lines += [f"last moves ({len(view['moves'])}):"]
    for move in view["moves"]:
        if isinstance(move, dict):
            parts = move_parts(move)
            lines += ["  " + "  ".join(parts[:2]), "      " + "  ".join(parts[2:])]
    return lines


class Screen:
    """Redraws a list of lines in place: cursor home, each line cleared to its end, the
    rest of the screen cleared; cut to the terminal's width. Not a terminal: each
    refresh printed whole after a blank line."""

    def __init__(self, out):
        self.out = out
        self.tty = out.isatty()

    def start(self) -> None:
        if self.tty:
            self.out.write("\x1b[?25l\x1b[2J")  # hide the cursor, clear once
            self.out.flush()

    def draw(self, lines: list[str]) -> None:
        if not self.tty:
            self.out.write("\n".join(lines) + "\n\n")
            self.out.flush()
            return
        width, height = shutil.get_terminal_size((100, 40))
        body = "".join(f"{line[:width]}\x1b[K\n" for line in lines[:height - 1])
        self.out.write("\x1b[H" + body + "\x1b[J")
        self.out.flush()

    def stop(self) -> None:
        if self.tty:
            self.out.write("\x1b[?25h\n")  # the cursor back, below the view
            self.out.flush()
