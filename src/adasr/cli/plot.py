"""``adasr plot frontier | cdf | timeline``: pictures of evaluations and episodes
(:mod:`adasr.plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

plot_app = typer.Typer(no_args_is_help=True, help="Draw pictures of evaluations and episodes (PNG; .svg/.pdf also work).")

EvalDirsArg = Annotated[list[Path], typer.Argument(
    help="evaluation directories written by `adasr eval --out` (or <mode> directories in them)", show_default=False)]
PlotOutOpt = Annotated[Path, typer.Option("--out", "-o", help="image file to write (.png, .svg, .pdf)", show_default=False)]


@plot_app.command("frontier")
def plot_frontier_cmd(run_dirs: EvalDirsArg, out: PlotOutOpt) -> None:
    """Accuracy (95% Wilson interval) vs p50 post-input latency, one point per (directory, mode)."""
    from adasr.plots import plot_frontier

    Console().print(f"wrote {plot_frontier(run_dirs, out)}")


@plot_app.command("cdf")
def plot_cdf_cmd(run_dirs: EvalDirsArg, out: PlotOutOpt) -> None:
    """Empirical CDF of the post-input latency, one line per (directory, mode)."""
    from adasr.plots import plot_latency_cdf

    Console().print(f"wrote {plot_latency_cdf(run_dirs, out)}")


@plot_app.command("timeline")
def plot_timeline_cmd(
    run_json: Annotated[str, typer.Argument(help="output of `adasr run --json` saved to a file, or '-' (stdin)",
                                            show_default=False)],
    out: PlotOutOpt,
) -> None:
    """One episode's timeline: chunk arrivals, ingestion, thoughts, end of input, deep stage, answer."""
    from adasr.plots import plot_timeline

    Console().print(f"wrote {plot_timeline(run_json, out)}")
