"""Table of proactive evaluations (issue 11 §4): one row per ``adasr eval --mode proactive`` run.

Usage::

    python benchmarks/bench_proactive_training.py base=runs/pro/eval_base cb=runs/pro/eval_cb ...

Each ``NAME=DIR`` is an ``adasr eval`` output directory (``DIR/proactive/summary.json``, written
for streams with an evidence chunk). Prints a markdown table: accuracy, timely-correct rate and
premature rate (each with its 95% Wilson interval, :func:`adasr.metrics.wilson_interval`), answered-before-EOI rate, response delay p50/p95 (chunks and seconds), mean
proactive score (docs/DESIGN.md "Proactive metrics (ours)"), the share of revised answers and the
first answers' accuracy (runs with ``--revisions``; "–" otherwise) and p50 post-input latency.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = (
    ("n", "count"),
    ("accuracy", "accuracy"),
    ("timely-correct", "timely_correct_rate"),
    ("premature", "premature_rate"),
    ("answered before EOI", "answered_before_eoi_rate"),
    ("delay p50/p95 (chunks)", ("p50_response_delay_chunks", "p95_response_delay_chunks")),
    ("delay p50/p95 (s)", ("p50_response_delay_s", "p95_response_delay_s")),
    ("proactive score", "mean_proactive_score"),
    ("revised", "revised_rate"),
    ("first-answer accuracy", "first_answer_accuracy"),
)


CI_KEYS = ("timely_correct_rate", "premature_rate")
"""Rates printed with their 95% Wilson interval over the run's streams."""


def _fmt(x) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}" if isinstance(x, float) else str(x)


def row(name: str, summary: dict) -> str:
    """One markdown table row of an eval summary (its ``proactive`` block)."""
    from adasr.metrics import wilson_interval

    p = summary["proactive"]
    cells = [name]
    for _, key in COLUMNS:
        if isinstance(key, tuple):
            cells.append("/".join(_fmt(p.get(k)) for k in key))
        elif key in CI_KEYS and p.get(key) is not None and p.get("count"):
            lo, hi = wilson_interval(round(p[key] * p["count"]), p["count"])
            cells.append(f"{p[key]:.2f} [{lo:.2f}, {hi:.2f}]")
        else:
            cells.append(_fmt(p.get(key)))
    cells.append(_fmt(summary.get("p50_post_input_latency_s")))
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    print("| run | " + " | ".join(c for c, _ in COLUMNS) + " | post-input latency p50 (s) |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for arg in argv:
        name, _, d = arg.partition("=")
        path = Path(d) / "proactive" / "summary.json"
        if not path.is_file():
            print(f"error: {path} not found (run adasr eval --mode proactive --out {d})", file=sys.stderr)
            return 1
        print(row(name, json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
