"""`ilnp-experiment`: run the mobility experiment on a lab of its own and write the results.

    ilnp-experiment --rate 100 --duration 60 --move-time 20 --handoff-time 10 --out results/

Brings up a lab (alice mobile a-b-c, router in a, b and c, bob in b), sends both ways,
writes DIR/summary.json, the CSVs and the two PNGs, and always downs the lab. Exit status
0 when the experiment ran, whatever it measured (loss is a result, reported); non-zero
only when it could not run.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from . import orchestrate
from .orchestrate import ExperimentError, Params


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=100.0, show_default=True,
              help="Packets/s each way.")
@click.option("--duration", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds of sending.")
@click.option("--move-time", type=click.FloatRange(min=0.5), default=20.0, show_default=True,
              help="Seconds between moves of the mobile node(s).")
@click.option("--handoff-time", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds old and new locators are both held (0 = hard handoff).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Directory for summary.json, CSVs and plots (created).")
@click.option("--size", type=click.IntRange(16, 1396), default=1396, show_default=True,
              help="STP payload bytes (1396 fills the 1440-byte MTU).")
@click.option("--both-mobile", is_flag=True, help="bob moves too (0:0:0:b-0:0:0:c-0:0:0:a).")
@click.option("--lab", "lab_name", default="exp", show_default=True, help="Name of the lab to create.")
@click.option("--no-plots", is_flag=True, help="Skip the PNGs.")
def main(rate, duration, move_time, handoff_time, out_dir, size, both_mobile, lab_name, no_plots):
    """Reproduce the dissertation's mobility experiment on the lab."""
    from tools.lab import Lab, LabError

    if handoff_time >= move_time:
        raise click.BadParameter("must be shorter than --move-time", param_hint="--handoff-time")
    params = Params(rate=rate, duration=duration, move_time=move_time, handoff_time=handoff_time,
                    size=size, both_mobile=both_mobile)
    out = Path(out_dir).resolve()
    lab = Lab(lab_name)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _echo_err(f"bringing up lab {lab.name} ...")
            lab.up(orchestrate.write_topology(Path(tmp), params))
            try:
                summary = orchestrate.run(lab, params, out, log=_echo_err, plots=not no_plots)
            finally:
                left = lab.down()
                if left:
                    _echo_err(f"warning: lab {lab.name} left behind: {', '.join(left)}")
    except (ExperimentError, LabError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    _report(summary, out)


def _report(summary: dict, out: Path) -> None:
    click.echo(f"{'direction':<12} {'sent':>8} {'received':>9} {'lost':>6} {'reordered':>10} {'duplicated':>11}")
    for name, d in summary["directions"].items():
        click.echo(f"{name:<12} {d['sent']:>8} {d['received']:>9} {d['lost']:>6} {d['reordered']:>10} "
                   f"{d['duplicated']:>11}")
    for name, d in summary["directions"].items():
        for node, phases in d["by_locator"].items():
            parts = "  ".join(f"{loc}: {f['received']}/{f['sent']}" + (f" lost {f['lost']}" if f["lost"] else "")
                              for loc, f in phases.items())
            click.echo(f"  {name} by {node}'s locator (received/sent): {parts}")
    moves = ", ".join(f"{m['node']}\u2192{m['to']} at {m['t_s']:.1f}s" for m in summary["moves"])
    click.echo(f"moves: {moves or 'none'}")
    click.echo(("LOSSLESS" if summary["lossless"] else "NOT lossless") + f"; results in {out}")
    click.echo(json.dumps({k: {f: d[f] for f in ("sent", "received", "lost", "reordered", "duplicated")}
                           for k, d in summary["directions"].items()}))


if __name__ == "__main__":
    main()
