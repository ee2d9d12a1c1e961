"""HRPO vs GRPO optimizer-step time on the same config (issue: training, section 4; target:
HRPO's step time within 1.15x of GRPO's).

Runs ``--steps`` optimizer steps of each trainer from the same starting policy and seed,
alternating GRPO and HRPO ``--repeats`` times so that machine noise hits both alike. The two
differ only in how the per-token advantages are built (the config's ``advantage`` field), so
their first step generates the same rollouts. Step time is measured from the Trainer's
``on_step_begin`` to ``on_step_end`` (rollouts, rewards, advantages, loss, backward, optimizer);
the rollout share is TRL's logged ``rollout_time``.

Usage: ``python benchmarks/bench_rl_step.py [--config configs/hrpo_procedural_smollm2.yaml] [--steps 3] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from transformers import TrainerCallback  # noqa: E402

from adasr.train.config import load_config  # noqa: E402
from adasr.train.rl import train_rl  # noqa: E402


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step, and TRL's logged rollout time."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.rollouts: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.steps.append(time.perf_counter() - self._t)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "rollout_time" in logs:
            self.rollouts.append(float(logs["rollout_time"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/hrpo_procedural_smollm2.yaml")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/out/rl_step")
    args = ap.parse_args()
    timers: dict[str, list[StepTimer]] = {"grpo": [], "hrpo": []}
    for r in range(args.repeats):
        for adv in ("grpo", "hrpo"):
            out = str(Path(args.out) / f"{adv}-{r}")
            shutil.rmtree(out, ignore_errors=True)
            cfg = load_config(args.config, adv, ["--advantage", adv, "--max_steps", str(args.steps), "--save_steps",
                                                 "10000", "--logging_steps", "1", "--output_dir", out])
            timer = StepTimer()
            train_rl(cfg, callbacks=[timer])
            timers[adv].append(timer)
            print(f"{adv} repeat {r}: steps {[round(t, 2) for t in timer.steps]} s", flush=True)

    def agg(adv: str) -> tuple[float, float]:
        steps = [t for tm in timers[adv] for t in tm.steps]
        rolls = [t for tm in timers[adv] for t in tm.rollouts]
        return statistics.mean(steps), statistics.mean(rolls) if rolls else float("nan")

    (g, gr), (h, hr) = agg("grpo"), agg("hrpo")
    print(f"\n## RL step time: {args.config}, {args.steps} steps x {args.repeats} repeats each, alternating\n")
    print("| trainer | mean step time (s) | of which rollouts (s) | rest: rewards, advantages, loss, update (s) |")
    print("|---|---|---|---|")
    print(f"| GRPO | {g:.2f} | {gr:.2f} | {g - gr:.2f} |")
    print(f"| HRPO | {h:.2f} | {hr:.2f} | {h - hr:.2f} |")
    print(f"\nHRPO / GRPO step time: **{h / g:.3f}x** (target <= 1.15x: {'met' if h / g <= 1.15 else 'missed'})")


if __name__ == "__main__":
    main()
