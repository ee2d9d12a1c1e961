"""Stage-advantage statistics of RL runs (issue 8 §2): do the streaming and the deep stage get
distinct credit?

Usage::

    python benchmarks/rl_stage_stats.py grpo=runs/grpo_gsm8k_qwen_distill hrpo=runs/hrpo_gsm8k_qwen_distill

Each ``NAME=DIR`` is an ``adasr train grpo|hrpo`` output directory. The script reads the trainer's
log history (``DIR/trainer_state.json``, else that of the newest ``DIR/checkpoint-*``) and prints
one markdown row per run, averaged over its logged steps:

* reward, accuracy, the stage rewards ``R_S`` / ``R_D`` (docs/DESIGN.md "HRPO (ours)") and the
  per-note reward ``r_note`` (runs that logged it; "The per-note reward");
* ``stage_corr``: correlation over rollouts of the group-normalized ``R_S`` and ``R_D`` (1.0:
  the stages would get one signal, as in GRPO), with its range over steps, and ``stage_abs_diff``
  (mean ``|A_S - A_D|`` per rollout);
* the token advantages actually applied, per stage (mean and std over the stage's tokens);
  under GRPO a rollout's stream and deep tokens carry the same value, under HRPO their own;
* streaming-thought tokens (written before end of input) and post-input tokens, the share of
  rollout groups whose rewards differ (the groups that carry a signal: 1 - ``frac_reward_zero_std``;
  under HRPO that of the streaming stage's reward ``R_S``),
  KL to the initial policy, and where a step's time goes: rollouts (the engine) vs the rest (log-probs,
  loss, backward, optimizer), in seconds.

``--halves`` prints two rows per run, its first and second half of steps, to show a trend.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean


def log_history(run_dir: Path) -> list[dict]:
    """The per-step log entries (those with a ``reward``) of a run directory.

    Raises:
        FileNotFoundError: no ``trainer_state.json`` in ``run_dir`` or its checkpoints.
    """
    state = run_dir / "trainer_state.json"
    if not state.is_file():
        ckpts = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        ckpts = [c for c in ckpts if (c / "trainer_state.json").is_file()]
        if not ckpts:
            raise FileNotFoundError(f"no trainer_state.json in {run_dir} or its checkpoints")
        state = ckpts[-1] / "trainer_state.json"
    return [e for e in json.loads(state.read_text())["log_history"] if "reward" in e]


COLUMNS = (
    ("steps", None),
    ("reward", "reward"),
    ("accuracy", "accuracy"),
    ("R_S", "rewards/R_S/mean"),
    ("R_D", "rewards/R_D/mean"),
    ("r_note", "rewards/r_note/mean"),
    ("stage_corr mean [min, max]", "advantages/stage_corr"),
    ("stage_abs_diff", "advantages/stage_abs_diff"),
    ("A on stream tokens mean / std", ("advantages/stream/mean", "advantages/stream/std")),
    ("A on deep tokens mean / std", ("advantages/deep/mean", "advantages/deep/std")),
    ("stream tokens", "tokens/stream_tokens"),
    ("post-input tokens", "tokens/post_input_tokens"),
    ("groups with reward variance", "frac_reward_zero_std"),
    ("kl", "kl"),
    ("step time (s): rollouts + rest", ("step_time", "rollout_time")),
)


def _m(entries: list[dict], key: str) -> float | None:
    vals = [float(e[key]) for e in entries if e.get(key) is not None]
    return mean(vals) if vals else None


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}" if abs(x) < 100 else f"{x:.0f}"


def row(name: str, entries: list[dict]) -> str:
    """One markdown row: the means over ``entries`` (log entries of one run) of :data:`COLUMNS`."""
    cells = [name]
    for label, key in COLUMNS:
        if key is None:
            cells.append(str(len(entries)))
        elif key == ("step_time", "rollout_time"):
            step, roll = _m(entries, key[0]), _m(entries, key[1])
            cells.append(f"{_f(step)}: {_f(roll)} + {_f(step - roll)}" if step is not None and roll is not None
                         else _f(step))
        elif isinstance(key, tuple):
            cells.append(" / ".join(_f(_m(entries, k)) for k in key))
        elif key == "frac_reward_zero_std":
            zero = _m(entries, key)
            cells.append("–" if zero is None else f"{1 - zero:.0%}")
        elif key == "advantages/stage_corr":
            vals = [float(e[key]) for e in entries if e.get(key) is not None]
            cells.append(f"{mean(vals):.2f} [{min(vals):.2f}, {max(vals):.2f}]" if vals else "–")
        else:
            cells.append(_f(_m(entries, key)))
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str]) -> int:
    halves = "--halves" in argv
    argv = [a for a in argv if a != "--halves"]
    if not argv or any("=" not in a for a in argv):
        print(__doc__.strip().splitlines()[3], file=sys.stderr)
        print("error: give one or more NAME=RUN_DIR arguments", file=sys.stderr)
        return 2
    print("| run | " + " | ".join(label for label, _ in COLUMNS) + " |")
    print("|" + "---|" * (len(COLUMNS) + 1))
    for arg in argv:
        name, d = arg.split("=", 1)
        try:
            entries = log_history(Path(d))
            if halves and len(entries) > 1:
                h = len(entries) // 2
                print(row(f"{name}, steps 1-{h}", entries[:h]))
                print(row(f"{name}, steps {h + 1}-{len(entries)}", entries[h:]))
            else:
                print(row(name, entries))
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
