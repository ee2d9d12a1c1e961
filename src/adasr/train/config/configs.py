"""The two training configs: adasr's field groups (:mod:`.groups`) on top of the ecosystem's
training arguments.

* :class:`SFTConfig` — a ``transformers.TrainingArguments`` for supervised fine-tuning on
  protocol-rendered streaming episodes with the CB-Stream loss (:mod:`adasr.train.sft`). It
  subclasses ``TrainingArguments`` rather than ``trl.SFTConfig``: the CB-Stream trainer is a
  ``transformers.Trainer`` with its own collator and loss, so TRL's SFT fields (``packing``,
  ``dataset_text_field``, ``completion_only_loss``, ``assistant_only_loss``, its ``max_length``
  ...) would be accepted and silently ignored.
* :class:`RLConfig` — a ``trl.GRPOConfig`` for GRPO / HRPO on engine rollouts
  (:mod:`adasr.train.rl`, whose trainer is TRL's ``GRPOTrainer``).

Each is its parent class plus :class:`_AdasrArguments` (what both add) plus its groups, named in
its :func:`~.groups.with_groups` line. A config goes through three explicit steps:

1. **construction** (``__post_init__``) normalizes values (``task_options`` given as JSON text,
   ``lora_target_modules: all-linear``) and settles ``use_cpu`` before the parent's checks read
   it: ``ACCELERATE_USE_CPU`` in the environment (``accelerate launch --cpu``) or ``bf16``
   without a GPU turn it on, each with a log line;
2. :meth:`~_AdasrArguments.validate` checks ranges, names and files, and changes nothing;
3. :meth:`~_AdasrArguments.resolve` fills what follows from outside the config — an unset
   ``protocol`` from the starting model's ``adasr_meta.json`` — and refuses a contradicting one.
   :func:`~.parsing.load_config` and :func:`adasr.train.common.prepare_run` call it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainingArguments
from trl import GRPOConfig

from adasr.errors import ConfigError, InputError
from adasr.protocol import LAYOUTS, PRESETS, mode_protocol, resolve_protocol
from adasr.train.config.checks import check_task, first_line, non_negative, positive
from adasr.train.config.groups import (
    DataArguments,
    EngineArguments,
    InitArguments,
    LayoutArguments,
    LossArguments,
    ModelArguments,
    RewardArguments,
    StreamArguments,
    help_field,
    with_groups,
)
from adasr.train.rewards import ProactiveRewardConfig, RewardConfig, from_config

__all__ = ["SFTConfig", "RLConfig", "ADVANTAGES", "RL_MODES", "SFT_LAYOUTS", "LOSS_TYPES", "SCALE_REWARDS"]

logger = logging.getLogger(__name__)

ADVANTAGES = ("hrpo", "grpo", "proactive")
RL_MODES = ("adaptive", "interleaved", "proactive")
SFT_LAYOUTS = LAYOUTS + ("proactive",)
LOSS_TYPES = ("dapo", "bnpo", "grpo", "dr_grpo")
SCALE_REWARDS = ("group", "none")


def _inherit(parent: type, name: str, default: Any):
    """Field ``name`` of ``parent`` with another default (keeps the parent's help string)."""
    return field(default=default, metadata=dict(parent.__dataclass_fields__[name].metadata))


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


@dataclass
class _AdasrArguments:
    """What SFT and RL configs add to their parent class: the construction, :meth:`validate` and
    :meth:`resolve` steps (module docstring) over the groups ``model`` and ``data``, and adasr's
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
            logger.info("ACCELERATE_USE_CPU is set (accelerate launch --cpu): training on the CPU (use_cpu)")
            self.use_cpu = True
        if self.bf16 and not self.use_cpu and not _has_accelerator():
            logger.info("bf16 without a GPU: training on the CPU (use_cpu), with bfloat16 autocast")
            self.use_cpu = True
        if self.bf16 and self.use_cpu:
            from adasr.models import native_bfloat16

            if not native_bfloat16("cpu"):
                logger.warning("bf16: true, but this CPU has no native bfloat16 (no AVX-512): bfloat16 autocast "
                               "runs many times slower than float32 here; set bf16: false (or --bf16 false)")
        try:
            super().__post_init__()
        except (ValueError, ImportError) as err:  # ImportError: e.g. deepspeed asked for, not installed
            raise ConfigError(first_line(err)) from None

    def validate(self) -> None:
        """Check adasr's ranges, names and files (changes nothing; ``protocol`` may still be
        unset: :meth:`resolve`).

        Raises:
            ConfigError: the first problem found, in one line naming the key.
        """
        positive(self, "per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_len", "save_steps",
                 "logging_steps", "lora_r", "lora_alpha")
        non_negative(self, "eval_size", "warmup_steps", "weight_decay", "max_grad_norm", "seed")
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
        self._check_protocol()
        for path in self.exclude:
            if not Path(path).expanduser().is_file():
                raise ConfigError(f"exclude file {path} does not exist")

    def _check_protocol(self) -> None:
        """A set ``protocol`` must be known and trainable (``None`` follows the model: see
        :meth:`resolve`)."""
        if self.protocol is None:
            return
        if resolve_protocol(self.protocol).fresh_deep:  # SFT cannot render the deep stage's fresh context,
            # RL would score deep tokens sampled in a fresh context with the streaming context still visible
            trainable = [name for name, preset in PRESETS.items() if not preset.fresh_deep]
            raise ConfigError(f"protocol {self.protocol!r} runs the deep stage in a fresh context, which training "
                              f"does not support: training supports {', '.join(trainable)}")

    @property
    def start_model(self) -> str:
        """The model training starts from (loaded, and whose protocol :meth:`resolve` follows):
        ``model`` (RL: ``init`` when set)."""
        return self.model

    def resolve(self) -> None:
        """Fill what follows from outside the config (idempotent; logged): an unset ``protocol``
        becomes the one :attr:`start_model` was trained with (its ``adasr_meta.json``,
        :func:`adasr.models.trained_protocol`), else ``v1``.

        Raises:
            ConfigError: a set ``protocol`` contradicts the starting model's, or the one it names
                is unknown or not trainable.
        """
        from adasr.models import trained_protocol

        start = self.start_model
        trained = trained_protocol(start)
        if self.protocol is None:
            self.protocol = mode_protocol(named=trained, training=True).name
            logger.info("protocol %s: %s", self.protocol, f"the one {start} was trained with" if trained
                        else f"the default ({start} was not trained by adasr)")
        elif trained is not None and self.protocol != trained:
            raise ConfigError(f"{start} was trained with protocol {trained}, but protocol is {self.protocol}: "
                              f"set protocol: {trained} (or leave it out to follow the model)")
        self._check_protocol()


@dataclass
@with_groups(ModelArguments, DataArguments, LayoutArguments, LossArguments)
class SFTConfig(_AdasrArguments, TrainingArguments):
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
    per_device_eval_batch_size: int | None = help_field("eval batch per device (null: the train batch)", None)
    prediction_loss_only: bool = _inherit(TrainingArguments, "prediction_loss_only", True)

    kind = "sft"

    def __post_init__(self):
        if self.per_device_eval_batch_size is None:
            self.per_device_eval_batch_size = self.per_device_train_batch_size
        if self.label_names is None:
            self.label_names = ["labels"]
        super().__post_init__()

    def validate(self) -> None:
        """The shared checks, then ``cb_beta``, ``eval_steps`` and ``layout``.

        Raises:
            ConfigError: see :meth:`_AdasrArguments.validate`.
        """
        super().validate()
        if not 0.0 <= self.cb_beta < 1.0:
            raise ConfigError(f"cb_beta must be in [0, 1) (0 = plain cross-entropy), got {self.cb_beta}")
        if self.eval_steps is not None and self.eval_steps <= 0:
            raise ConfigError(f"eval_steps must be > 0 or null, got {self.eval_steps}")
        if self.layout not in SFT_LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(SFT_LAYOUTS)}, got {self.layout!r}")


@dataclass
@with_groups(ModelArguments, InitArguments, DataArguments, StreamArguments, EngineArguments, RewardArguments)
class RLConfig(_AdasrArguments, GRPOConfig):
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
    train_size: int | None = help_field("training prompts (null: all the source has)", 500)
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

    @property
    def start_model(self) -> str:
        """``init`` when set, else ``model``."""
        return self.init or self.model

    def stream_spec(self):
        """The :class:`~adasr.stream.StreamSpec` of the ``stream`` group (how rollout chunks arrive).

        Raises:
            InputError: a bad rate, chunker or cap.
        """
        from adasr.stream import StreamSpec

        return StreamSpec(chunker=self.chunker, wps=self.wps, cps=self.cps,
                          max_chunk_tokens=self.max_chunk_tokens or None)

    def validate(self) -> None:
        """The shared checks, then the ``stream``, ``engine`` and ``rewards`` groups and TRL's
        fields adasr constrains (``loss_type``, ``scale_rewards``, ``num_generations``, sampling,
        ``beta``/``epsilon``, no ``use_vllm``).

        Raises:
            ConfigError: see :meth:`_AdasrArguments.validate`.
        """
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
        positive(self, "thought_budget", "max_deep_tokens", "num_iterations")
        non_negative(self, "revisions")
        if self.revisions and self.mode != "proactive":
            raise ConfigError(f"revisions apply to mode: proactive only (got mode {self.mode!r})")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0 for RL rollouts (sampling), got {self.temperature}")
        if not 0 < self.top_p <= 1 or (self.top_k or 0) < 0:
            raise ConfigError(f"need 0 < top_p <= 1 and top_k >= 0, got top_p={self.top_p}, top_k={self.top_k}")
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

    def proactive_reward_config(self) -> ProactiveRewardConfig:
        """The :class:`adasr.train.rewards.ProactiveRewardConfig` of this config's knobs.

        Raises:
            ConfigError: a knob out of range.
        """
        return from_config(ProactiveRewardConfig, self)

    def reward_config(self) -> RewardConfig:
        """The :class:`adasr.train.rewards.RewardConfig` of this config's knobs.

        Raises:
            ConfigError: a knob out of range.
        """
        return from_config(RewardConfig, self)
