"""Keep the training streams on which a GRPO group can carry signal (issue 24 §2).

GRPO's advantage is a reward minus its group's mean (DeepSeekMath, arXiv 2402.03300, eq. 3): a
stream whose rollouts all end alike (all timely-correct, or all premature) gives every rollout an
advantage of zero on the trajectory term. DAPO (arXiv 2503.14476, "dynamic sampling") drops such
groups while training; this tool does it once, offline, from ``adasr eval`` runs of the starting
policy on a pool of training streams (``data/proactive/qwen_rl_pool_train.jsonl``, built by
``tools/build_proactive_data.py``), so that the GRPO run spends its rollouts where they can differ.

A stream is **kept** when its outcome (timely-correct, premature, answered at all) differs
between the given runs (for example a greedy run and a run sampled at temperature 1.0), or when
any run did not end timely-correct (the policy still fails there; sampling may find the way).
Streams every run got timely-correct are dropped. The kept streams are written in pool order::

    python tools/select_rl_streams.py --pool data/proactive/qwen_rl_pool_train.jsonl \\
        --run runs/pool/T0.0_s0 --run runs/pool/T1.0_s1 --out data/proactive/qwen_rl_train.jsonl

Prints the counts (pool, evaluated, disagreeing, failing, kept) and, per family, the share kept.
Exits 2 with a one-line error if a run is not an ``adasr eval --mode proactive`` directory, names a
stream the pool does not have, or shares no stream with the other runs.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from adasr.errors import AdasrError, DataError
from adasr.jsonl import read_jsonl, write_jsonl
from adasr.plots import load_eval_dirs


def outcome(rec: dict) -> tuple[bool, bool, bool]:
    """A proactive result record's outcome: (timely-correct, premature, answered)."""
    return (bool(rec.get("timely") and rec.get("correct")), bool(rec.get("premature")),
            rec.get("first_prediction") is not None)


def proactive_records(run: Path) -> list[dict]:
    """The proactive records of one ``adasr eval --out`` directory (read by
    :func:`adasr.plots.load_eval_dirs`: the last record per id).

    Raises:
        InputError: ``run`` is not a directory.
        DataError: it holds no proactive results, or a malformed line.
    """
    series = [s for s in load_eval_dirs([run]) if s.mode == "proactive"]
    if not series:
        raise DataError(f"{run} holds no proactive results; run `adasr eval --mode proactive --out {run}` on the pool first")
    return series[0].records


def select(pool: list[dict], runs: list[list[dict]]) -> tuple[list[dict], list[dict], Counter]:
    """The pool streams (in pool order) that every run evaluated and whose outcomes differ or fail.

    Args:
        pool: the stream records (each with an ``id``).
        runs: per run, its ``proactive/results.jsonl`` records.
    Returns:
        (kept streams, streams every run evaluated, counts of ``evaluated``, ``disagree``, ``fail``,
        ``kept``).
    Raises:
        DataError: a run's id is not in the pool, or no stream is in every run.
    """
    ids = {r["id"] for r in pool}
    outcomes: list[dict[str, tuple]] = []
    for recs in runs:
        unknown = [r["id"] for r in recs if r["id"] not in ids]
        if unknown:
            raise DataError(f"run record {unknown[0]!r} is not a stream of the pool; evaluate the pool file itself")
        outcomes.append({r["id"]: outcome(r) for r in recs})
    common = set.intersection(*(set(o) for o in outcomes))
    if not common:
        raise DataError("the runs share no stream; evaluate them on the same pool with the same --limit")
    counts: Counter = Counter(evaluated=len(common))
    evaluated = [rec for rec in pool if rec["id"] in common]
    kept = []
    for rec in evaluated:
        seen = {o[rec["id"]] for o in outcomes}
        disagree, fail = len(seen) > 1, any(not o[0] for o in seen)
        counts["disagree"] += disagree
        counts["fail"] += fail
        if disagree or fail:
            kept.append(rec)
    counts["kept"] = len(kept)
    return kept, evaluated, counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=Path, required=True, help="the pool of training streams (jsonl)")
    ap.add_argument("--run", type=Path, action="append", required=True,
                    help="an `adasr eval --out` folder of the starting policy on the pool (repeat: 2 or more)")
    ap.add_argument("--out", type=Path, required=True, help="where the kept streams go (jsonl)")
    args = ap.parse_args(argv)
    try:
        pool = read_jsonl(args.pool)
        kept, evaluated, counts = select(pool, [proactive_records(run) for run in args.run])
    except AdasrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_jsonl(kept, args.out)
    per_task = Counter(r["task"] for r in evaluated)
    per = ", ".join(f"{t} {n}/{per_task[t]}" for t, n in sorted(Counter(r["task"] for r in kept).items()))
    print(f"pool {len(pool)}, evaluated by every run {counts['evaluated']}, outcomes differ {counts['disagree']}, "
          f"not timely-correct in some run {counts['fail']}; kept {counts['kept']} ({per}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
