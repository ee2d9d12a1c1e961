"""GRPO and HRPO on streaming-engine rollouts: :class:`StreamGRPOTrainer` (a TRL ``GRPOTrainer``).

One optimizer step (``train_rl`` reads top to bottom; the step is
:meth:`StreamGRPOTrainer._generate_and_score_completions` + TRL's ``_compute_loss``):

1. TRL's ``RepeatSampler`` hands this process ``prompts_per_step`` prompts (dataset rows: ``chunks``,
   ``answer``), each repeated ``num_generations`` (G) times in consecutive rows.
2. **Rollouts.** The adasr :class:`~adasr.engine.StreamingEngine` runs every row as one sampled
   streaming episode on the current policy (unwrapped from accelerate/DeepSpeed/PEFT wrappers,
   in eval mode, all rows in one batched KV cache, per-stream virtual clocks — each rollout is
   charged the batched steps it takes part in and never sits a step out waiting for its next
   chunk — the row's chunks streamed by the :class:`~adasr.stream.StreamSpec` that ``adasr run``
   and ``adasr eval`` use, arriving at ``wps`` words per second; each row has its own seed). Adaptive
   budgets use ``decode_rate`` when the config pins it, else a rate measured once (by the first
   batch's engine) and carried from batch to batch, so no batch re-runs the calibration forwards.
   Its ``token_ids`` are exactly the sequence the model saw and produced; ``token_stage``
   labels each token 0 (not generated: system prompt, chunks, role headers, forced turn
   closers), 1 (streaming thought) or 2 (deep stage).
3. **Rewards** (:mod:`adasr.train.rewards`): ``r_acc`` from the row's task
   (:func:`adasr.tasks.registry.get_task`: GSM8K through :func:`adasr.tasks.gsm8k.is_correct`,
   procedural tasks through their reasoning-gym scorer, proactive tasks through theirs),
   ``r_fmt`` and ``r_adapt`` from the engine record.
4. **Advantages** ``(B, T)`` over the token stages (:mod:`adasr.train.advantages`):
   HRPO (``advantage: hrpo``) — ``A_S`` from ``R_S`` on stage-1 tokens and ``A_D`` from ``R_D``
   on stage-2 tokens, each normalized within the G rollouts of one prompt; GRPO — one
   normalized ``R`` on every generated token.
5. **Loss** — TRL's ``_compute_loss`` unchanged: it accepts per-token advantages of shape
   ``(B, T)``. The "prompt" is the system turn (identical for every row); the "completion" is the
   rest of the episode; ``tool_mask`` (TRL's ``env_mask``) is ``token_stage > 0``, so tokens the
   model did not generate get no loss. Per token:
   ``-min(rho_t * A_t, clip(rho_t, 1-eps, 1+eps) * A_t) + beta * KL_t`` with
   ``rho_t = pi_theta / pi_old`` (k3 KL estimator to the initial policy), aggregated by
   ``loss_type`` (``dapo``: mean over all generated tokens of the generation batch).

Only ``_generate_and_score_completions`` is overridden (plus a reference-model setup for full
fine-tuning with ``beta > 0``); the dataloader, sampler, loss, logging, checkpointing and
``accelerate``/DeepSpeed handling are TRL's. Advantages are normalized within this process's
batch: TRL's sampler gives each process whole groups (its generation batch, ``prompts_per_step * G``
rows, is a multiple of G).
"""

from __future__ import annotations

import copy
import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from trl import GRPOTrainer

from adasr.engine import EngineConfig, EpisodeInput, EpisodeResult, StreamingEngine
from adasr.errors import ConfigError
from adasr.metrics import grade_record
from adasr.proactive_metrics import episode_metrics
from adasr.protocol import Stage, StreamingFormat, find_boxed, is_response
from adasr.tasks.registry import get_task
from adasr.train.advantages import (
    advantage_stats,
    group_normalize,
    grpo_token_advantages,
    hrpo_token_advantages,
    proactive_token_advantages,
)
from adasr.train.common import prepare_run
from adasr.train.save import CheckpointMeta, save_final, trained_on
from adasr.train.config import RLConfig
from adasr.train.rewards import (
    RolloutStats, adaptive_reward, note_credit, reward_tensors, trajectory_reward, turn_rewards,
)

logger = logging.getLogger(__name__)

Scorer = Callable[[str | None, str, str], bool]
"""``scorer(prediction, reference, task) -> correct``: a custom answer checker (the default is
the row's task, :func:`adasr.tasks.registry.get_task`)."""


@dataclass(frozen=True)
class RolloutTurn:
    """A generated streaming-thought turn of a rollout.

    Attributes:
        start / end: its tokens are ``token_ids[start:end]`` of the rollout (token positions;
            the end-of-turn token included when the model generated it).
        chunk: 0-based index of the chunk it follows.
        responds: the turn commits an answer (:func:`adasr.protocol.is_response`).
        prediction: a response's answer (its last ``\\boxed{}``), else ``None``.
    """

    start: int
    end: int
    chunk: int
    responds: bool
    prediction: str | None = None


def rollout_turns(result: EpisodeResult) -> list[RolloutTurn]:
    """The generated streaming turns of a rollout, in order: each maximal run of stage-1 tokens
    of ``result.token_stage`` matched with the ``thought`` events of ``result.events`` (one per
    turn with at least one generated token). Forced skips generate nothing and have no turn.

    Raises:
        RuntimeError: the runs and the thought events do not match (an engine contract).
    """
    runs: list[tuple[int, int]] = []
    start = None
    for t, st in enumerate(list(result.token_stage) + [Stage.INPUT]):
        if st == Stage.STREAM and start is None:
            start = t
        elif st != Stage.STREAM and start is not None:
            runs.append((start, t))
            start = None
    thoughts = [ev for ev in result.events if ev.get("type") == "thought" and ev.get("tokens", 0) > 0]
    if len(thoughts) != len(runs):
        raise RuntimeError(f"rollout {result.id}: {len(runs)} streaming-thought runs but {len(thoughts)} "
                           "thought events")
    turns = []
    for (a, b), ev in zip(runs, thoughts):
        text = ev.get("text") or ""
        responds = is_response(text)
        turns.append(RolloutTurn(a, b, int(ev["chunk"]), responds, find_boxed(text)[-1] if responds else None))
    return turns


def _engine_reward(completions, **kwargs):  # pragma: no cover - never called (rollouts are scored here)
    """Placeholder reward function: TRL needs one; :class:`StreamGRPOTrainer` scores rollouts itself."""
    return [0.0] * len(completions)


class StreamGRPOTrainer(GRPOTrainer):
    """TRL ``GRPOTrainer`` whose rollouts are adasr streaming episodes (GRPO or HRPO advantages).

    Args:
        model: the policy (a ``PreTrainedModel`` or a ``PeftModel``).
        tokenizer: its tokenizer (with a chat template).
        cfg: the :class:`RLConfig`: TRL's ``GRPOConfig`` (the trainer's arguments) with the
            rollout, reward and advantage settings.
        train_dataset: episodes with ``chunks`` and ``answer`` (and optionally ``task``, ``id``).
        callbacks: extra ``TrainerCallback`` objects.
        scorer: ``scorer(prediction, reference, task) -> bool`` (default: the row's task grades,
            :func:`adasr.tasks.registry.get_task`).

    Attributes:
        last_batch: the latest generation batch, for inspection: ``advantages`` ``(B, T)``,
            ``stage`` ``(B, T)``, ``completion_mask``, ``rewards`` (dict of ``(B,)``),
            ``records`` (engine records with ``correct`` filled).
    """

    _tag_names = ["trl", "grpo", "adasr"]

    def __init__(self, model, tokenizer, cfg: RLConfig, *, train_dataset=None, callbacks=None,
                 scorer: Scorer | None = None):
        from accelerate.utils import is_peft_model

        self.cfg = cfg
        self.reward_cfg = cfg.reward_config()
        self.scorer = scorer
        self.stream_spec = cfg.stream_spec()
        self.stream_format = StreamingFormat(tokenizer, cfg.protocol)
        self.rollout_decode_rate: float | None = None  # measured by the first rollout engine, then carried along
        self.last_batch: dict = {}
        args = cfg
        # Full fine-tuning with a KL term: the reference is a frozen copy of the initial policy
        # (TRL would reload it from `config._name_or_path`, which an in-memory model may lack).
        own_ref = args.beta != 0.0 and not is_peft_model(model)
        ref = copy.deepcopy(model).eval() if own_ref else None
        beta = args.beta
        if own_ref:
            args.beta = 0.0
        super().__init__(model=model, reward_funcs=[_engine_reward], args=args, train_dataset=train_dataset,
                         processing_class=tokenizer, callbacks=callbacks)
        if own_ref:
            from trl.models import prepare_deepspeed
            from trl.trainer.utils import add_fused_lm_head

            args.beta = self.beta = beta
            for p in ref.parameters():
                p.requires_grad_(False)
            add_fused_lm_head(ref, temperature=self.temperature, cast_lm_head_to_fp32=args.cast_lm_head_to_fp32)
            if self.is_deepspeed_enabled:
                self.ref_model = prepare_deepspeed(ref, self.accelerator)
            else:
                self.ref_model = self.accelerator.prepare_model(ref, evaluation_mode=True)

    # -- rollouts ---------------------------------------------------------------------------
    def _engine_config(self) -> EngineConfig:
        c = self.cfg
        return EngineConfig(policy=c.mode, thought_budget=c.thought_budget, revisions=c.revisions,
                            max_deep_tokens=c.max_deep_tokens,
                            temperature=c.temperature, top_p=c.top_p, top_k=c.top_k, seed=c.seed,
                            decode_rate=c.decode_rate, initial_decode_rate=self.rollout_decode_rate)

    def _rollout_seed(self, i: int) -> int:
        """Seed of rollout ``i`` of the current generation batch: distinct per row, process, step
        and mode, and the same after a resume (the global step is restored)."""
        mode = "train" if self.model.training else "eval"
        key = f"{self.cfg.seed}:{mode}:{self.state.global_step}:{self.accelerator.process_index}:{i}"
        return zlib.crc32(key.encode())

    def rollout_inputs(self, rows: list[dict]) -> list[EpisodeInput]:
        """The episode of each row: its ``chunks`` (and ``timestamps`` when it has them) streamed
        by :attr:`stream_spec`, as ``adasr eval`` streams the same item."""
        return [
            EpisodeInput(id=f"r{i}", source=self.stream_spec.stream(
                list(row["chunks"]), tokenizer=self.processing_class, timestamps=row.get("timestamps")),
                reference=str(row["answer"]), seed=self._rollout_seed(i), evidence_chunk=row.get("evidence_chunk"))
            for i, row in enumerate(rows)
        ]

    def grade(self, row: dict, prediction: str | None) -> bool:
        """Whether ``prediction`` answers ``row`` (graded by the row's ``task``, else ``cfg.task``)."""
        task = row.get("task") or self.cfg.task
        if self.scorer is not None:
            return bool(self.scorer(prediction, str(row["answer"]), task))
        return get_task(task).grade(prediction, str(row["answer"]))

    def run_rollouts(self, rows: list[dict]) -> list[EpisodeResult]:
        """One sampled streaming episode per row on the current policy (rows in order)."""
        from trl.models import unwrap_model_for_generation

        inputs = self.rollout_inputs(rows)
        with unwrap_model_for_generation(
            self.model_wrapped, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation,
            gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
        ) as policy:
            was_training = policy.training
            policy.eval()
            try:
                engine = StreamingEngine(policy, self.processing_class, self._engine_config(), fmt=self.stream_format)
                done = {r.id: r for r in engine.run(inputs, batch_size=len(inputs), clock="per-stream")}
                self.rollout_decode_rate = engine.decode_rate
            finally:
                policy.train(was_training)
        return [done[inp.id] for inp in inputs]

    # -- one generation batch ----------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict]) -> dict:
        device = self.accelerator.device
        mode = "train" if self.model.training else "eval"
        G = self.num_generations if mode == "train" else self.num_generations_eval
        B = len(inputs)
        if B % G:
            raise ConfigError(f"a generation batch of {B} rollouts is not made of whole groups of {G}")
        metrics = self._metrics[mode]

        t0 = time.perf_counter()
        results = self.run_rollouts(inputs)
        metrics["rollout_time"].append(time.perf_counter() - t0)

        # rewards
        stats: list[RolloutStats] = []
        for row, res in zip(inputs, results):
            rec = grade_record(res.record, lambda prediction, _: self.grade(row, prediction), str(row["answer"]))
            rec["note_credit"] = note_credit(res.thoughts, row.get("note_targets") or ())
            stats.append(RolloutStats.from_record(rec))
        rewards = reward_tensors(stats, self.reward_cfg)
        rewards["adapt"] = torch.tensor([adaptive_reward(s, self.reward_cfg) for s in stats], dtype=torch.float32)

        # sequences: prompt = system turn (the same for every row), completion = the rest
        prefix = self.stream_format.prefix_ids("streaming")
        P = len(prefix)
        max_c = max(1, self.cfg.max_seq_len - P)
        comps, stages, truncated = [], [], 0
        for res in results:
            if res.token_ids[:P] != prefix:  # pragma: no cover - engine/protocol contract
                raise RuntimeError("rollout does not start with the protocol's system prefix")
            ids, st = res.token_ids[P:], res.token_stage[P:]
            if len(ids) > max_c:
                ids, st, truncated = ids[:max_c], st[:max_c], truncated + 1
            comps.append(ids)
            stages.append(st)
        T = max(len(c) for c in comps)
        pad_id = self.processing_class.pad_token_id
        completion_ids = torch.full((B, T), pad_id, dtype=torch.long)
        completion_mask = torch.zeros((B, T), dtype=torch.long)
        stage = torch.zeros((B, T), dtype=torch.long)
        for b, (ids, st) in enumerate(zip(comps, stages)):
            completion_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            completion_mask[b, : len(ids)] = 1
            stage[b, : len(st)] = torch.tensor(st, dtype=torch.long)
        prompt_ids = torch.tensor([prefix] * B, dtype=torch.long)
        prompt_mask = torch.ones_like(prompt_ids)

        # advantages (B, T): zero wherever stage == 0 (and on padding, whose stage is 0)
        kw = self._normalization()
        if self.cfg.advantage == "proactive":
            advantages = self._proactive_advantages(inputs, results, rewards, stage, P, G, metrics)
        elif self.cfg.advantage == "hrpo":
            advantages = hrpo_token_advantages(rewards["stream"], rewards["deep"], stage, G, **kw)
        else:
            advantages = grpo_token_advantages(rewards["total"], stage, G, **kw)
        env_mask = (stage > Stage.INPUT).long()

        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        completion_ids, completion_mask = completion_ids.to(device), completion_mask.to(device)
        env_mask, advantages = env_mask.to(device), advantages.to(device)
        loss_mask = completion_mask * env_mask
        num_items_in_batch = self.accelerator.gather(loss_mask.sum()).sum()

        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        old_logps = ref_logps = None
        micro = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        from trl.models.utils import disable_gradient_checkpointing

        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            generate_every = self.args.steps_per_generation * self.num_iterations
            if self.args.gradient_accumulation_steps % generate_every != 0:
                old_logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, input_ids, attention_mask, T, batch_size=micro)
            if self.beta != 0.0:
                ref_logps = self._reference_logps(input_ids, attention_mask, T, micro)

        self._log_rollouts(metrics, rewards, results, advantages.cpu(), stage, G, truncated)
        self.last_batch = {
            "advantages": advantages.detach().cpu(), "stage": stage, "completion_mask": completion_mask.cpu(),
            "rewards": rewards, "records": [r.record for r in results],
        }
        out = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "tool_mask": env_mask,
            "advantages": advantages,
            "num_items_in_batch": num_items_in_batch,
        }
        if old_logps is not None:
            out["old_per_token_logps"] = old_logps
        if ref_logps is not None:
            out["ref_per_token_logps"] = ref_logps
        return out

    def _proactive_advantages(self, rows: list[dict], results: list[EpisodeResult], rewards: dict,
                              stage: torch.Tensor, P: int, G: int, metrics) -> torch.Tensor:
        """Proactive GRPO (ours): turn-level rewards per decision turn and a trajectory reward per
        rollout (:mod:`adasr.train.rewards`), turned into ``(B, T)`` advantages by
        :func:`proactive_token_advantages`. Adds ``rewards["trajectory"]`` and logs the
        proactive metrics. ``P``: the prompt length the completions start after (tokens)."""
        pcfg = self.cfg.proactive_reward_config()
        B, T = stage.shape
        per_row, traj, scores, premature, early, revised = [], [], [], [], [], []
        for row, res in zip(rows, results):
            rec = res.record
            e = row.get("evidence_chunk")
            if e is None:
                raise ConfigError(f"advantage: proactive needs rows with an evidence_chunk (row {row.get('id')!r})")
            m = episode_metrics(rec, window=pcfg.window, half_life=pcfg.half_life)
            turns = rollout_turns(res)
            # each response graded on its own answer (they differ only when a rollout revised it)
            graded = [t.responds and (rec["correct"] is True if t.prediction == rec.get("prediction")
                                      else self.grade(row, t.prediction)) for t in turns]
            r_turn = turn_rewards([t.chunk for t in turns], [t.responds for t in turns], int(e), graded, pcfg,
                                  predictions=[t.prediction for t in turns])
            per_row.append((turns, r_turn))
            traj.append(trajectory_reward(rec["correct"], m["premature"], m["proactive_score"], rec["format_ok"], pcfg))
            scores.append(m["proactive_score"])
            premature.append(float(m["premature"]))
            early.append(float(rec.get("answer_chunk") is not None))
            revised.append(float((rec.get("n_revisions") or 0) > 0))
        K = max((len(t) for t, _ in per_row), default=0)
        turn_r = torch.zeros((B, K))
        turn_mask = torch.zeros((B, K), dtype=torch.bool)
        turn_index = torch.full((B, T), -1, dtype=torch.long)
        for b, (turns, r_turn) in enumerate(per_row):
            for k, (turn, r) in enumerate(zip(turns, r_turn)):
                turn_r[b, k], turn_mask[b, k] = r, True
                a, z = max(turn.start - P, 0), min(turn.end - P, T)
                if a < z:
                    turn_index[b, a:z] = k
        rewards["trajectory"] = torch.tensor(traj, dtype=torch.float32)
        metrics["proactive/trajectory_reward"].append(rewards["trajectory"].mean().item())
        metrics["proactive/turn_reward"].append(turn_r[turn_mask].mean().item() if K else 0.0)
        metrics["proactive/score"].append(sum(scores) / B)
        metrics["proactive/premature_rate"].append(sum(premature) / B)
        metrics["proactive/answered_before_eoi_rate"].append(sum(early) / B)
        metrics["proactive/revised_rate"].append(sum(revised) / B)  # 0 unless engine.revisions > 0
        return proactive_token_advantages(rewards["trajectory"], turn_r, turn_mask, turn_index, stage, G,
                                          w_turn=pcfg.w_turn, w_traj=pcfg.w_traj, **self._normalization())

    def _normalization(self) -> dict:
        """Keyword arguments of :func:`group_normalize`: ``scale_rewards: group`` divides by the
        group std (+ ``adv_eps``), ``none`` only subtracts the group mean."""
        return {"eps": self.cfg.adv_eps, "scale": "std" if self.cfg.scale_rewards == "group" else "none"}

    def _reference_logps(self, input_ids, attention_mask, T: int, micro: int) -> torch.Tensor:
        if self.ref_model is not None:
            logps, _, _ = self._get_per_token_logps_and_entropies(self.ref_model, input_ids, attention_mask, T,
                                                                  batch_size=micro)
            return logps
        from trl.trainer.utils import use_adapter

        model = self.accelerator.unwrap_model(self.model)
        with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
            logps, _, _ = self._get_per_token_logps_and_entropies(self.model, input_ids, attention_mask, T,
                                                                  batch_size=micro)
        return logps

    def _log_rollouts(self, metrics, rewards: dict, results: list[EpisodeResult], adv: torch.Tensor,
                      stage: torch.Tensor, G: int, truncated: int) -> None:
        """Reward terms, accuracy/format rate, token counts and advantage stats by stage."""
        acc = self.accelerator
        device = acc.device

        def mean(t: torch.Tensor) -> float:
            return acc.gather(t.float().to(device)).mean().item()

        def rec_mean(key: str) -> float:
            return mean(torch.tensor([float(r.record[key] or 0) for r in results]))

        metrics["reward"].append(mean(rewards["total"]))
        metrics["reward_std"].append(acc.gather(rewards["total"].to(device)).std().item() if len(results) > 1 else 0.0)
        metrics["rewards/r_acc/mean"].append(mean(rewards["accuracy"]))
        metrics["rewards/r_fmt/mean"].append(mean(rewards["format"]))
        metrics["rewards/r_adapt/mean"].append(mean(rewards["adapt"]))
        metrics["rewards/R_S/mean"].append(mean(rewards["stream"]))
        metrics["rewards/R_D/mean"].append(mean(rewards["deep"]))
        metrics["rewards/r_note/mean"].append(mean(rewards["note"]))
        metrics["accuracy"].append(mean(rewards["accuracy"]))
        metrics["format_rate"].append(mean(rewards["format"]))
        for key in ("stream_tokens", "deep_tokens", "post_input_tokens", "overrun_tokens", "skipped_chunks"):
            metrics[f"tokens/{key}" if key.endswith("tokens") else key].append(rec_mean(key))
        metrics["post_input_latency_s"].append(rec_mean("post_input_latency_s"))
        key = {"hrpo": "stream", "proactive": "trajectory"}.get(self.cfg.advantage, "total")
        r = rewards[key].view(-1, G)
        metrics["frac_reward_zero_std"].append((r.amax(1) == r.amin(1)).float().mean().item())
        metrics["truncated_frac"].append(truncated / max(len(results), 1))
        for k, v in advantage_stats(adv, stage).items():
            metrics[f"advantages/{k}"].append(v)
        # do the stages get distinct credit? correlation over rollouts of the group-normalized
        # stage rewards (1.0: HRPO's stage advantages carry the same signal, as GRPO's would)
        a_s = group_normalize(rewards["stream"], G, **self._normalization())
        a_d = group_normalize(rewards["deep"], G, **self._normalization())
        both = (a_s != 0) | (a_d != 0)
        if int(both.sum()) > 2 and float(a_s[both].std()) > 0 and float(a_d[both].std()) > 0:
            corr = torch.corrcoef(torch.stack([a_s[both], a_d[both]]))[0, 1].item()
            metrics["advantages/stage_corr"].append(corr)
        metrics["advantages/stage_abs_diff"].append((a_s - a_d).abs().mean().item())


def train_rl(
    cfg: RLConfig,
    *,
    model=None,
    tokenizer=None,
    train_dataset=None,
    callbacks: list | None = None,
    scorer: Scorer | None = None,
) -> Path:
    """Run GRPO or HRPO (``cfg.advantage``) and return the path of the final model.

    The run starts as SFT's does (:func:`adasr.train.common.prepare_run`): the policy starts from
    ``cfg.init`` if set (e.g. the SFT ``final/``: a LoRA adapter keeps training when ``lora:
    true``), else from ``cfg.model``. The final model goes to ``output_dir/final`` with
    ``adasr_meta.json`` (``stage``: ``"grpo"`` or ``"hrpo"``).

    Args:
        cfg: an :class:`RLConfig` (e.g. from :func:`adasr.train.config.load_config`; validated and
            resolved here again).
        model / tokenizer: use these objects instead of loading the model.
        train_dataset: use these episodes (need ``chunks`` and ``answer``) instead of building
            ``cfg.task``.
        callbacks: extra ``transformers.TrainerCallback`` objects.
        scorer: a custom answer checker (default: the row's task grades).

    Raises:
        ConfigError, DataError, ModelLoadError: one-line user errors.
    """
    required = ("chunks", "answer", "evidence_chunk") if cfg.advantage == "proactive" else ("chunks", "answer")
    run = prepare_run(cfg, required=required, model=model, tokenizer=tokenizer, train_dataset=train_dataset)
    policy = run.policy
    on = trained_on(cfg, len(run.train))
    trainer = StreamGRPOTrainer(policy.model, policy.tokenizer, cfg, train_dataset=run.train, scorer=scorer,
                                callbacks=[*(callbacks or []), CheckpointMeta(policy, cfg, cfg.advantage, trained_on=on,
                                                                             extra={"init": cfg.init})])
    trainer.train(resume_from_checkpoint=run.resume_from)
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if getattr(unwrapped, "peft_config", None) and "ref" in unwrapped.peft_config:
        unwrapped.delete_adapter("ref")  # the frozen KL reference copy is not part of the result
    return save_final(trainer, policy, cfg, cfg.advantage, trained_on=on, extra={"init": cfg.init})


__all__ = ["StreamGRPOTrainer", "train_rl", "RolloutTurn", "rollout_turns"]
