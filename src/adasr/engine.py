"""The streaming-reasoning engine: sessions over one batched, persistent KV cache.

Each session is one episode (a stream of chunks) and holds one row of the batch. Every engine
step is (at most) one forward pass over all rows: a row feeds either its pending input tokens (a
chunk's turn, a turn closer, the end-of-input turn) or the token it sampled last. Only new
tokens are ever fed — the prefix lives in the KV cache — so ingesting a chunk costs its own
length, not the prefix's.

Layout (the shape of vLLM's ``LLMEngine``; per-row state as in nanochat's ``RowState``):

* :class:`~adasr.session.Session` (session.py) — one episode's state machine with an explicit
  :class:`~adasr.session.SessionStatus` (``WAITING`` for input, ``INGESTING``, ``THINKING``,
  ``DEEP``, ``FINISHED``, ``ABORTED``): polls its source, asks the policy for thought budgets,
  starts the deep stage, parses ``\\boxed{}``; it deals in token ids and typed events
  (:mod:`adasr.events`) and holds no pointer to the engine.
* :class:`~adasr.scheduler.Scheduler` (scheduler.py) — which sessions hold rows (at most
  ``batch_size``; a finished session's row goes to the next queued one), what each feeds this
  step, and the clocks (waiting, jumping to arrivals, per-stream clocks).
* :class:`~adasr.runner.ModelRunner` (runner.py) — the model-runner role, the one part a
  backend swaps: a step's feeds (:class:`~adasr.scheduler.SchedulerOutput`) in, the generating
  sessions' tokens (:class:`~adasr.runner.RunnerOutput`) out, and the KV cache.
  :class:`~adasr.runner.TorchModelRunner`: the forward passes, the KV cache rows (padding masks,
  row slicing, split steps, compaction), the prefix cache and sampling, in this process;
  :class:`adasr.vllm_backend.VllmModelRunner`: vLLM's streaming-input engine.
* :class:`StreamingEngine` (here) — the step (plan, execute, hand out tokens) and the public API:
  :meth:`~StreamingEngine.add_session`, :meth:`~StreamingEngine.abort`,
  :meth:`~StreamingEngine.step`, :attr:`~StreamingEngine.has_work`, and
  :meth:`~StreamingEngine.run`, a loop over them. Records are built by
  :class:`adasr.metrics.EpisodeRecord`.

Time (clocks: :mod:`adasr.stream`, the scheduler's docstring). With a shared clock
(``"virtual"`` or ``"real"``) all rows live on one timeline; the virtual clock is charged each
step's measured duration and jumps to the next arrival when every row waits. With
``"per-stream"`` clocks each row has its own virtual clock (a server at full load). Processing
is serial per row: while a row generates a thought, its newly arrived chunks wait (backlog).

Sources of the design: docs/DESIGN.md ("Latency model", "Streaming protocol"); the KV-cache engine
that injects tokens the model did not generate follows karpathy/nanochat ``engine.py``; the
session / scheduler / runner split and the step API follow vLLM's ``v1/engine``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator

from functools import partial

from adasr.defaults import DEFAULT_MAX_DEEP_TOKENS, DEFAULT_THOUGHT_BUDGET
from adasr.errors import BackendError, ConfigError, InputError
from adasr.events import Event
from adasr.metrics import EpisodeRecord
from adasr.policy import ThoughtPolicy, make_policy
from adasr.protocol import Episode, StreamingFormat, mode_protocol, protocol_format
from adasr.runner import RunnerFactory, RunnerOutput, RunnerSpec, TorchModelRunner
from adasr.sampling import SamplingParams
from adasr.scheduler import Scheduler
from adasr.session import EpisodeInput, Session, SessionStatus
from adasr.stream import PER_STREAM, RealClock, VirtualClock

__all__ = ["BACKENDS", "EngineConfig", "EpisodeInput", "EpisodeResult", "Event", "StreamingEngine", "run_episode"]

BACKENDS = ("torch", "vllm")
"""Token-generation backends: ``torch`` (in-process, default) and ``vllm`` (``make vllm``)."""


@dataclass
class EngineConfig:
    """Engine settings.

    Attributes:
        policy: the thought-budget policy: a mode name (``batch`` | ``interleaved`` |
            ``adaptive``, :data:`adasr.policy.MODES`) or a :class:`~adasr.policy.ThoughtPolicy`.
        thought_budget: the most tokens a streaming thought may take (the interleaved budget,
            the adaptive cap) of the policy named by ``policy`` (a policy object carries its own).
        revisions: ``proactive`` mode: how many times a committed answer may be revised (0: the
            first response ends the episode; :class:`~adasr.policy.ProactivePolicy`).
        skip_backlog_s: ``adaptive`` mode: skip the thought of a chunk that waited at least this
            many seconds while later chunks wait (:class:`~adasr.policy.AdaptivePolicy`; ``None``:
            off, the thought is shortened to one step).
        max_deep_tokens: cap on the deep stage (reasoning + answer), tokens.
        temperature: 0 for greedy decoding, else sampling temperature.
        top_p: nucleus sampling mass (1.0 = off).
        top_k: top-k sampling (0 = off).
        logit_bias: ``{token_id: bias}`` added to those tokens' logits before sampling or the
            argmax (vLLM's ``logit_bias``; :func:`adasr.sampling.resolve_logit_bias` makes it from
            text). The four are the sessions' default :class:`~adasr.sampling.SamplingParams`
            (:attr:`sampling`).
        revision_logit_bias: ``proactive`` mode with ``revisions``: the logit bias of the turns
            after a committed answer, in place of ``logit_bias`` (``None``: ``logit_bias``). A
            stricter commit threshold for revising an answer than for giving one: with
            ``{id(" yes"): ln((1 - tau_r) / tau_r)}`` a check revises only when
            p(yes) / (p(yes) + p(no)) > tau_r (docs/DESIGN.md, "Commit threshold").
        seed: base seed; each episode's generator is seeded from it and the episode's seed/id.
        decode_rate: decode tokens/s of one row used for adaptive budgets. ``None``: measured —
            calibrated when the engine starts (or ``initial_decode_rate``), then a moving average
            over pure decode steps, so budgets depend on the machine and its load. A number pins
            it: budgets (and results, with a fixed seed) are the same on every machine and run.
        initial_decode_rate: with a measured ``decode_rate``, the rate assumed before the first
            decode step is measured (e.g. a rate measured by an earlier engine); ``None``
            measures it with a few decode steps when the engine starts.
        compact_min_len: compact the cache only when it holds at least this many positions.
        compact_ratio: compact when the fraction of valid (non-padding) positions drops below it.
        split_min_waste: when some rows feed a multi-token chunk while others feed one decoded
            token, padding the decode rows to the longest feed costs ``n_decode * (L - 1)``
            wasted token positions; from this many on, the step runs two forwards instead (the
            multi-token rows, then the one-token rows, each on its slice of the cache). The step
            is still one server step: its duration is the sum. ``None``: never split.
        protocol: streaming protocol preset name (:data:`adasr.protocol.PRESETS`) when no
            ``fmt`` is given to the engine; ``None``: the mode's default
            (:func:`adasr.protocol.mode_protocol`: ``proactive-v1`` for the proactive mode,
            :data:`adasr.protocol.UNTRAINED_PROTOCOL` for the others: models adasr did not
            train). :func:`adasr.models.load_model` reports a trained model's preset as
            ``LoadedModel.protocol``.
        prefix_cache: serve every session's opening prefix (the system prompt; the same for all
            episodes of an engine) from keys/values computed once per :meth:`StreamingEngine.run`
            instead of prefilling it per episode (prefix caching, as in vLLM's automatic prefix
            caching). Tokens and positions are unchanged; only the compute is saved.
        backend: what generates tokens and holds the KV cache (:data:`BACKENDS`), the engine's
            model runner: ``"torch"`` (this process's PyTorch forward,
            :class:`~adasr.runner.TorchModelRunner`) or ``"vllm"`` (vLLM's streaming-input engine,
            :class:`adasr.vllm_backend.VllmModelRunner`; built by :func:`adasr.backends.make_engine`).
            Sessions, policies, records and clocks are the same.
    """

    policy: str | ThoughtPolicy = "adaptive"
    thought_budget: int = DEFAULT_THOUGHT_BUDGET
    revisions: int = 0
    skip_backlog_s: float | None = None
    max_deep_tokens: int = DEFAULT_MAX_DEEP_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    logit_bias: dict[int, float] | None = None
    revision_logit_bias: dict[int, float] | None = None
    seed: int = 0
    decode_rate: float | None = None
    initial_decode_rate: float | None = None
    compact_min_len: int = 256
    compact_ratio: float = 0.5
    split_min_waste: int | None = 16
    protocol: str | None = None
    prefix_cache: bool = True
    backend: str = "torch"

    def make_policy(self) -> ThoughtPolicy:
        """The policy object: ``policy`` itself, or the one its mode name stands for.

        Raises:
            ConfigError: for an unknown mode name, a negative ``thought_budget``, or ``revisions``
                negative or set for a mode other than ``proactive``.
        """
        if isinstance(self.policy, ThoughtPolicy):
            return self.policy
        if not isinstance(self.policy, str):
            raise ConfigError(f"policy must be a mode name or a ThoughtPolicy, got {type(self.policy).__name__}")
        return make_policy(self.policy, thought_budget=self.thought_budget, revisions=self.revisions,
                           skip_backlog_s=self.skip_backlog_s)

    @property
    def sampling(self) -> SamplingParams:
        """The sessions' default sampling settings (``temperature``, ``top_p``, ``top_k``,
        ``logit_bias``).

        Raises:
            ConfigError: out-of-range settings.
        """
        return SamplingParams(self.temperature, self.top_p, self.top_k, tuple((self.logit_bias or {}).items()))

    def revision_sampling(self, sampling: SamplingParams | None = None) -> SamplingParams | None:
        """The sampling settings of a session's turns after a committed answer: ``sampling`` (the
        session's own, default :attr:`sampling`) with :attr:`revision_logit_bias` as its logit
        bias; ``None`` when ``revision_logit_bias`` is ``None`` (those turns keep ``sampling``).

        Raises:
            ConfigError: out-of-range settings.
        """
        if self.revision_logit_bias is None:
            return None
        return replace(sampling or self.sampling, logit_bias=tuple(self.revision_logit_bias.items()))

    def validate(self) -> None:
        """Raises :class:`ConfigError` for out-of-range values."""
        if self.max_deep_tokens < 1:
            raise ConfigError("max_deep_tokens must be >= 1")
        self.sampling  # noqa: B018  (validates the sampling settings)
        self.revision_sampling()
        if self.split_min_waste is not None and self.split_min_waste < 1:
            raise ConfigError("split_min_waste must be >= 1 (or None: never split a step)")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        for name in ("decode_rate", "initial_decode_rate"):
            rate = getattr(self, name)
            if rate is not None and not rate > 0:
                raise ConfigError(f"{name} must be > 0 tokens/s (or None: measured), got {rate}")


@dataclass
class EpisodeResult:
    """A finished episode.

    Attributes:
        id: the input's id.
        record: the metrics record, :meth:`adasr.metrics.EpisodeRecord.as_dict` (docs/DESIGN.md
            field names; ``correct`` is left ``None`` for the task's checker to fill).
        episode: the episode with thoughts/deep stage as generated token ids (re-render with
            :meth:`StreamingFormat.render` to get ``token_ids`` back).
        token_ids: every token fed to the model, in order (length T).
        token_stage: per token, 1/2 if the model generated it (streaming thought / deep stage),
            0 otherwise (input, template, or a turn closer the engine forced at a budget).
        thoughts: streaming thoughts as text (``None`` where no assistant turn followed a chunk).
        deep: the deep stage as text.
        events: the event timeline as dicts (:meth:`adasr.events.Event.as_dict`; no per-token
            events).
    """

    id: str
    record: dict
    episode: Episode
    token_ids: list[int]
    token_stage: list[int]
    thoughts: list[str | None]
    deep: str
    events: list[dict]


class StreamingEngine:
    """Runs streaming episodes on a causal LM with one batched, persistent KV cache.

    Two ways to drive it:

    * :meth:`run` — give it all inputs; it yields each :class:`EpisodeResult` as it finishes
      (evaluation, RL rollouts, the CLI).
    * the step API — :meth:`add_session` at any time (also while other sessions are
      mid-episode), :meth:`step` in a loop while :attr:`has_work`, :meth:`abort` to drop a
      session, :meth:`pop_results` for finished episodes (a server's loop). :meth:`configure`
      sets the row limit and the clock first.

    The backend is the model runner (:class:`~adasr.runner.ModelRunner`): the engine is the same
    for every backend.

    Args:
        model: a Hugging Face causal LM (``forward(input_ids, attention_mask, position_ids,
            cache or past_key_values, logits_to_keep)``), in eval mode, run in this process by a
            :class:`~adasr.runner.TorchModelRunner`; ``None`` with ``runner``.
        tokenizer: its tokenizer (with a chat template).
        config: :class:`EngineConfig`.
        fmt: the protocol pieces (default: :func:`adasr.protocol.protocol_format` of
            :func:`adasr.protocol.mode_protocol` of the mode and ``config.protocol``).
        runner: builds another backend's model runner from the engine's
            :class:`~adasr.runner.RunnerSpec` (:data:`~adasr.runner.RunnerFactory`, e.g. of
            :class:`adasr.vllm_backend.VllmModelRunner`; :func:`adasr.backends.make_engine`).

    Attributes:
        policy: the :class:`~adasr.policy.ThoughtPolicy` of every session.
        format: the :class:`~adasr.protocol.StreamingFormat`.
        decode_rate: the engine-wide decode rate, tokens/s of one row (``config.decode_rate``).
        batch_size: the most sessions holding rows at once (:meth:`configure`).
        scheduler: the :class:`~adasr.scheduler.Scheduler` (its ``clock`` is the shared clock).
        runner: the :class:`~adasr.runner.ModelRunner` (the torch one: call
            ``runner.reset_prefix_cache()`` after changing the weights between steps; :meth:`run`
            does it at its start).
        stats: running counters: ``steps`` (server steps), ``row_steps`` (rows that fed something,
            summed over steps: ``row_steps / steps`` is the mean batch occupancy), ``split_steps``,
            ``compactions``, ``forward_s`` (seconds in forwards), ``tokens_fed`` (real tokens) and
            ``padded_fed`` (token positions the model ran, padding included), ``prefix_hits``
            (sessions opened from the prefix cache).

    Raises:
        ConfigError: for an invalid config, or not exactly one of ``model`` and ``runner``;
            ProtocolError: if the chat template cannot express the streaming protocol.
    """

    def __init__(self, model, tokenizer, config: EngineConfig | None = None, fmt: StreamingFormat | None = None, *,
                 runner: RunnerFactory | None = None):
        if (model is None) == (runner is None):
            raise ConfigError("an engine needs exactly one of a model (run in this process) and a runner factory")
        self.model, self.tokenizer = model, tokenizer
        self.config = c = config or EngineConfig()
        c.validate()
        self.policy = c.make_policy()
        self.format = fmt or protocol_format(tokenizer, mode_protocol(self.policy.name, c.protocol))
        self._fixed_format = fmt is not None or c.protocol is not None  # else each mode uses its default
        self.stats = {"steps": 0, "row_steps": 0, "split_steps": 0, "compactions": 0, "forward_s": 0.0,
                      "tokens_fed": 0, "padded_fed": 0, "prefix_hits": 0}
        self.scheduler = Scheduler("virtual")
        self.batch_size = 1
        self._sessions: dict[str, Session] = {}  # queued and running sessions, by id
        self._results: list[EpisodeResult] = []
        self._events: list[Event] = []
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.format.end_of_turn_id
        spec = RunnerSpec(c, tuple(self.format.prefix_ids(self.policy.layout)), pad_id, self.stats)
        self.runner = (runner or partial(TorchModelRunner, model))(spec)
        self.decode_rate = c.decode_rate or c.initial_decode_rate or self.runner.measure_decode_rate(
            self.format.prefix_ids("batch"))

    def derive(self, config: EngineConfig) -> "StreamingEngine":
        """An engine with another config (e.g. another mode) on the same backend resources: the
        same model, or the same vLLM runtime (not owned: closing the new engine leaves it up) — one
        model load for every mode of an evaluation."""
        return StreamingEngine(self.model, self.tokenizer, config, runner=None if self.model is not None
                               else self.runner.derive)

    def decode(self, ids) -> str:
        """Text of generated ids (special tokens dropped)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # -- the step API --------------------------------------------------------------------------
    def configure(self, *, batch_size: int | None = None,
                  clock: str | VirtualClock | RealClock | None = None) -> None:
        """Set the row limit (any time; it bounds later admissions) and the clock (only while no
        session runs): ``"virtual"`` | ``"real"`` | a clock object, shared by all sessions, or
        ``"per-stream"`` (see :meth:`run`).

        Raises:
            ConfigError: ``batch_size < 1``, or a clock change while sessions run.
            InputError: an unknown clock name.
        """
        if batch_size is not None:
            if batch_size < 1:
                raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
            self.batch_size = batch_size
        if clock is not None:
            if self.has_work:
                raise ConfigError("the clock cannot change while sessions run")
            self._update_rows(refill=False)
            self.scheduler = Scheduler(clock)

    def add_session(self, inp: EpisodeInput, *, start_s: float | None = None,
                    on_event: Callable[[Event], None] | None = None, policy: ThoughtPolicy | None = None,
                    max_deep_tokens: int | None = None, sampling: SamplingParams | None = None) -> str:
        """Queue an episode; it gets a row at the next :meth:`step` with room (at most
        :attr:`batch_size` rows). Returns its session id (``inp.id``).

        Args:
            inp: the episode.
            start_s: clock time at which its stream starts (shared clocks); default: when it
                gets a row.
            on_event: called with each of its events as it happens (per-token ones included).
            policy: this session's thought-budget policy (default: the engine's :attr:`policy`);
                sessions with different policies share the batch (a server's per-session mode).
            max_deep_tokens: this session's deep-stage cap, tokens (default: the config's).
            sampling: this session's :class:`~adasr.sampling.SamplingParams` (default: the
                config's, :attr:`EngineConfig.sampling`).

        Raises:
            ConfigError: a session with this id is still running or queued, ``start_s`` with
                per-stream clocks, ``max_deep_tokens < 1``, or ``sampling`` that is not a
                :class:`~adasr.sampling.SamplingParams`.
        """
        if max_deep_tokens is not None and max_deep_tokens < 1:
            raise ConfigError(f"max_deep_tokens must be >= 1, got {max_deep_tokens}")
        if sampling is not None and not isinstance(sampling, SamplingParams):
            raise ConfigError(f"sampling must be a SamplingParams, got {type(sampling).__name__}")
        live = self._sessions.get(inp.id)
        if live is not None and not live.status.ended:
            raise ConfigError(f"a session with id {inp.id!r} is already running")
        session = Session(inp, self.session_format(policy), policy or self.policy, sampling=sampling,
                          revision_sampling=self.config.revision_sampling(sampling),
                          max_deep_tokens=max_deep_tokens or self.config.max_deep_tokens,
                          seed=self.config.seed, decode=self.decode, on_event=self._emitter(on_event))
        self.scheduler.add(session, start_s)
        self._sessions[inp.id] = session
        return inp.id

    def _emitter(self, on_event: Callable[[Event], None] | None) -> Callable[[Event], None]:
        def emit(ev: Event) -> None:
            self._events.append(ev)
            if on_event is not None:
                on_event(ev)

        return emit

    def session(self, session_id: str) -> Session:
        """The queued or running session ``session_id`` (a finished one until its row is freed).

        Raises:
            KeyError: no such session.
        """
        return self._sessions[session_id]

    def abort(self, session_id: str) -> None:
        """Drop a session (its finish reason: ``aborted``): it feeds nothing more and yields no
        result; its KV rows are freed at the next :meth:`step`. A no-op for a session that
        already ended.

        Raises:
            KeyError: no such session.
        """
        s = self._sessions.get(session_id)
        if s is None:
            raise KeyError(f"no session {session_id!r}")
        if s.status.ended:
            return
        s.abort()
        if self.scheduler.drop_queued(s):
            del self._sessions[session_id]

    @property
    def has_work(self) -> bool:
        """Whether any session is queued or running (not yet finished or aborted)."""
        return any(not s.status.ended for s in self._sessions.values())

    def session_format(self, policy: ThoughtPolicy | None = None) -> StreamingFormat:
        """The protocol pieces a session with ``policy`` runs with: the engine's :attr:`format`
        when it was given (``fmt`` or ``config.protocol``: a trained adapter's own); otherwise the
        policy's mode default (:func:`adasr.protocol.mode_protocol`, as the CLI picks it per
        mode), so that a server's per-session mode gets the protocol that mode was designed with."""
        if policy is None or self._fixed_format:
            return self.format
        return protocol_format(self.tokenizer, mode_protocol(policy.name))

    @property
    def kv_rows(self) -> int:
        """KV-cache rows held now (one per admitted session until its row is freed; vLLM: its
        requests held open)."""
        return self.runner.kv_rows

    def kv_bytes(self) -> int | None:
        """Bytes of the keys/values the shared cache holds (0 with no rows); ``None`` where the
        backend manages its own memory (vLLM's paged cache)."""
        return self.runner.kv_bytes()

    def pop_results(self) -> list[EpisodeResult]:
        """Results of the sessions that finished since the last call, in finishing order."""
        out, self._results = self._results, []
        return out

    def step(self) -> list[Event]:
        """One engine step: free the rows of ended sessions (queued sessions take them), admit
        queued sessions while there is room, then one step of the model runner over every row
        that has something to feed (one forward, and one sampled token per generating session,
        in process) — or, when every session waits for input, move the clocks on instead.
        Finished episodes go to :meth:`pop_results`.

        Returns:
            the events of this step, in order (per-token ones included).

        Raises:
            InputError: from a source (e.g. an empty input), or a live source on a virtual clock.
            BackendError: the backend failed, or ended a turn the session did not.
        """
        self._update_rows(refill=True)
        if self.scheduler.running:
            self._step()
        events, self._events = self._events, []
        return events

    def _update_rows(self, refill: bool) -> None:
        """Free the rows of ended sessions, admit queued ones; the runner applies the changes."""
        changes, freed = self.scheduler.update_rows(self.batch_size, refill)
        for s in freed:
            if self._sessions.get(s.id) is s:
                del self._sessions[s.id]
        self.runner.apply_rows(changes, freed)

    def _step(self) -> None:
        """One step of the running sessions: plan (the scheduler), execute (the runner; timed and
        charged to the clocks), hand the tokens to their sessions."""
        sched, runner, stats = self.scheduler, self.runner, self.stats
        sessions = sched.running
        out = sched.plan(self.decode_rate, busy=runner.busy())
        if out is not None:
            t_start = time.perf_counter()
            runner.execute_model(out)
            dt = time.perf_counter() - t_start
            result = runner.sample_tokens(out)
            for s, feed, deferred in zip(out.sessions, out.feeds, result.deferred):
                if deferred:
                    s.defer(feed)
                else:
                    s.fed(feed)
            sched.charge(result.took_part, dt)
            if self.config.decode_rate is None and result.decode_tokens:
                self.decode_rate = 0.8 * self.decode_rate + 0.2 * result.decode_tokens / max(dt, 1e-6)  # per row
            stats["steps"] += 1
            stats["row_steps"] += sum(result.took_part)
            stats["forward_s"] += dt
            self._hand_out(out.sessions, result)
        for s in sessions:  # every running session was live when the step began
            if s.status is SessionStatus.FINISHED:
                self._results.append(self._result(s))

    @staticmethod
    def _hand_out(sessions: list[Session], result: RunnerOutput) -> None:
        """Give each session its generated tokens (:meth:`Session.on_token`, at its clock time);
        the ones the runner fed itself are recorded as fed.

        Raises:
            BackendError: a session ended its turn at a token the runner went on from (the
                backend's stop rules differ from the protocol's).
        """
        for s, tokens, prefed in zip(sessions, result.tokens, result.prefed):
            for j, tok in enumerate(tokens):
                if not s.generating:  # (an on_event callback may have aborted it)
                    break
                s.on_token(tok, s.clock.now())
                if j < prefed:  # its pending feed is just that token, which the runner fed
                    if not s.generating or s.pending != [(tok, s.pending[0][1])]:
                        raise BackendError(f"session {s.id!r} ended its turn inside a backend input (protocol mismatch)")
                    s.fed(s.pending)
                    s.pending = []

    def close(self) -> None:
        """Release the runner's resources (a no-op in process; vLLM's requests, and its engine
        processes when this engine owns its runtime)."""
        self.runner.close()

    def __enter__(self) -> "StreamingEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _result(self, s: Session) -> EpisodeResult:
        record = EpisodeRecord.from_session(s).as_dict()
        episode = Episode(chunks=[c.text for c in s.chunks], thoughts=list(s.thoughts), deep=list(s.deep),
                          layout=s.layout)
        thoughts = [None if th is None else self.decode(th) for th in s.thoughts]
        return EpisodeResult(s.id, record, episode, s.token_ids, s.token_stage, thoughts, self.decode(s.deep),
                             [ev.as_dict() for ev in s.events])

    # -- all inputs at once ----------------------------------------------------------------------
    def run(
        self,
        inputs: Iterable[EpisodeInput],
        *,
        batch_size: int = 1,
        clock: str | VirtualClock | RealClock = "virtual",
        on_event: Callable[[Event], None] | None = None,
        align_eoi: bool = False,
    ) -> Iterator[EpisodeResult]:
        """Run episodes, ``batch_size`` at a time in one batched cache; yield each as it finishes.

        A loop over the step API (:meth:`add_session`, :meth:`step`); it needs an idle engine
        and drives it alone until it returns.

        Args:
            inputs: episodes to run (consumed lazily).
            batch_size: rows sharing one forward per step.
            clock: ``"virtual"`` | ``"real"`` or a clock object, shared by all rows; or
                ``"per-stream"``: a virtual clock per row, charged the measured duration of each
                batched step the row takes part in and jumped to the row's next arrival whenever
                it waits (a server at full load; see :mod:`adasr.scheduler`). Identical to
                ``"virtual"`` at ``batch_size=1``.
            on_event: callback receiving every typed :class:`~adasr.events.Event` (including
                per-token ones).
            align_eoi: ``False`` (default): continuous batching — every stream starts when it
                gets a row, and a finished row takes the next input at once. ``True``: waves of
                ``batch_size`` streams, each started late enough that all of them reach end of
                input at the same moment (needs sources with a known ``eoi_s``). Deep stages then
                run side by side: the heaviest post-input load a server of N streams can see, and
                the best overlap for evaluation throughput.

        Raises:
            ConfigError: for ``batch_size < 1``, ``align_eoi`` with per-stream clocks, or an
                engine with sessions in flight.
            InputError: from a source (e.g. invalid UTF-8 on stdin), or when a live source is
                used with the virtual clock.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if clock == PER_STREAM and align_eoi:
            raise ConfigError("align_eoi needs a shared clock: per-stream clocks have no common end of input")
        if self.has_work:
            raise ConfigError("run() needs an idle engine: sessions added with add_session() are still running")
        self.configure(batch_size=batch_size, clock=clock)
        self.runner.start_run()
        pending_inputs = iter(inputs)
        mine: list[str] = []
        try:
            while True:
                wave = [inp for inp in (next(pending_inputs, None) for _ in range(batch_size)) if inp is not None]
                if not wave:
                    return
                starts = [None] * len(wave)
                if align_eoi:
                    eois = [inp.source.eoi_s() for inp in wave]
                    if any(e is None for e in eois):
                        raise InputError("align_eoi needs streams whose end of input is known in advance")
                    now = self.scheduler.clock.now()
                    starts = [now + max(eois) - e for e in eois]
                for inp, start in zip(wave, starts):
                    mine.append(self.add_session(inp, start_s=start, on_event=on_event))
                while self.has_work:
                    self.step()
                    for result in self.pop_results():
                        yield result
                        nxt = None if align_eoi else next(pending_inputs, None)
                        if nxt is not None:
                            mine.append(self.add_session(nxt, on_event=on_event))
                self._update_rows(refill=False)  # the wave is over: its cache is dropped
                if not align_eoi:
                    return
        finally:
            for sid in mine:
                s = self._sessions.get(sid)
                if s is not None and not s.status.ended:
                    self.abort(sid)
            self._update_rows(refill=False)


def run_episode(engine: StreamingEngine, inp: EpisodeInput, **kwargs) -> EpisodeResult:
    """Run a single episode and return its result (convenience over :meth:`StreamingEngine.run`)."""
    return next(iter(engine.run([inp], batch_size=1, **kwargs)))
