"""Where turn + trajectory credit differs from trajectory-only credit, with and without revisions
(issue 24 §2; RESULTS §57).

Proactive GRPO (docs/DESIGN.md "Proactive GRPO (ours)") gives each generated token
``A = A_traj + A_turn`` (:func:`adasr.train.advantages.proactive_token_advantages`, ``w_turn = w_traj
= 1``); the trajectory-only arm (``w_turn: 0``) gives it ``A_traj`` alone. On the *same* rollouts
the two arms' gradients differ only by ``A_turn``. This script draws rollout groups of a proactive
GRPO config from its starting policy (no optimizer step), once per ``--revisions`` setting with the
same rows and rollout seeds, and reports where ``|A_turn|`` sits:

* ``before``: silent turns (and notes) before the rollout's first response;
* ``first``: the first response turn;
* ``hold``: turns after the first response that keep the answer (silence, a note, a confirmation);
* ``revise``: turns after the first response that change the answer (a revision).

Columns: rollouts, the share that revised, groups whose trajectory reward varies, the generated
tokens of each class, the share of the total ``sum |A_turn|`` on each class, ``|A_turn| / |A|``
(the share of the turn arm's advantage mass that the trajectory arm lacks) and the share of
generated tokens whose advantage sign differs between the arms. Rollouts only: the KL reference
(``beta``) is set to 0, since it does not enter the advantages.

Usage::

    python benchmarks/proactive_credit_split.py --config configs/grpo_proactive_qwen_rl_kl1_s4_rev.yaml \\
        --init qwen2.5-coder-0.5b-proactive --groups 8 --revisions 0 1
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import Counter

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402

from adasr.models import adapter_dir  # noqa: E402
from adasr.protocol import Stage  # noqa: E402
from adasr.train.advantages import group_normalize  # noqa: E402
from adasr.train.common import prepare_run  # noqa: E402
from adasr.train.config import load_config  # noqa: E402
from adasr.train.rewards import same_answer  # noqa: E402
from adasr.train.rl import StreamGRPOTrainer, rollout_turns  # noqa: E402

CLASSES = ("before", "first", "hold", "revise")


def token_classes(results, B: int, T: int, P: int) -> torch.Tensor:
    """``(B, T)`` long: the index in :data:`CLASSES` of each completion token's turn (-1: no
    streaming turn, e.g. input or deep-stage tokens). ``P``: the prompt length (tokens)."""
    cls = torch.full((B, T), -1, dtype=torch.long)
    for b, res in enumerate(results):
        answered, answer = False, None
        for turn in rollout_turns(res):
            if not answered:
                k = 1 if turn.responds else 0
            elif turn.responds and not same_answer(turn.prediction, answer):
                k = 3
            else:
                k = 2
            if turn.responds:
                answered, answer = True, turn.prediction
            a, z = max(turn.start - P, 0), min(turn.end - P, T)
            if a < z:
                cls[b, a:z] = k
    return cls


def split(cfg_path: str, init: str, revisions: int, groups: int, threads: int) -> dict:
    """Draw ``groups`` rollout groups at ``revisions`` and return the credit split (see the module
    docstring). Raises ConfigError / DataError / ModelLoadError as ``adasr train`` does."""
    out_dir = tempfile.mkdtemp(prefix="credit_split_")
    cfg = load_config(cfg_path, "grpo", ["--init", init, "--beta", "0", "--output_dir", out_dir,
                                         "--revisions", str(revisions), "--w_turn", "1.0", "--w_traj", "1.0"])
    torch.set_num_threads(threads)
    run = prepare_run(cfg, required=("chunks", "answer", "evidence_chunk"))
    trainer = StreamGRPOTrainer(run.policy.model, run.policy.tokenizer, cfg, train_dataset=run.train)
    trainer.model.train()
    G = cfg.num_generations
    captured: list = []
    draw = trainer.run_rollouts

    def keep(rows):
        res = draw(rows)
        captured[:] = res
        return res

    trainer.run_rollouts = keep
    P = len(trainer.stream_format.prefix_ids("streaming"))
    rows_all = [run.train[i] for i in range(groups)]
    agg = Counter()
    for g, row in enumerate(rows_all):
        trainer._generate_and_score_completions([row] * G)
        lb = trainer.last_batch
        A, stage = lb["advantages"], lb["stage"]
        gen = (stage > Stage.INPUT)
        a_traj = group_normalize(lb["rewards"]["trajectory"], G, **trainer._normalization())[:, None] * gen
        a_turn = A - a_traj
        cls = token_classes(captured, *A.shape, P)
        agg["rollouts"] += G
        agg["revised"] += sum(1 for r in lb["records"] if (r.get("n_revisions") or 0) > 0)
        t = lb["rewards"]["trajectory"]
        agg["groups_var"] += int(bool(t.max() != t.min()))
        agg["abs_A"] += float(A[gen].abs().sum())
        agg["abs_turn"] += float(a_turn[gen].abs().sum())
        agg["gen_tokens"] += int(gen.sum())
        agg["sign_diff"] += int((torch.sign(A[gen]) != torch.sign(a_traj[gen])).sum())
        for k, name in enumerate(CLASSES):
            m = (cls == k) & gen
            agg[f"tok_{name}"] += int(m.sum())
            agg[f"turn_{name}"] += float(a_turn[m].abs().sum())
        print(f"  revisions {revisions}: group {g + 1}/{groups} done", flush=True)
    return dict(agg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/grpo_proactive_qwen_rl_kl1_s4_rev.yaml")
    ap.add_argument("--init", default="qwen2.5-coder-0.5b-proactive",
                    help="starting policy: a registry adapter name or an adapter directory")
    ap.add_argument("--groups", type=int, default=8, help="training streams, one group of rollouts each")
    ap.add_argument("--revisions", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if adapter_dir(args.init) is None:
        raise SystemExit(f"--init {args.init!r}: neither a bundled adapter name nor an adapter directory")
    init = args.init
    rows = []
    for r in args.revisions:
        a = split(args.config, init, r, args.groups, args.threads)
        tot = max(a["abs_turn"], 1e-12)
        rows.append(
            f"| {r} | {a['rollouts']} | {a['revised'] / a['rollouts']:.0%} | {a['groups_var']}/{args.groups} | "
            + " / ".join(str(a[f"tok_{c}"]) for c in CLASSES) + " | "
            + " / ".join(f"{a[f'turn_{c}'] / tot:.0%}" for c in CLASSES) + " | "
            f"{a['abs_turn'] / max(a['abs_A'], 1e-12):.0%} | {a['sign_diff'] / max(a['gen_tokens'], 1):.0%} |")
    print("\n| revisions | rollouts | revised | groups with trajectory-reward variance | generated tokens "
          "before / first / hold / revise | share of sum abs(A_turn) before / first / hold / revise | "
          "abs(A_turn) / abs(A) | tokens whose sign differs |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
