"""``adasr train``: SFT, GRPO or HRPO from a config file (:mod:`adasr.train`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from adasr.errors import ConfigError


def train(
    ctx: typer.Context,
    stage: Annotated[Optional[str], typer.Argument(
        metavar="CONFIG.yaml|STAGE", show_default=False,
        help="a config file (the stage is read from it), or sft | grpo | hrpo with --config FILE")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML or JSON config (see configs/)")] = None,
) -> None:
    """Train a streaming reasoner: SFT (CB-Stream loss), GRPO or HRPO.

    `adasr train configs/sft_gsm8k_qwen_distill.yaml` reads the stage from the file (its
    `advantage`, or SFT- vs RL-only keys); `adasr train hrpo --config FILE` names it.
    Every config key can be overridden after the file, as `--key value` (TRL's parser):
    `adasr train configs/hrpo_procedural_smollm2.yaml --learning_rate 1e-4 --lam_deep 0.2`.
    Keys: adasr's groups (docs/TRAINING.md) and every transformers TrainingArguments field (SFT)
    or TRL GRPOConfig field (GRPO/HRPO): optim, deepspeed, fsdp, run_name, push_to_hub, report_to ...
    """
    from adasr.train.config import infer_kind, load_config

    usage = "`adasr train CONFIG.yaml` or `adasr train sft|grpo|hrpo --config FILE` (examples in configs/)"
    if stage is None or (stage in ("sft", "grpo", "hrpo") and config is None and not ctx.args):
        raise ConfigError(f"give a training config: {usage}")
    if stage not in ("sft", "grpo", "hrpo"):
        if not stage.endswith((".yaml", ".yml", ".json")):
            raise ConfigError(f"unknown training stage {stage!r}: use {usage}")
        if config is not None:
            raise ConfigError(f"two configs given ({stage} and --config {config}): give one")
        config, stage = Path(stage), infer_kind(stage)
    cfg = load_config(config, stage, overrides=ctx.args)
    if stage == "sft":
        from adasr.train.sft import train_sft

        path = train_sft(cfg)
    else:
        from adasr.train.rl import train_rl

        path = train_rl(cfg)
    Console().print(f"saved to {path}")
