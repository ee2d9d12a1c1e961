"""Side-by-side table of `adasr eval` runs on the same problems, with paired comparisons.

    python benchmarks/compare_evals.py \
        --row "base, read-then-think=runs/eval_gsm8k/base/batch" \
        --row "base, adaptive=runs/eval_gsm8k/base/adaptive" \
        --row "SFT streaming, adaptive=runs/eval_gsm8k/sft/adaptive" --baseline "base, read-then-think"

Each row is ``LABEL=DIR`` where DIR holds an eval mode's ``results.jsonl``. Only the problems
every row has finished are compared (printed as N), so runs still in progress can be tabled.
Columns: accuracy with its 95% Wilson interval, p50/p95 post-input latency (seconds, the eval's
clock) and the p50 ratio to the baseline row, mean streaming-thought / deep-stage tokens, the share
of the reasoning written before end of input (streaming-thought tokens / (those + deep-stage
tokens), over all problems), format rate, and the paired comparison with the baseline: problems
only this row solved / only the baseline solved, with the exact two-sided McNemar p-value
(binomial test on the discordant pairs; McNemar, Psychometrika 1947). ``--versus LABEL`` (repeat)
adds the same paired column against another row, e.g. a streamer's read-then-think twin.

``--metric timely`` compares proactive runs (``adasr eval --mode proactive``) on timely-correct
instead of accuracy (the record's ``timely`` field, docs/DESIGN.md "Proactive metrics (ours)"),
adds their premature share, and pairs premature answers with the baseline too (streams only this
row / only the baseline answered before the evidence chunk, exact McNemar p: fewer is better). A
row may also name a JSONL file of such records instead of a directory (e.g. a committed slice of
them), and several paths joined by ``+`` pool them into one row (the k-th path's ids prefixed by
``k:``, so list every row's paths in the same order), e.g. the three proactive families of one split:

    python benchmarks/compare_evals.py --metric timely \
        --row "turn=R/kl_s2x8/pt_test_templates.jsonl+R/kl_s2x8/pp_test_templates.jsonl+R/kl_s2x8/ptm_test_templates.jsonl" \
        --row "traj=R/traj_kl_s2x8/pt_test_templates.jsonl+R/traj_kl_s2x8/pp_test_templates.jsonl+R/traj_kl_s2x8/ptm_test_templates.jsonl"
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from adasr.jsonl import read_jsonl  # noqa: E402
from adasr.metrics import percentile, wilson_interval  # noqa: E402


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (1.0 when none)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def read_rows(path: Path) -> dict[str, dict]:
    """``{id: record}`` of an eval mode directory's ``results.jsonl`` or of a JSONL file; a path
    that does not exist but holds ``+`` pools several, the k-th one's ids prefixed by ``k:`` (an
    existing path with ``+`` in its name is read as it is). Exits with a one-line error on a path
    that does not exist."""
    parts = str(path).split("+")
    if len(parts) > 1 and not path.exists():
        return {f"{k}:{i}": r for k, part in enumerate(parts) for i, r in read_rows(Path(part)).items()}
    file = path / "results.jsonl" if path.is_dir() else path
    if not file.exists():
        raise SystemExit(f"error: {file} does not exist (pass an eval mode directory)")
    return {r["id"]: r for r in read_jsonl(file)}


def paired_cell(rows: dict, ref: dict, ids: list, metric: str = "correct") -> str:
    """``"b / c (p = ...)"``: problems of ``ids`` where only ``rows`` / only ``ref`` has a true
    ``metric`` field (``correct``, or a proactive record's ``timely``), exact McNemar p."""
    only_row = sum(bool(rows[i].get(metric)) and not ref[i].get(metric) for i in ids)
    only_ref = sum(bool(ref[i].get(metric)) and not rows[i].get(metric) for i in ids)
    p = mcnemar_exact(only_row, only_ref)
    if p < 0.001:
        return f"{only_row} / {only_ref} (p < 0.001)"
    return f"{only_row} / {only_ref} (p = {p:.3f})" if p < 0.01 else f"{only_row} / {only_ref} (p = {p:.2f})"


def labelled_rows(specs: list[str], read) -> dict:
    """``{label: read(Path(dir))}`` for ``--row LABEL=DIR`` arguments, in order (the label may hold
    ``=``: the last one splits). Exits with a one-line error on a spec without ``LABEL=``."""
    runs = {}
    for spec in specs:
        label, sep, path = spec.rpartition("=")
        if not sep or not label:
            raise SystemExit(f"error: --row needs LABEL=DIR, got {spec!r}")
        runs[label] = read(Path(path))
    return runs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--row", action="append", required=True, help="LABEL=EVAL_MODE_DIR (repeat)")
    ap.add_argument("--baseline", help="label of the row the others are compared with (default: the first)")
    ap.add_argument("--versus", action="append", default=[],
                    help="label of a further row to compare every other row with (repeat): one more paired column")
    ap.add_argument("--metric", choices=("correct", "timely"), default="correct",
                    help="the per-problem outcome compared: correct (default) or, for proactive runs, timely-correct")
    args = ap.parse_args(argv)
    metric = args.metric
    runs = labelled_rows(args.row, read_rows)
    base = args.baseline or next(iter(runs))
    refs = [base, *args.versus]
    for ref in refs:
        if ref not in runs:
            raise SystemExit(f"error: {ref!r} (--baseline / --versus) is not a row label ({', '.join(runs)})")
    ids = sorted(set.intersection(*(set(r) for r in runs.values())))
    if not ids:
        raise SystemExit("error: the rows share no finished problem")
    b_lat = [runs[base][i]["post_input_latency_s"] for i in ids]
    b_p50 = percentile(b_lat, 50)
    print(f"N = {len(ids)} problems finished by every row; paired comparisons against '{base}'\n")
    name = {"correct": "accuracy", "timely": "timely-correct"}[metric]
    extra = " premature |" if metric == "timely" else ""
    print(f"| row | {name} [95% CI] |{extra} post-input latency p50 / p95 (s) | p50 vs baseline | stream tokens | "
          "deep tokens | before end of input | format | "
          + " | ".join(f"only this row / only '{ref}' {name} (McNemar p)" for ref in refs)
          + (f" | only this row / only '{base}' premature (McNemar p)" if extra else "") + " |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * (len(refs) + 2 * bool(extra)))
    for label, rows in runs.items():
        recs = [rows[i] for i in ids]
        k = sum(bool(r.get(metric)) for r in recs)
        prem = f" {100 * sum(bool(r.get('premature')) for r in recs) / len(recs):.0f}% |" if extra else ""
        lo, hi = wilson_interval(k, len(recs))
        lat = [r["post_input_latency_s"] for r in recs]
        p50, p95 = percentile(lat, 50), percentile(lat, 95)
        mean = lambda f: sum(r.get(f) or 0 for r in recs) / len(recs)  # noqa: E731
        fmt = sum(bool(r.get("format_ok")) for r in recs) / len(recs)
        stream, deep = mean("stream_tokens"), mean("deep_tokens")
        early = stream / (stream + deep) if stream + deep else 0.0
        paired = [paired_cell(rows, runs[ref], ids, metric) if ref != label else "-" for ref in refs]
        if extra:
            paired.append(paired_cell(rows, runs[base], ids, "premature") if label != base else "-")
        print(f"| {label} | {k}/{len(recs)} = {100 * k / len(recs):.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] |{prem} "
              f"{p50:.1f} / {p95:.1f} | {p50 / b_p50:.2f}x | {stream:.1f} | {deep:.1f} | {100 * early:.1f}% | "
              f"{100 * fmt:.0f}% | {' | '.join(paired)} |")


if __name__ == "__main__":
    main()
