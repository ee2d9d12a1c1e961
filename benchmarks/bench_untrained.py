"""Untrained instruct models in streaming modes: which protocol and thought format keep their
read-then-think accuracy (issue: GSM8K streamer, section 0).

Every variant runs the same problems through ``adasr.evaluation.evaluate`` (resumable: a rerun
only computes what is missing), virtual clock at 2.5 words/s, EOI-aligned waves of 8, and the
table prints accuracy (95% Wilson interval), format rate, tokens and post-input latency, with the
accuracy gap and latency ratio against read-then-think (``batch``) of the same model.

Variants (``--variant``, repeatable; default: all):

* ``batch`` — read-then-think, the reference.
* ``adaptive-v1`` / ``interleaved-v1`` — protocol v1 (the instruction to write a short note per
  piece, the plain end-of-input marker) with free-running thoughts cut at the budget or arrival.
* ``adaptive-restate`` — v1 thoughts, but the end-of-input turn restates the whole input.
* ``adaptive-v2`` / ``interleaved-v2`` — protocol v2: one-line notes (a thought ends at its
  first line break), the question-comes-last instruction, and the restated input at EOI.
* ``adaptive-v3`` — protocol v3: v2's notes, then a fresh deep-stage context at EOI (the row's
  cache is dropped; a read-then-think prompt holding the whole input and the notes).
* ``adaptive-v3-prefix`` — v3, but the notes open the deep stage's answer (the model continues
  a solution already under way instead of reading the notes in the prompt).

Usage: ``python benchmarks/bench_untrained.py --model qwen2.5-coder-0.5b-instruct --n 50
[--data data/gsm8k_heldout400.jsonl] [--dtype bfloat16] [--out benchmarks/out/untrained]
[--decode-rate 7 --step-s 0.14]`` (the last two: a clock model independent of the machine's load)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adasr.engine import EngineConfig, StreamingEngine
from adasr.evaluation import evaluate
from adasr.metrics import wilson_interval
from adasr.models import load_model
from adasr.policy import AdaptivePolicy, BatchPolicy, InterleavedPolicy
from adasr.protocol import StreamingFormat
from adasr.tasks.gsm8k import load_gsm8k

ROOT = Path(__file__).resolve().parents[1]

# variant -> (protocol, policy factory)
VARIANTS = {
    "batch": ("v1", lambda b: BatchPolicy()),
    "adaptive-v1": ("v1", lambda b: AdaptivePolicy(thought_budget=b)),
    "interleaved-v1": ("v1", lambda b: InterleavedPolicy(thought_budget=b)),
    "adaptive-restate": ("v1-restate", lambda b: AdaptivePolicy(thought_budget=b)),
    "adaptive-v2": ("v2", lambda b: AdaptivePolicy(thought_budget=b)),
    "interleaved-v2": ("v2", lambda b: InterleavedPolicy(thought_budget=b)),
    "adaptive-v3": ("v3", lambda b: AdaptivePolicy(thought_budget=b)),
    "adaptive-v3-prefix": ("v3-prefix", lambda b: AdaptivePolicy(thought_budget=b)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--data", default=str(ROOT / "data" / "gsm8k_heldout400.jsonl"))
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--max-deep-tokens", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "untrained"))
    ap.add_argument("--decode-rate", type=float, default=None,
                    help="pin the decode rate adaptive budgets assume (tokens/s; default measured)")
    ap.add_argument("--step-s", type=float, default=None,
                    help="charge every engine step this many seconds on the virtual clock instead of its measured "
                         "time: with --decode-rate, results independent of the machine's load")
    args = ap.parse_args()
    variants = args.variant or list(VARIANTS)
    if "batch" not in variants:
        variants.insert(0, "batch")
    lm = load_model(args.model, dtype=args.dtype)
    items = load_gsm8k(args.data, limit=args.n)

    def factory(variant: str) -> StreamingEngine:
        protocol, policy = VARIANTS[variant]
        cfg = EngineConfig(policy=policy(args.budget), max_deep_tokens=args.max_deep_tokens, decode_rate=args.decode_rate)
        return StreamingEngine(lm.model, lm.tokenizer, cfg, fmt=StreamingFormat(lm.tokenizer, protocol))

    out = Path(args.out) / lm.name
    summaries = evaluate(factory, items, modes=variants, out_dir=out, batch_size=args.batch_size, step_s=args.step_s,
                         run_config={"decode_rate": args.decode_rate, "budget": args.budget,
                                     "max_deep_tokens": args.max_deep_tokens, "dtype": args.dtype})
    ref = summaries["batch"]
    clock = "measured step times" if args.step_s is None else f"{args.step_s} s per step, decode rate {args.decode_rate}"
    print(f"\n{lm.name}, {len(items)} problems of {Path(args.data).name}, {args.dtype}, waves of "
          f"{args.batch_size}, 2.5 words/s, budget {args.budget}, deep cap {args.max_deep_tokens}, virtual clock: "
          f"{clock}\n")
    print("| variant | accuracy (95% CI) | vs batch | format | stream tok | post-input tok | TTFT | latency p50 | p50 vs batch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for v in variants:
        s = summaries[v]
        k, n = s["n_correct"], s["n_graded"]
        lo, hi = wilson_interval(k, n) if n else (0.0, 0.0)
        p50 = s["p50_post_input_latency_s"]
        print(f"| {v} | {100 * k / n:.1f}% ({100 * lo:.0f}-{100 * hi:.0f}) | {100 * (k / n - ref['accuracy']):+.1f} | "
              f"{100 * s['format_rate']:.0f}% | {s['mean_stream_tokens']:.1f} | {s['mean_post_input_tokens']:.1f} | "
              f"{s['mean_post_input_ttft_s']:.2f} s | {p50:.2f} s | {p50 / ref['p50_post_input_latency_s']:.2f}x |")


if __name__ == "__main__":
    main()
