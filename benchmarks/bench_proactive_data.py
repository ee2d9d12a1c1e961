"""The proactive benchmark data (adasr.tasks.proactive): item counts and where the evidence falls.

Builds the train and test splits of every proactive family with default knobs and prints one
markdown table: items per split, items rejected (no determinable evidence chunk, duplicates,
test-split questions), and the distribution of ``evidence_chunk / n_chunks`` over both splits
(0-based evidence index: the last chunk of an N-chunk stream gives (N-1)/N): mean, p10, p50, p90,
and the share of items whose evidence comes before the last chunk (a proactive model should
answer before the stream ends). Then one line per build with its rejections by reason.

No model, CPU only, a few seconds. Usage: ``python benchmarks/bench_proactive_data.py [--size 500]
[--seed 0] [--source ../shared/data/gsm8k/train.jsonl]`` (``proactive_gsm8k``: ``--size`` problems
for train, its whole test split: the last 400 problems of the source).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adasr.metrics import percentile
from adasr.tasks.proactive import PROACTIVE_TASKS, build_proactive_with_report

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=500, help="items per split (gsm8k test: all of its split)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="GSM8K train.jsonl (proactive_gsm8k)")
    args = ap.parse_args()

    rows, reports = [], []
    for task in PROACTIVE_TASKS:
        gsm = task == "proactive_gsm8k"
        recs = {}
        for split in ("train", "test"):
            size = None if gsm and split == "test" else args.size
            recs[split], rep = build_proactive_with_report(task, size, args.seed, split=split,
                                                           source=args.source if gsm else None)
            reports.append(rep)
        both = recs["train"] + recs["test"]
        pos = [r["evidence_chunk"] / len(r["chunks"]) for r in both]
        early = sum(r["evidence_chunk"] < len(r["chunks"]) - 1 for r in both) / len(both)
        n_chunks = sum(len(r["chunks"]) for r in both) / len(both)
        rejected = sum(r.n_rejected for r in reports[-2:])
        rows.append([task, f"{len(recs['train'])} / {len(recs['test'])}", str(rejected), f"{n_chunks:.1f}",
                     f"{sum(pos) / len(pos):.2f}", *(f"{percentile(pos, q):.2f}" for q in (10, 50, 90)),
                     f"{100 * early:.1f}%"])

    header = ["family", "items train / test", "rejected", "chunks (mean)", "e/n mean", "e/n p10", "e/n p50",
              "e/n p90", "evidence before last chunk"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    gsm = [r for r in reports if r.task == "proactive_gsm8k"]
    if gsm:  # its distractors follow the facts: how often is the answer settled before the last fact?
        recs = [r for split in ("train", "test") for r in
                build_proactive_with_report("proactive_gsm8k", None if split == "test" else args.size, args.seed,
                                            split=split, source=args.source, distractors=0)[0]]
        early = sum(r["evidence_chunk"] < len(r["chunks"]) - 1 for r in recs)
        print(f"\nproactive_gsm8k: evidence before the last fact sentence in {early} of {len(recs)} items "
              f"({100 * early / len(recs):.1f}%); the 2 distractor sentences come after the facts.")
    print()
    for rep in reports:
        print(f"- {rep.message()}")


if __name__ == "__main__":
    main()
