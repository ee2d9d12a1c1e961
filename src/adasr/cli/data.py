"""``adasr data build | distill``: streaming training data, built from a task (no teacher) or
self-distilled from a model's own solutions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from adasr.cli.common import BackendOpt, DeviceOpt, DtypeOpt, ModelOpt, dtype_name, err, load, print_skipped
from adasr.defaults import DEFAULT_THOUGHT_BUDGET
from adasr.errors import ConfigError

data_app = typer.Typer(no_args_is_help=True, help="Build streaming training data.")


@data_app.command("build")
def data_build(
    task: Annotated[str, typer.Option(help="gsm8k, a procedural family or a proactive family (proactive_perception, ...)")],
    out: Annotated[Path, typer.Option(help="output JSONL")],
    size: Annotated[Optional[int], typer.Option(help="number of items")] = None,
    seed: int = 0,
    source: Annotated[Optional[Path], typer.Option(help="GSM8K JSONL (tasks gsm8k, proactive_gsm8k)")] = None,
    knob: Annotated[list[str], typer.Option(help="task knob KEY=VALUE, repeatable (e.g. digits=1, split=test)")] = [],  # noqa: B006
) -> None:
    """Build a streaming chain-of-thought dataset (no teacher model) and write it as JSONL."""
    from adasr.tasks.proactive import PROACTIVE_TASKS
    from adasr.jsonl import write_jsonl
    from adasr.tasks.registry import build_dataset, build_proactive_dataset

    knobs = {}
    for kv in knob:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise ConfigError(f"--knob needs KEY=VALUE, got {kv!r}")
        knobs[key] = json.loads(value) if value.lstrip("-").replace(".", "", 1).isdigit() or value in ("true", "false") else value
    src = str(source) if source else None
    if task in PROACTIVE_TASKS:
        ds, report = build_proactive_dataset(task, size=size, seed=seed, source=src, **knobs)
        Console().print(report.message(), highlight=False)
    else:
        ds = build_dataset(task, size=size, seed=seed, source=src, **knobs)
    write_jsonl(ds, out)
    n_thoughts = sum(len(t) for t in ds["thoughts"])
    skips = sum(1 for ts in ds["thoughts"] for t in ts if not t)
    rate = "silent turns" if task in PROACTIVE_TASKS else "skip rate"
    Console().print(f"wrote {len(ds)} episodes to {out} ({rate} {skips / max(n_thoughts, 1):.1%})")


@data_app.command("distill")
def data_distill(
    source: Annotated[Path, typer.Option(help="GSM8K-format JSONL of problems to solve")],
    out: Annotated[Path, typer.Option(help="distillation directory (resumable)")],
    model: ModelOpt = "qwen2.5-coder-0.5b-instruct",
    dtype: DtypeOpt = "bfloat16",
    device: DeviceOpt = "cpu",
    backend: BackendOpt = "torch",
    samples: Annotated[int, typer.Option(help="solutions sampled per problem (K)")] = 2,
    start: Annotated[int, typer.Option(help="skip the first N valid problems")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="then take at most N problems")] = None,
    exclude: Annotated[list[Path], typer.Option(
        help="held-out JSONL whose questions must never be sampled (repeatable)")] = [],  # noqa: B006
    batch_size: Annotated[int, typer.Option(help="rows decoded together")] = 16,
    temperature: Annotated[float, typer.Option(help="sampling temperature (> 0); low keeps more correct samples")] = 0.3,
    top_p: float = 0.95,
    max_tokens: Annotated[int, typer.Option(help="cap on a solution, tokens")] = 400,
    seed: int = 0,
    notes: Annotated[str, typer.Option(help="thought style: terse (the computations) | steps (the computing "
                                            "steps verbatim) | prose (the whole slice)")] = "terse",
    tokens_per_word: Annotated[list[float], typer.Option(
        help="fit each thought into the room the next chunk's arrival leaves: decode tokens/s over words/s "
             "(7 / 2.5 = 2.8; 0: no fitting); repeat it for episodes at mixed operating points (each "
             "episode fitted to one, fixed by its sample id)")] = [2.8],  # noqa: B006
    max_thought_tokens: Annotated[int, typer.Option(
        help="cap on one thought, tokens: the thought budget the episodes are made for (raise it for slow "
             "input such as typing, so that the cap is not what keeps work after end of "
             "input)")] = DEFAULT_THOUGHT_BUDGET,
    deep_style: Annotated[str, typer.Option(help="terse (computations, then the boxed conclusion) | verbatim")] = "terse",
    chunker: Annotated[str, typer.Option(
        help="how the questions are cut into chunks: sentence | clause (a final question clause on its own "
             "chunk); run the episodes with the same --chunker")] = "sentence",
    goal_steps: Annotated[str, typer.Option(
        help="anticipate (the solution's opening plan and the step computing the answer placed like any step) "
             "| after-question (both wait for the question, in the deep stage, which opens with the plan)")]
        = "anticipate",
    convert_only: Annotated[bool, typer.Option(
        "--convert-only", help="sample nothing: rewrite episodes.jsonl and report.json from the samples so far")] = False,
    episodes: Annotated[str, typer.Option(
        help="file name of the episodes in --out (its report: <stem>.report.json): another name keeps "
             "several conversions of the same samples side by side")] = "episodes.jsonl",
) -> None:
    """Self-distill: sample read-then-think solutions, keep those math-verify accepts, convert
    them to streaming episodes (episodes.jsonl, report.json). Resumable after a kill."""
    from adasr.tasks.gsm8k import load_gsm8k
    from adasr.tasks.splits import drop_overlap
    from adasr.train.distill import DistillConfig, check_episodes_file, distill, write_episodes

    if start < 0 or (limit is not None and limit < 1):
        raise ConfigError("need --start >= 0 and --limit >= 1")
    dtype = dtype_name(dtype, device)  # (auto resolved: the samples record what they ran in)
    cfg = DistillConfig(model=model, samples=samples, temperature=temperature, top_p=top_p,
                        max_tokens=max_tokens, batch_size=batch_size, seed=seed, dtype=dtype, device=device,
                        backend=backend)
    cfg.validate()
    items = load_gsm8k(source, on_error=print_skipped)
    items = items[start:] if limit is None else items[start:start + limit]
    items, dropped = drop_overlap(items, exclude)
    if dropped:
        err.print(f"dropped {dropped} problem(s) whose question is in an --exclude file")
    if not items:
        raise ConfigError("no problems left to distill (check --start/--limit/--exclude)")
    from adasr.tasks.notes import DEEP_STYLES, NOTE_STYLES

    if notes not in NOTE_STYLES or deep_style not in DEEP_STYLES or any(t < 0 for t in tokens_per_word):
        raise ConfigError(f"need --notes in {', '.join(NOTE_STYLES)}, --deep-style terse|verbatim and "
                          "--tokens-per-word >= 0")
    from adasr.tasks.streamify import EPISODE_CHUNKERS

    if chunker not in EPISODE_CHUNKERS:  # before loading the model
        raise ConfigError(f"--chunker for episodes: {' or '.join(EPISODE_CHUNKERS)}, got {chunker!r}")
    from adasr.tasks.align import GOAL_STEPS

    if goal_steps not in GOAL_STEPS:
        raise ConfigError(f"--goal-steps takes {' or '.join(GOAL_STEPS)}, got {goal_steps!r}")
    if len(tokens_per_word) > 1 and 0 in tokens_per_word:
        raise ConfigError("--tokens-per-word 0 (no fitting) cannot be mixed with other operating points")
    check_episodes_file(episodes)  # before any sampling
    if max_thought_tokens < 1:
        raise ConfigError(f"--max-thought-tokens must be >= 1, got {max_thought_tokens}")
    convert = dict(notes=notes, tokens_per_word=None if tokens_per_word == [0] else tokens_per_word,
                   deep_style=deep_style, chunker=chunker, goal_steps=goal_steps,
                   max_thought_tokens=max_thought_tokens,
                   episodes_file=episodes)
    if convert_only:
        from adasr.train.distill import read_samples

        records = read_samples(out)
        if not records:
            raise ConfigError(f"no samples in {out}: run without --convert-only first")
    loaded = load(model, dtype, device)  # (the tokenizer counts tokens for the report)
    if not convert_only:
        from adasr.backends import make_engine

        vllm_options = {"dtype": dtype} if backend == "vllm" else {}  # vLLM samples in --dtype too
        records = distill(loaded.model, loaded.tokenizer, items, out, cfg,
                          engine_factory=lambda config: make_engine(loaded, config, **vllm_options))
    report = write_episodes(records, out, loaded.tokenizer, **convert)
    Console().print(report.summary_line())
    from adasr.train.distill import alignment_report

    aligned = alignment_report(records, loaded.tokenizer, chunker, goal_steps)  # the bound, before any fitting
    name = ("alignment" + ("" if chunker == "sentence" else f"_{chunker}")
            + ("" if goal_steps == "anticipate" else f"_{goal_steps}") + ".json")
    (Path(out) / name).write_text(json.dumps(aligned, indent=2) + "\n", encoding="utf-8")
    Console().print(f"aligner: {aligned['placeable_share']:.1%} of the kept samples' reasoning tokens placeable "
                    "before the last chunk; the rest: " + ", ".join(f"{k} {v:.1%}" for k, v in aligned["unplaced"].items()))
