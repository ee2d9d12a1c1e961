"""Training configs: adasr's fields on top of the ecosystem's training arguments.

* :class:`SFTConfig` — a ``transformers.TrainingArguments`` for supervised fine-tuning on
  protocol-rendered streaming episodes with the CB-Stream loss (:mod:`adasr.train.sft`). It
  subclasses ``TrainingArguments`` rather than ``trl.SFTConfig``: the CB-Stream trainer is a
  ``transformers.Trainer`` with its own collator and loss, so TRL's SFT fields (``packing``,
  ``dataset_text_field``, ``completion_only_loss``, ``assistant_only_loss``, its ``max_length``
  ...) would be accepted and silently ignored.
* :class:`RLConfig` — a ``trl.GRPOConfig`` for GRPO / HRPO on engine rollouts
  (:mod:`adasr.train.rl`, whose trainer is TRL's ``GRPOTrainer``).

Every field of the parent class is a config key with its own name (``per_device_train_batch_size``,
``gradient_accumulation_steps``, ``optim``, ``deepspeed``, ``fsdp``, ``run_name``,
``push_to_hub``/``hub_model_id``, ``report_to``, ``bf16``, ... and for RL ``num_generations``,
``beta``, ``epsilon``, ``loss_type``, ``scale_rewards``, ``temperature`` ...). adasr's own fields
come in groups, one small dataclass each (:data:`FIELD_GROUPS`): ``model`` (the model and its
LoRA), ``data`` (what episodes are built), ``loss`` (SFT's CB-Stream), ``stream`` (how rollout
chunks arrive), ``engine`` (how rollouts think) and ``rewards`` (RL rewards and advantages). In a
file the groups may be written flat or as nested sections (``rewards: {lam_deep: 0.2}``).

Parsing goes through TRL's :class:`trl.TrlParser` (an ``HfArgumentParser``): a YAML/JSON file
sets the values and ``--key value`` arguments override them (:func:`parse_config`), with the
parser's own type conversion. Unknown keys, wrong types and out-of-range values end in a
one-line :class:`~adasr.errors.ConfigError` that names the key (with a "did you mean" hint) and
the file. Files written for the earlier adasr field names (``batch_size``, ``grad_accum``,
``num_epochs``, ``lr_scheduler``; RL ``group_size``, ``kl_beta``, ``adv_scale``) still load:
:data:`LEGACY_KEYS` renames them (logged once per file). Field reference: docs/TRAINING.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainingArguments
from trl import GRPOConfig, TrlParser

from adasr.errors import ConfigError
from adasr.defaults import DEFAULT_CHUNKER, DEFAULT_MAX_CHUNK_TOKENS, DEFAULT_MODEL, DEFAULT_WPS
from adasr.protocol import LAYOUTS, PRESETS, mode_protocol, resolve_protocol

logger = logging.getLogger(__name__)

ADVANTAGES = ("hrpo", "grpo", "proactive")
RL_MODES = ("adaptive", "interleaved", "proactive")
SFT_LAYOUTS = LAYOUTS + ("proactive",)
LOSS_TYPES = ("dapo", "bnpo", "grpo", "dr_grpo")
SCALE_REWARDS = ("group", "none")
KINDS = {"sft": "sft", "rl": "rl", "grpo": "rl", "hrpo": "rl"}


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    """A dataclass field with an ``HfArgumentParser`` help string."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _inherit(parent: type, name: str, default: Any):
    """Field ``name`` of ``parent`` with another default (keeps the parent's help string)."""
    return field(default=default, metadata=dict(parent.__dataclass_fields__[name].metadata))


# ---------------------------------------------------------------------------------------------
# Field groups
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    """Group ``model``: the model to train and its LoRA adapter.

    Attributes:
        model: a bundled name (``smollm2-135m-instruct``), a local directory, a PEFT adapter
            directory or a Hugging Face id (see :func:`adasr.models.load_model`).
        lora: train a LoRA adapter (PEFT) instead of all weights.
        lora_r / lora_alpha / lora_dropout: LoRA rank, scaling numerator and dropout.
        lora_target_modules: module names to adapt, or ``"all-linear"`` (a name or a list in a
            file; ``--lora_target_modules q_proj v_proj`` on the command line).
        resume: resume from the last ``checkpoint-*`` in ``output_dir`` (``resume_from_checkpoint``
            names a checkpoint directory instead).
    """

    _group = "model"
    model: str = _help("bundled name, local model dir, PEFT adapter dir or Hugging Face id", DEFAULT_MODEL)
    lora: bool = _help("train a LoRA adapter (PEFT) instead of every weight", False)
    lora_r: int = _help("LoRA rank", 16)
    lora_alpha: int = _help("LoRA scaling numerator", 32)
    lora_dropout: float = _help("LoRA dropout in [0, 1)", 0.05)
    lora_target_modules: list[str] = _help("module names to adapt, or all-linear", factory=lambda: ["all-linear"])
    resume: bool = _help("resume from the last checkpoint-* in output_dir", False)


@dataclass
class DataArguments:
    """Group ``data``: the episodes training builds (:func:`adasr.train.common.build_splits`).

    Attributes:
        task: dataset task name (``gsm8k``, ``episodes`` or a procedural task of
            :mod:`adasr.tasks.registry`).
        data_path: source file of the task (``gsm8k``: the GSM8K ``train.jsonl``; required).
        task_options: extra keyword arguments of the task's dataset builder (a mapping, or its
            JSON text on the command line).
        exclude: held-out GSM8K-format JSONL files: building the training data fails if one of
            their questions occurs in it (:func:`adasr.tasks.splits.assert_disjoint`).
        protocol: streaming protocol preset the episodes are rendered with
            (:data:`adasr.protocol.PRESETS`); recorded in ``adasr_meta.json``. ``None``
            (default): the protocol the starting model (RL ``init``, else ``model``) was trained
            with when adasr trained it, else ``v1`` (:func:`adasr.protocol.mode_protocol` with
            ``training``). Presets with a fresh deep-stage context (``Protocol.fresh_deep``)
            are refused: training cannot render them. A protocol that contradicts the starting
            model's is refused (the rollouts or episodes would be rendered in a format the model
            was not trained on).
        train_size: training episodes (``None``: all the source has).
        eval_size: held-out episodes carved from the same build (never trained on).
        max_seq_len: longest training sequence in tokens (SFT: longer episodes are dropped; RL:
            longer rollouts are truncated and the cut tokens get no loss).
    """

    _group = "data"
    task: str = _help("dataset task: gsm8k, episodes or a procedural task", "gsm8k")
    data_path: str | None = _help("source file of the task (required for gsm8k and episodes)", None)
    task_options: dict | str | None = _help("keyword arguments of the task's builder (JSON on the command line)",
                                            factory=dict)
    exclude: list[str] = _help("held-out JSONL files whose questions must not be trained on", factory=list)
    protocol: str | None = _help("streaming protocol preset of the rendered episodes (null: the starting "
                                 "model's, else v1)", None)
    train_size: int | None = _help("training episodes (null: all the source has)", 1000)
    eval_size: int = _help("held-out episodes carved from the same build", 0)
    max_seq_len: int = _help("longest training sequence, tokens", 1024)


@dataclass
class SFTDataArguments(DataArguments):
    """Group ``data`` of SFT: also ``layout``.

    Attributes:
        layout: ``streaming`` (each thought right after its chunk: a streaming reasoner),
            ``batch`` (the same steps written after end of input: the read-then-think baseline
            trained on identical data) or ``proactive`` (a proactive task's chunks up to its
            evidence chunk: silent turns, then the response; :func:`adasr.train.sft.row_episode`).
    """

    layout: str = _help("streaming (thought after each chunk), batch (read-then-think twin) or proactive "
                        "(silent until the evidence chunk, then the response)", "streaming")


@dataclass
class LossArguments:
    """Group ``loss`` (SFT).

    Attributes:
        cb_beta: CB-Stream class-balancing strength in ``[0, 1)`` on decision tokens (skip vs
            think); ``0`` is plain masked cross-entropy (docs/DESIGN.md; Cui et al. CVPR 2019).
    """

    _group = "loss"
    cb_beta: float = _help("CB-Stream class-balancing strength in [0, 1); 0 = plain cross-entropy", 0.999)


@dataclass
class RLModelArguments(ModelArguments):
    """Group ``model`` of RL: also ``init``.

    Attributes:
        init: checkpoint the policy starts from (e.g. the SFT ``final/`` directory: a LoRA
            adapter is trained further, a full model is loaded as is); ``None``: ``model``.
    """

    init: str | None = _help("checkpoint the policy starts from (e.g. the SFT final/)", None)


@dataclass
class StreamArguments:
    """Group ``stream``: how the chunks of a rollout arrive (the :class:`~adasr.stream.StreamSpec`
    that ``adasr eval`` builds from the same options).

    Attributes:
        wps: arrival rate of the chunks, words per second (speech).
        cps: arrival rate as typed, characters per second (the typing operating point: 4); when
            set it replaces ``wps``.
        chunker: how a text is cut into chunks (pre-split chunks of a data file are kept).
        max_chunk_tokens: longer chunks are split (0 or null: no cap).
    """

    _group = "stream"
    wps: float = _help("chunk arrival rate, words per second", DEFAULT_WPS)
    cps: float | None = _help("chunk arrival rate as typed, characters per second (replaces wps)", None)
    chunker: str = _help("sentence | word | token: how a text is cut into chunks", DEFAULT_CHUNKER)
    max_chunk_tokens: int | None = _help("split chunks longer than this many tokens (0/null: no cap)",
                                            DEFAULT_MAX_CHUNK_TOKENS)

    def stream_spec(self):
        """The :class:`~adasr.stream.StreamSpec` of these options.

        Raises:
            InputError: a bad rate, chunker or cap.
        """
        from adasr.stream import StreamSpec

        return StreamSpec(chunker=self.chunker, wps=self.wps, cps=self.cps,
                          max_chunk_tokens=self.max_chunk_tokens or None)


@dataclass
class EngineArguments:
    """Group ``engine``: how the streaming engine thinks during rollouts (sampling is GRPOConfig's
    ``temperature``, ``top_p``, ``top_k``).

    Attributes:
        mode: ``adaptive`` (budget capped by the arrival slack), ``interleaved`` or ``proactive``
            (adaptive budgets; a boxed response ends the episode; needs ``advantage: proactive``).
        thought_budget: interleaved budget / adaptive cap per streaming thought, tokens.
        revisions: ``proactive``: how many times a rollout may revise its committed answer (0: the
            first response ends the episode; docs/DESIGN.md "Revisions").
        max_deep_tokens: cap of the deep stage (reasoning + answer), tokens.
        decode_rate: decode tokens/s the adaptive budgets of rollouts assume (``None``: measured
            once, then carried across batches; a number makes rollouts independent of the
            machine's speed, see ``EngineConfig.decode_rate``).
    """

    _group = "engine"
    mode: str = _help("engine policy: adaptive, interleaved or proactive", "adaptive")
    thought_budget: int = _help("most tokens per streaming thought", 32)
    revisions: int = _help("proactive: times a committed answer may be revised (0: a response ends the episode)", 0)
    max_deep_tokens: int = _help("most tokens of the deep stage", 256)
    decode_rate: float | None = _help("decode tokens/s adaptive budgets assume (null: measured once)", None)


@dataclass
class RewardArguments:
    """Group ``rewards``: rewards and advantages of RL rollouts.

    Attributes:
        advantage: ``hrpo`` (stage advantages ``A_S`` on thought tokens, ``A_D`` on deep-stage
            tokens), ``grpo`` (one sequence advantage on every generated token) or ``proactive``
            (turn-level advantages on each decision turn's tokens plus a trajectory advantage on
            every generated token; proactive tasks, ``mode: proactive``).
        w_fmt / lam_post / lam_over / length_norm / lam_stream / lam_deep / deep_length_norm:
            :class:`adasr.train.rewards.RewardConfig`.
        adv_eps: added to the group std when normalizing rewards (``scale_rewards: group``).
        turn_* / traj_* / w_turn / w_traj / proactive_window / proactive_half_life: proactive
            GRPO (``advantage: proactive``): :class:`adasr.train.rewards.ProactiveRewardConfig`.
    """

    _group = "rewards"
    advantage: str = _help("hrpo (stage advantages), grpo (one advantage per rollout) or proactive "
                           "(turn + trajectory advantages)", "hrpo")
    w_fmt: float = _help("format reward weight", 0.2)
    lam_post: float = _help("weight of the post-input-token penalty", 0.5)
    lam_over: float = _help("weight of the overrun-token penalty", 0.25)
    length_norm: float = _help("token count that normalizes the latency penalties", 256)
    lam_stream: float = _help("streaming-stage reward: weight of the latency term", 0.5)
    lam_deep: float = _help("deep-stage reward: weight of the length term", 0.5)
    deep_length_norm: float = _help("token count that normalizes the deep-stage length term", 64)
    adv_eps: float = _help("added to the group std when normalizing rewards", 1e-4)
    turn_wait: float = _help("proactive turn reward: silence (or a note) before the evidence chunk", 0.1)
    turn_late: float = _help("proactive turn penalty per chunk of silence at/after the evidence chunk", 0.25)
    turn_premature: float = _help("proactive turn penalty: a response before the evidence chunk", 1.0)
    turn_respond: float = _help("proactive turn reward: a correct response (x proactive score)", 1.0)
    turn_wrong: float = _help("proactive turn penalty: a wrong response at/after the evidence", 0.5)
    traj_acc: float = _help("proactive trajectory reward: weight of correctness", 1.0)
    traj_timing: float = _help("proactive trajectory reward: weight of the proactive score", 1.0)
    traj_premature: float = _help("proactive trajectory penalty: answer committed before the evidence", 1.0)
    w_turn: float = _help("proactive advantage: weight of the turn-level advantage (0: trajectory only)", 1.0)
    w_traj: float = _help("proactive advantage: weight of the trajectory-level advantage", 1.0)
    proactive_window: int = _help("proactive score: chunks after the evidence that still count as timely", 1)
    proactive_half_life: float = _help("proactive score: chunks of lateness that halve the credit", 2.0)


def field_groups(cls: type) -> dict[str, list[str]]:
    """adasr's field groups of a config class: ``{group: [field names]}`` (``model``, ``data``,
    ``loss``; RL: ``model``, ``data``, ``stream``, ``engine``, ``rewards``)."""
    groups: dict[str, list[str]] = {}
    for klass in reversed(cls.__mro__):
        if klass in _GROUP_CLASSES:
            groups.setdefault(klass._group, []).extend(klass.__dict__.get("__annotations__", {}))
    return groups


_GROUP_CLASSES = (ModelArguments, RLModelArguments, DataArguments, SFTDataArguments, LossArguments, StreamArguments,
                  EngineArguments, RewardArguments)


# ---------------------------------------------------------------------------------------------
# The configs
# ---------------------------------------------------------------------------------------------


@dataclass
class _AdasrArguments(ModelArguments, DataArguments):
    """What SFT and RL configs add to their parent's ``__post_init__`` and checks; also adasr's
    defaults for a few ``TrainingArguments`` fields (``seed`` 0, one epoch, checkpoints every
    100 steps, at most 3 kept, a log every 10 steps, no bf16 or activation checkpointing unless
    asked, dataset columns kept for the collators)."""

    seed: int = _inherit(TrainingArguments, "seed", 0)
    num_train_epochs: float = _inherit(TrainingArguments, "num_train_epochs", 1.0)
    save_steps: float = _inherit(TrainingArguments, "save_steps", 100)
    save_total_limit: int | None = _inherit(TrainingArguments, "save_total_limit", 3)
    logging_steps: float = _inherit(TrainingArguments, "logging_steps", 10)
    bf16: bool = _inherit(TrainingArguments, "bf16", False)
    gradient_checkpointing: bool | None = _inherit(TrainingArguments, "gradient_checkpointing", None)
    remove_unused_columns: bool = _inherit(TrainingArguments, "remove_unused_columns", False)

    kind = "base"

    def __post_init__(self):
        from accelerate.utils import parse_flag_from_env

        if isinstance(self.task_options, str):
            try:
                self.task_options = json.loads(self.task_options) if self.task_options.strip() else {}
            except json.JSONDecodeError as err:
                raise ConfigError(f"task_options must be a mapping (JSON on the command line): {err}") from None
        if self.task_options is None:
            self.task_options = {}
        if isinstance(self.lora_target_modules, list) and self.lora_target_modules == ["all-linear"]:
            self.lora_target_modules = "all-linear"  # `--lora_target_modules all-linear` parses as a list
        # `accelerate launch --cpu` exports ACCELERATE_USE_CPU: without use_cpu a single-process
        # launch on a GPU machine put the model on the CPU but the batches on cuda:0.
        if not self.use_cpu and parse_flag_from_env("ACCELERATE_USE_CPU"):
            self.use_cpu = True
        if self.bf16 and not self.use_cpu and not _has_accelerator():
            logger.info("bf16 without a GPU: training on the CPU (use_cpu), with bfloat16 autocast")
            self.use_cpu = True
        try:
            super().__post_init__()
        except (ValueError, ImportError) as err:  # ImportError: e.g. deepspeed asked for, not installed
            raise ConfigError(_first_line(err)) from None

    def validate(self) -> None:
        """Check adasr's ranges and names. Raises :class:`ConfigError` with a one-line message."""
        _positive(self, "per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_len", "save_steps",
                  "logging_steps", "lora_r", "lora_alpha")
        _non_negative(self, "eval_size", "warmup_steps", "weight_decay", "max_grad_norm", "seed")
        if self.train_size is not None and self.train_size < 1:
            raise ConfigError(f"train_size must be >= 1 (or null for all), got {self.train_size}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps must be a positive number of steps or -1 (num_train_epochs), got {self.max_steps}")
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise ConfigError(f"num_train_epochs must be > 0 when max_steps is -1, got {self.num_train_epochs}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(f"save_total_limit must be >= 1 or null, got {self.save_total_limit}")
        if not self.model or not str(self.model).strip():
            raise ConfigError("model must name a model (bundled name, local path or Hugging Face id)")
        if not self.output_dir:
            raise ConfigError("output_dir must be a directory path")
        if not isinstance(self.task_options, dict):
            raise ConfigError(f"task_options must be a mapping, got {self.task_options!r}")
        check_task(self.task, self.data_path)
        self._resolve_protocol()
        if resolve_protocol(self.protocol).fresh_deep:  # SFT cannot render the deep stage's fresh context,
            # RL would score deep tokens sampled in a fresh context with the streaming context still visible
            trainable = [name for name, preset in PRESETS.items() if not preset.fresh_deep]
            raise ConfigError(f"protocol {self.protocol!r} runs the deep stage in a fresh context, which training "
                              f"does not support: training supports {', '.join(trainable)}")
        for path in self.exclude:
            if not Path(path).expanduser().is_file():
                raise ConfigError(f"exclude file {path} does not exist")

    def _resolve_protocol(self) -> None:
        """Fill ``protocol`` from the starting model (RL ``init``, else ``model``) when unset;
        refuse one that contradicts it (ConfigError)."""
        from adasr.models import trained_protocol

        start = getattr(self, "init", None) or self.model
        trained = trained_protocol(start)
        if self.protocol is None:
            self.protocol = mode_protocol(named=trained, training=True).name
        elif trained is not None and self.protocol != trained:
            raise ConfigError(f"{start} was trained with protocol {trained}, but protocol is {self.protocol}: "
                              f"set protocol: {trained} (or leave it out to follow the model)")

    def adasr_dict(self) -> dict:
        """adasr's own fields (the groups of :func:`field_groups`), as a plain dict."""
        names = [n for group in field_groups(type(self)).values() for n in group]
        return {n: getattr(self, n) for n in names}


@dataclass
class SFTConfig(_AdasrArguments, SFTDataArguments, LossArguments, TrainingArguments):
    """Supervised fine-tuning on protocol-rendered streaming episodes (CB-Stream loss): a
    ``transformers.TrainingArguments`` plus adasr's groups ``model``, ``data`` and ``loss``.

    adasr's defaults of ``TrainingArguments`` fields: ``output_dir`` ``runs/sft``,
    ``learning_rate`` 1e-5, ``per_device_train_batch_size`` 4, ``per_device_eval_batch_size``
    the train one, ``prediction_loss_only`` (the held-out loss is the metric); the eval strategy
    is set by :func:`adasr.train.sft.sft_arguments` (``steps``, every ``eval_steps`` or
    ``save_steps``, when there is a held-out set).
    """

    output_dir: str | None = _inherit(TrainingArguments, "output_dir", "runs/sft")
    learning_rate: float = _inherit(TrainingArguments, "learning_rate", 1e-5)
    per_device_train_batch_size: int = _inherit(TrainingArguments, "per_device_train_batch_size", 4)
    per_device_eval_batch_size: int | None = _help("eval batch per device (null: the train batch)", None)
    prediction_loss_only: bool = _inherit(TrainingArguments, "prediction_loss_only", True)

    kind = "sft"

    def __post_init__(self):
        if self.per_device_eval_batch_size is None:
            self.per_device_eval_batch_size = self.per_device_train_batch_size
        if self.label_names is None:
            self.label_names = ["labels"]
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.cb_beta < 1.0:
            raise ConfigError(f"cb_beta must be in [0, 1) (0 = plain cross-entropy), got {self.cb_beta}")
        if self.eval_steps is not None and self.eval_steps <= 0:
            raise ConfigError(f"eval_steps must be > 0 or null, got {self.eval_steps}")
        if self.layout not in SFT_LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(SFT_LAYOUTS)}, got {self.layout!r}")


@dataclass
class RLConfig(_AdasrArguments, RLModelArguments, StreamArguments, EngineArguments, RewardArguments, GRPOConfig):
    """GRPO / HRPO on streaming-engine rollouts: a ``trl.GRPOConfig`` plus adasr's groups
    ``model`` (with ``init``), ``data``, ``stream``, ``engine`` and ``rewards``.

    TRL's fields keep their meaning: a step generates ``per_device_train_batch_size *
    gradient_accumulation_steps`` rollouts per device (``num_generations`` = G per prompt, so
    that many / G prompts), back-propagated in ``gradient_accumulation_steps`` micro-batches;
    ``beta`` is the KL weight, ``epsilon`` the clip range, ``scale_rewards`` ``group`` (divide
    by the group std + ``adv_eps``) or ``none``; ``temperature``/``top_p``/``top_k`` sample the
    rollouts. TRL's generation fields (``use_vllm``, ``generation_kwargs``, ...) are unused:
    the adasr engine generates. ``max_completion_length`` defaults to ``max_seq_len``.

    adasr's defaults of TRL fields: ``output_dir`` ``runs/rl``, ``num_generations`` 4,
    ``per_device_train_batch_size`` 8 (2 prompts x 4 rollouts), ``train_size`` 500, no bf16 and
    no activation checkpointing unless asked.
    """

    output_dir: str | None = _inherit(GRPOConfig, "output_dir", "runs/rl")
    train_size: int | None = _help("training prompts (null: all the source has)", 500)
    num_generations: int | None = _inherit(GRPOConfig, "num_generations", 4)
    max_completion_length: int | None = _inherit(GRPOConfig, "max_completion_length", None)

    kind = "rl"

    def __post_init__(self):
        if self.max_completion_length is None:
            self.max_completion_length = self.max_seq_len
        super().__post_init__()

    @property
    def prompts_per_step(self) -> int:
        """Prompts per optimizer step and device: ``per_device_train_batch_size *
        gradient_accumulation_steps / num_generations``."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps // self.num_generations

    def validate(self) -> None:
        super().validate()
        if self.advantage not in ADVANTAGES:
            raise ConfigError(f"advantage must be one of {', '.join(ADVANTAGES)}, got {self.advantage!r}")
        if self.mode not in RL_MODES:
            raise ConfigError(f"mode must be one of {', '.join(RL_MODES)}, got {self.mode!r}")
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ConfigError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)} (adasr normalizes within "
                              f"a group), got {self.scale_rewards!r}")
        if self.num_generations < 2:
            raise ConfigError(f"num_generations must be >= 2 (advantages are relative in a group), "
                              f"got {self.num_generations}")
        _positive(self, "thought_budget", "max_deep_tokens", "num_iterations")
        _non_negative(self, "revisions")
        if self.revisions and self.mode != "proactive":
            raise ConfigError(f"revisions apply to mode: proactive only (got mode {self.mode!r})")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0 for RL rollouts (sampling), got {self.temperature}")
        if not 0 < self.top_p <= 1 or (self.top_k or 0) < 0:
            raise ConfigError(f"need 0 < top_p <= 1 and top_k >= 0, got top_p={self.top_p}, top_k={self.top_k}")
        from adasr.errors import InputError

        try:
            self.stream_spec()  # the stream group's checks are StreamSpec's own (rates, chunker, cap)
        except InputError as e:
            raise ConfigError(str(e)) from None
        if self.decode_rate is not None and not self.decode_rate > 0:
            raise ConfigError(f"decode_rate must be > 0 tokens/s (or null: measured), got {self.decode_rate}")
        if self.beta < 0 or not self.epsilon > 0 or not self.adv_eps > 0:
            raise ConfigError("need beta >= 0, epsilon > 0 and adv_eps > 0")
        if self.use_vllm:
            raise ConfigError("use_vllm: adasr's streaming engine generates the rollouts (vLLM is not used)")
        if (self.advantage == "proactive") != (self.mode == "proactive"):
            raise ConfigError(f"advantage: proactive and mode: proactive go together (got advantage "
                              f"{self.advantage!r}, mode {self.mode!r})")
        self.reward_config()  # validates the reward weights
        self.proactive_reward_config()

    def proactive_reward_config(self):
        """The :class:`adasr.train.rewards.ProactiveRewardConfig` of this config."""
        from adasr.train.rewards import ProactiveRewardConfig

        return ProactiveRewardConfig(
            turn_wait=self.turn_wait, turn_late=self.turn_late, turn_premature=self.turn_premature,
            turn_respond=self.turn_respond, turn_wrong=self.turn_wrong, traj_acc=self.traj_acc,
            traj_timing=self.traj_timing, traj_premature=self.traj_premature, w_fmt=self.w_fmt,
            w_turn=self.w_turn, w_traj=self.w_traj, window=self.proactive_window,
            half_life=self.proactive_half_life)

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
    """Task names the dataset registry builds (``gsm8k``, ``episodes`` and the procedural tasks)."""
    from adasr.tasks.registry import TASKS

    return list(TASKS)


def check_task(task: str, data_path: str | None) -> None:
    """Raise :class:`ConfigError` for an unknown task, or a missing/absent data file."""
    names = known_tasks()
    if task not in names:
        raise ConfigError(f"unknown task {task!r}{_did_you_mean(str(task), names)}: use one of {', '.join(names)}")
    if data_path is not None and not Path(data_path).expanduser().exists():
        raise ConfigError(f"data_path {data_path} does not exist")
    if task == "gsm8k" and data_path is None:
        raise ConfigError("task gsm8k needs data_path (the GSM8K train.jsonl, e.g. ../shared/data/gsm8k/train.jsonl)")
    if task == "episodes" and data_path is None:
        raise ConfigError("task episodes needs data_path (a streaming-episode JSONL, e.g. from adasr data distill)")


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

LEGACY_KEYS = {
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "num_epochs": "num_train_epochs",
    "lr_scheduler": "lr_scheduler_type",
    "group_size": "num_generations",
    "kl_beta": "beta",
    "adv_scale": "scale_rewards",
}
"""Earlier adasr key -> the ``TrainingArguments``/``GRPOConfig`` field it names. An RL file's
``batch_size`` counted prompts per step: it becomes ``per_device_train_batch_size = batch_size *
num_generations / gradient_accumulation_steps``; ``adv_scale: std`` becomes ``scale_rewards: group``."""


def config_class(kind: str) -> type[SFTConfig] | type[RLConfig]:
    """The config class of a trainer kind: ``sft`` -> :class:`SFTConfig`; ``rl``, ``grpo``,
    ``hrpo`` -> :class:`RLConfig`.

    Raises:
        ConfigError: an unknown kind.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown config kind {kind!r}: use one of {', '.join(KINDS)}")
    return SFTConfig if KINDS[kind] == "sft" else RLConfig


class ConfigParser(TrlParser):
    """TRL's parser for one config class whose mistakes raise :class:`ConfigError` (argparse would
    print usage and exit). Abbreviated options are off: ``--learning_rat`` is a mistake, not
    ``--learning_rate``."""

    def __init__(self, cls: type):
        super().__init__(cls, allow_abbrev=False, add_help=False, prog="adasr train")

    def error(self, message: str):  # argparse's hook for every parse error
        raise ConfigError(re.sub(r"^argument --([\w]+)(/--[\w-]+)?: ", r"key '\1': ", message))

    def keys(self) -> list[str]:
        """Every config key (one per field)."""
        return [a.dest for a in self._actions if a.option_strings and a.dest != "help"]


def load_config(path: str | Path | None, kind: str, overrides: Sequence[str] = ()) -> SFTConfig | RLConfig:
    """Read a YAML or JSON training config, then apply ``--key value`` overrides.

    Args:
        path: a ``.yaml``/``.yml`` or ``.json`` file holding one mapping of key -> value (the
            groups ``data``, ``loss``, ``stream``, ``engine``, ``rewards`` may be nested
            mappings; an ``env`` mapping sets environment variables, as in TRL); ``None``: the
            defaults.
        kind: ``sft``, ``rl``, ``grpo`` or ``hrpo`` (``grpo``/``hrpo`` also set ``advantage``
            unless the file or an override sets it).
        overrides: command-line style arguments (``["--learning_rate", "1e-4", "--lora"]``),
            parsed by TRL's parser; they win over the file.

    Returns:
        A validated :class:`SFTConfig` or :class:`RLConfig`.

    Raises:
        ConfigError: missing/unreadable file, not a mapping, unknown key, wrong type, out-of-range
            value or unknown task; the one-line message names the key and the file.
    """
    config_class(kind)  # unknown kind -> ConfigError before touching the file
    data, where = {}, "command line"
    if path is not None:
        p = Path(path).expanduser()
        data, where = read_config_file(p), str(p)
    return config_from_dict(data, kind, overrides=overrides, where=where)


def _trainer_of(advantage: str) -> str:
    """The ``adasr train`` stage that trains an advantage (``proactive`` is a GRPO variant)."""
    return "grpo" if advantage == "proactive" else advantage


def infer_kind(path: str | Path) -> str:
    """The trainer a config file is for, read from its keys: ``grpo`` or ``hrpo`` when it sets
    ``advantage`` (``proactive`` trains with GRPO), ``hrpo`` (RL's default advantage) when it holds
    RL-only keys (``rewards``, ``init``, ``num_generations``, ...), ``sft`` when it holds SFT-only
    keys (``layout``, ``cb_beta``, ...). Used by ``adasr train CONFIG.yaml``.

    Raises:
        ConfigError: an unreadable file, or one whose keys fit both trainers or neither (the
            message says to name the stage: ``adasr train sft|grpo|hrpo --config FILE``).
    """
    p = Path(path).expanduser()
    data = read_config_file(p)
    flat: dict = {}  # top-level keys and the keys of nested groups
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        flat[key] = value
    if "advantage" in flat:
        adv = flat["advantage"]
        if adv not in ADVANTAGES:
            raise ConfigError(f"{p}: advantage must be one of {', '.join(ADVANTAGES)}, got {adv!r}")
        return _trainer_of(adv)
    sft_keys = {f.name for f in dataclasses.fields(SFTConfig)} | set(field_groups(SFTConfig))
    rl_keys = {f.name for f in dataclasses.fields(RLConfig)} | set(field_groups(RLConfig))
    only_sft, only_rl = flat.keys() & (sft_keys - rl_keys), flat.keys() & (rl_keys - sft_keys)
    if only_rl and not only_sft:
        return "hrpo"
    if only_sft and not only_rl:
        return "sft"
    raise ConfigError(f"{p}: cannot tell which trainer this config is for; name it: "
                      f"`adasr train sft|grpo|hrpo --config {p}`")


def read_config_file(p: Path) -> dict:
    """The mapping of a YAML or JSON config file.

    Raises:
        ConfigError: a missing, unreadable or invalid file, or one that is not a mapping.
    """
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {p}: {err}") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{p}: not valid JSON (line {err.lineno}: {err.msg})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"{p}: not valid YAML ({line}{problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a mapping of key: value, got {type(data).__name__}")
    return data


def config_from_dict(data: dict, kind: str, *, overrides: Sequence[str] = (), where: str = "config") -> SFTConfig | RLConfig:
    """Build and validate a config from a mapping and ``--key value`` overrides (the checks of
    :func:`load_config`), through TRL's parser: the mapping's values become the parser's defaults,
    the overrides are parsed as a command line.

    Raises:
        ConfigError: see :func:`load_config`.
    """
    cls = config_class(kind)
    parser = ConfigParser(cls)
    keys = parser.keys()
    try:
        flat = _flatten(dict(data), cls, keys)
        env = flat.pop("env", None)
        flat = _rename_legacy(flat, cls, where)
        for key, value in flat.items():
            if key not in keys:
                raise ConfigError(f"unknown key {key!r} for {cls.kind.upper()} training{_did_you_mean(key, keys)}")
            _check_shape(cls, key, value)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if env is not None:
        if not isinstance(env, dict):
            raise ConfigError(f"{where}: env must be a mapping of variable: value")
        os.environ.update({str(k): str(v) for k, v in env.items()})
    # scalars as text, so that argparse converts and checks them as it does a command line
    parser.set_defaults_with_config(**{k: _as_text(v) for k, v in flat.items()})
    given = flat.keys() | _override_keys(overrides)
    source = f"{where} or the command line" if overrides and where != "command line" else where
    try:
        cfg, rest = parser.parse_args_into_dataclasses(list(overrides), return_remaining_strings=True,
                                                       look_for_args_file=False)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{source}: {_first_line(err)}") from None
    if rest:
        opt = next((a for a in rest if a.startswith("-")), rest[0])
        key = opt.lstrip("-").split("=")[0].replace("-", "_")
        hint = _legacy_hint(key) or _did_you_mean(key, keys)
        raise ConfigError(f"unknown option {opt!r} for {cls.kind.upper()} training{hint}")
    if KINDS[kind] == "rl" and kind in ADVANTAGES:
        if "advantage" not in given:
            cfg.advantage = kind
        elif _trainer_of(cfg.advantage) != kind:
            raise ConfigError(f"{source}: advantage {cfg.advantage!r} contradicts `adasr train {kind}`: "
                              f"run `adasr train {_trainer_of(cfg.advantage)}` or drop the advantage key")
    try:
        cfg.validate()
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return cfg


def _flatten(data: dict, cls: type, keys: list[str]) -> dict:
    """Lift nested group sections (``rewards: {lam_deep: 0.2}``) to top-level keys."""
    groups = {g: names for g, names in field_groups(cls).items() if g not in keys}
    flat: dict = {}
    for key, value in data.items():
        if key in groups and isinstance(value, dict):
            for sub, v in value.items():
                if sub not in groups[key]:
                    raise ConfigError(f"unknown key {sub!r} in section {key!r}{_did_you_mean(str(sub), groups[key])}")
                flat[sub] = v
        else:
            flat[key] = value
    return flat


def _rename_legacy(flat: dict, cls: type, where: str) -> dict:
    """Rename :data:`LEGACY_KEYS` (with the RL ``batch_size`` and ``adv_scale`` conversions)."""
    old = [k for k in flat if k in LEGACY_KEYS and LEGACY_KEYS[k] not in flat]
    if not old:
        return flat
    logger.info("%s: earlier adasr key(s) %s read as %s", where, ", ".join(old),
                ", ".join(LEGACY_KEYS[k] for k in old))
    out = {LEGACY_KEYS.get(k, k) if k in old else k: v for k, v in flat.items()}
    if cls.kind == "rl":
        if "batch_size" in old:  # prompts per step -> rollouts per micro-batch
            prompts = out.pop("per_device_train_batch_size")
            g = out.get("num_generations", cls.__dataclass_fields__["num_generations"].default)
            ga = out.get("gradient_accumulation_steps", 1)
            if not all(isinstance(x, int) and x > 0 for x in (prompts, g, ga)) or (prompts * g) % ga:
                raise ConfigError(f"batch_size * group_size ({prompts} * {g}) rollouts per step must be divisible "
                                  f"by grad_accum ({ga})")
            out["per_device_train_batch_size"] = prompts * g // ga
        if "adv_scale" in old:
            out["scale_rewards"] = {"std": "group"}.get(out["scale_rewards"], out["scale_rewards"])
    return out


def _check_shape(cls: type, key: str, value: Any) -> None:
    """A list or mapping only where the field takes one (argparse leaves non-text values alone)."""
    if not isinstance(value, (list, dict)):
        return
    hint = typing.get_type_hints(cls)[key]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = {typing.get_origin(a) or a for a in (typing.get_args(hint) if union else (hint,))}
    if (isinstance(value, list) and list not in kinds) or (isinstance(value, dict) and dict not in kinds):
        raise ConfigError(f"key {key!r} takes one value, got a {type(value).__name__} {value!r}"[:160])


def _as_text(value: Any) -> Any:
    return str(value) if isinstance(value, (bool, int, float)) else value


def _override_keys(overrides: Sequence[str]) -> set[str]:
    return {a.lstrip("-").split("=")[0].replace("-", "_") for a in overrides if a.startswith("--")}


def _legacy_hint(key: str) -> str:
    return f" (renamed: {LEGACY_KEYS[key]!r})" if key in LEGACY_KEYS else ""


def _did_you_mean(key: str, names: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest name (an earlier adasr name suggests its new name)."""
    candidates = list(names) + [k for k, v in LEGACY_KEYS.items() if v in names]
    hint = difflib.get_close_matches(key, candidates, n=1)
    return f" (did you mean {LEGACY_KEYS.get(hint[0], hint[0]) if hint[0] not in names else hint[0]!r}?)" if hint else ""


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def _positive(cfg: Any, *names: str) -> None:
    for n in names:
        if getattr(cfg, n) < 1:
            raise ConfigError(f"{n} must be >= 1, got {getattr(cfg, n)}")


def _non_negative(cfg: Any, *names: str) -> None:
    for n in names:
        if getattr(cfg, n) < 0:
            raise ConfigError(f"{n} must be >= 0, got {getattr(cfg, n)}")


__all__ = [
    "SFTConfig", "RLConfig", "ModelArguments", "DataArguments", "LossArguments", "StreamArguments", "EngineArguments",
    "RewardArguments", "ConfigParser", "LEGACY_KEYS", "field_groups", "load_config", "config_from_dict",
    "read_config_file", "config_class", "known_tasks", "check_task",
]
