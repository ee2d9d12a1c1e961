"""What training buys: accuracy and post-input latency of base / SFT / SFT+GRPO / SFT+HRPO models
on held-out streams (issue: training, section 4).

Each row is one ``adasr eval`` run (the real CLI, resumable: rerunning the script only evaluates
what is missing) on a held-out file the models were not trained on, in EOI-aligned waves of 8
streams at 2.5 words/s under the virtual clock. The table is printed as markdown, with the
post-input latency reduction of every streaming row against the read-then-think reference row.

Presets (the training commands that produce each model are in benchmarks/RESULTS.md):

* ``chain_sum``: SmolLM2-135M-Instruct on procedural ``chain_sum`` streams; held-out items are
  built with another seed (``adasr data build --seed 12345``), and any question that also occurs
  in a training set of the preset's configs (small numbers repeat) is dropped.
* ``gsm8k``: Qwen2.5-Coder-0.5B-Instruct LoRA on streamified GSM8K; held out: the last lines
  of ``train.jsonl`` (training reads the file from the top).

Usage: ``python benchmarks/bench_training.py --preset chain_sum [--n 200] [--out benchmarks/out/training]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from adasr.jsonl import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
ADASR = str(Path(sys.executable).with_name("adasr"))

# (label, model, mode); the row labelled REFERENCE is the read-then-think baseline.
PRESETS = {
    "chain_sum": {
        "build": ["data", "build", "--task", "chain_sum", "--seed", "12345", "--knob", "min_terms=3",
                  "--knob", "max_terms=5", "--knob", "digits=1"],
        "max_deep_tokens": 128,
        # every config whose training questions differ (the others share seed 0 and 640 streams);
        # value_long's 1920 streams reach 11 of the first 200 seed-12345 candidates, dropped here
        "train_configs": [("configs/sft_procedural_smollm2.yaml", "sft"),
                          ("configs/grpo_procedural_smollm2.yaml", "grpo"),
                          ("configs/sft_procedural_smollm2_value_long.yaml", "sft")],
        "reference": "SFT read-then-think, batch",
        "rows": [
            ("base, batch", "smollm2-135m-instruct", "batch"),
            ("base, adaptive", "smollm2-135m-instruct", "adaptive"),
            ("SFT read-then-think, batch", "runs/sft_procedural_smollm2_batch/final", "batch"),
            ("SFT streaming, batch", "runs/sft_procedural_smollm2/final", "batch"),
            ("SFT streaming, adaptive", "runs/sft_procedural_smollm2/final", "adaptive"),
            ("SFT+GRPO, adaptive", "runs/grpo_procedural_smollm2/final", "adaptive"),
            ("SFT+HRPO, adaptive", "runs/hrpo_procedural_smollm2/final", "adaptive"),
            # the same pair trained on episodes whose deep stage is "\boxed{N}" alone (knob final: boxed)
            ("SFT read-then-think, boxed-only, batch", "runs/sft_procedural_smollm2_batch_boxed/final", "batch"),
            ("SFT streaming, boxed-only, adaptive", "runs/sft_procedural_smollm2_boxed/final", "adaptive"),
        ],
    },
    "gsm8k": {
        "build": None,  # the last --n lines of GSM8K train.jsonl
        "max_deep_tokens": 384,
        "train_configs": [("configs/sft_gsm8k_qwen_lora.yaml", "sft")],
        "reference": "base, batch",
        "rows": [
            ("base, batch", "qwen2.5-coder-0.5b-instruct", "batch"),
            ("SFT LoRA, batch", "runs/sft_gsm8k_qwen_lora/final", "batch"),
            ("SFT LoRA, adaptive", "runs/sft_gsm8k_qwen_lora/final", "adaptive"),
        ],
    },
}


def training_questions(preset: str) -> set[str]:
    """Every question the preset's training configs train on (rebuilt from the configs)."""
    from adasr.train.config import load_config
    from adasr.train.common import build_splits

    seen: set[str] = set()
    for path, kind in PRESETS[preset]["train_configs"]:
        cfg = load_config(ROOT / path, kind)
        if cfg.data_path:  # GSM8K: the questions of the lines training reads
            seen.update(r["question"] for r in read_jsonl(ROOT / cfg.data_path, limit=cfg.train_size))
        else:
            seen.update(build_splits(cfg)[0]["question"])
    return seen


def held_out(preset: str, n: int, out: Path) -> Path:
    """Write (once) and return the held-out JSONL of a preset: ``n`` problems, none trained on.

    Raises:
        SystemExit: if training questions overlap the held-out file (a bug in the split).
    """
    path = out / f"heldout-{preset}-{n}.jsonl"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        build = PRESETS[preset]["build"]
        if build is None:
            lines = GSM8K.read_text(encoding="utf-8").splitlines()[-n:]
        else:  # build extra, drop questions trained on or repeated, keep n
            tmp = out / "candidates.jsonl"
            subprocess.run([ADASR, *build, "--size", str(2 * n), "--out", str(tmp)], check=True,
                           stdout=subprocess.DEVNULL)
            trained, kept, lines = training_questions(preset), set(), []
            for line in tmp.read_text(encoding="utf-8").splitlines():
                q = json.loads(line)["question"]
                if q not in trained and q not in kept and len(lines) < n:
                    kept.add(q)
                    lines.append(line)
            tmp.unlink()
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    questions = [r["question"] for r in read_jsonl(path)]
    shared = set(questions) & training_questions(preset)
    if shared:
        raise SystemExit(f"{path}: {len(shared)} held-out question(s) occur in training data")
    return path


def evaluate_row(data: Path, model: str, mode: str, out: Path, max_deep: int, batch_size: int) -> dict | None:
    """Run ``adasr eval`` for one row (resumes) and return its summary, or None if untrained."""
    if model.startswith("runs/") and not (ROOT / model).exists():
        return None
    subprocess.run([ADASR, "eval", "--data", str(data), "--model", model, "--mode", mode, "--batch-size",
                    str(batch_size), "--max-deep-tokens", str(max_deep), "--out", str(out)], check=True, cwd=ROOT)
    return json.loads((out / mode / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="chain_sum")
    ap.add_argument("--n", type=int, default=200, help="held-out problems")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "training")
    args = ap.parse_args()
    preset = PRESETS[args.preset]
    out = args.out / args.preset
    data = held_out(args.preset, args.n, out)
    results = []
    for label, model, mode in preset["rows"]:
        slug = label.replace(",", "").replace("+", "-").replace(" ", "_")
        s = evaluate_row(data, model, mode, out / slug, preset["max_deep_tokens"], args.batch_size)
        if s is None:
            print(f"skipped {label}: {model} not found (train it first)", file=sys.stderr)
        results.append((label, model, s))
    ref = next((s for label, _, s in results if label == preset["reference"] and s), None)
    print(f"\n## {args.preset}: {args.n} held-out problems ({data.name}), waves of {args.batch_size}, 2.5 words/s\n")
    print("| model, mode | accuracy | format | stream tok | deep tok | post-input tok | latency p50 (s) "
          "| latency mean (s) | vs read-then-think |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, model, s in results:
        if s is None:
            print(f"| {label} | not trained | | | | | | | |")
            continue
        cut = "reference" if s is ref else ""
        if ref is not None and s is not ref:
            r = 1 - s["p50_post_input_latency_s"] / ref["p50_post_input_latency_s"]
            cut = f"{r:.0%} lower p50" if r >= 0 else f"{-r:.0%} higher p50"
        print(f"| {label} | {s['accuracy']:.1%} ({s['n_correct']}/{s['n_graded']}) | {s['format_rate']:.0%} | "
              f"{s['mean_stream_tokens']:.1f} | {s['mean_deep_tokens']:.1f} | {s['mean_post_input_tokens']:.1f} | "
              f"{s['p50_post_input_latency_s']:.2f} | {s['mean_post_input_latency_s']:.2f} | {cut} |")


if __name__ == "__main__":
    main()
