"""CPU speed of the two costs of self-training: sampling solutions and LoRA SFT steps
(issue: GSM8K streamer, section 2, "Make CPU training fast").

1. **Sampling** (what ``adasr data distill`` spends its time on): read-then-think solutions to
   GSM8K problems, ``--new-tokens`` tokens each, sampled at temperature 0.6. The project's
   engine (batch layout, one batched KV cache) and plain ``model.generate`` on the same prompt
   ids, at batch 1 / 8 / 16, float32 vs bfloat16: generated tokens per second.
2. **SFT step** (``adasr train sft``): the project's trainer (``train_sft``: CB-Stream loss,
   LoRA r 16 on all linear layers) on 4 streaming episodes padded to ~``--seq-len`` tokens, in
   float32 and with ``bf16: true`` (bfloat16 autocast on the CPU): seconds per optimizer step
   (median of the steps after the first).

Everything runs in one process, side by side, so ratios are comparable on a shared machine.

Usage: ``python benchmarks/bench_cpu_training.py [--model qwen2.5-coder-0.5b-instruct]
[--new-tokens 64] [--batch-sizes 1 8 16] [--sft-steps 4] [--skip-sft]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine
from adasr.models import load_model
from adasr.protocol import Episode
from adasr.stream import Chunk, ScheduledStream
from adasr.tasks.gsm8k import load_gsm8k

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


def engine_tokens_per_s(lm, questions: list[str], batch: int, new_tokens: int) -> float:
    """Generated tokens/s of the engine sampling ``new_tokens`` per question, ``batch`` rows."""
    eng = StreamingEngine(lm.model, lm.tokenizer, EngineConfig(
        policy="batch", max_deep_tokens=new_tokens, temperature=0.6, top_p=0.95, initial_decode_rate=1.0))
    inputs = [EpisodeInput(f"q{i}", ScheduledStream([Chunk(0, q, 0.0)])) for i, q in enumerate(questions[:batch])]
    t0 = time.perf_counter()
    n = sum(r.record["deep_tokens"] for r in eng.run(inputs, batch_size=batch))
    return n / (time.perf_counter() - t0)


def generate_tokens_per_s(lm, questions: list[str], batch: int, new_tokens: int) -> float:
    """Generated tokens/s of ``model.generate`` (left-padded batch) on the same prompt ids."""
    fmt = StreamingEngine(lm.model, lm.tokenizer, EngineConfig(policy="batch", initial_decode_rate=1.0)).format
    prompts = [fmt.render(Episode(chunks=[q], layout="batch")).input_ids for q in questions[:batch]]
    width = max(len(p) for p in prompts)
    pad = lm.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                do_sample=True, temperature=0.6, top_p=0.95, pad_token_id=pad)
    return (out.shape[1] - width) * batch / (time.perf_counter() - t0)


def sft_step_s(model_name: str, bf16: bool, steps: int, seq_len: int) -> float:
    """Median seconds per optimizer step of ``train_sft`` (4 episodes a step, LoRA r 16)."""
    from transformers import TrainerCallback

    from adasr.jsonl import write_jsonl
    from adasr.train.config import SFTConfig
    from adasr.train.sft import train_sft

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    words = " ".join(["The farmer counts 12 apples and 7 pears in each basket."] * (seq_len // 24))
    row = {"id": "x", "task": "gsm8k", "question": words, "chunks": [words[: len(words) // 2], words[len(words) // 2:]],
           "thoughts": ["12 + 7 = 19 fruits per basket."], "deep": "So 19 * 2 = 38. \\boxed{38}", "answer": "38"}
    rows = [dict(row, id=f"x{i}") for i in range(4 * steps)]
    with tempfile.TemporaryDirectory() as out:
        data = Path(out) / "episodes.jsonl"
        write_jsonl(rows, data)
        cfg = SFTConfig(model=model_name, task="episodes", data_path=str(data), output_dir=out, lora=True, lora_r=16,
                        lora_alpha=32, learning_rate=1e-4, max_steps=steps, per_device_train_batch_size=4,
                        max_seq_len=2 * seq_len,
                        save_steps=10_000, logging_steps=10_000, bf16=bf16, train_size=None)
        train_sft(cfg, callbacks=[Clock()])
    return statistics.median(times[1:]) if len(times) > 1 else times[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--sft-steps", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=400)
    ap.add_argument("--skip-sft", action="store_true")
    args = ap.parse_args()
    questions = [it.question for it in load_gsm8k(GSM8K, limit=max(args.batch_sizes))]
    print(f"## Sampling: {args.model}, {args.new_tokens} new tokens per problem, {torch.get_num_threads()} threads\n")
    print("| dtype | batch | engine tok/s | generate tok/s | engine / generate |")
    print("|---|---:|---:|---:|---:|")
    for dtype in ("float32", "bfloat16"):
        lm = load_model(args.model, dtype=dtype)
        for b in args.batch_sizes:
            e = engine_tokens_per_s(lm, questions, b, args.new_tokens)
            g = generate_tokens_per_s(lm, questions, b, args.new_tokens)
            print(f"| {dtype} | {b} | {e:.1f} | {g:.1f} | {e / g:.2f}x |", flush=True)
        del lm
    if args.skip_sft:
        return
    print(f"\n## SFT step: train_sft, LoRA r 16 all-linear, 4 episodes of ~{args.seq_len} tokens a step\n")
    print("| precision | s / step | speed-up |")
    print("|---|---:|---:|")
    fp32 = sft_step_s(args.model, False, args.sft_steps, args.seq_len)
    print(f"| float32 | {fp32:.2f} | 1.00x |", flush=True)
    bf = sft_step_s(args.model, True, args.sft_steps, args.seq_len)
    print(f"| bf16 autocast | {bf:.2f} | {fp32 / bf:.2f}x |")


if __name__ == "__main__":
    main()
