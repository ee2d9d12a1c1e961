"""The start SFT and RL training share: the config checked, the resume point, the episodes and
the model to train.

* :func:`prepare_run` — the steps both trainers start with (validate and resolve the config, the
  resume point, the episodes, the model), in one place;
* :func:`build_splits` / :func:`as_dataset` — the training episodes of a config's task;
* :func:`load_policy` — the model (and tokenizer) to train, wrapped for LoRA (:func:`lora_config`);
* :func:`training_resume_point` — the checkpoint to resume from, refusing to mix a fresh run into
  an ``output_dir`` that holds checkpoints.

Used by :mod:`adasr.train.sft` and :mod:`adasr.train.rl`; the end both share, the final save,
is :mod:`adasr.train.save`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from adasr.errors import ConfigError, DataError
from adasr.train.config import RLConfig, SFTConfig

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The start of a run
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What a training run starts from (:func:`prepare_run`).

    Attributes:
        policy: the model to train and its tokenizer (:class:`Policy`).
        train: the training episodes (a ``datasets.Dataset``).
        eval: the held-out episodes (a ``datasets.Dataset``), or ``None``.
        resume_from: the checkpoint to resume from, or ``None`` for a fresh run.
    """

    policy: Policy
    train: Any
    eval: Any
    resume_from: str | None


def prepare_run(cfg: SFTConfig | RLConfig, *, required: Sequence[str] = ("chunks", "thoughts", "deep"),
                model=None, tokenizer=None, train_dataset=None, eval_dataset=None) -> Run:
    """The steps :func:`adasr.train.sft.train_sft` and :func:`adasr.train.rl.train_rl` start with,
    in order:

    1. ``cfg.validate()`` — checks only;
    2. ``cfg.resolve()`` — an unset ``protocol`` follows the starting model (``cfg.start_model``);
    3. :func:`training_resume_point` — the checkpoint to resume from (refuses to mix a fresh run
       into an ``output_dir`` that holds checkpoints);
    4. :func:`build_splits` — the episodes of ``cfg.task``, unless ``train_dataset`` is given
       (the held-out set is then ``eval_dataset``);
    5. :func:`as_dataset` — both sets as datasets with the ``required`` columns;
    6. :func:`load_policy` — ``cfg.start_model`` (or ``model``/``tokenizer``), wrapped for LoRA.

    Logs one line: the starting model, the protocol, the episode counts and the resume point.

    Raises:
        ConfigError, DataError, ModelLoadError: one-line user errors.
    """
    cfg.validate()
    cfg.resolve()
    resume_from = training_resume_point(cfg)
    if train_dataset is None:
        train_dataset, built_eval = build_splits(cfg)
        eval_dataset = eval_dataset if eval_dataset is not None else built_eval
    train, evals = as_dataset(train_dataset, required=required), as_dataset(eval_dataset, required=required)
    policy = load_policy(cfg, cfg.start_model, model=model, tokenizer=tokenizer)
    logger.info("%s run from %s (protocol %s): %d training episodes, %s held out; %s", cfg.kind.upper(),
                cfg.start_model, cfg.protocol, len(train), 0 if evals is None else len(evals),
                f"resuming from {resume_from}" if resume_from else "fresh start")
    return Run(policy, train, evals, resume_from)


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
        name: model to load (default ``cfg.start_model``: ``model``, or RL's ``init``). A PEFT adapter
            (a directory, or a bundled adapter's name such as ``qwen2.5-coder-0.5b-proactive``) with
            ``cfg.lora`` is loaded *trainable* on top of its base (training continues the same
            adapter); without ``cfg.lora`` it is merged into its base and trained fully.
        model / tokenizer: objects to use instead of loading ``name`` (tests, notebooks).

    Raises:
        ModelLoadError: the model cannot be loaded.
    """
    name = name or cfg.start_model
    if model is not None:
        if tokenizer is None:
            raise ConfigError("pass the tokenizer together with the model")
        base = _model_ref(name)
        if cfg.lora and not _is_peft(model):
            from peft import get_peft_model

            model = get_peft_model(model, lora_config(cfg))
        return Policy(model, _ensure_pad(tokenizer), base, "lora" if _is_peft(model) else "full")

    from adasr.models import adapter_dir, load_model

    path = adapter_dir(name) if cfg.lora else None
    if path is not None:
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
# Checkpoints
# ---------------------------------------------------------------------------------------------


def training_resume_point(cfg: SFTConfig | RLConfig) -> str | None:
    """The checkpoint to resume from, or ``None`` for a fresh run: ``resume_from_checkpoint`` if
    set, else with ``resume`` the last ``checkpoint-*`` in ``output_dir``.

    Raises:
        ConfigError: ``resume_from_checkpoint`` is not a directory, or ``output_dir`` already
            holds checkpoints and ``resume`` is false (a fresh run would mix with them): set
            ``resume: true`` or pick another ``output_dir``.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if cfg.resume_from_checkpoint:
        if not Path(cfg.resume_from_checkpoint).is_dir():
            raise ConfigError(f"resume_from_checkpoint {cfg.resume_from_checkpoint} is not a checkpoint directory")
        return str(cfg.resume_from_checkpoint)

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


__all__ = ["Run", "prepare_run", "Policy", "as_dataset", "build_splits", "load_policy", "lora_config",
           "training_resume_point"]
