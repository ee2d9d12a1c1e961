"""Supervised fine-tuning on protocol-rendered streaming episodes, with the CB-Stream loss.

Recipe (top to bottom, :func:`train_sft`; the config's values flow one way, down these steps):

1. :func:`~adasr.train.common.prepare_run`, the start RL shares: check and resolve the config,
   find the resume point, build the episodes (``id, task, question, chunks, thoughts, deep,
   answer``; the last ``eval_size`` are held out) and load the model (LoRA through PEFT's
   ``get_peft_model`` if asked);
2. the data (:mod:`adasr.train.sft_data`): every episode rendered with the config's protocol and
   measured once (:func:`~adasr.train.sft_data.prepare_episodes`): those longer than
   ``max_seq_len`` dropped, the decision classes (skip, think, respond) counted over the whole
   training set; batches from :class:`~adasr.train.sft_data.StreamingCollator` (each row
   rendered by :meth:`StreamingFormat.render` — the same renderer the engine uses at inference);
3. train with :class:`StreamSFTTrainer`, a ``transformers.Trainer`` whose loss is CB-Stream
   (:func:`cb_stream_step_loss`, :func:`adasr.train.cb_stream.cb_stream_loss`);
4. save ``output_dir/final`` (:func:`adasr.train.save.save_final`, the end RL shares): a LoRA
   adapter whose ``base_model_name_or_path`` is the upstream hub id of a bundled base (else the
   model as given), or a full model + tokenizer; plus ``adasr_meta.json`` (``"base"``: what adasr
   loads) and a model card.

Weights: tokens the model did not generate (labels :data:`~adasr.train.sft_data.IGNORE`) weigh
0; streaming-thought and deep-stage tokens 1; decision tokens carry the class-balanced weight
(docs/TRAINING.md, docs/DESIGN.md "Rewards, HRPO and CB-Stream").
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path

import torch
from transformers import Trainer

from adasr.protocol import StreamingFormat
from adasr.train.cb_stream import cb_stream_loss, cb_stream_token_weights, trained_positions
from adasr.train.common import prepare_run
from adasr.train.config import SFTConfig
from adasr.train.save import CheckpointMeta, save_final, trained_on
from adasr.train.sft_data import IGNORE, StreamingCollator, prepare_episodes

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------


class StreamSFTTrainer(Trainer):
    """``transformers.Trainer`` with the CB-Stream loss on :class:`~adasr.train.sft_data.StreamingCollator` batches.

    Args:
        cb_beta: class-balancing strength (0 = plain masked cross-entropy).
        class_counts: dataset-level decision counts ``{"skip": n, "think": n, "respond": n}``
            (computed once over the training set; ``None`` = per batch).
        end_of_turn_id: the id that closes an assistant turn (a skip starts with it).
        **kwargs: ``transformers.Trainer`` arguments.

    The loss of a micro-batch is the weighted mean ``sum_t w_t CE_t / sum_t w_t``; the Trainer
    divides it by the gradient-accumulation steps (``loss_is_scaled_for_ga = False``).
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args, cb_beta: float, class_counts: dict | None, end_of_turn_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.cb_beta = cb_beta
        self.class_counts = class_counts
        self.end_of_turn_id = end_of_turn_id

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = cb_stream_step_loss(model, inputs, end_of_turn_id=self.end_of_turn_id, cb_beta=self.cb_beta,
                                            class_counts=self.class_counts)
        return (loss, outputs) if return_outputs else loss


def cb_stream_step_loss(model, inputs: dict, *, end_of_turn_id: int, cb_beta: float, class_counts: dict | None = None,
                        trained_only: bool = True):
    """The forward pass and CB-Stream loss of one :class:`~adasr.train.sft_data.StreamingCollator` batch (what
    :meth:`StreamSFTTrainer.compute_loss` runs).

    Args:
        model: a causal LM (PEFT / accelerate wrappers allowed).
        inputs: a collated batch: ``input_ids``, ``attention_mask``, ``labels``, ``decision_mask``
            ``(B, T)`` (and ``respond_mask`` for proactive streams).
        end_of_turn_id / cb_beta / class_counts: see :func:`cb_stream_token_weights`.
        trained_only: ask the model for the logits of the trained positions only
            (``logits_to_keep``, :func:`trained_positions`) when it accepts them; the loss and its
            gradients are the same, the ``(B, T, V)`` logits of the prompt and chunks are skipped.

    Returns:
        ``(loss, outputs)``: the scalar loss and the model's outputs (``outputs.logits`` is
        ``(B, P, V)`` at the trained positions, or ``(B, T, V)``).
    """
    input_ids = inputs["input_ids"]
    weights = cb_stream_token_weights(
        input_ids, inputs["labels"] != IGNORE, inputs["decision_mask"], end_of_turn_id, cb_beta, class_counts,
        respond_mask=inputs.get("respond_mask"),
    )
    positions = trained_positions(weights) if trained_only and _accepts_logits_to_keep(model) else None
    extra = {} if positions is None else {"logits_to_keep": positions}
    outputs = model(input_ids=input_ids, attention_mask=inputs["attention_mask"], **extra)
    return cb_stream_loss(outputs.logits, input_ids, weights, positions), outputs


def _accepts_logits_to_keep(model) -> bool:
    """Whether the causal LM under ``model`` (a PEFT wrapper, DDP/accelerate wrapper or the model
    itself) takes ``logits_to_keep`` as a tensor of positions (transformers' decoder LMs do)."""
    m = model
    while True:  # unwrap accelerate/DDP (.module) and PEFT (.get_base_model())
        if hasattr(m, "module") and isinstance(m.module, torch.nn.Module):
            m = m.module
        elif hasattr(m, "get_base_model"):
            m = m.get_base_model()
        else:
            break
    try:
        return "logits_to_keep" in inspect.signature(m.forward).parameters
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def sft_arguments(cfg: SFTConfig, has_eval: bool) -> SFTConfig:
    """The training arguments of a run: ``cfg`` itself (an ``SFTConfig`` is a
    ``TrainingArguments``), or a copy that evaluates the held-out loss every ``eval_steps``
    (default: ``save_steps``) when there is a held-out set, and never when there is none."""
    if has_eval:  # IntervalStrategy is a str enum
        strategy = "steps" if cfg.eval_strategy == "no" else cfg.eval_strategy
        return dataclasses.replace(cfg, eval_strategy=strategy, eval_steps=cfg.eval_steps or cfg.save_steps)
    if cfg.eval_strategy != "no":
        return dataclasses.replace(cfg, eval_strategy="no")
    return cfg


def train_sft(
    cfg: SFTConfig,
    *,
    model=None,
    tokenizer=None,
    train_dataset=None,
    eval_dataset=None,
    callbacks: list | None = None,
) -> Path:
    """Run SFT and return the path of the final model (``output_dir/final``).

    Args:
        cfg: an :class:`SFTConfig` (e.g. from :func:`adasr.train.config.load_config`; validated and
            resolved here again).
        model / tokenizer: use these objects instead of loading ``cfg.model``.
        train_dataset / eval_dataset: use these episodes (shared schema) instead of building
            ``cfg.task``.
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Raises:
        ConfigError, DataError, ModelLoadError: one-line user errors.
    """
    run = prepare_run(cfg, model=model, tokenizer=tokenizer, train_dataset=train_dataset, eval_dataset=eval_dataset)
    policy = run.policy
    if cfg.activation_checkpointing and policy.kind == "lora":
        policy.model.enable_input_require_grads()  # checkpointed LoRA needs grads at the inputs
    fmt = StreamingFormat(policy.tokenizer, cfg.protocol)
    train_dataset, stats = prepare_episodes(run.train, fmt, cfg.max_seq_len, cfg.layout)
    eval_dataset = None if run.eval is None else prepare_episodes(run.eval, fmt, cfg.max_seq_len, cfg.layout)[0]
    collator = StreamingCollator(policy.tokenizer, fmt, cfg.max_seq_len, cfg.layout)
    logger.info("SFT (%s layout) on %d episodes: decision classes %s", cfg.layout, stats.kept, stats.class_counts)

    args = sft_arguments(cfg, eval_dataset is not None)
    trainer = StreamSFTTrainer(
        model=policy.model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=policy.tokenizer,
        callbacks=[*(callbacks or []), CheckpointMeta(policy, cfg, "sft", trained_on=trained_on(cfg, stats.kept))],
        cb_beta=cfg.cb_beta,
        class_counts=stats.class_counts,
        end_of_turn_id=fmt.end_of_turn_id,
    )
    trainer.train(resume_from_checkpoint=run.resume_from)
    return save_final(
        trainer, policy, cfg, "sft", trained_on=trained_on(cfg, stats.kept),
        extra={"decision_counts": stats.class_counts, "dropped_too_long": stats.dropped,
               "eval_size": 0 if eval_dataset is None else len(eval_dataset)},
    )


__all__ = ["StreamSFTTrainer", "cb_stream_step_loss", "sft_arguments", "train_sft"]
