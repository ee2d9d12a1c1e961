"""Supervised fine-tuning on protocol-rendered streaming episodes, with the CB-Stream loss.

Recipe (top to bottom, :func:`train_sft`):

1. :func:`~adasr.train.common.prepare_run`, the start RL shares: check and resolve the config,
   find the resume point, build the episodes (``id, task, question, chunks, thoughts, deep,
   answer``; the last ``eval_size`` are held out) and load the model (LoRA through PEFT's
   ``get_peft_model`` if asked);
2. render with the config's protocol; measure the episodes once (:func:`prepare_episodes`): drop
   those longer than ``max_seq_len`` and count the decision classes (skip vs think) over the
   whole training set;
3. train with :class:`StreamSFTTrainer`, a ``transformers.Trainer`` whose batches come from
   :class:`StreamingCollator` (each row rendered by :meth:`StreamingFormat.render` — the same
   renderer the engine uses at inference) and whose loss is CB-Stream
   (:func:`adasr.train.cb_stream.cb_stream_loss`);
4. save ``output_dir/final`` (:func:`save_final`): a LoRA adapter whose ``base_model_name_or_path``
   is the upstream hub id of a bundled base (else the model as given), or a full model +
   tokenizer; plus ``adasr_meta.json`` (``"base"``: what adasr loads) and a model card.

What is masked: every token the model did not generate (system prompt, chunks, role headers,
the end-of-input turn, the newline after ``<|im_end|>``: stage 0) has weight 0; streaming-thought
and deep-stage tokens weight 1; decision tokens (the first token of each streaming-thought turn:
skip = end-of-turn id, think = anything else) carry the class-balanced weight
(docs/TRAINING.md, docs/DESIGN.md "Rewards, HRPO and CB-Stream").

The steps SFT shares with RL (:func:`~adasr.train.common.prepare_run`,
:func:`~adasr.train.common.save_final`) live in :mod:`adasr.train.common`.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers import Trainer

from adasr.errors import DataError
from adasr.policy import is_response, same_answer
from adasr.protocol import STAGE_INPUT, STAGE_STREAM, Episode, Rendered, StreamingFormat, default_format, parse_answer
from adasr.train.cb_stream import (
    CLASS_NAMES,
    cb_stream_loss,
    cb_stream_token_weights,
    decision_classes,
    trained_positions,
)
from adasr.train.common import prepare_run, save_final, trained_on
from adasr.train.config import SFTConfig

logger = logging.getLogger(__name__)

IGNORE = -100


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def row_episode(row: dict, layout: str = "streaming") -> Episode:
    """The :class:`Episode` of a dataset row (chunks, thoughts with ``""`` = skip, deep).

    ``layout="streaming"`` keeps each thought after its chunk. ``layout="batch"`` is the
    read-then-think twin of the same episode: one user turn holding every chunk, then the
    non-empty thoughts, in order, followed by the deep stage, as one assistant turn. The
    reasoning text is identical; only *when* it is written changes (the fair baseline for
    post-input latency, docs/DESIGN.md "Modes"). ``layout="proactive"`` is the proactive layout
    of a proactive record (:mod:`adasr.tasks.proactive`, ``evidence_chunk`` = e): chunks ``0..e``
    with their turns (silent, ..., silent, the ``\\boxed{answer}`` response) and no end-of-input
    turn nor deep stage; a record continued past its answer (build knob ``continuation``:
    :func:`adasr.tasks.proactive.base.continue_record`) renders its chunks up to its last turn.

    Raises:
        ProtocolError: for an unknown layout (from :class:`Episode` rendering).
        DataError: ``layout="proactive"`` on a row without a valid ``evidence_chunk``.
    """
    if layout == "proactive":
        e = row.get("evidence_chunk")
        thoughts = list(row["thoughts"])
        if not isinstance(e, int) or not 0 <= e < len(row["chunks"]) or not e + 1 <= len(thoughts) <= len(row["chunks"]):
            raise DataError(f"episode {row.get('id')!r} is not a proactive record (evidence_chunk {e!r}, "
                            f"{len(thoughts)} thoughts): build it with a proactive_* task")
        return Episode(chunks=list(row["chunks"])[: len(thoughts)], thoughts=thoughts, deep=None, end_of_input=False)
    if layout == "batch":
        steps = [t.strip() for t in row["thoughts"] if t and t.strip()]
        deep = " ".join(steps + [row["deep"]])
        return Episode(chunks=list(row["chunks"]), thoughts=[None] * len(row["chunks"]), deep=deep, layout="batch")
    return Episode(chunks=list(row["chunks"]), thoughts=list(row["thoughts"]), deep=row["deep"], layout=layout)


@dataclass
class EpisodeStats:
    """What :func:`prepare_episodes` measured on a training set.

    Attributes:
        kept: episodes kept (at most ``max_seq_len`` tokens).
        dropped: episodes dropped for being longer.
        class_counts: decision-token counts ``{"skip": n, "think": n, "respond": n}`` over the
            kept episodes (:func:`decision_counts`).
        max_len / mean_len: rendered lengths (tokens) of the kept episodes.
    """

    kept: int
    dropped: int
    class_counts: dict
    max_len: int
    mean_len: float


def prepare_episodes(ds, fmt: StreamingFormat, max_seq_len: int, layout: str = "streaming"):
    """Render every row once (in ``layout``, see :func:`row_episode`): drop rows longer than
    ``max_seq_len`` and count decision classes (none in batch layout).

    Returns:
        ``(dataset, EpisodeStats)``.

    Raises:
        DataError: a row cannot be rendered, or no row fits in ``max_seq_len``.
    """
    keep: list[int] = []
    counts = dict.fromkeys(CLASS_NAMES, 0)
    lengths: list[int] = []
    for i, row in enumerate(ds):
        try:
            r, respond = render_row(fmt, row, layout)
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - a malformed record names itself
            raise DataError(f"episode {row.get('id', i)!r} cannot be rendered: {err}") from None
        if len(r.input_ids) > max_seq_len:
            continue
        keep.append(i)
        lengths.append(len(r.input_ids))
        for name, n in decision_counts(r, respond, fmt.end_of_turn_id).items():
            counts[name] += n
    if not keep:
        raise DataError(f"no training episode fits in max_seq_len={max_seq_len} tokens: raise max_seq_len")
    stats = EpisodeStats(len(keep), len(ds) - len(keep), counts, max(lengths), sum(lengths) / len(lengths))
    if stats.dropped:
        logger.warning("dropped %d of %d episodes longer than max_seq_len=%d", stats.dropped, len(ds), max_seq_len)
    return (ds if stats.dropped == 0 else ds.select(keep)), stats


def response_decisions(rendered: Rendered, thoughts: Sequence) -> list[bool]:
    """Per token of ``rendered``: True at the decision token of each **response** turn (its text
    holds a non-empty ``\\boxed{}``: :func:`adasr.policy.is_response`).

    The decision tokens of ``rendered`` belong, in order, to the rendered (non-``None``) entries
    of ``thoughts``; decision tokens cut off by truncation are simply absent.
    """
    turns = [t for t in thoughts if t is not None]
    out = [False] * len(rendered.input_ids)
    positions = [p for p, d in enumerate(rendered.decision) if d]
    for pos, text in zip(positions, turns):
        out[pos] = isinstance(text, str) and is_response(text)
    return out


def context_turns(row: dict) -> list[int]:
    """Indices of the turns of a proactive record that are context, not targets: response turns
    whose committed answer is not the record's ``answer`` (the wrong first answer of a correction
    episode, :func:`adasr.tasks.proactive.base.continue_record`). :func:`render_row` gives their
    tokens no label and counts no decision for them, so a model learns to correct a wrong answer
    without learning to write one."""
    answer = str(row["answer"])
    return [k for k, t in enumerate(row["thoughts"])
            if t and is_response(t) and not same_answer(parse_answer(t), answer)]


def render_row(fmt: StreamingFormat, row: dict, layout: str = "streaming") -> tuple[Rendered, list[bool]]:
    """A row rendered in ``layout`` (:func:`row_episode`) and its response decisions
    (:func:`response_decisions`). In the proactive layout the *context turns* of the record
    (:func:`context_turns`: the wrong first answer of a correction episode) are not trained:
    their tokens get stage 0 (no label) and no decision token.

    Raises:
        DataError / ProtocolError: as :func:`row_episode`.
    """
    r = fmt.render(row_episode(row, layout))
    respond = response_decisions(r, row["thoughts"])
    context = context_turns(row) if layout == "proactive" else []
    if context:
        starts = [p for p, d in enumerate(r.decision) if d]  # one per turn: a proactive record renders them all
        for k in context:
            p = starts[k]
            r.decision[p] = respond[p] = False
            while p < len(r.stage) and r.stage[p] == STAGE_STREAM:
                r.stage[p] = STAGE_INPUT
                p += 1
    return r, respond


def decision_counts(rendered: Rendered, respond: Sequence[bool], end_of_turn_id: int) -> dict[str, int]:
    """Decision classes of one rendered episode: ``{"skip": n, "think": n, "respond": n}``
    (:func:`adasr.train.cb_stream.decision_classes`; ``respond`` from :func:`response_decisions`)."""
    ids = torch.tensor(rendered.input_ids, dtype=torch.long)[None]
    cls = decision_classes(ids, torch.tensor(rendered.decision)[None], end_of_turn_id, torch.tensor(respond)[None])
    return {name: int((cls == c).sum()) for c, name in enumerate(CLASS_NAMES)}


class StreamingCollator:
    """Render dataset rows with the streaming protocol and pad them into a batch.

    Each row (``chunks``, ``thoughts`` with ``""`` = skip, ``deep``) becomes an :class:`Episode`
    in ``layout`` (:func:`row_episode`: ``streaming``, or ``batch`` for its read-then-think
    twin), rendered by :meth:`StreamingFormat.render` (:func:`render_row`: in the proactive
    layout the context turns of a correction episode are not trained); sequences longer than
    ``max_seq_len`` are cut at the right.

    Returns (from ``__call__``) a dict of ``(B, T)`` tensors, right-padded:
        ``input_ids``; ``attention_mask`` (1 on real tokens); ``labels`` (the id where the model
        generated the token, stage > 0, else -100); ``decision_mask`` (bool, the skip-vs-think
        decision tokens); ``respond_mask`` (bool, the decision tokens of response turns:
        :func:`response_decisions`); ``stage`` (0 input, 1 streaming thought, 2 deep stage; 0 on
        padding).
    """

    def __init__(self, tokenizer, fmt: StreamingFormat | None = None, max_seq_len: int | None = None,
                 layout: str = "streaming"):
        self.fmt = fmt or default_format(tokenizer)
        self.max_seq_len = max_seq_len
        self.layout = layout
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.fmt.end_of_turn_id

    def render(self, row: dict) -> Rendered:
        """The row rendered (:func:`render_row`) and cut at ``max_seq_len``."""
        return self._render(row)[0]

    def _render(self, row: dict) -> tuple[Rendered, list[bool]]:
        r, respond = render_row(self.fmt, row, self.layout)
        if self.max_seq_len is not None and len(r.input_ids) > self.max_seq_len:
            n = self.max_seq_len
            r, respond = Rendered(r.input_ids[:n], r.stage[:n], r.decision[:n]), respond[:n]
        return r, respond

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        pairs = [self._render(row) for row in rows]
        rendered = [r for r, _ in pairs]
        T = max(len(r.input_ids) for r in rendered)
        B = len(rendered)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        att = torch.zeros((B, T), dtype=torch.long)
        stage = torch.zeros((B, T), dtype=torch.long)
        dec = torch.zeros((B, T), dtype=torch.bool)
        respond = torch.zeros((B, T), dtype=torch.bool)
        for b, (r, resp) in enumerate(pairs):
            n = len(r.input_ids)
            ids[b, :n] = torch.tensor(r.input_ids, dtype=torch.long)
            att[b, :n] = 1
            stage[b, :n] = torch.tensor(r.stage, dtype=torch.long)
            dec[b, :n] = torch.tensor(r.decision, dtype=torch.bool)
            respond[b, :n] = torch.tensor(resp, dtype=torch.bool)
        labels = torch.where(stage > STAGE_INPUT, ids, torch.full_like(ids, IGNORE))
        return {"input_ids": ids, "attention_mask": att, "labels": labels, "decision_mask": dec,
                "respond_mask": respond, "stage": stage}


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------


class StreamSFTTrainer(Trainer):
    """``transformers.Trainer`` with the CB-Stream loss on :class:`StreamingCollator` batches.

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
    """The forward pass and CB-Stream loss of one :class:`StreamingCollator` batch (what
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
    import dataclasses

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
    logger.info("SFT (%s layout) on %d episodes: decision classes %s", cfg.layout, stats.kept, stats.class_counts)

    trainer = StreamSFTTrainer(
        model=policy.model,
        args=sft_arguments(cfg, eval_dataset is not None),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=StreamingCollator(policy.tokenizer, fmt, cfg.max_seq_len, cfg.layout),
        processing_class=policy.tokenizer,
        callbacks=callbacks,
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


__all__ = ["StreamingCollator", "StreamSFTTrainer", "EpisodeStats", "row_episode", "prepare_episodes", "sft_arguments",
           "train_sft", "response_decisions", "decision_counts"]
