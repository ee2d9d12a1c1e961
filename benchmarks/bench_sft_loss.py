"""SFT step cost: the LM head on every position vs only where the CB-Stream loss trains.

``StreamSFTTrainer.compute_loss`` (:func:`adasr.train.sft.cb_stream_step_loss`) asks the model for the logits of the trained positions only
(``logits_to_keep``, :func:`adasr.train.cb_stream.trained_positions`): the prompt, chunk and
restated-problem tokens of a streaming episode carry no loss, and the vocabulary projection is the
largest matmul of a small model (Qwen2.5-0.5B: 896 x 151,936). This script times one forward +
backward of the loss both ways, on the same LoRA model and the same collated batch of real
training episodes, alternating the two paths, and checks that the losses agree.

    python benchmarks/bench_sft_loss.py [--model qwen2.5-coder-0.5b-instruct] \
        [--episodes data/distill/qwen2.5-coder-0.5b-gsm8k/episodes.jsonl] [--batch 4] [--repeats 3]

Prints a markdown table: seconds per step (median), the logits tensor's elements, the loss.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from adasr.jsonl import read_jsonl
from adasr.models import load_model
from adasr.protocol import default_format
from adasr.train.sft import cb_stream_step_loss
from adasr.train.sft_data import StreamingCollator

ROOT = Path(__file__).resolve().parents[1]


def step(model, batch: dict, eot: int, positions: bool) -> tuple[float, float, int]:
    """One forward + backward of the trainer's CB-Stream loss; returns (seconds, loss, logits elements)."""
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, outputs = cb_stream_step_loss(model, batch, end_of_turn_id=eot, cb_beta=0.999, trained_only=positions)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, loss.item(), outputs.logits.numel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--episodes", default=str(ROOT / "data/distill/qwen2.5-coder-0.5b-gsm8k/episodes.jsonl"))
    ap.add_argument("--layout", default="streaming", choices=["streaming", "batch"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from peft import LoraConfig, get_peft_model

    lm = load_model(args.model)
    model = get_peft_model(lm.model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    model.train()
    rows = read_jsonl(args.episodes, limit=args.batch)
    fmt = default_format(lm.tokenizer)
    batch = StreamingCollator(lm.tokenizer, fmt, 768, args.layout)(rows)
    step(model, batch, fmt.end_of_turn_id, True)  # warm-up
    times = {False: [], True: []}
    out = {}
    for _ in range(args.repeats):
        for positions in (False, True):
            dt, loss, n = step(model, batch, fmt.end_of_turn_id, positions)
            times[positions].append(dt)
            out[positions] = (loss, n)
    T = batch["input_ids"].shape[1]
    print(f"{args.model}, {args.batch} x {T} tokens ({args.layout} layout), LoRA r16 all-linear, bf16 autocast, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}\n")
    print("| LM head on | s / step | logits elements | loss |\n|---|---|---|---|")
    for positions, name in ((False, "every position"), (True, "trained positions only")):
        loss, n = out[positions]
        print(f"| {name} | {statistics.median(times[positions]):.2f} | {n:,} | {loss:.4f} |")
    ratio = statistics.median(times[True]) / statistics.median(times[False])
    print(f"\ntrained positions only / every position: {ratio:.2f}x time, "
          f"{out[True][1] / out[False][1]:.2f}x logits; loss difference {abs(out[True][0] - out[False][0]):.2e}")


if __name__ == "__main__":
    main()
