"""The GSM8K streamer table: base and trained Qwen, read-then-think vs streaming, one protocol.

    python benchmarks/bench_gsm8k_streamer.py --limit 100            # resumable; rerun to extend
    python benchmarks/bench_gsm8k_streamer.py --limit 300 --rows base-batch,sft-stream

Each row is one `adasr eval` run (resumable) into ``--out/<row>/<mode>/`` on the held-out
problems (``data/gsm8k_heldout400.jsonl``: the last 400 of GSM8K ``train.jsonl``, which no
distillation or training step sees; every training config excludes it and checks the overlap),
EOI-aligned waves of 8, ``--dtype`` (bfloat16 where the CPU runs it natively), an operating point (``--point``: arrival, step time, decode
rate; default speech on this CPU, 2.5 words/s) and the load-independent clock: every engine step
costs ``--step-s`` seconds and adaptive budgets assume ``--decode-rate`` tokens/s (7 tokens/s,
0.14 s a step: a batch-8 bfloat16 step of the bundled Qwen on a 2-core CPU with AMX). Rows whose model
directory does not exist yet are skipped. The table (benchmarks/compare_evals.py) compares every
row with the base model reading then thinking, on the problems all rows finished.

Rows (issue "A streaming reasoner for real word problems"):

* ``base-batch``: the bundled Qwen2.5-Coder-0.5B-Instruct, read-then-think;
* ``base-adaptive``: the same model streaming (adaptive), protocol ``--base-protocol``;
* ``sft-batch``: the read-then-think twin (same episodes and steps, batch layout), batch mode;
* ``sft-stream``: the streaming SFT adapter, adaptive (both: terse deep stage, configs/sft_gsm8k_qwen_distill*.yaml);
* ``sft-v-batch`` / ``sft-v-stream``: the same pair with the model's own words in the deep stage
  (configs/sft_gsm8k_qwen_distill_verbatim*.yaml);
* ``grpo`` / ``hrpo``: the streaming SFT adapter after GRPO / HRPO, adaptive;
* ``typ-*``: the same rows for the typing point (``--point typing``; terse notes,
  configs/sft_gsm8k_qwen_typing*.yaml); ``typs-*``: the typing point with the model's own computing
  steps as notes (configs/sft_gsm8k_qwen_typing_steps*.yaml); ``typo-*``: the typing point with
  notes and deep stage both verbatim slices of the model's own solution
  (configs/sft_gsm8k_qwen_typing_own*.yaml); ``typow-stream``: the same episodes, warm-started from the
  shipped adapter (configs/sft_gsm8k_qwen_typing_own_warm.yaml), and ``typow-batch`` its twin (the same warm start,
  episodes and steps in the batch layout: configs/sft_gsm8k_qwen_typing_own_warm_batch.yaml); ``typgw-stream``: the same with the opening plan and the answer's step in the deep stage
  (configs/sft_gsm8k_qwen_typing_goal_warm.yaml, ``--goal-steps after-question``); ``typo-grpo`` /
  ``typo-hrpo``: the shipped adapter after GRPO / HRPO with rollouts at the typing point
  (configs/{grpo,hrpo}_gsm8k_qwen_typing_own.yaml), ``typo-hrpo-s`` the HRPO knob run
  (configs/hrpo_gsm8k_qwen_typing_stream.yaml), ``typo-hrpo-n`` the same with the per-note reward
  (configs/hrpo_gsm8k_qwen_typing_notes.yaml); ``shipped-stream``: the bundled
  ``qwen2.5-coder-0.5b-gsm8k-stream`` as shipped (the warm start's starting point); ``mixw-stream``: one
  adapter for every point, the typing warm start on episodes converted at mixed points
  (configs/sft_gsm8k_qwen_mixed_own_warm.yaml).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from adasr.jsonl import read_jsonl

REPO = Path(__file__).resolve().parents[1]
BASE = "qwen2.5-coder-0.5b-instruct"
ROWS = {  # name: (label, model, mode)
    "base-batch": ("base, read-then-think", BASE, "batch"),
    "base-adaptive": ("base, adaptive", BASE, "adaptive"),
    "sft-batch": ("SFT read-then-think twin, batch", "runs/sft_gsm8k_qwen_distill_batch/final", "batch"),
    "sft-stream": ("SFT streaming, adaptive", "runs/sft_gsm8k_qwen_distill/final", "adaptive"),
    "sft-v-batch": ("SFT verbatim-deep twin, batch", "runs/sft_gsm8k_qwen_distill_verbatim_batch/final", "batch"),
    "sft-v-stream": ("SFT verbatim-deep streaming, adaptive", "runs/sft_gsm8k_qwen_distill_verbatim/final", "adaptive"),
    "grpo": ("SFT+GRPO, adaptive", "runs/grpo_gsm8k_qwen_distill/final", "adaptive"),
    "hrpo": ("SFT+HRPO, adaptive", "runs/hrpo_gsm8k_qwen_distill/final", "adaptive"),
    "typ-batch": ("typing SFT twin, batch", "runs/sft_gsm8k_qwen_typing_batch/final", "batch"),
    "typ-stream": ("typing SFT streaming, adaptive", "runs/sft_gsm8k_qwen_typing/final", "adaptive"),
    "typ-grpo": ("typing SFT+GRPO, adaptive", "runs/grpo_gsm8k_qwen_typing/final", "adaptive"),
    "typ-hrpo": ("typing SFT+HRPO, adaptive", "runs/hrpo_gsm8k_qwen_typing/final", "adaptive"),
    "typs-batch": ("typing own-words SFT twin, batch", "runs/sft_gsm8k_qwen_typing_steps_batch/final", "batch"),
    "typs-stream": ("typing own-words SFT streaming, adaptive", "runs/sft_gsm8k_qwen_typing_steps/final", "adaptive"),
    "typo-batch": ("typing verbatim SFT twin, batch", "runs/sft_gsm8k_qwen_typing_own_batch/final", "batch"),
    "typo-stream": ("typing verbatim SFT streaming, adaptive", "runs/sft_gsm8k_qwen_typing_own/final", "adaptive"),
    "typgw-stream": ("typing verbatim SFT streaming, goal steps after the question, warm-started, adaptive",
                     "runs/sft_gsm8k_qwen_typing_goal_warm/final", "adaptive"),
    "shipped-stream": ("shipped streamer (speech-point verbatim episodes), adaptive",
                       "src/adasr/adapters/qwen2.5-coder-0.5b-gsm8k-stream", "adaptive"),
    "typow-stream": ("typing verbatim SFT streaming, warm-started from the shipped adapter, adaptive",
                     "runs/sft_gsm8k_qwen_typing_own_warm/final", "adaptive"),
    "mixw-stream": ("verbatim SFT streaming on episodes at mixed points (typing, CPU and GPU speech), warm-started "
                    "from the shipped adapter, adaptive", "runs/sft_gsm8k_qwen_mixed_own_warm/final", "adaptive"),
    "typow-batch": ("typing verbatim SFT twin, warm-started from the shipped adapter, batch",
                    "runs/sft_gsm8k_qwen_typing_own_warm_batch/final", "batch"),
    "typo-grpo": ("shipped streaming SFT+GRPO at the typing point, adaptive", "runs/grpo_gsm8k_qwen_typing_own/final", "adaptive"),
    "typo-hrpo": ("shipped streaming SFT+HRPO at the typing point, adaptive", "runs/hrpo_gsm8k_qwen_typing_own/final", "adaptive"),
    "typo-hrpo-s": ("shipped streaming SFT+HRPO at the typing point, stream credit 1.0 / deep price 0.125, adaptive",
                    "runs/hrpo_gsm8k_qwen_typing_stream/final", "adaptive"),
    "typo-hrpo-n": ("shipped streaming SFT+HRPO at the typing point, with the per-note reward, adaptive",
                    "runs/hrpo_gsm8k_qwen_typing_notes/final", "adaptive"),
}
# Operating points (docs/OPERATING_POINTS.md): arrival flags, pinned step time (s), decode rate (tokens/s).
POINTS = {
    "cpu-speech": (["--wps", "2.5"], "0.14", "7"),
    "typing": (["--cps", "4"], "0.14", "7"),
    "gpu-speech": (["--wps", "2.5"], "0.02", "50"),  # a simulated GPU-class rate
}


def latency_bound(results: Path, decode_rate: float) -> str:
    """The best post-input latency that streaming the base model's own reasoning could reach.

    Between the first chunk and end of input there is room for ``eoi_s * decode_rate`` thought
    tokens; a read-then-think solution of ``deep_tokens`` tokens leaves at least
    ``max(0, deep_tokens - eoi_s * decode_rate)`` tokens after end of input, even if every step
    could be computed before the question arrives (most cannot). Read from the base
    read-then-think records (``results.jsonl``); returns one line for the table's footer.
    """
    rows = read_jsonl(results)
    room = [r["eoi_s"] * decode_rate for r in rows]
    bound = statistics.median(max(0.0, r["deep_tokens"] - c) / decode_rate for r, c in zip(rows, room))
    base = statistics.median(r["post_input_latency_s"] for r in rows)
    share = statistics.mean(min(1.0, c / r["deep_tokens"]) for r, c in zip(rows, room) if r["deep_tokens"])
    return (f"Bound (base read-then-think records, {len(rows)} problems): the input lasts {statistics.median(r['eoi_s'] for r in rows):.1f} s "
            f"(p50), room for {statistics.median(room):.0f} thought tokens at {decode_rate:g} tokens/s vs "
            f"{statistics.median(r['deep_tokens'] for r in rows):.0f} reasoning tokens: at most {share:.0%} of the model's own "
            f"reasoning fits before end of input, so its post-input latency p50 is at least {bound:.1f} s = "
            f"{bound / base:.2f}x of read-then-think ({base:.1f} s), even with every step computable early.")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=100, help="first N held-out problems (at least 300 for the issue)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--data", default="data/gsm8k_heldout400.jsonl")
    ap.add_argument("--out", default="runs/eval_gsm8k")
    ap.add_argument("--base-protocol", default="v3-prefix", help="protocol of the base model's adaptive row")
    ap.add_argument("--point", choices=sorted(POINTS), default="cpu-speech",
                    help="operating point (docs/OPERATING_POINTS.md): arrival rate, pinned step time and decode rate")
    ap.add_argument("--step-s", default=None, help="override the point's pinned step time (s)")
    ap.add_argument("--decode-rate", default=None, help="override the point's decode rate (tokens/s)")
    ap.add_argument("--budget", default=None,
                    help="thought budget (tokens) of the adaptive rows; the CLI default (64) unless set "
                         "(the typing episodes hold thoughts up to 512 tokens: use 256 there)")
    ap.add_argument("--chunker", default="sentence",
                    help="how every row's questions are cut into chunks (sentence | clause: the typo-* rows were "
                         "trained on clause chunks)")
    ap.add_argument("--dtype", default="auto",
                    help="every row's dtype: auto (bfloat16 where this CPU runs it natively, else float32; "
                         "recorded in each run's config.json), bfloat16, float32")
    ap.add_argument("--base-from", default=None,
                    help="the base-batch row without the model: rescale this pinned-clock base read-then-think run "
                         "(another point's --out/base) to this point (`adasr eval --rescale-from`; RESULTS §47)")
    ap.add_argument("--table-only", action="store_true", help="print the table of what has finished")
    args = ap.parse_args(argv)
    arrival, step_s, decode_rate = POINTS[args.point]
    args.step_s = args.step_s or step_s
    args.decode_rate = args.decode_rate or decode_rate
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"error: unknown rows {unknown}: use {', '.join(ROWS)}")
    done = []
    for name in rows:
        label, model, mode = ROWS[name]
        if model != BASE and not (REPO / model).exists():
            print(f"skipped {name}: {model} does not exist yet", file=sys.stderr)
            continue
        out = Path(args.out) / name.split("-")[0] if name.startswith("base") else Path(args.out) / name
        point = ["--limit", str(args.limit), "--step-s", args.step_s, "--decode-rate", args.decode_rate, *arrival,
                 "--chunker", args.chunker, "--out", str(out)]
        if name == "base-batch" and args.base_from:  # read-then-think's tokens do not depend on the point
            cmd = [sys.executable, "-m", "adasr.cli", "eval", "--data", args.data, "--mode", "batch", *point,
                   "--rescale-from", args.base_from]
        else:
            cmd = [sys.executable, "-m", "adasr.cli", "eval", "--data", args.data, "--model", model, "--mode", mode,
                   "--dtype", args.dtype, "--batch-size", "8", *point]
        if args.budget and mode == "adaptive":
            cmd += ["--budget", args.budget]
        if name.startswith("base") and "--rescale-from" not in cmd:  # (the batch layout is the same in every protocol)
            cmd += ["--protocol", args.base_protocol]
        if not args.table_only:
            print("+", " ".join(cmd), file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True, cwd=REPO)
        if (REPO / out / mode / "results.jsonl").exists():
            done.append(f"{label}={out / mode}")
    if done:  # compared with the first row (base, read-then-think unless --rows leaves it out)
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "compare_evals.py"),
                        *(x for d in done for x in ("--row", d))], check=True, cwd=REPO)
    base = REPO / args.out / "base" / "batch" / "results.jsonl"
    if base.exists():
        print("\n" + latency_bound(base, float(args.decode_rate)))


if __name__ == "__main__":
    main()
