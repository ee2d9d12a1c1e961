"""``adasr serve``: live streaming sessions over WebSocket and SSE (docs/SERVING.md)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from adasr.cli.common import (
    BackendOpt,
    BudgetOpt,
    DecodeRateOpt,
    DeviceOpt,
    DtypeOpt,
    LogitBiasOpt,
    ModelOpt,
    ProtocolOpt,
    RevisionLogitBiasOpt,
    RevisionOpt,
    RevisionsOpt,
    err,
    load,
    make_engine,
    parse_revision_logit_bias,
)
from adasr.defaults import DEFAULT_MAX_DEEP_TOKENS, DEFAULT_MODEL, DEFAULT_THOUGHT_BUDGET
from adasr.errors import ConfigError


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
    revisions: RevisionsOpt = 0,
    max_deep_tokens: Annotated[int, typer.Option(
        help="deep-stage cap, tokens (sessions may ask for less)")] = DEFAULT_MAX_DEEP_TOKENS,
    temperature: float = 0.0,
    seed: int = 0,
    decode_rate: DecodeRateOpt = None,
    backend: BackendOpt = "torch",
    idle_timeout: Annotated[float, typer.Option(help="close a session with no frame for this long before its end, s")] = 60.0,
    threads: Annotated[Optional[int], typer.Option(help="torch intra-op threads (default: torch's, one per core); "
                                                        "with clients on the same small machine, cores - 1 is faster")] = None,
    logit_bias: LogitBiasOpt = [],  # noqa: B006
    revision_logit_bias: RevisionLogitBiasOpt = [],  # noqa: B006
) -> None:
    """Serve live streaming sessions: WebSocket /v1/sessions, POST /v1/solve, a page at / (docs/SERVING.md)."""
    import socket

    from adasr.policy import make_policy
    from adasr.sampling import parse_logit_bias

    try:
        import uvicorn

        from adasr.serve.app import create_app
        from adasr.serve.wire import MAX_FRAME_BYTES
    except ImportError as e:
        raise ConfigError(f"adasr serve needs the serve extra ({e.name} is missing): pip install 'adasr[serve]'") from None
    if max_sessions < 1 or idle_timeout <= 0 or not 0 < port < 65536 or (threads is not None and threads < 1):
        raise ConfigError("need --max-sessions >= 1, --idle-timeout > 0, 0 < --port < 65536 and --threads >= 1")
    make_policy(mode, thought_budget=thought_budget, revisions=revisions)  # bad defaults fail before any load
    bias = parse_logit_bias(logit_bias)  # every session's, its own sampling settings included
    revision_bias = parse_revision_logit_bias(revision_logit_bias, mode, revisions)
    with socket.socket() as probe:  # a taken port fails now, with one line, not after loading the model
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    if threads is not None:  # the event loop and local clients need a core too (benchmarks/RESULTS.md §22)
        import torch

        torch.set_num_threads(threads)
    loaded = load(model, dtype, device, revision, protocol)
    engine = make_engine(loaded, mode, thought_budget, max_deep_tokens, temperature, 1.0, 0, seed, decode_rate, backend,
                         revisions=revisions, logit_bias=bias, revision_logit_bias=revision_bias)
    server_app = create_app(engine, model_name=model, api_key=api_key, max_sessions=max_sessions,
                            idle_timeout_s=idle_timeout)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        err.print(f"warning: serving on {host} without --api-key: anyone who can reach it can use it")
    err.print(f"serving {model} on http://{host}:{port}/ (max {max_sessions} sessions); Ctrl-C stops")
    try:
        uvicorn.run(server_app, host=host, port=port, ws_max_size=MAX_FRAME_BYTES, log_level="warning")
    finally:
        engine.close()  # vLLM's engine processes (a no-op in-process)
