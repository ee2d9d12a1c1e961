"""The in-process engine vs the vLLM backend, side by side in one run (issue 12).

Two checks, each printing a Markdown table for benchmarks/RESULTS.md:

* ``throughput``: problems/hour and generated tokens/s of the read-then-think mode (``batch``:
  the whole question is one chunk at t = 0, then a greedy deep stage of at most ``--new-tokens``
  tokens) at each ``--batch-sizes``, for the in-process engine (``torch``) and vLLM. Wall time
  of the engine loop; model loading and vLLM's start excluded (vLLM's decode rate is measured
  once at start, which warms it up).
* ``equivalence``: greedy predictions of both backends on the first ``--n`` problems of a GSM8K
  file (``--mode batch`` by default), their accuracies and how many predictions agree.

Run it from the vLLM environment (``make vllm``), which has both backends:

    .venv-vllm/bin/python benchmarks/bench_vllm.py throughput --n 8 --batch-sizes 1 8 --new-tokens 64
    .venv-vllm/bin/python benchmarks/bench_vllm.py equivalence --model qwen2.5-coder-0.5b-instruct --n 10

On a GPU machine (``vllm`` installed by ``make vllm``) add ``--device cuda`` for the own engine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "gsm8k_heldout400.jsonl"


def _inputs(items, one_chunk: bool):
    from adasr.engine import EpisodeInput
    from adasr.stream import make_stream

    out = []
    for i, it in enumerate(items):
        src = make_stream([it.question], timestamps=[0.0]) if one_chunk else make_stream(it.question)
        out.append(EpisodeInput(f"q{i}", src, reference=it.reference))
    return out


def _engines(args, **cfg):
    """(name, engine) for each backend: the in-process engine and vLLM (one runtime)."""
    from adasr.backends import make_engine
    from adasr.engine import EngineConfig, StreamingEngine
    from adasr.models import load_model

    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    cfg = dict(cfg, protocol=loaded.protocol)
    yield "torch", StreamingEngine(loaded.model, loaded.tokenizer, EngineConfig(**cfg))
    engine = make_engine(loaded, EngineConfig(**cfg, backend="vllm"), dtype=args.dtype,
                         max_model_len=args.max_model_len)
    try:
        yield "vllm", engine
    finally:
        engine.close()


def throughput(args) -> None:
    from adasr.tasks.gsm8k import load_gsm8k

    items = load_gsm8k(args.data, limit=args.n)
    rows = []
    for name, engine in _engines(args, policy="batch", max_deep_tokens=args.new_tokens, decode_rate=20.0):
        for bs in args.batch_sizes:
            t0 = time.perf_counter()
            results = list(engine.run(_inputs(items, one_chunk=True), batch_size=bs, clock="virtual"))
            wall = time.perf_counter() - t0
            tokens = sum(r.record["deep_tokens"] for r in results)
            rows.append((name, bs, len(results), tokens, wall))
            print(f"{name} batch {bs}: {len(results)} problems, {tokens} tokens, {wall:.1f} s", flush=True)
    print(f"\n{args.model}, {args.dtype}, {args.device}; {len(items)} problems, at most {args.new_tokens} new tokens\n")
    print("| backend | batch | problems | new tokens | wall s | problems/hour | tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, bs, n, tokens, wall in rows:
        print(f"| {name} | {bs} | {n} | {tokens} | {wall:.1f} | {3600 * n / wall:.0f} | {tokens / wall:.1f} |")


def equivalence(args) -> None:
    from adasr.tasks.gsm8k import is_correct, load_gsm8k

    items = load_gsm8k(args.data, limit=args.n)
    preds: dict[str, dict[str, str | None]] = {}
    deep: dict[str, dict[str, list[int]]] = {}
    for name, engine in _engines(args, policy=args.mode, max_deep_tokens=args.max_deep_tokens, decode_rate=20.0):
        t0 = time.perf_counter()
        results = list(engine.run(_inputs(items, one_chunk=False), batch_size=args.batch_size))
        print(f"{name}: {len(results)} problems in {time.perf_counter() - t0:.0f} s", flush=True)
        preds[name] = {r.id: r.record["prediction"] for r in results}
        deep[name] = {r.id: r.episode.deep for r in results}
    refs = {f"q{i}": it.reference for i, it in enumerate(items)}
    acc = {name: sum(is_correct(p[k], refs[k]) for k in refs) / len(refs) for name, p in preds.items()}
    same_pred = sum(preds["torch"][k] == preds["vllm"][k] for k in refs)
    same_ids = sum(deep["torch"][k] == deep["vllm"][k] for k in refs)
    print(f"\n{args.model}, {args.dtype}, mode {args.mode}, greedy; first {len(refs)} problems of {Path(args.data).name}\n")
    print("| backend | accuracy | same prediction as torch | same deep-stage token ids |")
    print("|---|---:|---:|---:|")
    print(f"| torch | {acc['torch']:.2f} | - | - |")
    print(f"| vllm | {acc['vllm']:.2f} | {same_pred}/{len(refs)} | {same_ids}/{len(refs)} |")
    for k in refs:
        if preds["torch"][k] != preds["vllm"][k]:
            a, b = deep["torch"][k], deep["vllm"][k]
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            print(f"- {k}: torch {preds['torch'][k]!r} vs vllm {preds['vllm'][k]!r} (token ids differ from deep token {first})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("check", choices=["throughput", "equivalence"])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--mode", default="batch")
    ap.add_argument("--max-deep-tokens", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=10)
    args = ap.parse_args()
    throughput(args) if args.check == "throughput" else equivalence(args)


if __name__ == "__main__":  # vLLM spawns worker processes that import this module
    main()
