"""The end SFT and RL training share: the trained model saved to ``output_dir/final``.

* :func:`save_final` — the model or LoRA adapter, ``adasr_meta.json`` (read back by
  :func:`adasr.models.adapter_info` / :func:`adasr.models.read_meta`, the one reader of that
  metadata) and a model card (:func:`model_card`);
* :func:`trained_on` — the ``trained_on`` line of that metadata;
* :class:`CheckpointMeta` — the same metadata in every checkpoint as it is saved.

Used by :mod:`adasr.train.sft` and :mod:`adasr.train.rl`, after their start
(:func:`adasr.train.common.prepare_run`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from transformers import TrainerCallback

from adasr.models import META_FILE
from adasr.train.common import Policy
from adasr.train.config import RLConfig, SFTConfig

FINAL_DIR = "final"


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
        meta = run_meta(policy, cfg, stage, trained_on=trained_on, step=int(trainer.state.global_step), extra=extra)
        (final / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        (final / "README.md").write_text(model_card(meta))
    trainer.accelerator.wait_for_everyone()
    return final


def run_meta(policy: Policy, cfg: SFTConfig | RLConfig, stage: str, *, trained_on: str, step: int,
             extra: dict | None = None) -> dict:
    """The ``adasr_meta.json`` of a model saved by a run (``final/`` or a checkpoint):
    ``{"base", "base_model_name_or_path", "kind", "trained_on", "stage", "protocol", "config",
    "global_step", ...extra}``."""
    from adasr.models import hub_base_id

    return {"base": policy.base, "base_model_name_or_path": hub_base_id(policy.base), "kind": policy.kind,
            "trained_on": trained_on, "stage": stage, "protocol": cfg.protocol, "config": cfg.to_dict(),
            "global_step": step, **(extra or {})}


class CheckpointMeta(TrainerCallback):
    """Writes ``adasr_meta.json`` (:func:`run_meta`, with ``"checkpoint": true``) into every
    ``output_dir/checkpoint-<step>/`` as it is saved, so that a checkpoint loads and evaluates like
    ``final/`` (``adasr eval --model .../checkpoint-12``: the bundled base, the trained protocol)
    instead of asking the hub for the upstream base.

    Args:
        policy, cfg, stage, trained_on, extra: as for :func:`run_meta`.
    """

    def __init__(self, policy: Policy, cfg: SFTConfig | RLConfig, stage: str, *, trained_on: str,
                 extra: dict | None = None):
        self._meta = functools.partial(run_meta, policy, cfg, stage, trained_on=trained_on, extra=extra)

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and ckpt.is_dir():
            (ckpt / META_FILE).write_text(json.dumps({**self._meta(step=int(state.global_step)), "checkpoint": True},
                                                     indent=2, default=str))
        return control


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


__all__ = ["save_final", "run_meta", "CheckpointMeta", "model_card", "trained_on", "FINAL_DIR"]
