"""Command line: ``adasr run | eval | models | serve | data build | train | plot``.

Every user mistake (bad input, missing model, malformed data or config) ends with a one-line
``error: ...`` on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.text import Text

from adasr.defaults import (
    DEFAULT_CHUNKER,
    DEFAULT_MAX_CHUNK_TOKENS,
    DEFAULT_MAX_DEEP_TOKENS,
    DEFAULT_MODEL,
    DEFAULT_THOUGHT_BUDGET,
    DEFAULT_WPS,
)
from adasr.errors import AdasrError, ConfigError, InputError
from adasr.protocol import PRESETS

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Adaptive streaming reasoning with language models.")
data_app = typer.Typer(no_args_is_help=True, help="Build streaming training data.")
app.add_typer(data_app, name="data")
plot_app = typer.Typer(no_args_is_help=True, help="Draw pictures of evaluations and episodes (PNG; .svg/.pdf also work).")
app.add_typer(plot_app, name="plot")
err = Console(stderr=True, soft_wrap=True)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="bundled name, HF id, local dir or adapter dir")]
DtypeOpt = Annotated[str, typer.Option(
    help="float32 | bfloat16 | float16: weight and compute dtype (bfloat16 makes batched steps much cheaper "
         "on CPUs with AMX; see benchmarks/RESULTS.md)")]
DeviceOpt = Annotated[str, typer.Option(
    help="cpu | cuda | cuda:N | auto (CUDA if available): where the model runs")]
RevisionOpt = Annotated[Optional[str], typer.Option(
    help="branch, tag or commit of a Hugging Face hub id (default: its main branch)")]
BackendOpt = Annotated[str, typer.Option(
    help="torch (in-process engine) | vllm (vLLM's streaming-input engine; `make vllm`, run from .venv-vllm)")]
BudgetOpt = Annotated[int, typer.Option(
    "--budget", help="thought budget: the most tokens per streaming thought (adaptive: also capped by the arrival slack)")]
RevisionsOpt = Annotated[int, typer.Option(
    help="--mode proactive: how many times a committed answer may be revised; 0 (default): the first response "
         "ends the episode, else the model keeps listening (docs/DESIGN.md, Revisions)")]
DecodeRateOpt = Annotated[Optional[float], typer.Option(
    help="pin the decode rate (tokens/s) that adaptive budgets assume, for results that do not depend on "
         "this machine's speed (default: measured)")]
WpsOpt = Annotated[float, typer.Option(help="arrival rate, words per second (when the input has no timestamps)")]
CpsOpt = Annotated[Optional[float], typer.Option(
    help="arrival rate as typed, characters per second (replaces --wps; 4 = LiveMind's 240 characters/minute)")]
ChunkerOpt = Annotated[str, typer.Option(help="sentence | word | token: how a text is cut into chunks "
                                              "(pre-split chunks of a data file are kept)")]
MaxChunkTokensOpt = Annotated[int, typer.Option(help="split chunks longer than this many tokens (0: no cap)")]
SkipBacklogOpt = Annotated[Optional[float], typer.Option(
    "--skip-backlog", help="adaptive: skip the thought of a chunk that waited this many seconds while later chunks "
                           "wait (a machine that cannot keep up answers sooner; default off: the thought is "
                           "shortened to one step; RESULTS.md section 25)")]
StepSOpt = Annotated[Optional[float], typer.Option(
    "--step-s", help="virtual clock: charge every engine step this many seconds instead of its measured time "
                     "(with --decode-rate: results independent of this machine's load; docs/OPERATING_POINTS.md)")]
ProtocolOpt = Annotated[Optional[str], typer.Option(
    help=f"streaming protocol preset ({', '.join(PRESETS)}; docs/DESIGN.md): default the adapter's own, "
         "or the mode's default for base models")]
DTYPES = ("float32", "bfloat16", "float16")


def setup_logging(verbose: int = 0) -> None:
    """Log records to stderr: WARNING and above by default; ``-v`` adds adasr's INFO messages
    (model loading and caching, training progress), ``-vv`` adasr's DEBUG and every library's
    INFO. Libraries' deprecation notices (FutureWarning, DeprecationWarning) are meant for
    adasr's developers, not its users: hidden by default, logged with ``-v``."""
    logging.captureWarnings(True)
    warnings.filterwarnings("default" if verbose else "ignore", category=FutureWarning)
    warnings.filterwarnings("default" if verbose else "ignore", category=DeprecationWarning)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_adasr", False)]:
        root.removeHandler(old)
    handler._adasr = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose >= 2 else logging.WARNING)
    logging.getLogger("adasr").setLevel(
        logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING)
    if verbose >= 2:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_info()


@app.callback()
def _main_options(
    verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True, help="log progress to stderr: -v adasr's INFO, -vv DEBUG and library INFO")] = 0,
) -> None:
    """Adaptive streaming reasoning with language models."""
    setup_logging(verbose)


def _load(model: str, dtype: str, device: str = "cpu", revision: str | None = None, protocol: str | None = None):
    """Load ``model``; ``protocol`` overrides the streaming protocol it runs with (warned when it
    differs from the one a trained adapter learned)."""
    from adasr.models import load_model, resolve_device
    from adasr.protocol import resolve_protocol

    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if protocol is not None:
        resolve_protocol(protocol)  # ConfigError: an unknown name fails before any loading
    resolve_device(device)  # a bad device fails before any loading
    loaded = load_model(model, dtype=dtype, device=device, revision=revision)
    if protocol is not None:
        if loaded.protocol and loaded.protocol != protocol:
            err.print(f"warning: {loaded.name} was trained with protocol {loaded.protocol}; running it with {protocol}")
        loaded.protocol = protocol
    return loaded


def _model_ref(model: str) -> str:
    """A model as recorded in an eval's config.json: an existing local path made absolute (the
    same model whatever the working directory), anything else as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _stream_spec(chunker: str, wps: float, max_chunk_tokens: int, cps: float | None = None):
    """The :class:`~adasr.stream.StreamSpec` of the stream options (shared by run and eval)."""
    from adasr.stream import StreamSpec

    if max_chunk_tokens < 0:
        raise ConfigError(f"--max-chunk-tokens must be >= 0 (0: no cap), got {max_chunk_tokens}")
    return StreamSpec(chunker=chunker, wps=wps, max_chunk_tokens=max_chunk_tokens or None, cps=cps)


def _engine(loaded, mode: str, thought_budget: int, max_deep_tokens: int, temperature: float, top_p: float,
            top_k: int, seed: int, decode_rate: float | None, backend: str = "torch", share=None, revisions: int = 0,
            skip_backlog_s: float | None = None):
    """The engine of ``backend``; ``share``: an engine of the same model whose backend resources
    (its vLLM runtime) the new one uses (:meth:`~adasr.engine.StreamingEngine.derive`: one model
    load for every mode of an evaluation)."""
    from adasr.backends import make_engine
    from adasr.engine import EngineConfig

    cfg = EngineConfig(policy=mode, thought_budget=thought_budget, revisions=revisions, skip_backlog_s=skip_backlog_s,
                       max_deep_tokens=max_deep_tokens,
                       temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, decode_rate=decode_rate,
                       protocol=loaded.protocol, backend=backend)
    if share is not None:
        return share.derive(cfg)
    return make_engine(loaded, cfg)


def _check_context(loaded, n_input_tokens: int, max_deep_tokens: int) -> None:
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if limit and n_input_tokens + max_deep_tokens > limit:
        raise InputError(
            f"the input is {n_input_tokens:,} tokens and the deep stage may add {max_deep_tokens:,}, "
            f"but the model's context window is {limit:,} tokens: shorten the input"
        )


@app.command()
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
) -> None:
    """Stream one input into a model: it thinks while the input arrives, then answers."""
    from adasr.engine import EpisodeInput
    from adasr.metrics import grade_record
    from adasr.policy import make_policy
    from adasr.stream import file_text, stdin_source
    from adasr.view import LiveView, metrics_table

    sources = [x for x in (text is not None, file is not None, gsm8k is not None) if x]
    if len(sources) != 1:
        raise InputError("give exactly one input: TEXT, '-' (stdin), --file F or --gsm8k PATH")
    make_policy(mode, thought_budget=thought_budget, revisions=revisions,  # bad settings fail before any load
                skip_backlog_s=skip_backlog)
    if skip_backlog is not None and server is not None:
        raise ConfigError("--skip-backlog is an in-process engine setting: drop it with --server")
    if step_s is not None and (clock != "virtual" or text == "-" or server is not None or not step_s > 0):
        raise ConfigError(f"--step-s needs --clock virtual, an input known in advance (not stdin, not --server) and "
                          f"a positive number of seconds; got {step_s!r} with --clock {clock}")
    spec = _stream_spec(chunker, wps, max_chunk_tokens, cps)
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
        return _run_remote(server, None if live else text, item=item, as_json=as_json, wps=wps, cps=cps,
                           chunker=chunker, settings=settings)
    loaded = _load(model, dtype, device, revision, protocol)
    if live:
        source, clock = stdin_source(), "real"
    else:
        source = spec.for_item(item, tokenizer=loaded.tokenizer) if item else spec.stream(text, tokenizer=loaded.tokenizer)
        n_tokens = sum(len(loaded.tokenizer.encode(c.text, add_special_tokens=False)) for c in source.chunks)
        _check_context(loaded, n_tokens, max_deep_tokens)
    engine = _engine(loaded, mode, thought_budget, max_deep_tokens, temperature, top_p, top_k, seed, decode_rate,
                     backend, revisions=revisions, skip_backlog_s=skip_backlog)
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


def _budgets(values: list[str]) -> list[int]:
    """``--budget`` values (repeated, or comma-separated) as distinct positive integers."""
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


# -- `adasr serve` and `adasr run --server` ------------------------------------------------------
def _stdin_lines():
    """Lines of stdin as chunks (strict UTF-8; raises InputError naming the bad line)."""
    for lineno, raw in enumerate(iter(sys.stdin.buffer.readline, b""), 1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"stdin line {lineno} is not valid UTF-8: send UTF-8 text") from None


def _run_remote(url: str, text: str | None, *, item, as_json: bool, wps: float, chunker: str, cps: float | None = None,
                settings: dict) -> None:
    """`adasr run --server URL`: the episode runs on the server; ``text`` None streams stdin."""
    import os

    from adasr.client import Client, paced_chunks
    from adasr.serve.wire import event_from_wire
    from adasr.view import LiveView, metrics_table

    if chunker not in ("sentence", "word"):
        raise InputError(f"--chunker {chunker} is not available with --server: use sentence or word")
    chunks = _stdin_lines() if text is None else paced_chunks(text, wps=wps, chunker=chunker, cps=cps)
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


@app.command()
def serve(
    model: ModelOpt = DEFAULT_MODEL,
    dtype: DtypeOpt = "float32",
    device: DeviceOpt = "cpu",
    revision: RevisionOpt = None,
    protocol: ProtocolOpt = None,
    host: Annotated[str, typer.Option(help="address to bind (loopback by default; set --api-key before exposing it)")] = "127.0.0.1",
    port: int = 8000,
    max_sessions: Annotated[int, typer.Option(help="the most live sessions (KV cache rows); more are refused")] = 8,
    api_key: Annotated[Optional[str], typer.Option(envvar="ADASR_API_KEY", help="require this key on /v1/*")] = None,
    mode: Annotated[str, typer.Option(help="default mode: batch | interleaved | adaptive | proactive (a session may change it)")] = "adaptive",
    thought_budget: BudgetOpt = DEFAULT_THOUGHT_BUDGET,
    max_deep_tokens: Annotated[int, typer.Option(
        help="deep-stage cap, tokens (sessions may ask for less)")] = DEFAULT_MAX_DEEP_TOKENS,
    temperature: float = 0.0,
    seed: int = 0,
    decode_rate: DecodeRateOpt = None,
    backend: BackendOpt = "torch",
    idle_timeout: Annotated[float, typer.Option(help="close a session with no frame for this long before its end, s")] = 60.0,
    threads: Annotated[Optional[int], typer.Option(help="torch intra-op threads (default: torch's, one per core); "
                                                        "with clients on the same small machine, cores - 1 is faster")] = None,
) -> None:
    """Serve live streaming sessions: WebSocket /v1/sessions, POST /v1/solve, a page at / (docs/SERVING.md)."""
    import socket

    try:
        import uvicorn

        from adasr.serve.app import create_app
        from adasr.serve.wire import MAX_FRAME_BYTES
    except ImportError as e:
        raise ConfigError(f"adasr serve needs the serve extra ({e.name} is missing): pip install 'adasr[serve]'") from None
    if max_sessions < 1 or idle_timeout <= 0 or not 0 < port < 65536 or (threads is not None and threads < 1):
        raise ConfigError("need --max-sessions >= 1, --idle-timeout > 0, 0 < --port < 65536 and --threads >= 1")
    with socket.socket() as probe:  # a taken port fails now, with one line, not after loading the model
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    if threads is not None:  # the event loop and local clients need a core too (benchmarks/RESULTS.md §22)
        import torch

        torch.set_num_threads(threads)
    loaded = _load(model, dtype, device, revision, protocol)
    engine = _engine(loaded, mode, thought_budget, max_deep_tokens, temperature, 1.0, 0, seed, decode_rate, backend)
    server_app = create_app(engine, model_name=model, api_key=api_key, max_sessions=max_sessions,
                            idle_timeout_s=idle_timeout)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        err.print(f"warning: serving on {host} without --api-key: anyone who can reach it can use it")
    err.print(f"serving {model} on http://{host}:{port}/ (max {max_sessions} sessions); Ctrl-C stops")
    try:
        uvicorn.run(server_app, host=host, port=port, ws_max_size=MAX_FRAME_BYTES, log_level="warning")
    finally:
        engine.close()  # vLLM's engine processes (a no-op in-process)


@app.command("eval")
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
) -> None:
    """Evaluate on a GSM8K-format file: results.jsonl (resumable), summary.json, summary.md."""
    from adasr.evaluation import evaluate, evaluate_budgets
    from adasr.metrics import rich_table
    from adasr.policy import MODES, make_policy
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
    budgets = _budgets(thought_budget)
    spec = _stream_spec(chunker, wps, max_chunk_tokens, cps)
    items = load_gsm8k(data, limit=limit, on_error=lambda e: err.print(Text.assemble(("skipped: ", "yellow"), str(e)), highlight=False))
    loaded = _load(model, dtype, device, revision, protocol)

    engines = []  # the first engine's vLLM runtime serves every mode

    def factory(m: str, budget: int = budgets[0]):
        engines.append(_engine(loaded, m, budget, max_deep_tokens, temperature, 1.0, 0, seed, decode_rate,
                               backend, share=engines[0] if engines else None,
                               revisions=revisions if m == "proactive" else 0,
                               skip_backlog_s=skip_backlog if m == "adaptive" else None))
        return engines[-1]

    from adasr.protocol import mode_protocol

    # the protocol each mode's engine uses (proactive mode has its own for untrained models)
    by_mode = {m: mode_protocol(m, loaded.protocol).name for m in mode}
    run_protocol = next(iter(by_mode.values())) if len(set(by_mode.values())) == 1 else by_mode
    run_config = {
        "model": _model_ref(model), "model_path": loaded.path, "revision": revision,
        "data": str(data.expanduser().resolve()), "limit": limit,
        "dtype": dtype, "device": loaded.model.device.type,
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


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False) -> None:
    """List the models that run without a download (bundled bases and trained adapters)."""
    from adasr.models import list_models

    rows = list_models()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    console = Console()
    for part in models_renderables(rows):
        console.print(part)


def models_renderables(rows: list[dict]) -> list:
    """What ``adasr models`` prints for :func:`adasr.models.list_models`'s rows, made to fit an
    80-column terminal with nothing cut: one table of name, kind, size and availability, then
    (when there are adapters) one of each adapter's base and training data, whose long cells wrap
    (words) or fold (longer words) instead of ending in an ellipsis."""
    from rich.table import Table

    width = max((len(r["name"]) for r in rows), default=4)  # model names are identifiers: never cut
    table = Table(title="models that run without a download", title_justify="left")
    table.add_column("name", min_width=width, overflow="fold")
    table.add_column("kind", overflow="fold")
    table.add_column("MB", justify="right", overflow="fold")
    table.add_column("available", overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["kind"], f"{r['size_mb']:.0f}" if r.get("size_mb") else "?",
                      "yes" if r.get("available") else "no")
    adapters = [r for r in rows if r.get("base") or r.get("trained_on")]
    if not adapters:
        return [table]
    details = Table(title="adapters", title_justify="left")
    details.add_column("name", min_width=width, overflow="fold")
    details.add_column("base, trained on", overflow="fold")
    for r in adapters:
        details.add_row(r["name"], f"{r.get('base') or '?'}; {r.get('trained_on') or 'trained on: unknown'}")
    return [table, details]


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
    tokens_per_word: Annotated[float, typer.Option(
        help="fit each thought into the room the next chunk's arrival leaves: decode tokens/s over words/s "
             "(7 / 2.5 = 2.8; 0: no fitting)")] = 2.8,
    max_thought_tokens: Annotated[int, typer.Option(
        help="cap on one thought, tokens: the thought budget the episodes are made for (raise it for slow "
             "input such as typing, so that the cap is not what keeps work after end of "
             "input)")] = DEFAULT_THOUGHT_BUDGET,
    deep_style: Annotated[str, typer.Option(help="terse (computations, then the boxed conclusion) | verbatim")] = "terse",
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
    cfg = DistillConfig(model=model, samples=samples, temperature=temperature, top_p=top_p,
                        max_tokens=max_tokens, batch_size=batch_size, seed=seed, dtype=dtype)
    cfg.validate()
    items = load_gsm8k(source, on_error=lambda e: err.print(Text.assemble(("skipped: ", "yellow"), str(e)), highlight=False))
    items = items[start:] if limit is None else items[start:start + limit]
    items, dropped = drop_overlap(items, exclude)
    if dropped:
        err.print(f"dropped {dropped} problem(s) whose question is in an --exclude file")
    if not items:
        raise ConfigError("no problems left to distill (check --start/--limit/--exclude)")
    from adasr.tasks.notes import DEEP_STYLES, NOTE_STYLES

    if notes not in NOTE_STYLES or deep_style not in DEEP_STYLES or tokens_per_word < 0:
        raise ConfigError(f"need --notes in {', '.join(NOTE_STYLES)}, --deep-style terse|verbatim and "
                          "--tokens-per-word >= 0")
    check_episodes_file(episodes)  # before any sampling
    if max_thought_tokens < 1:
        raise ConfigError(f"--max-thought-tokens must be >= 1, got {max_thought_tokens}")
    convert = dict(notes=notes, tokens_per_word=tokens_per_word or None, deep_style=deep_style,
                   max_thought_tokens=max_thought_tokens,
                   episodes_file=episodes)
    if convert_only:
        from adasr.train.distill import read_samples

        records = read_samples(out)
        if not records:
            raise ConfigError(f"no samples in {out}: run without --convert-only first")
    loaded = _load(model, dtype)  # (the tokenizer counts tokens for the report)
    if not convert_only:
        records = distill(loaded.model, loaded.tokenizer, items, out, cfg)
    report = write_episodes(records, out, loaded.tokenizer, **convert)
    Console().print(report.summary_line())
    from adasr.train.distill import alignment_report

    aligned = alignment_report(records, loaded.tokenizer)  # the aligner's bound, before any fitting
    (Path(out) / "alignment.json").write_text(json.dumps(aligned, indent=2) + "\n", encoding="utf-8")
    Console().print(f"aligner: {aligned['placeable_share']:.1%} of the kept samples' reasoning tokens placeable "
                    "before the last chunk; the rest: " + ", ".join(f"{k} {v:.1%}" for k, v in aligned["unplaced"].items()))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
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


EvalDirsArg = Annotated[list[Path], typer.Argument(
    help="evaluation directories written by `adasr eval --out` (or <mode> directories in them)", show_default=False)]
PlotOutOpt = Annotated[Path, typer.Option("--out", "-o", help="image file to write (.png, .svg, .pdf)", show_default=False)]


@plot_app.command("frontier")
def plot_frontier_cmd(run_dirs: EvalDirsArg, out: PlotOutOpt) -> None:
    """Accuracy (95% Wilson interval) vs p50 post-input latency, one point per (directory, mode)."""
    from adasr.plots import plot_frontier

    Console().print(f"wrote {plot_frontier(run_dirs, out)}")


@plot_app.command("cdf")
def plot_cdf_cmd(run_dirs: EvalDirsArg, out: PlotOutOpt) -> None:
    """Empirical CDF of the post-input latency, one line per (directory, mode)."""
    from adasr.plots import plot_latency_cdf

    Console().print(f"wrote {plot_latency_cdf(run_dirs, out)}")


@plot_app.command("timeline")
def plot_timeline_cmd(
    run_json: Annotated[str, typer.Argument(help="output of `adasr run --json` saved to a file, or '-' (stdin)",
                                            show_default=False)],
    out: PlotOutOpt,
) -> None:
    """One episode's timeline: chunk arrivals, ingestion, thoughts, end of input, deep stage, answer."""
    from adasr.plots import plot_timeline

    Console().print(f"wrote {plot_timeline(run_json, out)}")


# typer >= 0.22 ships its own copy of click, whose exceptions are typer.TyperException, not click's
_USAGE_ERRORS = (click.exceptions.ClickException, getattr(typer, "TyperException", click.exceptions.ClickException))


def main() -> None:
    """Entry point: run the app, turning user errors into one-line messages."""
    try:
        app(standalone_mode=False)
    except AdasrError as e:
        err.print(Text.assemble(("error: ", "bold red"), str(e)), highlight=False)
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    except _USAGE_ERRORS as e:  # unknown option, bad value, missing argument: click's usage message
        show = getattr(e, "show", None)
        show() if show else err.print(Text.assemble(("error: ", "bold red"), str(e)), highlight=False)
        sys.exit(getattr(e, "exit_code", 2))


if __name__ == "__main__":
    main()
