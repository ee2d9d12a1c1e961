"""``adasr run``: stream one input into a model, in-process or on an ``adasr serve`` server
(``--server``), with the live view or one JSON object."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from adasr.cli.common import (
    BackendOpt,
    BudgetOpt,
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
    check_context,
    load,
    make_engine,
    parse_revision_logit_bias,
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
from adasr.errors import ConfigError, InputError


def run(
    text: Annotated[Optional[str], typer.Argument(help="input text, or '-' to stream stdin line by line")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="read the input from a text file")] = None,
    gsm8k: Annotated[Optional[Path], typer.Option(help="take the problem from a GSM8K-format JSONL")] = None,
    index: Annotated[int, typer.Option(help="0-based item of --gsm8k")] = 0,
    model: ModelOpt = DEFAULT_MODEL,
    dtype: DtypeOpt = "float32",
    device: DeviceOpt = "cpu",
    revision: RevisionOpt = None,
    protocol: ProtocolOpt = None,
    mode: Annotated[str, typer.Option(help="batch | interleaved | adaptive | proactive")] = "adaptive",
    wps: WpsOpt = DEFAULT_WPS,
    cps: CpsOpt = None,
    chunker: ChunkerOpt = DEFAULT_CHUNKER,
    max_chunk_tokens: MaxChunkTokensOpt = DEFAULT_MAX_CHUNK_TOKENS,
    clock: Annotated[str, typer.Option(help="real (sleeps until arrivals) | virtual")] = "real",
    thought_budget: BudgetOpt = DEFAULT_THOUGHT_BUDGET,
    revisions: RevisionsOpt = 0,
    max_deep_tokens: Annotated[int, typer.Option(help="deep-stage cap, tokens")] = DEFAULT_MAX_DEEP_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    decode_rate: DecodeRateOpt = None,
    step_s: StepSOpt = None,
    skip_backlog: SkipBacklogOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object: record + event timeline")] = False,
    server: Annotated[Optional[str], typer.Option(
        help="run on an `adasr serve` server at this URL (http://HOST:PORT; key: $ADASR_API_KEY) instead of "
             "in-process: the server's model and defaults; --mode, budgets and sampling options other than their "
             "defaults are sent as the session's settings")] = None,
    backend: BackendOpt = "torch",
    logit_bias: LogitBiasOpt = [],  # noqa: B006
    revision_logit_bias: RevisionLogitBiasOpt = [],  # noqa: B006
) -> None:
    """Stream one input into a model: it thinks while the input arrives, then answers."""
    from adasr.engine import EpisodeInput
    from adasr.metrics import grade_record
    from adasr.policy import make_policy
    from adasr.sampling import parse_logit_bias
    from adasr.stream import file_text, stdin_source
    from adasr.view import LiveView, metrics_table

    sources = [x for x in (text is not None, file is not None, gsm8k is not None) if x]
    if len(sources) != 1:
        raise InputError("give exactly one input: TEXT, '-' (stdin), --file F or --gsm8k PATH")
    make_policy(mode, thought_budget=thought_budget, revisions=revisions,  # bad settings fail before any load
                skip_backlog_s=skip_backlog)
    if skip_backlog is not None and server is not None:
        raise ConfigError("--skip-backlog is an in-process engine setting: drop it with --server")
    bias = parse_logit_bias(logit_bias)
    revision_bias = parse_revision_logit_bias(revision_logit_bias, mode, revisions)
    if (bias or revision_bias is not None) and server is not None:
        raise ConfigError("--logit-bias and --revision-logit-bias are in-process engine settings: drop them with --server")
    if step_s is not None and (clock != "virtual" or text == "-" or server is not None or not step_s > 0):
        raise ConfigError(f"--step-s needs --clock virtual, an input known in advance (not stdin, not --server) and "
                          f"a positive number of seconds; got {step_s!r} with --clock {clock}")
    spec = stream_spec(chunker, wps, max_chunk_tokens, cps)
    item = task = None
    if gsm8k is not None:
        from adasr.tasks.gsm8k import load_gsm8k
        from adasr.tasks.registry import task_for

        items = load_gsm8k(gsm8k, limit=index + 1)
        if index >= len(items) or index < 0:
            raise InputError(f"--index {index} is out of range: {gsm8k} has {len(items)} valid items")
        item = items[index]
        task = task_for(item)
    elif file is not None:
        text = file_text(file)
    live = text == "-"
    if item is None and not live and not (text or "").strip():
        raise InputError("the input is empty: give some text to stream")
    if server is not None:
        given = {"mode": (mode, "adaptive"), "thought_budget": (thought_budget, DEFAULT_THOUGHT_BUDGET),
                 "revisions": (revisions, 0),
                 "max_deep_tokens": (max_deep_tokens, DEFAULT_MAX_DEEP_TOKENS),
                 "temperature": (temperature, 0.0), "top_p": (top_p, 1.0), "top_k": (top_k, 0), "seed": (seed, 0)}
        settings = {k: v for k, (v, default) in given.items() if v != default}  # the rest: the server's defaults
        if item is not None:
            text = " ".join(item.chunks) if item.chunks else item.question
        return run_remote(server, None if live else text, item=item, as_json=as_json, wps=wps, cps=cps,
                          chunker=chunker, settings=settings)
    loaded = load(model, dtype, device, revision, protocol)
    if live:
        source, clock = stdin_source(), "real"
    else:
        source = spec.for_item(item, tokenizer=loaded.tokenizer) if item else spec.stream(text, tokenizer=loaded.tokenizer)
        n_tokens = sum(len(loaded.tokenizer.encode(c.text, add_special_tokens=False)) for c in source.chunks)
        check_context(loaded, n_tokens, max_deep_tokens)
    engine = make_engine(loaded, mode, thought_budget, max_deep_tokens, temperature, top_p, top_k, seed, decode_rate,
                         backend, revisions=revisions, skip_backlog_s=skip_backlog, logit_bias=bias,
                         revision_logit_bias=revision_bias)
    inp = EpisodeInput(id="run", source=source, reference=item.reference if item else None)
    if step_s is not None:
        from adasr.stream import VirtualClock

        clock = VirtualClock(fixed_step_s=step_s)

    def grade(record: dict) -> None:
        if task is not None:
            grade_record(record, task.grade, item.reference)

    try:
        if as_json:
            result = next(engine.run([inp], clock=clock))
            grade(result.record)
            print(json.dumps({"record": result.record, "thoughts": result.thoughts, "deep": result.deep,
                              "events": result.events}, ensure_ascii=False))
            return
        console = Console()
        with LiveView(console) as view:
            result = next(engine.run([inp], clock=clock, on_event=view.on_event))
    finally:
        engine.close()
    grade(result.record)
    console.print()
    console.print(metrics_table(result.record))


# -- `adasr run --server` ------------------------------------------------------------------------
def stdin_lines():
    """Lines of stdin as chunks (strict UTF-8; raises InputError naming the bad line)."""
    for lineno, raw in enumerate(iter(sys.stdin.buffer.readline, b""), 1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"stdin line {lineno} is not valid UTF-8: send UTF-8 text") from None


def run_remote(url: str, text: str | None, *, item, as_json: bool, wps: float, chunker: str, cps: float | None = None,
               settings: dict) -> None:
    """`adasr run --server URL`: the episode runs on the server; ``text`` None streams stdin.

    Raises:
        InputError: a chunker the client cannot pace (token), or bad stdin.
        ServerError: the server refused or ended the session (:mod:`adasr.client`).
    """
    import os

    from adasr.client import Client, paced_chunks
    from adasr.serve.wire import event_from_wire
    from adasr.view import LiveView, metrics_table

    if chunker not in ("sentence", "word"):
        raise InputError(f"--chunker {chunker} is not available with --server: use sentence or word")
    chunks = stdin_lines() if text is None else paced_chunks(text, wps=wps, chunker=chunker, cps=cps)
    client = Client(url, api_key=os.environ.get("ADASR_API_KEY"))
    client.check()  # no server there: one line now, not after an empty live view
    if as_json:
        events: list[dict] = []
        final = client.solve(chunks, settings=settings, on_event=events.append)
    else:
        console = Console()
        with LiveView(console) as view:
            final = client.solve(chunks, settings=settings,
                                 on_event=lambda ev: (e := event_from_wire(ev)) is not None and view.on_event(e))
    record = final["record"]
    if item is not None:  # graded here: the server does not know the reference
        from adasr.metrics import grade_record
        from adasr.tasks.registry import task_for

        grade_record(record, task_for(item).grade, item.reference)
    if as_json:
        print(json.dumps({"record": record, "thoughts": final["thoughts"], "deep": final["deep"],
                          "events": [e for e in events if e["type"] not in ("token", "session", "record")]},
                         ensure_ascii=False))
        return
    console.print()
    console.print(metrics_table(record))
