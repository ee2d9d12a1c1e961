"""Batch vs interleaved vs adaptive on GSM8K (issue: runtime, section 6). Prints a markdown table.

Runs ``adasr.evaluation.evaluate`` (the code behind ``adasr eval``) on the first N GSM8K train
problems in each mode (virtual clock, 2.5 words/s), then a plain ``model.generate`` baseline with
greedy decoding on exactly the prompt ids the engine's batch mode ingests, and compares accuracy:
the engine must not cost accuracy. Results are resumable (``--out``).

Usage: ``python benchmarks/bench_modes.py [--model qwen2.5-coder-0.5b-instruct] [--n 50] [--batch-size 8]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from adasr.engine import EngineConfig, StreamingEngine
from adasr.evaluation import evaluate
from adasr.jsonl import read_jsonl
from adasr.metrics import summary_table
from adasr.models import load_model
from adasr.protocol import Episode, default_format, parse_answer
from adasr.stream import StreamSpec
from adasr.tasks.gsm8k import is_correct, load_gsm8k

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def generate_baseline(lm, items, max_new_tokens: int, batch_size: int, path: Path) -> list[dict]:
    """Greedy ``model.generate`` on the batch-layout prompt ids (left-padded batches); cached in ``path``."""
    done = {}
    if path.exists():
        done = {r["id"]: r for r in read_jsonl(path)}
    fmt, tok = default_format(lm.tokenizer), lm.tokenizer
    todo = [it for it in items if it.id not in done]
    pad = tok.pad_token_id if tok.pad_token_id is not None else fmt.end_of_turn_id
    with path.open("a") as fh, torch.inference_mode():
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            prompts = [fmt.render(Episode(chunks=[c.text for c in StreamSpec().for_item(it, tokenizer=tok).chunks],
                                          layout="batch")).input_ids
                       for it in batch]
            width = max(map(len, prompts))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            out = lm.model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=pad, eos_token_id=sorted(fmt.stop_ids))
            for it, row in zip(batch, out[:, width:]):
                text = tok.decode(row, skip_special_tokens=True)
                pred = parse_answer(text)
                rec = {"id": it.id, "prediction": pred, "reference": it.reference, "correct": is_correct(pred, it.reference)}
                done[it.id] = rec
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
    return [done[it.id] for it in items]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--max-deep-tokens", type=int, default=384)
    ap.add_argument("--wps", type=float, default=2.5)
    ap.add_argument("--modes", nargs="+", default=["batch", "interleaved", "adaptive"])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default="benchmarks/out/modes")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_model(args.model)
    items = load_gsm8k(args.data, limit=args.n)

    def factory(mode: str) -> StreamingEngine:
        cfg = EngineConfig(policy=mode, thought_budget=args.budget, max_deep_tokens=args.max_deep_tokens)
        return StreamingEngine(lm.model, lm.tokenizer, cfg)

    t0 = time.perf_counter()
    # one shared virtual clock, waves of streams whose inputs end together: the heaviest post-input load
    summaries = evaluate(factory, items, modes=args.modes, out_dir=out, batch_size=args.batch_size, stream=StreamSpec(wps=args.wps),
                         clock="virtual", align_eoi=args.batch_size > 1)
    base = generate_baseline(lm, items, args.max_deep_tokens, args.batch_size, out / "generate.jsonl")
    gen_acc = sum(r["correct"] for r in base) / len(base)
    print(f"## {args.model}: {len(items)} GSM8K train problems, virtual clock, {args.wps} words/s, "
          f"batch size {args.batch_size}, thought budget {args.budget}, deep cap {args.max_deep_tokens}\n")
    print(summary_table(summaries))
    if "batch" in summaries:
        recs = {r["id"]: r for r in read_jsonl(out / "batch" / "results.jsonl")}
        same = sum(recs[b["id"]]["prediction"] == b["prediction"] for b in base if b["id"] in recs)
        print(f"\nplain model.generate (greedy, same prompt ids): accuracy {gen_acc:.1%} vs engine batch mode "
              f"{summaries['batch']['accuracy']:.1%}; identical predictions on {same}/{len(base)} problems")
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
