"""What the commands share: the options several of them take, the console of warnings and
errors (stderr), logging, and the steps from options to a loaded model, a stream recipe and an
engine.

Heavy modules (torch, transformers, the engine) are imported inside the functions, so that
``adasr --help`` stays light.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from adasr.errors import ConfigError, InputError
from adasr.protocol import PRESETS

err = Console(stderr=True, soft_wrap=True)
"""Warnings, progress lines and one-line errors go to stderr; results to stdout."""

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="bundled name, HF id, local dir or adapter dir")]
DtypeOpt = Annotated[str, typer.Option(
    help="float32 | bfloat16 | float16 | auto: weight and compute dtype (bfloat16 makes batched steps ~2x "
         "cheaper on CPUs with AMX and many times dearer on CPUs without AVX-512; auto: bfloat16 where it runs "
         "natively, else float32; benchmarks/RESULTS.md section 46)")]
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
ChunkerOpt = Annotated[str, typer.Option(help="sentence | clause (a final question clause on its own chunk) | "
                                              "word | token: how a text is cut into chunks (pre-split chunks "
                                              "of a data file are kept)")]
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
LogitBiasOpt = Annotated[list[str], typer.Option(
    "--logit-bias", help="TEXT=BIAS (repeatable): add BIAS to the logit of TEXT's one token, greedy decoding included "
                         "(vLLM's logit_bias). Proactive commit threshold tau: --logit-bias ' yes=B' with "
                         "B = ln((1 - tau) / tau), e.g. -0.85 for tau 0.7 (docs/DESIGN.md, Commit threshold)")]
RevisionLogitBiasOpt = Annotated[list[str], typer.Option(
    "--revision-logit-bias", help="TEXT=BIAS (repeatable): with --mode proactive --revisions N, the logit bias of the "
                                  "turns after a committed answer, in place of --logit-bias: a stricter threshold "
                                  "tau_r for revising an answer than for giving one, ' yes=ln((1 - tau_r) / tau_r)' "
                                  "(docs/DESIGN.md, Commit threshold)")]
DTYPES = ("float32", "bfloat16", "float16", "auto")


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


def dtype_name(dtype: str, device: str = "cpu") -> str:
    """The dtype ``--dtype`` names, ``auto`` resolved for ``device`` (:func:`adasr.models.resolve_dtype`):
    what a run records, so that a record says which dtype it ran in.

    Raises:
        ConfigError: an unknown dtype or device.
    """
    from adasr.models import resolve_dtype

    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    return str(resolve_dtype(dtype, device)).removeprefix("torch.")


def load(model: str, dtype: str, device: str = "cpu", revision: str | None = None, protocol: str | None = None):
    """Load ``model`` (:func:`adasr.models.load_model`); ``protocol`` overrides the streaming
    protocol it runs with (warned when it differs from the one a trained adapter learned).

    Raises:
        ConfigError: an unknown dtype, protocol or device, before any loading.
        ModelLoadError: the model cannot be loaded.
    """
    from adasr.models import load_model, resolve_device
    from adasr.protocol import resolve_protocol

    dtype = dtype_name(dtype, device)  # (ConfigError: an unknown dtype, before any loading)
    if protocol is not None:
        resolve_protocol(protocol)  # ConfigError: an unknown name fails before any loading
    resolve_device(device)  # a bad device fails before any loading
    loaded = load_model(model, dtype=dtype, device=device, revision=revision)
    if protocol is not None:
        if loaded.protocol and loaded.protocol != protocol:
            err.print(f"warning: {loaded.name} was trained with protocol {loaded.protocol}; running it with {protocol}")
        loaded.protocol = protocol
    return loaded


def model_ref(model: str) -> str:
    """A model as recorded in an eval's config.json: an existing local path made absolute (the
    same model whatever the working directory), anything else as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def stream_spec(chunker: str, wps: float, max_chunk_tokens: int, cps: float | None = None):
    """The :class:`~adasr.stream.StreamSpec` of the stream options (shared by run and eval).

    Raises:
        ConfigError: a negative ``--max-chunk-tokens`` (and the spec's own checks).
    """
    from adasr.stream import StreamSpec

    if max_chunk_tokens < 0:
        raise ConfigError(f"--max-chunk-tokens must be >= 0 (0: no cap), got {max_chunk_tokens}")
    return StreamSpec(chunker=chunker, wps=wps, max_chunk_tokens=max_chunk_tokens or None, cps=cps)


def make_engine(loaded, mode: str, thought_budget: int, max_deep_tokens: int, temperature: float, top_p: float,
                top_k: int, seed: int, decode_rate: float | None, backend: str = "torch", share=None, revisions: int = 0,
                skip_backlog_s: float | None = None, logit_bias: dict[str, float] | None = None,
                revision_logit_bias: dict[str, float] | None = None):
    """The engine of ``backend`` for a loaded model (:func:`adasr.backends.make_engine`);
    ``share``: an engine of the same model whose backend resources (its vLLM runtime) the new one
    uses (:meth:`~adasr.engine.StreamingEngine.derive`: one model load for every mode of an
    evaluation); ``logit_bias``: ``{text: bias}`` (``--logit-bias``), each text one token of the
    model's tokenizer; ``revision_logit_bias``: the same for the turns after a committed proactive
    answer (``--revision-logit-bias``; ``None``: ``logit_bias``).

    Raises:
        ConfigError: a bias text that is not one token (:func:`adasr.sampling.resolve_logit_bias`).
    """
    from adasr.backends import make_engine as backend_engine
    from adasr.engine import EngineConfig
    from adasr.sampling import resolve_logit_bias

    bias = dict(resolve_logit_bias(loaded.tokenizer, logit_bias)) if logit_bias else None
    revision_bias = (dict(resolve_logit_bias(loaded.tokenizer, revision_logit_bias))
                     if revision_logit_bias is not None else None)
    cfg = EngineConfig(policy=mode, thought_budget=thought_budget, revisions=revisions, skip_backlog_s=skip_backlog_s,
                       max_deep_tokens=max_deep_tokens,
                       temperature=temperature, top_p=top_p, top_k=top_k, logit_bias=bias,
                       revision_logit_bias=revision_bias, seed=seed,
                       decode_rate=decode_rate, protocol=loaded.protocol, backend=backend)
    if share is not None:
        return share.derive(cfg)
    return backend_engine(loaded, cfg)


def parse_revision_logit_bias(values: list[str], mode: str | list[str], revisions: int) -> dict[str, float] | None:
    """``--revision-logit-bias`` as ``{text: bias}`` (``None`` when not given).

    Raises:
        ConfigError: a malformed value (:func:`adasr.sampling.parse_logit_bias`), or the option
            without ``--mode proactive --revisions N`` (N >= 1): it sets the turns after an answer.
    """
    from adasr.sampling import parse_logit_bias

    if not values:
        return None
    modes = [mode] if isinstance(mode, str) else list(mode)
    if "proactive" not in modes or revisions < 1:
        raise ConfigError("--revision-logit-bias sets the turns after a committed answer: it needs --mode proactive "
                          "and --revisions 1 or more")
    return parse_logit_bias(values)


def check_context(loaded, n_input_tokens: int, max_deep_tokens: int) -> None:
    """Refuse an input that, with the deep-stage cap, cannot fit the model's context window.

    Raises:
        InputError: ``n_input_tokens + max_deep_tokens`` exceeds ``max_position_embeddings``.
    """
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if limit and n_input_tokens + max_deep_tokens > limit:
        raise InputError(
            f"the input is {n_input_tokens:,} tokens and the deep stage may add {max_deep_tokens:,}, "
            f"but the model's context window is {limit:,} tokens: shorten the input"
        )


def print_skipped(error: Exception) -> None:
    """Report a record a loader skipped (its one-line reason) on stderr."""
    err.print(Text.assemble(("skipped: ", "yellow"), str(error)), highlight=False)
