"""`ilnp-status --watch` and the last moves without a node (no root): what one refresh
shows, rates between two refreshes, the screen, the errors. On a lab and in a real
terminal: tests/test_observability_lab.py."""
from __future__ import annotations

import io
import os
import subprocess
import sys

from tests.labutil import REPO
from tools.status import format_moves, move_line
from tools.watch import Screen, build_view, render


def status(counters=None, core=None, **extra):
    return {"actor": "x", "pid": 5, "uptime_s": 3.0, "in_sync": True, "counters": counters or {},
            "core": core or {}, **extra}


def snap(mono, rx, fwd, malformed, error=None):
    actors = {"link": status({"rx": rx, "tx": rx // 2}), "router": status({}, {"forwarded": fwd, "delivered": 1,
                                                                               "sent": 2, "malformed": malformed}),
              "echo": {"error": "actor echo does not answer (timeout 1s)"}}
    report = {name: {"supervisor": {"state": "RUNNING", "pid": 5, "uptime_s": 65, "restarts": 1}}
              for name in ("broker", "link", "router", "echo")}
    return {"time": 1_000_000.0 + mono, "mono": mono, "run_dir": "/run/ilnp/a", "actors": actors, "report": report,
            "node": {"hostname": "alice", "nid": "ffff:0:0:a"},
            "locators": {"cur": ["0:0:0:c"], "joined": ["0:0:0:c", "0:0:0:a"], "leaving": ["0:0:0:a"]},
            "hosts": [["bob", 0xFFFF00000000000B, [0xB], 1500], ["bad row"]],
            "sessions": [["0:0:0:b", "ffff:0:0:b", 0]],
            "proxy": {"proxy_port": 10001, "mappings": [{"local_port": 5000, "remote_host": "bob", "remote_port": 6000,
                                                         "bound": True}]},
            "forwards": {"serve": [{"kind": "serve", "stp_port": 80, "to": "127.0.0.1:8080"}], "listen": []},
            "moves": [MOVE]}


MOVE = {"id": 3, "started_at": 1_000_000.0, "cause": "command", "old": ["0:0:0:a"], "new": ["0:0:0:c"],
        "updates": [{"peer": "ffff:0:0:b", "acked_ms": 30}, {"peer": "ffff:0:0:c", "acked_ms": None}],
        "first_packet_ms": 19, "first_packet_loc": "0:0:0:c", "open": False, "window_ms": 2031,
        "closed_by": "settled", "lost": 0, "waited": 2, "late_on_old": 1}


def test_a_refresh_has_every_field_and_rates_from_the_previous_one():
    view = build_view(snap(12.0, rx=300, fwd=40, malformed=7), snap(10.0, rx=100, fwd=20, malformed=1))
    assert view["rates"] == {"in": 100.0, "out": 50.0, "forwarded": 10.0, "delivered": 0.0, "sent": 0.0}
    assert view["drop_rates"] == {"router.malformed": 3.0}
    assert view["programs"]["echo"]["error"].startswith("actor echo does not answer")
    assert view["programs"]["router"] == {"state": "RUNNING", "pid": 5, "uptime_s": 65, "restarts": 1,
                                          "in_sync": True, "error": None}
    assert view["locators"] == {"current": ["0:0:0:c"], "leaving": ["0:0:0:a"]}
    assert view["hosts"] == [{"hostname": "bob", "nid": "ffff:0:0:b", "locators": ["0:0:0:b"], "age_s": 1.5}]
    lines = render(view, 2.0)
    text = "\n".join(lines)
    for field in ("alice (ffff:0:0:a)", "every 2s", "router       RUNNING", "locators: current 0:0:0:c   leaving 0:0:0:a",
                  "packets/s  in 100  out 50  forwarded 10", "drops/s    router.malformed 3", "bob",
                  "sessions (1)", "5000 -> bob:6000", "serve 80 -> 127.0.0.1:8080", "last moves (1)",
                  "0:0:0:a -> 0:0:0:c"):
        assert field in text, field


def test_the_first_refresh_has_no_rates_yet_and_a_node_gone_is_said():
    view = build_view(snap(10.0, rx=1, fwd=0, malformed=0), None)
    assert view["rates"] == {} and "packets/s  in -" in "\n".join(render(view, 1.0))
    gone = build_view({"time": 5.0, "mono": 5.0, "run_dir": "/x", "error": "node not running at /x"}, None)
    assert render(gone, 1.0)[-1] == "node not running at /x"


def test_a_move_line_says_what_the_move_cost():
    line = move_line(MOVE)
    assert "#3" in line and "command 0:0:0:a -> 0:0:0:c" in line
    assert "updates 1/2 acked (last 30 ms)" in line and "first packet 19 ms on 0:0:0:c" in line
    assert "lost 0 waited 2 late 1" in line and "window 2.0s settled" in line
    assert "window open" in move_line({**MOVE, "open": True, "first_packet_ms": None})
    assert format_moves([MOVE] * 7)[0] == "last moves (5 of 7 kept, newest last):"
    assert move_line({}).startswith("#? ?")  # whatever came back, a line


def test_the_screen_redraws_in_place_on_a_terminal_and_prints_whole_refreshes_otherwise():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    screen = Screen(out)
    screen.start()
    screen.draw(["one", "two"])
    screen.stop()
    assert out.getvalue() == "\x1b[?25l\x1b[2J" + "\x1b[Hone\x1b[K\ntwo\x1b[K\n\x1b[J" + "\x1b[?25h\n"
    plain = io.StringIO()
    Screen(plain).draw(["one"])
    assert plain.getvalue() == "one\n\n"


def run_status(*args, run_dir):
    env = {**os.environ, "ILNP_RUN_DIR": str(run_dir)}
    return subprocess.run([sys.executable, "-m", "tools.status", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=30)


def test_watching_a_node_that_is_not_running_is_one_line(tmp_path):
    proc = run_status("--watch", run_dir=tmp_path / "nothing")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "not running" in proc.stderr


def test_interval_without_watch_is_a_usage_error(tmp_path):
    proc = run_status("--interval", "1", run_dir=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--interval goes with --watch" in proc.stderr
    proc = run_status("--watch", "--interval", "0", run_dir=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
