"""Top-p sampling cost: transformers' whole-vocabulary warper path vs :func:`adasr.runner.draw_tokens`.

A sampled decode step draws one token per row from the top-p nucleus of its logits (R, V). The
warper path (``TopPLogitsWarper``, a softmax and a ``torch.multinomial`` over all V tokens) sorts
and draws over the whole vocabulary; :func:`~adasr.runner.draw_tokens` finds the nucleus among
the :data:`~adasr.runner.NUCLEUS_CANDIDATES` most likely tokens (the same distribution; a row
whose nucleus is wider goes through the warper). The logits are a real model's: the next-token
logits at every position of ``--n`` held-out GSM8K questions (teacher-forced), in batches of
``--rows``. Prints a Markdown table: milliseconds per batch for each path (temperature and
top-p applied as in the engine), and the share of rows whose nucleus the candidates cover.

    python benchmarks/bench_sampling.py --model qwen2.5-coder-0.5b-instruct --rows 32 --temperature 0.3 --top-p 0.95
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1] / "data" / "gsm8k_heldout400.jsonl"


def real_logits(model_name: str, n: int, dtype: str) -> torch.Tensor:
    """(N, V) float32 next-token logits at every position of the first ``n`` held-out questions."""
    from adasr.cli.common import load
    from adasr.tasks.gsm8k import load_gsm8k

    loaded = load(model_name, dtype, "cpu")
    rows = []
    with torch.inference_mode():
        for item in load_gsm8k(DATA)[:n]:
            ids = loaded.tokenizer(item.question, return_tensors="pt").input_ids
            rows.append(loaded.model(input_ids=ids).logits[0].float())
    return torch.cat(rows)


def main() -> None:
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    from adasr.runner import NUCLEUS_CANDIDATES, draw_tokens, nucleus

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--n", type=int, default=8, help="held-out questions whose positions give the logits")
    ap.add_argument("--rows", type=int, default=32, help="rows drawn together (the batch size)")
    ap.add_argument("--temperature", type=float, default=0.3)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--reps", type=int, default=3, help="passes over the logits per path")
    args = ap.parse_args()

    logits = real_logits(args.model, args.n, args.dtype)
    scores = TemperatureLogitsWarper(args.temperature)(None, logits)
    batches = [scores[i:i + args.rows] for i in range(0, len(scores) - args.rows + 1, args.rows)]
    if not batches:
        raise SystemExit(f"error: {len(scores)} logit rows, fewer than --rows {args.rows}: raise --n")
    warper = TopPLogitsWarper(args.top_p)

    def whole_vocabulary(s: torch.Tensor, gens) -> list[int]:
        probs = torch.softmax(warper(None, s), dim=-1)
        return [int(torch.multinomial(p, 1, generator=g)) for p, g in zip(probs, gens)]

    def candidates_first(s: torch.Tensor, gens) -> list[int]:
        return draw_tokens(s, gens, args.top_p)

    ms = {}
    for name, fn in (("whole vocabulary (TopPLogitsWarper)", whole_vocabulary),
                     (f"draw_tokens ({NUCLEUS_CANDIDATES} candidates first)", candidates_first)):
        gens = [torch.Generator().manual_seed(i) for i in range(args.rows)]
        fn(batches[0], gens)  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.reps):
            for b in batches:
                fn(b, gens)
        ms[name] = (time.perf_counter() - t0) * 1000 / (args.reps * len(batches))
    covered = float(torch.cat([nucleus(b, args.top_p)[2] for b in batches]).float().mean())
    base = next(iter(ms.values()))
    print(f"\n{args.model}, {len(batches)} batches of {args.rows} rows x V = {scores.shape[1]} "
          f"(logits of {args.n} held-out questions), temperature {args.temperature}, top-p {args.top_p}, "
          f"{torch.get_num_threads()} threads\n")
    print("| path | ms per batch | speed-up | rows whose nucleus the candidates cover |")
    print("|---|---:|---:|---:|")
    for name, v in ms.items():
        cov = f"{covered:.1%}" if name.startswith("draw_tokens") else "-"
        print(f"| {name} | {v:.1f} | {base / v:.2f}x | {cov} |")


if __name__ == "__main__":
    main()
