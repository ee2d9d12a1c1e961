"""Supervised fine-tuning on protocol-rendered streaming episodes, with the CB-Stream loss.

Recipe (top to bottom, :func:`train_sft`):

1. build the episodes (``id, task, question, chunks, thoughts, deep, answer``) with
   :func:`build_splits` — the task registry; the last ``eval_size`` episodes are held out;
2. load the model (:func:`load_policy`; LoRA through PEFT's ``get_peft_model`` if asked);
3. measure the episodes once (:func:`prepare_episodes`): drop those longer than
   ``max_seq_len`` and count the decision classes (skip vs think) over the whole training set;
4. train with :class:`StreamSFTTrainer`, a ``transformers.Trainer`` whose batches come from
   :class:`StreamingCollator` (each row rendered by :meth:`StreamingFormat.render` — the same
   renderer the engine uses at inference) and whose loss is CB-Stream
   (:func:`adasr.train.cb_stream.cb_stream_loss`);
5. save ``output_dir/final`` (:func:`save_final`): a LoRA adapter whose ``base_model_name_or_path``
   is the upstream hub id of a bundled base (else the model as given), or a full model +
   tokenizer; plus ``adasr_meta.json`` (``"base"``: what adasr loads) and a model card.

What is masked: every token the model did not generate (system prompt, chunks, role headers,
the end-of-input turn, the newline after ``<|im_end|>``: stage 0) has weight 0; streaming-thought
and deep-stage tokens weight 1; decision tokens (the first token of each streaming-thought turn:
skip = end-of-turn id, think = anything else) carry the class-balanced weight
(docs/TRAINING.md, docs/DESIGN.md "Rewards, HRPO and CB-Stream").

The helpers (:func:`build_splits`, :func:`load_policy`, :func:`training_resume_point`,
:func:`save_final`) are shared with :mod:`adasr.train.rl`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import Trainer

from adasr.errors import ConfigError, DataError
from adasr.protocol import STAGE_INPUT, Episode, Rendered, StreamingFormat, default_format
from adasr.train.cb_stream import cb_stream_loss, cb_stream_token_weights
from adasr.train.config import RLConfig, SFTConfig, trainer_kwargs

logger = logging.getLogger(__name__)

META_FILE = "adasr_meta.json"
FINAL_DIR = "final"
IGNORE = -100


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def build_splits(cfg: SFTConfig | RLConfig):
    """Build ``train_size + eval_size`` episodes of ``cfg.task`` and split off the last
    ``eval_size`` as the held-out set.

    Returns:
        ``(train, eval)`` :class:`datasets.Dataset` objects (``eval`` is ``None`` when
        ``eval_size == 0``).

    Raises:
        ConfigError / DataError: from the task registry (unknown task, bad knobs, bad data).
    """
    from adasr.tasks.registry import build_dataset

    size = None if cfg.train_size is None else cfg.train_size + cfg.eval_size
    ds = build_dataset(cfg.task, size=size, seed=cfg.seed, source=cfg.data_path, **(cfg.task_options or {}))
    if cfg.exclude:
        from adasr.tasks.splits import assert_disjoint, heldout_questions

        assert_disjoint(ds["question"], heldout_questions(cfg.exclude), f"the training data of {cfg.task}")
    n = len(ds)
    if n <= cfg.eval_size:
        raise DataError(f"task {cfg.task!r} gave {n} episodes: not enough for eval_size={cfg.eval_size} plus training")
    if size is not None and n < size:
        logger.warning("task %s gave %d episodes (asked for %d)", cfg.task, n, size)
    n_train = n - cfg.eval_size
    train = ds.select(range(n_train))
    evals = ds.select(range(n_train, n)) if cfg.eval_size else None
    return train, evals


def as_dataset(rows, required: Sequence[str] = ("chunks", "thoughts", "deep")):
    """``rows`` (a ``datasets.Dataset`` or a list of dicts) as a ``Dataset`` with the ``required``
    columns; ``None`` stays ``None``.

    Raises:
        DataError: a required column is missing or there are no rows.
    """
    if rows is None:
        return None
    import datasets

    ds = rows if isinstance(rows, datasets.Dataset) else datasets.Dataset.from_list(list(rows))
    missing = [c for c in required if c not in ds.column_names]
    if missing or len(ds) == 0:
        what = f"lack the columns {missing}" if missing else "are empty"
        raise DataError(f"the training episodes {what} (need {', '.join(required)})")
    return ds


def row_episode(row: dict, layout: str = "streaming") -> Episode:
    """The :class:`Episode` of a dataset row (chunks, thoughts with ``""`` = skip, deep).

    ``layout="streaming"`` keeps each thought after its chunk. ``layout="batch"`` is the
    read-then-think twin of the same episode: one user turn holding every chunk, then the
    non-empty thoughts, in order, followed by the deep stage, as one assistant turn. The
    reasoning text is identical; only *when* it is written changes (the fair baseline for
    post-input latency, docs/DESIGN.md "Modes").

    Raises:
        ProtocolError: for an unknown layout (from :class:`Episode` rendering).
    """
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
        class_counts: decision-token counts ``{"skip": n, "think": n}`` over the kept episodes.
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
    skip = think = 0
    lengths: list[int] = []
    for i, row in enumerate(ds):
        try:
            r = fmt.render(row_episode(row, layout))
        except Exception as err:  # noqa: BLE001 - a malformed record names itself
            raise DataError(f"episode {row.get('id', i)!r} cannot be rendered: {err}") from None
        if len(r.input_ids) > max_seq_len:
            continue
        keep.append(i)
        lengths.append(len(r.input_ids))
        for pos, is_dec in enumerate(r.decision):
            if is_dec:
                if r.input_ids[pos] == fmt.end_of_turn_id:
                    skip += 1
                else:
                    think += 1
    if not keep:
        raise DataError(f"no training episode fits in max_seq_len={max_seq_len} tokens: raise max_seq_len")
    stats = EpisodeStats(len(keep), len(ds) - len(keep), {"skip": skip, "think": think}, max(lengths),
                         sum(lengths) / len(lengths))
    if stats.dropped:
        logger.warning("dropped %d of %d episodes longer than max_seq_len=%d", stats.dropped, len(ds), max_seq_len)
    return (ds if stats.dropped == 0 else ds.select(keep)), stats


class StreamingCollator:
    """Render dataset rows with the streaming protocol and pad them into a batch.

    Each row (``chunks``, ``thoughts`` with ``""`` = skip, ``deep``) becomes an :class:`Episode`
    in ``layout`` (:func:`row_episode`: ``streaming``, or ``batch`` for its read-then-think
    twin), rendered by :meth:`StreamingFormat.render`; sequences longer than ``max_seq_len`` are
    cut at the right.

    Returns (from ``__call__``) a dict of ``(B, T)`` tensors, right-padded:
        ``input_ids``; ``attention_mask`` (1 on real tokens); ``labels`` (the id where the model
        generated the token, stage > 0, else -100); ``decision_mask`` (bool, the skip-vs-think
        decision tokens); ``stage`` (0 input, 1 streaming thought, 2 deep stage; 0 on padding).
    """

    def __init__(self, tokenizer, fmt: StreamingFormat | None = None, max_seq_len: int | None = None,
                 layout: str = "streaming"):
        self.fmt = fmt or default_format(tokenizer)
        self.max_seq_len = max_seq_len
        self.layout = layout
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.fmt.end_of_turn_id

    def render(self, row: dict) -> Rendered:
        r = self.fmt.render(row_episode(row, self.layout))
        if self.max_seq_len is not None and len(r.input_ids) > self.max_seq_len:
            n = self.max_seq_len
            r = Rendered(r.input_ids[:n], r.stage[:n], r.decision[:n])
        return r

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        rendered = [self.render(row) for row in rows]
        T = max(len(r.input_ids) for r in rendered)
        B = len(rendered)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        att = torch.zeros((B, T), dtype=torch.long)
        stage = torch.zeros((B, T), dtype=torch.long)
        dec = torch.zeros((B, T), dtype=torch.bool)
        for b, r in enumerate(rendered):
            n = len(r.input_ids)
            ids[b, :n] = torch.tensor(r.input_ids, dtype=torch.long)
            att[b, :n] = 1
            stage[b, :n] = torch.tensor(r.stage, dtype=torch.long)
            dec[b, :n] = torch.tensor(r.decision, dtype=torch.bool)
        labels = torch.where(stage > STAGE_INPUT, ids, torch.full_like(ids, IGNORE))
        return {"input_ids": ids, "attention_mask": att, "labels": labels, "decision_mask": dec, "stage": stage}


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------


class StreamSFTTrainer(Trainer):
    """``transformers.Trainer`` with the CB-Stream loss on :class:`StreamingCollator` batches.

    Args:
        cb_beta: class-balancing strength (0 = plain masked cross-entropy).
        class_counts: dataset-level decision counts ``{"skip": n, "think": n}`` (computed once
            over the training set; ``None`` = per batch).
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
        labels = inputs["labels"]
        decision = inputs["decision_mask"]
        input_ids = inputs["input_ids"]
        outputs = model(input_ids=input_ids, attention_mask=inputs["attention_mask"])
        weights = cb_stream_token_weights(
            input_ids, labels != IGNORE, decision, self.end_of_turn_id, self.cb_beta, self.class_counts
        )
        loss = cb_stream_loss(outputs.logits, input_ids, weights)
        return (loss, outputs) if return_outputs else loss


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@dataclass
class Policy:
    """A model ready to train.

    Attributes:
        model: the model (a ``PeftModel`` when training LoRA).
        tokenizer: its tokenizer (pad token set).
        base: the base model name recorded in ``adasr_meta.json`` / ``adapter_config.json``.
        kind: ``"lora"`` or ``"full"``.
    """

    model: Any
    tokenizer: Any
    base: str
    kind: str


def _model_ref(name: str) -> str:
    """A model name as given, or the absolute path if it names an existing local path."""
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name


def _adapter_base(adapter_dir: Path) -> str:
    """The base an adapter directory names (:func:`adasr.models.adapter_info`)."""
    from adasr.models import adapter_info

    base, _ = adapter_info(adapter_dir)
    if not base:
        raise ConfigError(f"adapter {adapter_dir} does not name its base model (base_model_name_or_path)")
    return base


def lora_config(cfg: SFTConfig | RLConfig):
    """The PEFT ``LoraConfig`` of a training config."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM", bias="none",
    )


def load_policy(cfg: SFTConfig | RLConfig, name: str | None = None, *, model=None, tokenizer=None) -> Policy:
    """Load (or take) the model to train and wrap it for LoRA if ``cfg.lora``.

    Args:
        cfg: the training config.
        name: model to load (default ``cfg.model``). A PEFT adapter directory with ``cfg.lora``
            is loaded *trainable* on top of its base (training continues the same adapter); without
            ``cfg.lora`` it is merged into its base and trained fully.
        model / tokenizer: objects to use instead of loading ``name`` (tests, notebooks).

    Raises:
        ModelLoadError: the model cannot be loaded.
    """
    name = name or cfg.model
    if model is not None:
        if tokenizer is None:
            raise ConfigError("pass the tokenizer together with the model")
        base = _model_ref(name)
        if cfg.lora and not _is_peft(model):
            from peft import get_peft_model

            model = get_peft_model(model, lora_config(cfg))
        return Policy(model, _ensure_pad(tokenizer), base, "lora" if _is_peft(model) else "full")

    from adasr.models import load_model

    path = Path(name).expanduser()
    if cfg.lora and path.is_dir() and (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base = _adapter_base(path)
        loaded = load_model(base)
        model = PeftModel.from_pretrained(loaded.model, str(path), is_trainable=True)
        return Policy(model, _ensure_pad(loaded.tokenizer), base, "lora")
    loaded = load_model(name)
    model = loaded.model
    if cfg.lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(cfg))
    else:  # a merged adapter comes back frozen (PEFT freezes the base): train every weight
        model.requires_grad_(True)
    return Policy(model, _ensure_pad(loaded.tokenizer), _model_ref(name), "lora" if cfg.lora else "full")


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PeftModel)


def _ensure_pad(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Checkpoints and the final model
# ---------------------------------------------------------------------------------------------


def training_resume_point(cfg: SFTConfig | RLConfig) -> str | None:
    """The checkpoint to resume from, or ``None`` for a fresh run.

    Raises:
        ConfigError: ``output_dir`` already holds checkpoints and ``resume`` is false (a fresh
            run would mix with them): set ``resume: true`` or pick another ``output_dir``.
    """
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.output_dir)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if cfg.resume:
        if last is None:
            logger.info("resume: no checkpoint in %s, starting from scratch", out)
        return last
    if last is not None:
        raise ConfigError(
            f"output_dir {out} already holds checkpoints ({Path(last).name}): set resume: true to continue, "
            "or choose another output_dir"
        )
    return None


def save_final(trainer, policy: Policy, cfg: SFTConfig | RLConfig, stage: str, *, trained_on: str,
               extra: dict | None = None) -> Path:
    """Save the trained model to ``output_dir/final`` with ``adasr_meta.json`` and a model card.

    LoRA: the adapter; its ``adapter_config.json`` ``base_model_name_or_path`` is the upstream
    hub id of a bundled base (:func:`adasr.models.hub_base_id`, what PEFT and the hub expect),
    else the base as given. Full: ``save_pretrained`` + tokenizer. ``adasr_meta.json``:
    ``{"base", "base_model_name_or_path", "kind", "trained_on", "stage", "config", ...extra}``,
    where ``"base"`` is what :func:`adasr.models.load_model` loads (a bundled base stays the
    bundled weights: no download). ``README.md``: a short model card (:func:`model_card`).
    """
    from adasr.models import hub_base_id

    final = Path(cfg.output_dir) / FINAL_DIR
    trainer.save_model(str(final))  # gathers ZeRO-3 / FSDP weights; PEFT saves the adapter only
    if trainer.is_world_process_zero():
        final.mkdir(parents=True, exist_ok=True)
        published = hub_base_id(policy.base)
        adapter_cfg = final / "adapter_config.json"
        if policy.kind == "lora" and adapter_cfg.is_file():
            data = json.loads(adapter_cfg.read_text())
            data["base_model_name_or_path"] = published
            adapter_cfg.write_text(json.dumps(data, indent=2, sort_keys=True))
        elif policy.kind == "full":
            policy.tokenizer.save_pretrained(str(final))
        meta = {
            "base": policy.base,
            "base_model_name_or_path": published,
            "kind": policy.kind,
            "trained_on": trained_on,
            "stage": stage,
            "protocol": cfg.protocol,
            "config": cfg.to_dict(),
            "global_step": int(trainer.state.global_step),
        }
        meta.update(extra or {})
        (final / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        (final / "README.md").write_text(model_card(meta))
    trainer.accelerator.wait_for_everyone()
    return final


def model_card(meta: dict) -> str:
    """A short Hugging Face model card (``README.md``) for a saved ``final/`` directory, from its
    ``adasr_meta.json`` dict."""
    base, published = meta["base"], meta.get("base_model_name_or_path") or meta["base"]
    lora = meta["kind"] == "lora"
    cfg = meta.get("config") or {}
    is_hub_id = not Path(published).expanduser().is_absolute() and "/" in published
    front = ["---"]
    if is_hub_id:
        front.append(f"base_model: {published}")
    front += [f"library_name: {'peft' if lora else 'transformers'}", "pipeline_tag: text-generation",
              "tags:", "- adasr", "- streaming-reasoning", f"- {meta['stage']}"]
    if lora:
        front.append("- lora")
    front.append("---")
    what = (f"A rank-{cfg.get('lora_r', '?')} LoRA adapter" if lora else "A fully fine-tuned model")
    bundled = base != published
    lines = [
        "", f"# {meta['stage'].upper()} streaming reasoner on {published if is_hub_id else Path(published).name}", "",
        f"{what} trained with adasr (stage `{meta['stage']}`, "
        f"{meta.get('global_step', '?')} optimizer steps) to think while its input is still arriving: "
        "chunks arrive as user turns, a streaming thought (or a skip) follows each, and a short deep "
        "stage ends with `\\boxed{answer}`.", "",
        f"- trained on: {meta.get('trained_on', '?')}",
        f"- base: `{published}`" + (f" (adasr's bundled `{base}`: its GGUF weights dequantized to float32; "
                                    "on the full-precision upstream weights results may differ slightly)"
                                    if bundled else ""),
        "", "## Use", "", "```bash",
        "adasr run --file input.txt --model path/to/this/directory   # or: some_producer | adasr run - --model ...",
        "```", "",
        "The streaming protocol (prompt, turns, end-of-input marker) is adasr's; plain `generate` on a "
        "whole prompt is not what it was trained for. `adasr_meta.json` holds the full training config.",
    ]
    if lora and is_hub_id:
        lines += ["", "With PEFT alone:", "", "```python",
                  "from peft import AutoPeftModelForCausalLM",
                  "model = AutoPeftModelForCausalLM.from_pretrained(\"path/to/this/directory\")",
                  "```"]
    return "\n".join(front + lines) + "\n"


def trained_on(cfg: SFTConfig | RLConfig, n: int) -> str:
    """The ``trained_on`` line of ``adasr_meta.json``: task, source, episode count and, for a
    read-then-think SFT, its layout."""
    src = f" from {Path(cfg.data_path).name}" if cfg.data_path else ""
    knobs = f" {json.dumps(cfg.task_options, sort_keys=True)}" if cfg.task_options else ""
    layout = ", batch layout" if getattr(cfg, "layout", "streaming") == "batch" else ""
    return f"{cfg.task}{knobs}{src} ({n} episodes{layout})"


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def sft_arguments(cfg: SFTConfig, has_eval: bool):
    """The ``transformers.TrainingArguments`` of an :class:`SFTConfig`."""
    from transformers import TrainingArguments

    eval_steps = cfg.eval_steps or cfg.save_steps
    return TrainingArguments(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        **trainer_kwargs(cfg),
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        prediction_loss_only=True,
        label_names=["labels"],
    )


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
        cfg: a validated :class:`SFTConfig` (see :func:`adasr.train.config.load_config`).
        model / tokenizer: use these objects instead of loading ``cfg.model``.
        train_dataset / eval_dataset: use these episodes (shared schema) instead of building
            ``cfg.task``.
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Raises:
        ConfigError, DataError, ModelLoadError: one-line user errors.
    """
    cfg.validate()
    resume_from = training_resume_point(cfg)
    if train_dataset is None:
        train_dataset, built_eval = build_splits(cfg)
        eval_dataset = eval_dataset if eval_dataset is not None else built_eval
    train_dataset, eval_dataset = as_dataset(train_dataset), as_dataset(eval_dataset)
    policy = load_policy(cfg, model=model, tokenizer=tokenizer)
    if cfg.gradient_checkpointing and policy.kind == "lora":
        policy.model.enable_input_require_grads()  # checkpointed LoRA needs grads at the inputs
    fmt = StreamingFormat.for_protocol(policy.tokenizer, cfg.protocol)
    train_dataset, stats = prepare_episodes(train_dataset, fmt, cfg.max_seq_len, cfg.layout)
    if eval_dataset is not None:
        eval_dataset, _ = prepare_episodes(eval_dataset, fmt, cfg.max_seq_len, cfg.layout)
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
    trainer.train(resume_from_checkpoint=resume_from)
    return save_final(
        trainer, policy, cfg, "sft", trained_on=trained_on(cfg, stats.kept),
        extra={"decision_counts": stats.class_counts, "dropped_too_long": stats.dropped,
               "eval_size": 0 if eval_dataset is None else len(eval_dataset)},
    )


__all__ = [
    "StreamingCollator", "StreamSFTTrainer", "Policy", "as_dataset", "build_splits", "prepare_episodes", "load_policy",
    "lora_config", "training_resume_point", "save_final", "model_card", "trained_on", "sft_arguments", "train_sft",
]
