"""Load test of ``adasr serve``: N concurrent live sessions on loopback vs N independent in-process runs.

Starts ``adasr serve`` as a subprocess on a free loopback port (``--max-sessions`` = the largest N),
then for each N opens N WebSocket sessions at once (``adasr.client.AsyncClient``), each streaming
its own GSM8K problem (the held-out file) sentence by sentence at ``--wps`` words/s on the real
clock, and reports from the episode records: how many answers are correct (each graded by its item's
task: GSM8K or a built task such as chain_sum), post-input TTFT and latency p50/p95, the largest
backlog, generated tokens/s over the round (all sessions), and errors (must be 0). Bounded: N is
at most 16, one round per N, and the whole run stops after ``--time-limit`` seconds.

Then, in this process with the server idle, the same problems run as N independent in-process
episodes (one engine, one episode at a time, virtual clock: what each stream sees with a machine
to itself) for the comparison column, and the server's overhead is measured on one session,
three ways, alternating (``--overhead-reps`` each): through the server; in-process with a
:class:`~adasr.stream.LiveSource` pushed at the same pace from a thread (what the server's engine
sees: next arrivals unknown, so adaptive budgets use a slack estimated from the arrivals seen, and a
thought still in the middle of a step when a chunk arrives runs on to the step's end); and in-process with the scheduled stream (next arrivals known to the
policy, a semantics a live server cannot have). Overhead = served vs in-process live, on equal
post-input tokens (both are printed). ``--overhead-only`` skips the N rounds.

Usage::

    python benchmarks/bench_serve.py --model smollm2-135m-chain-sum --n 1 2 4 8 16
    python benchmarks/bench_serve.py --model smollm2-135m-instruct --n 1 2 4 --shortest --max-deep-tokens 96
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from adasr.client import AsyncClient
from adasr.stream import chunk_text, words_per_second_schedule
from adasr.tasks.gsm8k import load_gsm8k

DATA = Path(__file__).resolve().parents[1] / "data" / "gsm8k_heldout400.jsonl"
MAX_N = 16


def pct(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


async def paced(text: str, wps: float):
    """The sentences of ``text``, each when its last word is spoken at ``wps`` words/s."""
    chunks = chunk_text(text, "sentence")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for chunk, t in zip(chunks, words_per_second_schedule(chunks, wps)):
        await asyncio.sleep(max(0.0, t0 + t - loop.time()))
        yield chunk


async def one_round(url: str, texts: list[str], wps: float, timeout_s: float) -> tuple[list[dict | None], int, float]:
    """N sessions at once; returns their records (``None`` for a session that failed, in the order
    of ``texts``), the error count and the round's wall time."""
    client = AsyncClient(url)
    t0 = time.perf_counter()

    async def session(text: str):
        return await asyncio.wait_for(client.solve(paced(text, wps)), timeout_s)

    results = await asyncio.gather(*(session(t) for t in texts), return_exceptions=True)
    wall = time.perf_counter() - t0
    records = [r["record"] if isinstance(r, dict) else None for r in results]
    errors = [r for r in results if not isinstance(r, dict)]
    for e in errors:
        print(f"  error: {type(e).__name__}: {e}", file=sys.stderr)
    return records, len(errors), wall


def accuracy(items: list, records: list[dict | None]) -> tuple[int, int]:
    """(correct, sessions) of a round: each record's prediction graded against its item's answer by
    the item's task; a failed session counts as wrong."""
    from adasr.tasks.registry import task_for

    ok = sum(r is not None and task_for(it).grade(r.get("prediction"), it.reference) for it, r in zip(items, records))
    return ok, len(records)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "adasr.cli", "serve", "--model", args.model, "--port", str(port), "--host", "127.0.0.1",
           "--max-sessions", str(max(args.n)), "--max-deep-tokens", str(args.max_deep_tokens), "--mode", args.mode,
           "--dtype", args.dtype, "--budget", str(args.budget), "--decode-rate", str(args.decode_rate)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    import httpx

    t_end = time.monotonic() + 300
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise SystemExit(f"adasr serve exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("adasr serve did not come up in 300 s")


def in_process(args, texts: list[str], clock: str, live: bool = False) -> list[dict]:
    """Each text as an independent episode on one in-process engine (batch 1), same settings as the
    server, run in a worker thread as the server's engine is (on a loaded CPU, torch's forwards from
    the main thread measured up to 10x slower than from a worker thread: RESULTS.md); ``live``:
    fed through a :func:`live_source`."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_in_process, args, texts, clock, live).result()


def _in_process(args, texts: list[str], clock: str, live: bool = False) -> list[dict]:
    from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine
    from adasr.models import load_model
    from adasr.stream import make_stream

    engine = getattr(_in_process, "engine", None)
    if engine is None:
        lm = load_model(args.model, dtype=args.dtype)
        engine = _in_process.engine = StreamingEngine(lm.model, lm.tokenizer, EngineConfig(
            policy=args.mode, thought_budget=args.budget, max_deep_tokens=args.max_deep_tokens,
            decode_rate=args.decode_rate, protocol=lm.protocol))
        next(engine.run([EpisodeInput("warm-up", make_stream(texts[0], wps=args.wps))]))  # first forwards are slow
    out = []
    for i, text in enumerate(texts):
        src = live_source(text, args.wps) if live else make_stream(text, chunker="sentence", wps=args.wps)
        out.append(next(engine.run([EpisodeInput(f"p{i}", src)], clock=clock)).record)
    return out


def live_source(text: str, wps: float):
    """A LiveSource that a thread feeds with the sentences of ``text`` at ``wps`` words/s, then closes
    (the in-process twin of a client streaming to the server)."""
    import threading

    from adasr.stream import LiveSource

    src = LiveSource()
    chunks = chunk_text(text, "sentence")

    def feed():
        for chunk, t in zip(chunks, words_per_second_schedule(chunks, wps)):
            time.sleep(max(0.0, t - src.now_s()))
            src.push(chunk)
        src.close()

    threading.Thread(target=feed, daemon=True).start()
    return src


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-chain-sum")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8, 16], help=f"concurrent sessions (<= {MAX_N})")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--shortest", action="store_true", help="take the shortest problems of --data (a short run)")
    ap.add_argument("--wps", type=float, default=2.5)
    ap.add_argument("--mode", default="adaptive")
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--max-deep-tokens", type=int, default=256)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--decode-rate", type=float, default=20.0,
                    help="tokens/s the adaptive budgets assume, pinned for server and in-process alike")
    ap.add_argument("--time-limit", type=float, default=1800, help="stop starting rounds after this many seconds")
    ap.add_argument("--overhead-reps", type=int, default=3, help="single sessions for the overhead comparison")
    ap.add_argument("--overhead-only", action="store_true", help="measure the one-session overhead only")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if any(n < 1 or n > MAX_N for n in args.n):
        raise SystemExit(f"--n must be within 1..{MAX_N}")
    items = load_gsm8k(args.data)  # GSM8K lines, or built items (a task field: chain_sum, ...)
    if args.shortest:
        items = sorted(items, key=lambda it: len(it.question.split()))
    texts = [it.question for it in items[:max(args.n)]]
    port, t_start, load0 = free_port(), time.monotonic(), os.getloadavg()[0]
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args, port)
    rows = []
    try:
        asyncio.run(one_round(url, texts[:1], args.wps, 600))  # warm-up (first forwards, prefix cache)
        for n in [] if args.overhead_only else args.n:
            if time.monotonic() - t_start > args.time_limit:
                print(f"time limit reached before N={n}", file=sys.stderr)
                break
            answered, errors, wall = asyncio.run(one_round(url, texts[:n], args.wps, 600))
            correct = accuracy(items[:n], answered)
            records = [r for r in answered if r is not None]
            gen = sum(r["stream_tokens"] + r["deep_tokens"] for r in records)
            rows.append({"n": n, "errors": errors, "wall_s": wall, "tokens_per_s": gen / wall, "correct": correct,
                         "ttft": [r["post_input_ttft_s"] for r in records if r["post_input_ttft_s"] is not None],
                         "latency": [r["post_input_latency_s"] for r in records],
                         "backlog": [r["max_backlog_s"] for r in records]})
            print(f"N={n}: done in {wall:.1f} s, {errors} errors, {correct[0]}/{correct[1]} correct", file=sys.stderr)
        # with the server idle (its thread sleeps): the N independent in-process runs, then the overhead
        # pairs, alternating so that the machine's load falls on both sides alike
        alone = in_process(args, texts[:max(r["n"] for r in rows)], "virtual") if rows else []
        served, live, real = [], [], []
        for _ in range(args.overhead_reps):
            served.append(asyncio.run(one_round(url, texts[:1], args.wps, 600))[0][0])
            live.append(in_process(args, texts[:1], "real", live=True)[0])
            real.append(in_process(args, texts[:1], "real")[0])
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"\n{args.model}, mode {args.mode}, {args.wps} words/s, {len(texts)} problems "
          f"({'shortest' if args.shortest else 'first'} of {args.data.name}), dtype {args.dtype}, decode rate pinned "
          f"at {args.decode_rate:g} tokens/s, max {args.max_deep_tokens} deep tokens; {os.cpu_count()} CPUs, load "
          f"average {load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end\n")
    if rows:
        print("| N | correct | post-input TTFT p50 / p95 (s) | post-input latency p50 / p95 (s) | max backlog p95 (s) | "
              "generated tokens/s (whole round) | errors | in-process, N independent runs: latency p50 / p95 (s) |")
        print("|---|---|---|---|---|---|---|---|")
        for row in rows:
            solo = [r["post_input_latency_s"] for r in alone[:row["n"]]]
            print(f"| {row['n']} | {row['correct'][0]}/{row['correct'][1]} | {pct(row['ttft'], 50):.2f} / {pct(row['ttft'], 95):.2f} | "
                  f"{pct(row['latency'], 50):.2f} / {pct(row['latency'], 95):.2f} | {pct(row['backlog'], 95):.2f} | "
                  f"{row['tokens_per_s']:.1f} | {row['errors']} | {pct(solo, 50):.2f} / {pct(solo, 95):.2f} |")
    base = pct(rows[0]["latency"], 95) if rows and rows[0]["n"] == 1 else None
    if base:
        ok = [r["n"] for r in rows if pct(r["latency"], 95) <= 2 * base]
        print(f"\nlargest N with p95 post-input latency within 2x of N=1 ({2 * base:.2f} s): {max(ok)}")
    print(f"\nserver overhead, one session ({args.overhead_reps} runs each, alternating, medians):\n")
    print("| path | post-input latency p50 (s) | post-input tokens (mean) | s per post-input token | vs in-process live |")
    print("|---|---:|---:|---:|---:|")
    ref = float(np.median([r["post_input_latency_s"] for r in live]))
    for name, recs in (("through the server", served), ("in-process, live source", live),
                       ("in-process, scheduled stream", real)):
        lat = float(np.median([r["post_input_latency_s"] for r in recs]))
        toks = float(np.mean([r["post_input_tokens"] for r in recs]))
        print(f"| {name} | {lat:.3f} | {toks:.1f} | {lat / max(toks, 1):.4f} | {100 * (lat / ref - 1):+.0f}% |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "in_process": alone, "served_single": served,
                                         "in_process_live": live, "in_process_real": real}, indent=1))


if __name__ == "__main__":
    main()
