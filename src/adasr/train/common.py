"""What SFT and RL training share: the start of a run, the episodes, the model to train,
checkpoints and the final save.

* :func:`prepare_run` — the steps both trainers start with (validate and resolve the config, the
  resume point, the episodes, the model), in one place;
* :func:`build_splits` / :func:`as_dataset` — the training episodes of a config's task;
* :func:`load_policy` — the model (and tokenizer) to train, wrapped for LoRA (:func:`lora_config`);
* :func:`training_resume_point` — the checkpoint to resume from, refusing to mix a fresh run into
  an ``output_dir`` that holds checkpoints;
* :func:`save_final` — ``output_dir/final``: the model or LoRA adapter, ``adasr_meta.json``
  (read back by :func:`adasr.models.adapter_info` / :func:`adasr.models.read_meta`, the one
  reader of that metadata) and a model card (:func:`model_card`).

Used by :mod:`adasr.train.sft` and :mod:`adasr.train.rl`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from adasr.errors import ConfigError, DataError
from adasr.models import META_FILE
from adasr.train.config import RLConfig, SFTConfig

logger = logging.getLogger(__name__)

FINAL_DIR = "final"


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
        name: model to load (default ``cfg.start_model``: ``model``, or RL's ``init``). A PEFT adapter directory with ``cfg.lora``
            is loaded *trainable* on top of its base (training continues the same adapter); without
            ``cfg.lora`` it is merged into its base and trained fully.
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


__all__ = [
    "Run", "prepare_run", "Policy", "as_dataset", "build_splits", "load_policy", "lora_config", "training_resume_point", "save_final",
    "model_card", "trained_on", "FINAL_DIR",
]
