"""Decode-step cost by batch size, KV cache and dtype (why batched evaluation gains what it gains).

For each dtype, batch size and cache class, prefill ``--prefix`` random tokens per row, then time
``--steps`` single-token decode steps (a 2-D attention mask, as the engine passes) and report the
median step time and tokens/s, beside the time of the prefill itself (``batch x prefix`` tokens in
one forward: the shape of a chunk's ingest and of training, where a CPU without native bfloat16
falls furthest behind float32). The header names the CPU capability PyTorch sees and whether
bfloat16 runs natively there (``adasr.models.native_bfloat16``). ``DynamicCache`` is transformers' (appends with ``torch.cat``, a
copy of the whole cache per step); ``StreamingCache`` is the engine's (appends in place).

Usage: ``python benchmarks/bench_kvcache.py [--model smollm2-135m-instruct] [--prefix 400] [--steps 40]
[--caches streaming]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import DynamicCache

from adasr.kvcache import StreamingCache, cache_keyword
from adasr.models import load_model, native_bfloat16


def step_ms(model, cache_cls, batch: int, prefix: int, steps: int) -> tuple[float, float]:
    """Milliseconds of the prefill (``batch`` rows of ``prefix`` tokens) and the median of one decode
    step for ``batch`` rows after it."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 1000, (batch, prefix), generator=g)
    mask = torch.ones(batch, prefix, dtype=torch.long)
    cache = cache_cls()
    times = []
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, **{cache_keyword(model): cache}, use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - t0
        for s in range(steps):
            tok = out.logits[:, -1:].argmax(-1)
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=torch.long)], 1)
            t0 = time.perf_counter()
            out = model(input_ids=tok, attention_mask=mask, position_ids=torch.full((batch, 1), prefix + s),
                        **{cache_keyword(model): cache}, use_cache=True)
            times.append(time.perf_counter() - t0)
    return 1000 * prefill, 1000 * statistics.median(times[3:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prefix", type=int, default=400)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--caches", nargs="+", choices=["dynamic", "streaming"], default=["dynamic", "streaming"],
                    help="which caches to time (streaming alone halves the run)")
    args = ap.parse_args()
    print(f"## Decode step: {args.model}, {args.prefix} cached positions, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bfloat16: "
          f"{'yes' if native_bfloat16('cpu') else 'no'}\n")
    caches = {"dynamic": DynamicCache, "streaming": StreamingCache}
    names = {"dynamic": "DynamicCache", "streaming": "StreamingCache"}
    print("| dtype | batch | " + " | ".join(f"{names[c]} prefill (ms) | {names[c]} (ms/step)" for c in args.caches)
          + " | tokens/s | step cost vs batch 1 |")
    print("|---|---|" + "---|---|" * len(args.caches) + "---|---|")
    for dtype in args.dtypes:
        model = load_model(args.model, dtype=dtype).model
        base = None
        for b in args.batch_sizes:
            timed = [step_ms(model, caches[c], b, args.prefix, args.steps) for c in args.caches]
            last = timed[-1][1]
            base = base or last
            cells = " | ".join(f"{pre:.0f} | {step:.1f}" for pre, step in timed)
            print(f"| {dtype} | {b} | {cells} | {1000 * b / last:.0f} | {last / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
