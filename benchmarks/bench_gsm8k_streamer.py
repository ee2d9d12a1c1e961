"""The GSM8K streamer table: base and trained Qwen, read-then-think vs streaming, one protocol.

    python benchmarks/bench_gsm8k_streamer.py --limit 100            # resumable; rerun to extend
    python benchmarks/bench_gsm8k_streamer.py --limit 300 --rows base-batch,sft-stream

Each row is one `adasr eval` run (resumable) into ``--out/<row>/<mode>/`` on the held-out
problems (``data/gsm8k_heldout400.jsonl``: the last 400 of GSM8K ``train.jsonl``, which no
distillation or training step sees; every training config excludes it and checks the overlap),
EOI-aligned waves of 8, 2.5 words/s, bfloat16, and the load-independent clock: every engine step
costs ``--step-s`` seconds and adaptive budgets assume ``--decode-rate`` tokens/s (7 tokens/s,
0.14 s a step: a batch-8 bfloat16 step of the bundled Qwen on this 2-core CPU). Rows whose model
directory does not exist yet are skipped. The table (benchmarks/compare_evals.py) compares every
row with the base model reading then thinking, on the problems all rows finished.

Rows (issue "A streaming reasoner for real word problems"):

* ``base-batch``: the bundled Qwen2.5-Coder-0.5B-Instruct, read-then-think;
* ``base-adaptive``: the same model streaming (adaptive), protocol ``--base-protocol``;
* ``sft-batch``: the read-then-think twin (same episodes and steps, batch layout), batch mode;
* ``sft-stream``: the streaming SFT adapter, adaptive;
* ``grpo`` / ``hrpo``: the streaming SFT adapter after GRPO / HRPO, adaptive.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = "qwen2.5-coder-0.5b-instruct"
ROWS = {  # name: (label, model, mode)
    "base-batch": ("base, read-then-think", BASE, "batch"),
    "base-adaptive": ("base, adaptive", BASE, "adaptive"),
    "sft-batch": ("SFT read-then-think twin, batch", "runs/sft_gsm8k_qwen_distill_batch/final", "batch"),
    "sft-stream": ("SFT streaming, adaptive", "runs/sft_gsm8k_qwen_distill/final", "adaptive"),
    "grpo": ("SFT+GRPO, adaptive", "runs/grpo_gsm8k_qwen_distill/final", "adaptive"),
    "hrpo": ("SFT+HRPO, adaptive", "runs/hrpo_gsm8k_qwen_distill/final", "adaptive"),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=100, help="first N held-out problems (at least 300 for the issue)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--data", default="data/gsm8k_heldout400.jsonl")
    ap.add_argument("--out", default="runs/eval_gsm8k")
    ap.add_argument("--base-protocol", default="v3-prefix", help="protocol of the base model's adaptive row")
    ap.add_argument("--step-s", default="0.14")
    ap.add_argument("--decode-rate", default="7")
    ap.add_argument("--table-only", action="store_true", help="print the table of what has finished")
    args = ap.parse_args(argv)
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
        cmd = [sys.executable, "-m", "adasr.cli", "eval", "--data", args.data, "--model", model, "--mode", mode,
               "--limit", str(args.limit), "--dtype", "bfloat16", "--batch-size", "8", "--step-s", args.step_s,
               "--decode-rate", args.decode_rate, "--out", str(out)]
        if name.startswith("base"):  # (the batch layout is the same in every protocol)
            cmd += ["--protocol", args.base_protocol]
        if not args.table_only:
            print("+", " ".join(cmd), file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True, cwd=REPO)
        if (REPO / out / mode / "results.jsonl").exists():
            done.append(f"{label}={out / mode}")
    if done:  # compared with the first row (base, read-then-think unless --rows leaves it out)
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "compare_evals.py"),
                        *(x for d in done for x in ("--row", d))], check=True, cwd=REPO)


if __name__ == "__main__":
    main()
