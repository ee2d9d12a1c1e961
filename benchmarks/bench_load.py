"""Slower, never wrong: a streamer on a machine c times slower than its budgets assume.

    python benchmarks/bench_load.py --preset chain_sum --n 96            # c = 1, 2, 4
    python benchmarks/bench_load.py --preset gsm8k --n 16 --c 1 4
    python benchmarks/bench_load.py --preset chain_sum --src /path/to/old/checkout/src --tag before
    python benchmarks/bench_load.py --preset chain_sum --c 4 --skip-backlog 0 --tag skip0   # the latency knob
    python benchmarks/bench_load.py --preset chain_sum --model runs/sft_procedural_smollm2_fold/final \
        --c 1 4 --skip-backlog 0 --tag fold-skip0            # a model trained on folded skips

Each (preset, c) is one resumable ``adasr eval`` run (adaptive mode, EOI-aligned waves of 8) on a
**pinned clock** that charges every engine step ``c / R`` seconds while the adaptive budgets
assume ``R`` tokens/s (``--decode-rate R --step-s c/R``): a simulated machine c times slower than
planned, the same on any host. The table gives accuracy, p50/p95 post-input latency (simulated
seconds) and their ratio to c = 1, the mean of each stream's largest backlog (seconds a chunk
waited behind thinking) and the tokens thoughts ran past their slack budgets.

Presets:

* ``chain_sum``: the shipped ``smollm2-135m-chain-sum`` on its held-out streams (seed 12345,
  3-5 one-digit terms, the questions of its training sets dropped: ``bench_training.held_out``),
  float32, R = 20 tokens/s, deep cap 128, 2.5 words/s;
* ``gsm8k``: the shipped ``qwen2.5-coder-0.5b-gsm8k-stream`` on the held-out GSM8K problems
  (``data/gsm8k_heldout400.jsonl``), bfloat16, R = 7 tokens/s, 2.5 words/s.

``--src DIR`` runs another checkout's code (``PYTHONPATH=DIR``; e.g. the commit before a policy
change) into ``--out/<tag>-c<c>``, so two policies are compared on the same problems.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from adasr.jsonl import read_jsonl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
ADASR = str(Path(sys.executable).with_name("adasr"))

PRESETS = {
    "chain_sum": {"model": "smollm2-135m-chain-sum", "rate": 20.0, "dtype": "float32", "deep": 128},
    "gsm8k": {"model": "qwen2.5-coder-0.5b-gsm8k-stream", "rate": 7.0, "dtype": "bfloat16", "deep": 512},
}


def data_file(preset: str, n: int, out: Path) -> Path:
    """The first ``n`` held-out problems of a preset, written once under ``out``."""
    if preset == "chain_sum":
        from bench_training import held_out

        src = held_out("chain_sum", 200, out / "heldout")
    else:
        src = REPO / "data" / "gsm8k_heldout400.jsonl"
    path = out / f"{preset}-{n}.jsonl"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")
    return path


def run(preset: str, c: float, data: Path, out: Path, env: dict, skip_backlog: float | None = None,
        model: str | None = None) -> Path:
    """One resumable ``adasr eval`` at slowdown ``c`` (``skip_backlog``: ``--skip-backlog`` seconds, the
    latency knob; ``model``: another model than the preset's); returns its results file."""
    p = PRESETS[preset]
    cmd = [ADASR, "eval", "--data", str(data), "--model", model or p["model"], "--mode", "adaptive", "--batch-size", "8",
           "--dtype", p["dtype"], "--max-deep-tokens", str(p["deep"]), "--decode-rate", str(p["rate"]),
           "--step-s", f"{c / p['rate']:.6g}", "--out", str(out)]
    if skip_backlog is not None:
        cmd += ["--skip-backlog", f"{skip_backlog:g}"]
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    return out / "adaptive" / "results.jsonl"


def row(results: Path, ids: list[str]) -> dict:
    """Summary figures of a results file over ``ids`` (the problems every run finished)."""
    recs = {r["id"]: r for r in read_jsonl(results)}
    rs = [recs[i] for i in ids]
    lat = sorted(r["post_input_latency_s"] for r in rs)
    return {"n": len(rs), "correct": sum(bool(r.get("correct")) for r in rs),
            "p50": statistics.median(lat), "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))],
            "backlog": statistics.mean(r.get("max_backlog_s", 0.0) for r in rs),
            "overrun": statistics.mean(r.get("overrun_tokens", 0) for r in rs),
            "stream": statistics.mean(r["stream_tokens"] for r in rs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="chain_sum")
    ap.add_argument("--n", type=int, default=96, help="first N held-out problems")
    ap.add_argument("--c", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="slowdowns (step = c / R seconds)")
    ap.add_argument("--out", default="runs/bench_load")
    ap.add_argument("--src", default=None, help="run this checkout's src/ instead (PYTHONPATH)")
    ap.add_argument("--tag", default="now", help="name of this code's runs (several tags share one table)")
    ap.add_argument("--skip-backlog", type=float, default=None,
                    help="adasr eval --skip-backlog S: skip the thought of a chunk that waited S s behind others "
                         "(the latency knob; give the runs their own --tag)")
    ap.add_argument("--model", default=None,
                    help="evaluate this model (bundled name, adapter or checkpoint directory) instead of the "
                         "preset's (give the runs their own --tag)")
    ap.add_argument("--table-only", action="store_true", help="print the table of the runs that finished")
    args = ap.parse_args()
    out = REPO / args.out / args.preset
    data = data_file(args.preset, args.n, out)
    env = dict(os.environ, **({"PYTHONPATH": args.src} if args.src else {}))
    for c in [] if args.table_only else args.c:
        run(args.preset, c, data, out / f"{args.tag}-c{c:g}", env, args.skip_backlog, args.model)
    runs = sorted(d for d in out.iterdir() if (d / "adaptive" / "results.jsonl").is_file())
    done = {d.name: [r["id"] for r in read_jsonl(d / "adaptive" / "results.jsonl")] for d in runs}
    n_items = len(data.read_text(encoding="utf-8").splitlines())
    complete = {name: got for name, got in done.items() if len(set(got)) >= n_items}
    ids = sorted(set.intersection(*map(set, complete.values()))) if complete else []
    rows = {name: row(out / name / "adaptive" / "results.jsonl", ids) for name in complete}
    p = PRESETS[args.preset]
    print(f"{args.model or p['model']} (this call's --model; other tags may differ), adaptive, pinned clock: budgets at R = {p['rate']:g} tokens/s, every step c/R s "
          f"(simulated), {len(ids)} held-out problems\n")
    print("| run | accuracy | p50 post-input (s) | p95 (s) | p50 vs c=1 | mean max backlog (s) | overrun tok | stream tok |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        tag, c = name.rsplit("-c", 1)
        base = rows.get(f"{tag}-c1")
        ratio = f"{r['p50'] / base['p50']:.1f}x" if base and base["p50"] > 0 else "-"
        print(f"| {name} | {100 * r['correct'] / r['n']:.1f}% ({r['correct']}/{r['n']}) | {r['p50']:.2f} | "
              f"{r['p95']:.2f} | {ratio} | {r['backlog']:.2f} | {r['overrun']:.1f} | {r['stream']:.1f} |")


if __name__ == "__main__":
    main()
