"""``adasr eval``: the resumable evaluation of one or more modes on a data file, or a sweep of
thought budgets (:mod:`adasr.evaluation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from adasr.cli.common import (
    BackendOpt,
    ChunkerOpt,
    CpsOpt,
    DecodeRateOpt,
    DeviceOpt,
    DtypeOpt,
    LogitBiasOpt,
    MaxChunkTokensOpt,
    ModelOpt,
    ProtocolOpt,
    RevisionLogitBiasOpt,
    RevisionOpt,
    RevisionsOpt,
    SkipBacklogOpt,
    StepSOpt,
    WpsOpt,
    load,
    make_engine,
    model_ref,
    parse_revision_logit_bias,
    print_skipped,
    stream_spec,
)
from adasr.defaults import (
    DEFAULT_CHUNKER,
    DEFAULT_MAX_CHUNK_TOKENS,
    DEFAULT_MAX_DEEP_TOKENS,
    DEFAULT_MODEL,
    DEFAULT_THOUGHT_BUDGET,
    DEFAULT_WPS,
)
from adasr.errors import ConfigError


def eval_cmd(
    data: Annotated[Path, typer.Option(help="GSM8K-format JSONL (question, answer with '#### final'; or "
                                            "`adasr data build` records with chunks and task)")],
    model: ModelOpt = DEFAULT_MODEL,
    dtype: DtypeOpt = "float32",
    device: DeviceOpt = "cpu",
    revision: RevisionOpt = None,
    protocol: ProtocolOpt = None,
    mode: Annotated[list[str], typer.Option(help="repeat for a side-by-side table")] = ["adaptive"],  # noqa: B006
    limit: Annotated[Optional[int], typer.Option(help="first N valid problems")] = None,
    out: Annotated[Path, typer.Option(help="output directory (resumable)")] = Path("runs/eval"),
    batch_size: Annotated[int, typer.Option(help="episodes run together in one batched cache")] = 1,
    wps: WpsOpt = DEFAULT_WPS,
    cps: CpsOpt = None,
    chunker: ChunkerOpt = DEFAULT_CHUNKER,
    max_chunk_tokens: MaxChunkTokensOpt = DEFAULT_MAX_CHUNK_TOKENS,
    clock: Annotated[str, typer.Option(
        help="virtual (one shared timeline, compute time only) | per-stream (each stream charged "
             "the batched steps it takes part in: a server at full load) | real")] = "virtual",
    thought_budget: Annotated[list[str], typer.Option(
        "--budget", help="thought budget (tokens per streaming thought); several (--budget 8,16,32 or repeated) "
                         "sweep them, each into --out/budget-<N>/")] = [str(DEFAULT_THOUGHT_BUDGET)],  # noqa: B006
    revisions: RevisionsOpt = 0,
    max_deep_tokens: int = DEFAULT_MAX_DEEP_TOKENS,
    temperature: float = 0.0,
    seed: int = 0,
    decode_rate: DecodeRateOpt = None,
    align_eoi: Annotated[Optional[bool], typer.Option(
        "--align-eoi/--no-align-eoi",
        help="with a shared clock: batched waves whose inputs end together (default when --batch-size > 1)")] = None,
    step_s: StepSOpt = None,
    skip_backlog: SkipBacklogOpt = None,
    backend: BackendOpt = "torch",
    logit_bias: LogitBiasOpt = [],  # noqa: B006
    revision_logit_bias: RevisionLogitBiasOpt = [],  # noqa: B006
    rescale_from: Annotated[Optional[Path], typer.Option(
        help="read-then-think without the model: move this pinned-clock `--mode batch` run (its --out) to the "
             "operating point of --wps/--cps/--chunker/--step-s (latencies x the ratio of step times); "
             "the model and its settings are the source run's")] = None,
) -> None:
    """Evaluate on a GSM8K-format file: results.jsonl (resumable), summary.json, summary.md."""
    from adasr.evaluation import evaluate, evaluate_budgets
    from adasr.metrics import rich_table
    from adasr.policy import MODES, make_policy
    from adasr.sampling import parse_logit_bias, resolve_logit_bias
    from adasr.tasks.gsm8k import load_gsm8k

    for m in mode:
        if m not in MODES:
            raise ConfigError(f"unknown mode {m!r}: use one of {', '.join(MODES)}")
    if revisions < 0 or (revisions and "proactive" not in mode):
        raise ConfigError(f"--revisions must be >= 0 and applies to --mode proactive only (got {revisions} with "
                          f"--mode {', '.join(mode)})")
    if limit is not None and limit < 1:
        raise ConfigError("--limit must be >= 1")
    if skip_backlog is not None:  # the policy's own check, on the mode it applies to (adaptive, if given)
        make_policy("adaptive" if "adaptive" in mode else mode[0], skip_backlog_s=skip_backlog)
    bias = parse_logit_bias(logit_bias)
    revision_bias = parse_revision_logit_bias(revision_logit_bias, mode, revisions)
    budgets = parse_budgets(thought_budget)
    spec = stream_spec(chunker, wps, max_chunk_tokens, cps)
    items = load_gsm8k(data, limit=limit, on_error=print_skipped)
    if rescale_from is not None:
        _rescale(rescale_from, items, data, mode, spec, step_s, decode_rate, out)
        return
    loaded = load(model, dtype, device, revision, protocol)
    resolve_logit_bias(loaded.tokenizer, bias)  # a text that is not one token fails before any episode
    resolve_logit_bias(loaded.tokenizer, revision_bias or {})

    engines = []  # the first engine's vLLM runtime serves every mode

    def factory(m: str, budget: int = budgets[0]):
        engines.append(make_engine(loaded, m, budget, max_deep_tokens, temperature, 1.0, 0, seed, decode_rate,
                               backend, share=engines[0] if engines else None,
                               revisions=revisions if m == "proactive" else 0,
                               skip_backlog_s=skip_backlog if m == "adaptive" else None, logit_bias=bias,
                               revision_logit_bias=revision_bias if m == "proactive" else None))
        return engines[-1]

    from adasr.protocol import mode_protocol

    # the protocol each mode's engine uses (proactive mode has its own for untrained models)
    by_mode = {m: mode_protocol(m, loaded.protocol).name for m in mode}
    run_protocol = next(iter(by_mode.values())) if len(set(by_mode.values())) == 1 else by_mode
    run_config = {
        "model": model_ref(model), "model_path": loaded.path, "revision": revision,
        "data": str(data.expanduser().resolve()), "limit": limit,
        "dtype": str(loaded.model.dtype).removeprefix("torch."), "device": loaded.model.device.type,
        "budget": budgets[0], "max_deep_tokens": max_deep_tokens, "decode_rate": decode_rate,
        "temperature": temperature, "top_p": 1.0, "top_k": 0, "seed": seed,
        "protocol": run_protocol,
    }
    if backend != "torch":
        run_config["backend"] = backend
    if revisions:  # (absent when 0: results written before the option existed still resume)
        run_config["revisions"] = revisions
    if skip_backlog is not None:  # (absent when off, as revisions)
        run_config["skip_backlog_s"] = skip_backlog
    if bias:  # (absent when none, as revisions)
        run_config["logit_bias"] = bias
    if revision_bias is not None:  # (absent when not given, as revisions)
        run_config["revision_logit_bias"] = revision_bias
    options = dict(modes=mode, out_dir=out, batch_size=batch_size, stream=spec, clock=clock, align_eoi=align_eoi,
                   step_s=step_s, run_config=run_config)
    try:
        if len(budgets) == 1:
            summaries = evaluate(factory, items, **options)
        else:
            summaries = evaluate_budgets(factory, items, budgets=budgets, **options)
    finally:
        for engine in reversed(engines):  # the first one owns the vLLM runtime: closed last
            engine.close()
    Console().print(rich_table(summaries, title=f"{loaded.name} on {data.name} ({len(items)} problems)"))
    Console().print(f"records and summaries in {out}/")


def _rescale(source: Path, items, data: Path, modes: list[str], spec, step_s, decode_rate, out: Path) -> None:
    """``adasr eval --rescale-from``: :func:`adasr.evaluation.rescale_read_then_think` (which reads
    the source run's config once: its clock, data and tokenizer), with batch mode and a pinned step
    time asked of the command line."""
    from adasr.evaluation import rescale_read_then_think
    from adasr.metrics import rich_table

    if modes != ["batch"] or step_s is None:
        raise ConfigError("--rescale-from moves a read-then-think run: give --mode batch and the new point's --step-s")
    summary = rescale_read_then_think(source, items, out_dir=out, stream=spec, step_s=step_s,
                                      decode_rate=decode_rate, data=data)
    Console().print(rich_table({"batch": summary}, title=f"read-then-think rescaled from {source} "
                                                          f"({len(items)} problems)"))
    Console().print(f"records and summary in {out}/batch/")


def parse_budgets(values: list[str]) -> list[int]:
    """``--budget`` values (repeated, or comma-separated) as distinct positive integers.

    Raises:
        ConfigError: a value that is not a positive integer, or one given twice.
    """
    out: list[int] = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part.isdigit() or int(part) < 1:
                raise ConfigError(f"--budget takes positive integers (tokens), e.g. --budget 8,16,32; got {value!r}")
            if int(part) in out:
                raise ConfigError(f"--budget {part} is given twice")
            out.append(int(part))
    return out
