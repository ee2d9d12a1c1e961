"""Training configs: one dataclass per trainer (TRL style), loaded from YAML or JSON.

* :class:`SFTConfig` — supervised fine-tuning on protocol-rendered streaming episodes with the
  CB-Stream loss (:mod:`adasr.train.sft`).
* :class:`RLConfig` — GRPO / HRPO on engine rollouts (:mod:`adasr.train.rl`).

Every loss and reward weight is a field. :func:`load_config` reads a file, rejects unknown keys,
wrong types and unknown task names with a one-line :class:`~adasr.errors.ConfigError` naming the
key and the file, and returns a validated config. Field reference: docs/TRAINING.md.
"""

from __future__ import annotations

import difflib
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Union

from adasr.errors import ConfigError
from adasr.protocol import LAYOUTS

DEFAULT_MODEL = "smollm2-135m-instruct"
ADVANTAGES = ("hrpo", "grpo")
RL_MODES = ("adaptive", "interleaved")
LOSS_TYPES = ("dapo", "bnpo", "grpo", "dr_grpo")
KINDS = {"sft": "sft", "rl": "rl", "grpo": "rl", "hrpo": "rl"}


@dataclass
class _TrainConfig:
    """Fields shared by every trainer.

    Attributes:
        model: the model to train: a bundled name (``smollm2-135m-instruct``), a local
            directory, a PEFT adapter directory or a Hugging Face id (see
            :func:`adasr.models.load_model`).
        task: dataset task name (``gsm8k`` or a procedural task of :mod:`adasr.tasks.registry`).
        data_path: source file of the task (``gsm8k``: the GSM8K ``train.jsonl``; required).
        task_options: extra keyword arguments of the task's dataset builder (procedural knobs).
        exclude: held-out GSM8K-format JSONL files: building the training data fails if one of
            their questions occurs in it (:func:`adasr.tasks.splits.assert_disjoint`).
        protocol: streaming protocol version the episodes are rendered with
            (:data:`adasr.protocol.PROTOCOLS`); recorded in ``adasr_meta.json`` so that
            inference renders the same way.
        train_size: training episodes (``None``: all the source has).
        eval_size: held-out episodes carved from the same build (never trained on).
        seed: seed of data building, shuffling, LoRA init and sampling.
        output_dir: checkpoints (``checkpoint-<step>/``) and the final model (``final/``).
        lora: train a LoRA adapter (PEFT) instead of all weights.
        lora_r / lora_alpha / lora_dropout: LoRA rank, scaling numerator and dropout.
        lora_target_modules: module names to adapt, or ``"all-linear"``.
        learning_rate: peak AdamW learning rate.
        lr_scheduler: ``transformers`` scheduler name (``linear``, ``cosine``, ``constant``...).
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping norm.
        num_epochs: epochs over the training set (ignored when ``max_steps > 0``).
        max_steps: optimizer steps; ``-1`` means ``num_epochs`` epochs.
        batch_size: per-device batch (SFT: episodes per micro-batch; RL: prompts per step).
        grad_accum: gradient accumulation steps (SFT: micro-batches per optimizer step; RL:
            the ``batch_size * group_size`` rollouts of a step are split into this many
            micro-batches).
        max_seq_len: longest training sequence in tokens (SFT: longer episodes are dropped;
            RL: longer rollouts are truncated and the cut tokens get no loss).
        save_steps: checkpoint every this many optimizer steps.
        save_total_limit: keep at most this many checkpoints (``None``: all).
        logging_steps: log every this many optimizer steps.
        resume: resume from the last ``checkpoint-*`` in ``output_dir``.
        bf16: train in bfloat16 mixed precision (GPU); CPU runs should leave it off.
        gradient_checkpointing: trade compute for activation memory (large models on GPU).
        report_to: ``transformers`` logging integration(s): a name (``none``, ``all``,
            ``tensorboard``, ``wandb``...) or a list of names (``[tensorboard, wandb]``).
        dataloader_num_workers: DataLoader worker processes.
    """

    model: str = DEFAULT_MODEL
    task: str = "gsm8k"
    data_path: str | None = None
    task_options: dict = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)
    protocol: str = "v1"
    train_size: int | None = 1000
    eval_size: int = 0
    seed: int = 0
    output_dir: str = "runs/train"
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: Union[str, list[str]] = "all-linear"
    learning_rate: float = 1e-5
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    num_epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    max_seq_len: int = 1024
    save_steps: int = 100
    save_total_limit: int | None = 3
    logging_steps: int = 10
    resume: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False
    report_to: Union[str, list[str]] = "none"
    dataloader_num_workers: int = 0

    kind = "base"

    def validate(self) -> None:
        """Check ranges and names. Raises :class:`ConfigError` with a one-line message."""
        _positive(self, "batch_size", "grad_accum", "max_seq_len", "save_steps", "logging_steps",
                  "lora_r", "lora_alpha")
        _non_negative(self, "eval_size", "warmup_steps", "weight_decay", "max_grad_norm", "seed")
        if self.train_size is not None and self.train_size < 1:
            raise ConfigError(f"train_size must be >= 1 (or null for all), got {self.train_size}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps must be a positive number of steps or -1 (num_epochs), got {self.max_steps}")
        if self.max_steps == -1 and not self.num_epochs > 0:
            raise ConfigError(f"num_epochs must be > 0 when max_steps is -1, got {self.num_epochs}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(f"save_total_limit must be >= 1 or null, got {self.save_total_limit}")
        if not self.model or not str(self.model).strip():
            raise ConfigError("model must name a model (bundled name, local path or Hugging Face id)")
        if not self.output_dir:
            raise ConfigError("output_dir must be a directory path")
        targets = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
            raise ConfigError(f"report_to must be an integration name or a non-empty list of names, got {self.report_to!r}")
        if len(targets) > 1 and {"none", "all"} & set(targets):
            raise ConfigError(f"report_to: 'none' and 'all' stand alone, not in a list ({targets})")
        check_task(self.task, self.data_path)
        from adasr.protocol import PROTOCOLS

        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        for path in self.exclude:
            if not Path(path).expanduser().is_file():
                raise ConfigError(f"exclude file {path} does not exist")

    def to_dict(self) -> dict:
        """The config as a plain JSON-able dict (what ``adasr_meta.json`` records)."""
        return asdict(self)


@dataclass
class SFTConfig(_TrainConfig):
    """Supervised fine-tuning on protocol-rendered streaming episodes (CB-Stream loss).

    Attributes (besides the shared ones of ``_TrainConfig``):
        cb_beta: CB-Stream class-balancing strength in ``[0, 1)`` on decision tokens (skip vs
            think); ``0`` is plain masked cross-entropy (docs/DESIGN.md; Cui et al. CVPR 2019).
        eval_steps: evaluate the held-out loss every this many steps (``None``: at each save;
            only when ``eval_size > 0``).
        layout: ``streaming`` (each thought right after its chunk: a streaming reasoner) or
            ``batch`` (the same steps written after end of input: the read-then-think baseline
            trained on identical data; :func:`adasr.train.sft.row_episode`).
    """

    output_dir: str = "runs/sft"
    learning_rate: float = 1e-5
    cb_beta: float = 0.999
    eval_steps: int | None = None
    layout: str = "streaming"

    kind = "sft"

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.cb_beta < 1.0:
            raise ConfigError(f"cb_beta must be in [0, 1) (0 = plain cross-entropy), got {self.cb_beta}")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ConfigError(f"eval_steps must be >= 1 or null, got {self.eval_steps}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")


@dataclass
class RLConfig(_TrainConfig):
    """GRPO / HRPO on streaming-engine rollouts.

    Attributes (besides the shared ones of ``_TrainConfig``):
        init: checkpoint the policy starts from (e.g. the SFT ``final/`` directory: a LoRA
            adapter is trained further, a full model is loaded as is); ``None``: ``model``.
        advantage: ``hrpo`` (stage advantages ``A_S`` on thought tokens, ``A_D`` on deep-stage
            tokens) or ``grpo`` (one sequence advantage on every generated token).
        group_size: G, rollouts per prompt (>= 2).
        temperature / top_p / top_k: sampling of the rollouts (the log-probs of the loss use
            the same temperature).
        thought_budget: interleaved budget / adaptive cap per streaming thought, tokens.
        max_deep_tokens: cap of the deep stage (reasoning + answer), tokens.
        wps: arrival rate of the chunks, words per second.
        mode: ``adaptive`` (budget capped by the arrival slack) or ``interleaved``.
        decode_rate: decode tokens/s the adaptive budgets of rollouts assume (``None``: measured
            once, then a moving average carried across batches; a number makes rollouts
            independent of the machine's speed, see ``EngineConfig.decode_rate``).
        w_fmt / lam_post / lam_over / length_norm / lam_stream / lam_deep / deep_length_norm:
            :class:`adasr.train.rewards.RewardConfig`.
        kl_beta: weight of the KL penalty to the initial policy (0: none, no reference model).
        epsilon: PPO clip range of the probability ratio.
        num_iterations: optimization passes per generated batch (TRL's mu).
        loss_type: TRL aggregation of the per-token loss: ``dapo`` (mean over all generated
            tokens of the generation batch), ``bnpo``, ``grpo`` (mean per sequence) or
            ``dr_grpo``.
        adv_eps: added to the group std when normalizing rewards.
        adv_scale: ``std`` (``(R - mean) / (std + eps)``) or ``none`` (``R - mean``).
    """

    output_dir: str = "runs/rl"
    learning_rate: float = 1e-6
    train_size: int | None = 500
    batch_size: int = 2
    init: str | None = None
    advantage: str = "hrpo"
    group_size: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    thought_budget: int = 32
    max_deep_tokens: int = 256
    wps: float = 2.5
    mode: str = "adaptive"
    decode_rate: float | None = None
    w_fmt: float = 0.2
    lam_post: float = 0.5
    lam_over: float = 0.25
    length_norm: float = 256
    lam_stream: float = 0.5
    lam_deep: float = 0.5
    deep_length_norm: float = 64
    kl_beta: float = 0.0
    epsilon: float = 0.2
    num_iterations: int = 1
    loss_type: str = "dapo"
    adv_eps: float = 1e-4
    adv_scale: str = "std"

    kind = "rl"

    def validate(self) -> None:
        super().validate()
        if self.advantage not in ADVANTAGES:
            raise ConfigError(f"advantage must be one of {', '.join(ADVANTAGES)}, got {self.advantage!r}")
        if self.mode not in RL_MODES:
            raise ConfigError(f"mode must be one of {', '.join(RL_MODES)}, got {self.mode!r}")
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.adv_scale not in ("std", "none"):
            raise ConfigError(f"adv_scale must be 'std' or 'none', got {self.adv_scale!r}")
        if self.group_size < 2:
            raise ConfigError(f"group_size must be >= 2 (advantages are relative in a group), got {self.group_size}")
        _positive(self, "thought_budget", "max_deep_tokens", "num_iterations")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0 for RL rollouts (sampling), got {self.temperature}")
        if not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ConfigError(f"need 0 < top_p <= 1 and top_k >= 0, got top_p={self.top_p}, top_k={self.top_k}")
        if not self.wps > 0:
            raise ConfigError(f"wps (words per second) must be > 0, got {self.wps}")
        if self.decode_rate is not None and not self.decode_rate > 0:
            raise ConfigError(f"decode_rate must be > 0 tokens/s (or null: measured), got {self.decode_rate}")
        if self.kl_beta < 0 or not self.epsilon > 0 or not self.adv_eps > 0:
            raise ConfigError("need kl_beta >= 0, epsilon > 0 and adv_eps > 0")
        if (self.batch_size * self.group_size) % self.grad_accum != 0:
            raise ConfigError(
                f"batch_size * group_size ({self.batch_size} * {self.group_size}) rollouts per step must be "
                f"divisible by grad_accum ({self.grad_accum})"
            )
        self.reward_config()  # validates the reward weights

    def reward_config(self):
        """The :class:`adasr.train.rewards.RewardConfig` of this config."""
        from adasr.train.rewards import RewardConfig

        return RewardConfig(w_fmt=self.w_fmt, lam_post=self.lam_post, lam_over=self.lam_over,
                            length_norm=self.length_norm, lam_stream=self.lam_stream, lam_deep=self.lam_deep,
                            deep_length_norm=self.deep_length_norm)


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------


def known_tasks() -> list[str]:
    """Task names the dataset registry builds (``gsm8k`` and the procedural tasks)."""
    from adasr.tasks.registry import TASKS

    return list(TASKS)


def check_task(task: str, data_path: str | None) -> None:
    """Raise :class:`ConfigError` for an unknown task, or a missing/absent GSM8K data file."""
    names = known_tasks()
    if task not in names:
        hint = difflib.get_close_matches(str(task), names, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"unknown task {task!r}{extra}: use one of {', '.join(names)}")
    if data_path is not None and not Path(data_path).expanduser().exists():
        raise ConfigError(f"data_path {data_path} does not exist")
    if task == "gsm8k" and data_path is None:
        raise ConfigError("task gsm8k needs data_path (the GSM8K train.jsonl, e.g. ../shared/data/gsm8k/train.jsonl)")
    if task == "episodes" and data_path is None:
        raise ConfigError("task episodes needs data_path (a streaming-episode JSONL, e.g. from adasr data distill)")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def config_class(kind: str) -> type[_TrainConfig]:
    """The config class of a trainer kind: ``sft`` -> :class:`SFTConfig`; ``rl``, ``grpo``,
    ``hrpo`` -> :class:`RLConfig`."""
    if kind not in KINDS:
        raise ConfigError(f"unknown config kind {kind!r}: use one of {', '.join(KINDS)}")
    return SFTConfig if KINDS[kind] == "sft" else RLConfig


def load_config(path: str | Path, kind: str) -> SFTConfig | RLConfig:
    """Read a YAML or JSON training config.

    Args:
        path: a ``.yaml``/``.yml`` or ``.json`` file holding one mapping of field -> value.
        kind: ``sft``, ``rl``, ``grpo`` or ``hrpo`` (``grpo``/``hrpo`` also set ``advantage``
            unless the file sets it).

    Returns:
        A validated :class:`SFTConfig` or :class:`RLConfig`.

    Raises:
        ConfigError: missing/unreadable file, not a mapping, unknown key, wrong type, out-of-range
            value or unknown task; the one-line message names the key and the file.
    """
    config_class(kind)  # unknown kind -> ConfigError before touching the file
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {p}: {err}") from None
    data = _parse(text, p)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a mapping of key: value, got {type(data).__name__}")
    return config_from_dict(data, kind, where=str(p))


def config_from_dict(data: dict, kind: str, *, where: str = "config") -> SFTConfig | RLConfig:
    """Build and validate a config from a dict (same checks as :func:`load_config`)."""
    cls = config_class(kind)
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            hint = difflib.get_close_matches(str(key), list(known), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{where}: unknown key {key!r} for a {cls.kind} config{extra}")
        values[key] = _coerce(value, hints[key], key, where)
    if KINDS[kind] == "rl" and kind in ADVANTAGES and "advantage" not in values:
        values["advantage"] = kind
    cfg = cls(**values)
    try:
        cfg.validate()
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return cfg


def _parse(text: str, p: Path) -> Any:
    if p.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{p}: not valid JSON (line {err.lineno}: {err.msg})") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML ({line}{problem})") from None


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against the field type ``tp``; convert the few safe cases.

    Accepted conversions: an int for a float field; a numeric string for a float field (YAML 1.1
    reads ``1e-5`` as a string). Everything else must match exactly (a bool is not an int).
    """
    ok, out = _match(value, tp)
    if ok:
        return out
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    raise ConfigError(f"{where}: key {key!r} must be {_type_name(tp)}, got {type(value).__name__} {shown}")


def _match(value: Any, tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, out = _match(value, arg)
            if ok:
                return True, out
        return False, None
    if tp is type(None):
        return value is None, None
    if tp is Any:
        return True, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isfinite(float(value)), float(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                return False, None
            return math.isfinite(f), f
        return False, None
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        if not isinstance(value, list):
            return False, None
        (arg,) = typing.get_args(tp) or (Any,)
        out = []
        for v in value:
            ok, o = _match(v, arg)
            if not ok:
                return False, None
            out.append(o)
        return True, out
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    return isinstance(value, tp), value


def _positive(cfg: Any, *names: str) -> None:
    for n in names:
        if getattr(cfg, n) < 1:
            raise ConfigError(f"{n} must be >= 1, got {getattr(cfg, n)}")


def _non_negative(cfg: Any, *names: str) -> None:
    for n in names:
        if getattr(cfg, n) < 0:
            raise ConfigError(f"{n} must be >= 0, got {getattr(cfg, n)}")


__all__ = ["SFTConfig", "RLConfig", "load_config", "config_from_dict", "config_class", "known_tasks", "check_task"]


def trainer_kwargs(cfg) -> dict:
    """``TrainingArguments`` fields shared by SFT and RL configs (optimizer, schedule, saving).

    ``use_cpu`` follows ``accelerate launch --cpu`` (env ``ACCELERATE_USE_CPU``): without it a
    single-process ``--cpu`` launch on a GPU machine placed the model on the CPU (accelerate) but
    the batches on ``cuda:0`` (``TrainingArguments.device``)."""
    from accelerate.utils import parse_flag_from_env

    return dict(
        use_cpu=parse_flag_from_env("ACCELERATE_USE_CPU"),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        bf16=cfg.bf16,
        activation_checkpointing=cfg.gradient_checkpointing,
        report_to=cfg.report_to,
        remove_unused_columns=False,
        dataloader_num_workers=cfg.dataloader_num_workers,
    )
