"""adasr's field groups: the keys a training config adds to its parent's, one small dataclass per
group.

A group's fields are config keys (name, type, default, help string); its ``section`` is the name
under which a file may nest them (``rewards: {lam_deep: 0.2}``; flat keys work too). A config
class takes the groups it needs with :func:`with_groups`, and :func:`field_groups` lists them
by section:

* ``model``: :class:`ModelArguments` (SFT and RL), :class:`InitArguments` (RL);
* ``data``: :class:`DataArguments` (SFT and RL), :class:`LayoutArguments` (SFT);
* ``loss``: :class:`LossArguments` (SFT);
* ``stream``, ``engine``: :class:`StreamArguments`, :class:`EngineArguments` (RL);
* ``rewards``: :data:`RewardArguments` (RL): ``advantage``, ``adv_eps`` and every knob of
  :class:`~adasr.train.rewards.RewardConfig` and :class:`~adasr.train.rewards.ProactiveRewardConfig`,
  which declare them (name, default, help) once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from adasr.defaults import (
    DEFAULT_CHUNKER,
    DEFAULT_MAX_CHUNK_TOKENS,
    DEFAULT_MODEL,
    DEFAULT_WPS,
    RL_MAX_DEEP_TOKENS,
    RL_THOUGHT_BUDGET,
)
from adasr.train.rewards import ProactiveRewardConfig, RewardConfig, config_key

__all__ = ["ModelArguments", "InitArguments", "DataArguments", "LayoutArguments", "LossArguments", "StreamArguments",
           "EngineArguments", "RewardArguments", "with_groups", "field_groups", "help_field"]


def help_field(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    """A dataclass field with an ``HfArgumentParser`` help string (``text``) and a default (or a
    default ``factory``)."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


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

    section = "model"
    model: str = help_field("bundled name, local model dir, PEFT adapter dir or Hugging Face id", DEFAULT_MODEL)
    lora: bool = help_field("train a LoRA adapter (PEFT) instead of every weight", False)
    lora_r: int = help_field("LoRA rank", 16)
    lora_alpha: int = help_field("LoRA scaling numerator", 32)
    lora_dropout: float = help_field("LoRA dropout in [0, 1)", 0.05)
    lora_target_modules: list[str] = help_field("module names to adapt, or all-linear", factory=lambda: ["all-linear"])
    resume: bool = help_field("resume from the last checkpoint-* in output_dir", False)


@dataclass
class InitArguments:
    """Group ``model`` of RL: the checkpoint the policy starts from.

    Attributes:
        init: checkpoint the policy starts from (e.g. the SFT ``final/`` directory: a LoRA
            adapter is trained further, a full model is loaded as is); ``None``: ``model``.
    """

    section = "model"
    init: str | None = help_field("checkpoint the policy starts from (e.g. the SFT final/)", None)


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
            ``training``; filled by the config's ``resolve()``). Presets with a fresh deep-stage
            context (``Protocol.fresh_deep``) are refused: training cannot render them. A protocol
            that contradicts the starting model's is refused (the rollouts or episodes would be
            rendered in a format the model was not trained on).
        train_size: training episodes (``None``: all the source has).
        eval_size: held-out episodes carved from the same build (never trained on).
        max_seq_len: longest training sequence in tokens (SFT: longer episodes are dropped; RL:
            longer rollouts are truncated and the cut tokens get no loss).
    """

    section = "data"
    task: str = help_field("dataset task: gsm8k, episodes or a procedural task", "gsm8k")
    data_path: str | None = help_field("source file of the task (required for gsm8k and episodes)", None)
    task_options: dict | str | None = help_field("keyword arguments of the task's builder (JSON on the command line)",
                                            factory=dict)
    exclude: list[str] = help_field("held-out JSONL files whose questions must not be trained on", factory=list)
    protocol: str | None = help_field("streaming protocol preset of the rendered episodes (null: the starting "
                                 "model's, else v1)", None)
    train_size: int | None = help_field("training episodes (null: all the source has)", 1000)
    eval_size: int = help_field("held-out episodes carved from the same build", 0)
    max_seq_len: int = help_field("longest training sequence, tokens", 1024)


@dataclass
class LayoutArguments:
    """Group ``data`` of SFT: how an episode is laid out.

    Attributes:
        layout: ``streaming`` (each thought right after its chunk: a streaming reasoner),
            ``batch`` (the same steps written after end of input: the read-then-think baseline
            trained on identical data) or ``proactive`` (a proactive task's chunks up to its
            evidence chunk: silent turns, then the response; :func:`adasr.train.sft_data.row_episode`).
    """

    section = "data"
    layout: str = help_field("streaming (thought after each chunk), batch (read-then-think twin) or proactive "
                        "(silent until the evidence chunk, then the response)", "streaming")


@dataclass
class LossArguments:
    """Group ``loss`` (SFT).

    Attributes:
        cb_beta: CB-Stream class-balancing strength in ``[0, 1)`` on decision tokens (skip vs
            think); ``0`` is plain masked cross-entropy (docs/DESIGN.md; Cui et al. CVPR 2019).
    """

    section = "loss"
    cb_beta: float = help_field("CB-Stream class-balancing strength in [0, 1); 0 = plain cross-entropy", 0.999)


@dataclass
class StreamArguments:
    """Group ``stream``: how the chunks of a rollout arrive (the :class:`~adasr.stream.StreamSpec`
    that ``adasr eval`` builds from the same options; ``RLConfig.stream_spec()``).

    Attributes:
        wps: arrival rate of the chunks, words per second (speech).
        cps: arrival rate as typed, characters per second (the typing operating point: 4); when
            set it replaces ``wps``.
        chunker: how a text is cut into chunks (pre-split chunks of a data file are kept).
        max_chunk_tokens: longer chunks are split (0 or null: no cap).
    """

    section = "stream"
    wps: float = help_field("chunk arrival rate, words per second", DEFAULT_WPS)
    cps: float | None = help_field("chunk arrival rate as typed, characters per second (replaces wps)", None)
    chunker: str = help_field("sentence | clause | word | token: how a text is cut into chunks", DEFAULT_CHUNKER)
    max_chunk_tokens: int | None = help_field("split chunks longer than this many tokens (0/null: no cap)",
                                         DEFAULT_MAX_CHUNK_TOKENS)


@dataclass
class EngineArguments:
    """Group ``engine``: how the streaming engine thinks during rollouts (sampling is GRPOConfig's
    ``temperature``, ``top_p``, ``top_k``).

    Attributes:
        mode: ``adaptive`` (budget capped by the arrival slack), ``interleaved`` or ``proactive``
            (adaptive budgets; a boxed response ends the episode; needs ``advantage: proactive``).
        thought_budget: interleaved budget / adaptive cap per streaming thought, tokens
            (:data:`adasr.defaults.RL_THOUGHT_BUDGET`).
        revisions: ``proactive``: how many times a rollout may revise its committed answer (0: the
            first response ends the episode; docs/DESIGN.md "Revisions").
        max_deep_tokens: cap of the deep stage (reasoning + answer), tokens
            (:data:`adasr.defaults.RL_MAX_DEEP_TOKENS`).
        decode_rate: decode tokens/s the adaptive budgets of rollouts assume (``None``: measured
            once, then carried across batches; a number makes rollouts independent of the
            machine's speed, see ``EngineConfig.decode_rate``).
    """

    section = "engine"
    mode: str = help_field("engine policy: adaptive, interleaved or proactive", "adaptive")
    thought_budget: int = help_field("most tokens per streaming thought", RL_THOUGHT_BUDGET)
    revisions: int = help_field("proactive: times a committed answer may be revised (0: a response ends the "
                                "episode)", 0)
    max_deep_tokens: int = help_field("most tokens of the deep stage", RL_MAX_DEEP_TOKENS)
    decode_rate: float | None = help_field("decode tokens/s adaptive budgets assume (null: measured once)", None)


def _reward_knobs() -> list[tuple[str, str, dataclasses.Field]]:
    """``(config key, type, field)`` of every reward knob, each key once (``w_fmt`` is shared)."""
    knobs: dict[str, tuple[str, str, dataclasses.Field]] = {}
    for cls in (RewardConfig, ProactiveRewardConfig):
        for f in dataclasses.fields(cls):
            knobs.setdefault(config_key(f), (config_key(f), f.type, help_field(f.metadata["help"], f.default)))
    return list(knobs.values())


RewardArguments = dataclasses.make_dataclass(
    "RewardArguments",
    [("advantage", "str", help_field("hrpo (stage advantages), grpo (one advantage per rollout) or proactive "
                                "(turn + trajectory advantages)", "hrpo")),
     ("adv_eps", "float", help_field("added to the group std when normalizing rewards", 1e-4)),
     *_reward_knobs()],
    namespace={"section": "rewards", "__module__": __name__},
)
RewardArguments.__doc__ = """Group ``rewards``: rewards and advantages of RL rollouts.

Attributes:
    advantage: ``hrpo`` (stage advantages ``A_S`` on thought tokens, ``A_D`` on deep-stage
        tokens), ``grpo`` (one sequence advantage on every generated token) or ``proactive``
        (turn-level advantages on each decision turn's tokens plus a trajectory advantage on
        every generated token; proactive tasks, ``mode: proactive``).
    adv_eps: added to the group std when normalizing rewards (``scale_rewards: group``).
    w_fmt / lam_post / lam_over / length_norm / lam_stream / lam_deep / deep_length_norm / lam_note: the
        knobs of :class:`adasr.train.rewards.RewardConfig`, declared there.
    turn_* / traj_* / w_turn / w_traj / proactive_window / proactive_half_life: proactive GRPO
        (``advantage: proactive``): the knobs of :class:`adasr.train.rewards.ProactiveRewardConfig`
        (``proactive_window`` and ``proactive_half_life`` are its ``window`` and ``half_life``).
"""


def with_groups(*groups: type):
    """Class decorator, applied under ``@dataclass``: give a config class the fields of ``groups``
    (group dataclasses), in order, after the fields it inherits. A field the class declares itself
    keeps its own default and help (RL's ``train_size``). :func:`field_groups` lists the result.

    Example::

        @dataclass
        @with_groups(ModelArguments, DataArguments, LayoutArguments, LossArguments)
        class SFTConfig(_AdasrArguments, TrainingArguments): ...
    """

    def add(cls: type) -> type:
        own = cls.__dict__.get("__annotations__", {})
        annotations: dict[str, Any] = {}
        for group in groups:
            for f in dataclasses.fields(group):
                annotations[f.name] = f.type
                if f.name not in own:
                    setattr(cls, f.name, field(default=f.default, default_factory=f.default_factory,
                                               metadata=f.metadata))
        annotations.update(own)
        cls.__annotations__ = annotations
        cls._field_groups = groups
        return cls

    return add


def field_groups(cls: type) -> dict[str, list[str]]:
    """adasr's field groups of a config class, by section: ``{section: [field names]}`` (SFT:
    ``model``, ``data``, ``loss``; RL: ``model``, ``data``, ``stream``, ``engine``, ``rewards``)."""
    sections: dict[str, list[str]] = {}
    for group in getattr(cls, "_field_groups", ()):
        sections.setdefault(group.section, []).extend(f.name for f in dataclasses.fields(group))
    return sections
