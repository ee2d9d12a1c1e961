"""Eval throughput, ``--batch-size 1`` vs ``--batch-size 8`` (issue: runtime, section 6; target >= 3x).

Runs the code behind ``adasr eval`` twice on the same GSM8K problems, in fresh output folders,
and compares problems per hour (real time of the engine loop; model loading excluded) and the mean
number of rows a step runs (batch occupancy).

Batched runs use ``adasr eval``'s default for ``--batch-size > 1``: one shared virtual clock and
EOI-aligned waves (8 streams ending together; rows waiting for a chunk sit steps out).
``--clock per-stream`` gives each stream its own virtual clock instead (charged every batched step
it takes part in; a waiting row jumps to its next chunk, so every step runs all rows).

``--dtype bfloat16`` loads the weights in bfloat16: on CPUs with AMX (Sapphire Rapids and later)
a batch-8 decode step then costs little more than a batch-1 step.

Usage: ``python benchmarks/bench_throughput.py [--model smollm2-135m-instruct] [--n 16] [--modes batch adaptive]
[--clock per-stream] [--dtype bfloat16] [--data PATH.jsonl]``
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from adasr.engine import EngineConfig, StreamingEngine
from adasr.evaluation import evaluate
from adasr.models import load_model
from adasr.tasks.gsm8k import load_gsm8k

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--modes", nargs="+", default=["batch", "interleaved", "adaptive"])
    ap.add_argument("--max-deep-tokens", type=int, default=256)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--clock", default="virtual", help="clock of the batched runs (default: adasr eval's)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--out", default="benchmarks/out/throughput")
    args = ap.parse_args()
    lm = load_model(args.model, dtype=args.dtype)
    items = load_gsm8k(args.data, limit=args.n)

    engines: list[StreamingEngine] = []

    def factory(mode: str) -> StreamingEngine:
        engines.append(StreamingEngine(lm.model, lm.tokenizer,
                                       EngineConfig(policy=mode, max_deep_tokens=args.max_deep_tokens)))
        return engines[-1]

    print(f"## Eval throughput: {args.model} ({args.dtype}), {len(items)} problems of {Path(args.data).name}, "
          f"deep cap {args.max_deep_tokens}\n")
    print("| mode | batch size | clock | problems/hour | speed-up | rows per step | mean generated tokens "
          "| accuracy | mean post-input latency (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in args.modes:
        rows = []
        for bs in args.batch_sizes:
            clock = args.clock if bs > 1 else "virtual"
            out = Path(args.out) / f"{mode}-bs{bs}-{clock}-{args.dtype}"
            shutil.rmtree(out, ignore_errors=True)
            summary = evaluate(factory, items, modes=[mode], out_dir=out, batch_size=bs, clock=clock,
                               progress=False)[mode]
            stats = engines[-1].stats
            rows.append((bs, summary, stats["row_steps"] / max(stats["steps"], 1)))
        base = rows[0][1]["problems_per_hour"]
        for bs, s, occupancy in rows:
            gen = s["mean_stream_tokens"] + s["mean_deep_tokens"]
            clock = s["clock"] + (", EOI-aligned waves" if s["align_eoi"] else "")
            print(f"| {mode} | {bs} | {clock} | {s['problems_per_hour']:.0f} | {s['problems_per_hour'] / base:.2f}x | "
                  f"{occupancy:.2f} | {gen:.0f} | {s['accuracy']:.1%} | {s['mean_post_input_latency_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
