"""The streaming-reasoning engine: batched sessions over one persistent KV cache.

Each *row* of the batch is one episode (a stream of chunks). Every engine step is one forward
pass over all rows: a row feeds either its pending input tokens (a chunk's turn, a turn closer,
the end-of-input turn) or the token it sampled last. Only new tokens are ever fed — the prefix
lives in the KV cache — so ingesting a chunk costs its own length, not the prefix's.

Batching (continuous): rows are right-padded within a step; padded positions are masked out of
every later step (2-D attention mask with holes) and rows keep their own position ids. When a
row finishes, the next input takes its slot (the old positions are masked), and the cache is
compacted (padding gathered out) when most of it is padding. When inputs run out, finished rows
are dropped from the batch.

Time (clocks: :mod:`adasr.stream`). With a shared clock (``"virtual"`` or ``"real"``) all rows
live on one timeline: the virtual clock is charged each step's measured duration — the batched
duration, as a server serving N live streams would see — and jumps to the next arrival when
every row waits, so a row that waits for its next chunk sits steps out while others think.
With ``"per-stream"`` clocks each row has its own virtual clock, charged the measured duration
of every batched step it takes part in and jumped to its next arrival as soon as it waits: a
server at full load, whose N rows always have work because it serves more streams than rows.
Processing is serial per row: while a row generates a thought, its newly arrived chunks wait
(backlog).

Sources of the design: docs/DESIGN.md ("Latency model", "Streaming protocol"); the KV-cache engine
that injects tokens the model did not generate follows karpathy/nanochat ``engine.py``.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from adasr.errors import ConfigError, InputError
from adasr.kvcache import GrowableLayer, StreamingCache
from adasr.policy import PolicyContext, ThoughtPolicy, make_policy
from adasr.protocol import (
    STAGE_DEEP,
    STAGE_INPUT,
    STAGE_STREAM,
    Episode,
    StreamingFormat,
    protocol_format,
    find_boxed,
)
from adasr.stream import PER_STREAM, ArrivalSource, Chunk, RealClock, VirtualClock, make_clock

Event = dict
"""An engine event: ``{"type", "t", "id", ...}`` with ``t`` in seconds since the episode's stream
started. Types: ``arrive``, ``ingest``, ``token``, ``thought``, ``eoi``, ``deep_start``,
``answer``."""


@dataclass
class EngineConfig:
    """Engine settings.

    Attributes:
        mode: ``batch`` | ``interleaved`` | ``adaptive`` (ignored if ``policy`` is given).
        thought_budget: interleaved budget / adaptive cap, tokens per streaming thought.
        max_deep_tokens: cap on the deep stage (reasoning + answer), tokens.
        temperature: 0 for greedy decoding, else sampling temperature.
        top_p: nucleus sampling mass (1.0 = off).
        top_k: top-k sampling (0 = off).
        seed: base seed; each episode's generator is seeded from it and the episode's seed/id.
        initial_decode_rate: decode tokens/s assumed before the first decode step is measured;
            ``None`` measures it with a few decode steps when the engine starts.
        compact_min_len: compact the cache only when it holds at least this many positions.
        compact_ratio: compact when the fraction of valid (non-padding) positions drops below it.
        policy: an explicit :class:`~adasr.policy.ThoughtPolicy` (overrides ``mode``).
        split_min_waste: when some rows feed a multi-token chunk while others feed one decoded
            token, padding the decode rows to the longest feed costs ``n_decode * (L - 1)``
            wasted token positions; from this many on, the step runs two forwards instead (the
            multi-token rows, then the one-token rows, each on its slice of the cache). The step
            is still one server step: its duration is the sum. ``None``: never split.
        protocol: streaming protocol version (:data:`adasr.protocol.PROTOCOLS`) when no ``fmt``
            is given to the engine; ``None``: :data:`adasr.protocol.UNTRAINED_PROTOCOL` (models
            adasr did not train). :func:`adasr.models.load_model` reports a trained model's
            version as ``LoadedModel.protocol``.
        prefix_cache: serve every session's opening prefix (the system prompt; the same for all
            episodes of an engine) from keys/values computed once per :meth:`StreamingEngine.run`
            instead of prefilling it per episode (prefix caching, as in vLLM's automatic prefix
            caching). Tokens and positions are unchanged; only the compute is saved.
    """

    mode: str = "adaptive"
    thought_budget: int = 64
    max_deep_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    initial_decode_rate: float | None = None
    compact_min_len: int = 256
    compact_ratio: float = 0.5
    policy: ThoughtPolicy | None = None
    split_min_waste: int | None = 16
    protocol: str | None = None
    prefix_cache: bool = True

    def make_policy(self) -> ThoughtPolicy:
        """The policy to use (``policy`` if set, else the one of ``mode``)."""
        return self.policy if self.policy is not None else make_policy(self.mode, budget=self.thought_budget)

    def validate(self) -> None:
        """Raises :class:`ConfigError` for out-of-range values."""
        if self.max_deep_tokens < 1:
            raise ConfigError("max_deep_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ConfigError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0")
        if self.split_min_waste is not None and self.split_min_waste < 1:
            raise ConfigError("split_min_waste must be >= 1 (or None: never split a step)")


@dataclass
class EpisodeInput:
    """One episode to run: an id, its arrival source, and optionally a reference answer and seed."""

    id: str
    source: ArrivalSource
    reference: str | None = None
    seed: int | None = None


@dataclass
class EpisodeResult:
    """A finished episode.

    Attributes:
        id: the input's id.
        record: the metrics record (docs/DESIGN.md field names; ``correct`` is left ``None`` for the
            task's checker to fill).
        episode: the episode with thoughts/deep stage as generated token ids (re-render with
            :meth:`StreamingFormat.render` to get ``token_ids`` back).
        token_ids: every token fed to the model, in order (length T).
        token_stage: per token, 1/2 if the model generated it (streaming thought / deep stage),
            0 otherwise (input, template, or a turn closer the engine forced at a budget).
        thoughts: streaming thoughts as text (``None`` where no assistant turn followed a chunk).
        deep: the deep stage as text.
        events: the event timeline (no per-token events).
    """

    id: str
    record: dict
    episode: Episode
    token_ids: list[int]
    token_stage: list[int]
    thoughts: list[str | None]
    deep: str
    events: list[Event]


@dataclass
class _Gen:
    stage: int
    budget: int
    tokens: list[int] = field(default_factory=list)
    slack_budget: int | None = None


class _Row:
    """The state of one episode in the batch (host side; its KV lives in the shared cache)."""

    def __init__(self, inp: EpisodeInput, engine: "StreamingEngine", t0: float, clock: VirtualClock | RealClock):
        self.inp, self.engine, self.t0, self.clock = inp, engine, t0, clock
        self.fmt, self.policy = engine.format, engine.policy
        self.layout = self.policy.layout
        self.wall0 = time.perf_counter()
        seed = inp.seed if inp.seed is not None else zlib.crc32(inp.id.encode())
        self.generator = torch.Generator().manual_seed(engine.config.seed * 1_000_003 + seed)
        self.pending: list[tuple[int, int]] = [(t, STAGE_INPUT) for t in self.fmt.prefix_ids(self.layout)]
        self.ids: list[int] = []
        self.stage: list[int] = []
        self.pos = 0
        self.waiting: list[Chunk] = []
        self.chunks: list[Chunk] = []
        self.thoughts: list[list[int] | None] = []
        self.gen: _Gen | None = None
        self.deep: list[int] | None = None
        self.answer_turn: list[int] | None = None  # a proactive answer given in a streaming thought
        self.deep_truncated = False
        self.events: list[Event] = []
        self.backlogs: list[float] = []
        self.overrun = 0
        self.first_gen_at_input: int | None = None
        self.eoi_at: float | None = None
        self.first_deep_t: float | None = None
        self.done_t: float | None = None
        self.post_input_tokens = 0
        self.done = False

    # -- time helpers ------------------------------------------------------------------------
    def rel(self, now: float) -> float:
        """Clock time relative to this episode's start (seconds)."""
        return now - self.t0

    def next_wake(self) -> float | None:
        """Absolute clock time of this row's next known arrival, or None."""
        nxt = self.inp.source.next_arrival_s()
        return None if nxt is None else self.t0 + nxt

    def emit(self, ev: Event, keep: bool = True) -> None:
        ev["id"] = self.inp.id
        if keep:
            self.events.append(ev)
        if self.engine.on_event is not None:
            self.engine.on_event(ev)

    # -- planning ----------------------------------------------------------------------------
    def plan(self, now: float, rate: float) -> tuple[list[tuple[int, int]], bool]:
        """Tokens (id, stage) to feed this step and whether they must run now."""
        t = self.rel(now)
        # sources are asked 1 ns late: a clock that jumped to t0 + arrival must see that arrival
        # despite float rounding in the subtraction above
        t_src = t + 1e-9
        for ch in self.inp.source.poll(t_src):
            self.waiting.append(ch)
            self.emit({"type": "arrive", "t": ch.arrival_s, "chunk": ch.index, "text": ch.text})
        feed, self.pending = self.pending, []
        if self.gen is not None:
            if not (self.gen.stage == STAGE_STREAM and self.waiting and self.policy.yield_on_arrival):
                return feed, True
            # the next chunk arrived: close the thought now and ingest it in the same forward
            feed += [(x, STAGE_INPUT) for x in self.fmt.close_ids(generated_stop=False)]
            self._end_turn(self.gen, False, t)
        src = self.inp.source
        if self.waiting:
            ch = self.waiting.pop(0)
            self.backlogs.append(max(0.0, t - ch.arrival_s))
            self.emit({"type": "ingest", "t": t, "chunk": ch.index})
            feed += [(x, STAGE_INPUT) for x in self.fmt.chunk_ids(ch.text, self.layout, first=not self.chunks)]
            self.chunks.append(ch)
            if self.layout == "streaming" and not (src.closed(t_src) and not self.waiting):
                nxt = src.next_arrival_s()
                ctx = PolicyContext(ch.index, t, nxt, len(self.waiting), rate)
                budget = self.policy.thought_budget(ctx)
                feed += [(x, STAGE_INPUT) for x in self.fmt.assistant_header]
                if budget > 0:
                    self.gen = _Gen(STAGE_STREAM, budget, slack_budget=ctx.slack_budget())
                else:  # forced skip: an empty assistant turn the model did not choose
                    self.thoughts.append([])
                    feed += [(x, STAGE_INPUT) for x in self.fmt.close_ids(generated_stop=False)]
            else:  # the stream closed with this chunk: the deep stage starts in the same forward
                if self.layout == "streaming":
                    self.thoughts.append(None)
                if src.closed(t_src) and not self.waiting:
                    feed += self._start_deep(t)
            return feed, True
        if self.deep is None and src.closed(t_src):
            return feed + self._start_deep(t), True
        if feed and not self.ids and t >= 0:
            return feed, True  # the session opens: prefill the system prompt before input arrives
        return feed, False  # idle: leftover closer tokens may ride along with other rows

    def _start_deep(self, t: float) -> list[tuple[int, int]]:
        """Enter the deep stage at end of input; returns the end-of-input ids to feed.

        Raises:
            InputError: if the stream closed before any chunk arrived (empty input).
        """
        if not self.chunks:
            raise InputError(f"the input is empty: stream {self.inp.id!r} closed before any text arrived")
        eoi = self.inp.source.eoi_s()
        self.eoi_at = eoi if eoi is not None else t
        self.emit({"type": "eoi", "t": self.eoi_at})
        self.emit({"type": "deep_start", "t": t})
        self.deep = []
        self.gen = _Gen(STAGE_DEEP, self.engine.config.max_deep_tokens)
        return [(x, STAGE_INPUT) for x in self.fmt.eoi_ids(self.layout, [c.text for c in self.chunks])]

    def fed(self, feed: list[tuple[int, int]]) -> None:
        for tok, st in feed:
            self.ids.append(tok)
            self.stage.append(st)
        self.pos += len(feed)

    # -- after a forward ---------------------------------------------------------------------
    def sample_done(self, tok: int, t_abs: float) -> None:
        """Handle the token sampled for this row at the end of a step (clock time ``t_abs``)."""
        gen, fmt, t = self.gen, self.fmt, self.rel(t_abs)
        if self.first_gen_at_input is None:
            self.first_gen_at_input = sum(1 for s in self.stage if s == STAGE_INPUT)
        if self.eoi_at is not None and t > self.eoi_at or (self.eoi_at is None and self.inp.source.closed(t)):
            self.post_input_tokens += 1
        if gen.stage == STAGE_DEEP and self.first_deep_t is None:
            self.first_deep_t = t
        stop = tok in fmt.stop_ids
        if not stop and gen.stage == STAGE_STREAM and fmt.one_line_thoughts and tok in fmt.newline_ids:
            # a one-line thought ends at its line break: the engine closes the turn
            self.pending = [(x, STAGE_INPUT) for x in fmt.close_ids(generated_stop=False)]
            self._end_turn(gen, True, t)
            return
        if not stop:
            gen.tokens.append(tok)
            self.emit({"type": "token", "t": t, "stage": gen.stage, "token": tok}, keep=False)
        if stop or len(gen.tokens) >= gen.budget:
            self.pending = ([(fmt.end_of_turn_id, gen.stage)] if stop else [(tok, gen.stage)])
            self.pending += [(x, STAGE_INPUT) for x in fmt.close_ids(generated_stop=stop)]
            self._end_turn(gen, stop, t)
        else:
            self.pending = [(tok, gen.stage)]

    def _end_turn(self, gen: _Gen, stopped: bool, t: float) -> None:
        text = self.engine.decode(gen.tokens)
        self.gen = None
        if gen.stage == STAGE_STREAM:
            self.thoughts.append(list(gen.tokens))
            if gen.slack_budget is not None:
                self.overrun += max(0, len(gen.tokens) + int(stopped) - gen.slack_budget)
            self.emit({"type": "thought", "t": t, "chunk": self.chunks[-1].index, "text": text,
                       "tokens": len(gen.tokens) + int(stopped)})
            if not self.policy.commits_answer(text):
                return
            # proactive: the thought is the answer; the episode ends before end of input
            eoi = self.inp.source.eoi_s()
            self.eoi_at = eoi if eoi is not None else t
            self.deep, self.answer_turn = [], list(gen.tokens)
        else:
            self.deep = list(gen.tokens)
        self.deep_truncated = not stopped
        self.done_t = t
        self.done = True
        boxed = find_boxed(text)
        self.emit({"type": "answer", "t": t, "prediction": boxed[-1] if boxed else None, "text": text,
                   "early": self.answer_turn is not None})

    # -- result ------------------------------------------------------------------------------
    def result(self) -> EpisodeResult:
        eng = self.engine
        # complete the sequence with the deep stage's closer (not fed: the episode is over)
        ids, stage = list(self.ids) + [t for t, _ in self.pending], list(self.stage) + [s for _, s in self.pending]
        thoughts_text = [None if th is None else eng.decode(th) for th in self.thoughts]
        deep_text = eng.decode(self.deep or [])
        boxed = find_boxed(deep_text if self.answer_turn is None else eng.decode(self.answer_turn))
        stream_tokens = sum(1 for s in stage if s == STAGE_STREAM)
        deep_tokens = sum(1 for s in stage if s == STAGE_DEEP)
        eoi = self.eoi_at if self.eoi_at is not None else 0.0
        record = {
            "id": self.inp.id,
            "mode": self.policy.name,
            "input_tokens": sum(1 for s in stage if s == STAGE_INPUT),
            "stream_tokens": stream_tokens,
            "deep_tokens": deep_tokens,
            "post_input_tokens": self.post_input_tokens,
            "skipped_chunks": len(self.chunks) - sum(1 for th in self.thoughts if th),
            "n_chunks": len(self.chunks),
            "overrun_tokens": self.overrun,
            "pre_reasoning_wait_tokens": self.first_gen_at_input or 0,
            "post_input_ttft_s": (self.first_deep_t - eoi) if self.first_deep_t is not None else None,
            "post_input_latency_s": (self.done_t - eoi) if self.done_t is not None else None,
            "max_backlog_s": max(self.backlogs, default=0.0),
            "eoi_s": eoi,
            "wall_s": time.perf_counter() - self.wall0,
            "correct": None,
            "prediction": boxed[-1] if boxed else None,
            "reference": self.inp.reference,
            "format_ok": (not self.deep_truncated) and len(boxed) == 1,
        }
        episode = Episode(chunks=[c.text for c in self.chunks], thoughts=list(self.thoughts),
                          deep=list(self.deep or []), layout=self.layout)
        return EpisodeResult(self.inp.id, record, episode, ids, stage, thoughts_text, deep_text, self.events)


class StreamingEngine:
    """Runs streaming episodes on a causal LM with one batched, persistent KV cache.

    Args:
        model: a Hugging Face causal LM (``forward(input_ids, attention_mask, position_ids,
            past_key_values, logits_to_keep)``), in eval mode.
        tokenizer: its tokenizer (with a chat template).
        config: :class:`EngineConfig`.
        fmt: the protocol pieces (default: :func:`adasr.protocol.protocol_format` of
            ``config.protocol``).

    Attributes:
        stats: running counters: ``steps`` (server steps), ``row_steps`` (rows that fed something,
            summed over steps: ``row_steps / steps`` is the mean batch occupancy), ``split_steps``,
            ``compactions``, ``forward_s`` (seconds in forwards), ``tokens_fed`` (real tokens) and
            ``padded_fed`` (token positions the model ran, padding included), ``prefix_hits``
            (sessions opened from the prefix cache).

    Raises:
        ConfigError: for an invalid config; ProtocolError: if the chat template cannot express
            the streaming protocol.
    """

    def __init__(self, model, tokenizer, config: EngineConfig | None = None, fmt: StreamingFormat | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.config = config or EngineConfig()
        self.config.validate()
        self.policy = self.config.make_policy()
        self.format = fmt or protocol_format(tokenizer, self.config.protocol)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.format.end_of_turn_id
        self.on_event: Callable[[Event], None] | None = None
        self.device = next(model.parameters()).device
        self.decode_rate = self.config.initial_decode_rate or self._calibrate()
        self.warpers = self._warpers()
        self.stats = {"steps": 0, "row_steps": 0, "split_steps": 0, "compactions": 0, "forward_s": 0.0,
                      "tokens_fed": 0, "padded_fed": 0, "prefix_hits": 0}
        self._prefix_ids = self.format.prefix_ids(self.policy.layout)
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _warpers(self) -> LogitsProcessorList:
        c = self.config
        procs = LogitsProcessorList()
        if c.temperature > 0:
            if c.temperature != 1.0:
                procs.append(TemperatureLogitsWarper(c.temperature))
            if c.top_k > 0:
                procs.append(TopKLogitsWarper(c.top_k))
            if c.top_p < 1.0:
                procs.append(TopPLogitsWarper(c.top_p))
        return procs

    def _calibrate(self, steps: int = 4) -> float:
        """Measure single-row decode speed (tokens/s) on the batch-layout prefix."""
        ids = torch.tensor([self.format.prefix_ids("batch")], device=self.device)
        cache = StreamingCache()
        with torch.inference_mode():
            out = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            t0 = time.perf_counter()
            for _ in range(steps):
                tok = self.model(input_ids=tok, past_key_values=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
        return steps / max(time.perf_counter() - t0, 1e-6)

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids (special tokens dropped)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ------------------------------------------------------------------------------------------
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

        Args:
            inputs: episodes to run (consumed lazily).
            batch_size: rows sharing one forward per step.
            clock: ``"virtual"`` | ``"real"`` or a clock object, shared by all rows; or
                ``"per-stream"``: a virtual clock per row, charged the measured duration of each
                batched step the row takes part in and jumped to the row's next arrival whenever
                it waits (a server at full load; see the module docstring). Identical to
                ``"virtual"`` at ``batch_size=1``.
            on_event: callback receiving every :data:`Event` (including per-token ones).
            align_eoi: ``False`` (default): continuous batching — every stream starts when it
                gets a row, and a finished row takes the next input at once. ``True``: waves of
                ``batch_size`` streams, each started late enough that all of them reach end of
                input at the same moment (needs sources with a known ``eoi_s``). Deep stages then
                run side by side: the heaviest post-input load a server of N streams can see, and
                the best overlap for evaluation throughput.

        Raises:
            ConfigError: for ``batch_size < 1``, or ``align_eoi`` with per-stream clocks.
            InputError: from a source (e.g. invalid UTF-8 on stdin), or when a live source is
                used with the virtual clock.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        per_stream = clock == PER_STREAM
        if per_stream and align_eoi:
            raise ConfigError("align_eoi needs a shared clock: per-stream clocks have no common end of input")
        clk = make_clock("virtual" if per_stream else clock) if isinstance(clock, str) else clock
        self.on_event = on_event
        self._prefix_kv = None  # computed on first use in this run (the weights may have changed)
        pending_inputs = iter(inputs)
        while True:
            wave = [inp for inp in (next(pending_inputs, None) for _ in range(batch_size)) if inp is not None]
            if not wave:
                return
            now = clk.now()
            if align_eoi:
                eois = [inp.source.eoi_s() for inp in wave]
                if any(e is None for e in eois):
                    raise InputError("align_eoi needs streams whose end of input is known in advance")
                rows = [_Row(inp, self, now + max(eois) - e, clk) for inp, e in zip(wave, eois)]
            else:
                rows = [self._new_row(inp, clk, per_stream) for inp in wave]
            yield from self._run_rows(rows, clk, None if align_eoi else pending_inputs, per_stream)
            if not align_eoi:
                return

    def _new_row(self, inp: EpisodeInput, clk, per_stream: bool) -> _Row:
        """A row starting now: on the shared clock, or at 0 on a clock of its own."""
        return _Row(inp, self, 0.0, VirtualClock()) if per_stream else _Row(inp, self, clk.now(), clk)

    def _plan(self, row: _Row, per_stream: bool) -> tuple[list[tuple[int, int]], bool]:
        """``row.plan`` at the row's clock time; a per-stream row that waits jumps to its next arrival."""
        plan = row.plan(row.clock.now(), self.decode_rate)
        while per_stream and not plan[1]:
            wake = row.next_wake()
            if wake is None or wake <= row.clock.now():
                break
            row.pending = plan[0] + row.pending  # keep deferred tokens
            row.clock.wait_until(wake)
            plan = row.plan(row.clock.now(), self.decode_rate)
        return plan

    def _run_rows(self, rows: list[_Row], clk, refill: Iterator[EpisodeInput] | None,
                  per_stream: bool = False) -> Iterator[EpisodeResult]:
        """Step ``rows`` to completion in one fresh cache; finished rows take inputs from ``refill``."""
        pending_inputs = iter(()) if refill is None else refill
        cache = StreamingCache()
        mask = torch.zeros((len(rows), 0), dtype=torch.long, device=self.device)
        with torch.inference_mode():
            while rows:
                plans = [self._plan(row, per_stream) for row in rows]
                if not any(must for _, must in plans):
                    for row, (feed, _) in zip(rows, plans):
                        row.pending = feed + row.pending  # keep deferred tokens
                    self._wait(rows, clk, per_stream)
                    continue
                feeds = [feed for feed, _ in plans]
                t_start = time.perf_counter()
                mask, run = self._open_from_prefix_cache(rows, feeds, cache, mask)
                logits = None  # stays None when every feed was served from the prefix cache
                if any(run):
                    split = self._split(run, cache)
                    if split is None:
                        mask, logits = self._forward(rows, run, cache, mask)
                    else:  # multi-token feeds first, then the one-token rows (see split_min_waste)
                        mask, logits = self._forward(rows, split[0], cache, mask)
                        mask, decoded = self._forward(rows, split[1], cache, mask)
                        one = [i for i, f in enumerate(split[1]) if f]
                        logits[one] = decoded[one]
                        self.stats["split_steps"] += 1
                dt = time.perf_counter() - t_start
                if per_stream:  # each row is charged the steps it takes part in
                    for row, feed in zip(rows, feeds):
                        if feed:
                            row.clock.advance(dt)
                else:
                    clk.advance(dt)
                if logits is not None and all(len(f) == 1 for f in run if f):
                    self.decode_rate = 0.8 * self.decode_rate + 0.2 / max(dt, 1e-6)  # per-row tokens/s
                self.stats["steps"] += 1
                self.stats["row_steps"] += sum(1 for f in feeds if f)
                self.stats["forward_s"] += dt
                gen_rows = [i for i, r in enumerate(rows) if r.gen is not None and run[i]]
                if gen_rows:
                    toks = self._sample(logits[gen_rows], [rows[i].generator for i in gen_rows])
                    for i, tok in zip(gen_rows, toks):
                        rows[i].sample_done(tok, rows[i].clock.now())
                # finished rows: yield, refill the slot or drop it
                keep = []
                for i, row in enumerate(rows):
                    if not row.done:
                        keep.append(i)
                        continue
                    yield row.result()
                    nxt = next(pending_inputs, None)
                    if nxt is not None:
                        rows[i] = self._new_row(nxt, clk, per_stream)
                        mask[i] = 0
                        keep.append(i)
                if len(keep) < len(rows):
                    rows = [rows[i] for i in keep]
                    if rows:
                        cache.batch_select_indices(torch.tensor(keep, device=self.device))
                        mask = mask[keep]
                if rows:
                    mask = self._maybe_compact(cache, mask)

    def _wait(self, rows: list[_Row], clk, per_stream: bool = False) -> None:
        wakes = [w for w in (r.next_wake() for r in rows) if w is not None]
        if wakes and per_stream:  # float rounding left a row just short of its arrival
            for r in rows:
                wake = r.next_wake()
                if wake is not None:
                    r.clock.wait_until(wake + 1e-9)
            return
        if wakes:
            clk.wait_until(min(wakes))
            return
        if clk.virtual:
            raise InputError("a live input source needs the real clock (use --clock real)")
        for r in rows:  # live sources: block briefly until something arrives
            r.inp.source.wait(0.05)

    def _forward(self, rows: list[_Row], feeds: list[list[tuple[int, int]]], cache: StreamingCache, mask: torch.Tensor):
        """One batched forward. Returns the extended mask and last-real-token logits (B, V)."""
        B, L = len(rows), max(len(f) for f in feeds)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        new_mask = torch.zeros((B, L), dtype=torch.long)
        pos = torch.zeros((B, L), dtype=torch.long)
        last = torch.zeros(B, dtype=torch.long)
        for i, (row, feed) in enumerate(zip(rows, feeds)):
            n = len(feed)
            p0 = row.pos
            if n:
                ids[i, :n] = torch.tensor([t for t, _ in feed])
                new_mask[i, :n] = 1
            pos[i] = torch.arange(p0, p0 + L)
            last[i] = max(n - 1, 0)
            row.fed(feed)
        self.stats["tokens_fed"] += sum(len(f) for f in feeds)
        mask = torch.cat([mask, new_mask.to(self.device)], dim=1)
        active = [i for i, f in enumerate(feeds) if f]
        sliced = len(active) < B and self._can_slice(cache)
        self.stats["padded_fed"] += (len(active) if sliced else B) * L  # positions the model ran
        if not sliced:
            return mask, self._model_logits(ids, mask, pos, last, cache)
        # Rows with nothing to feed sit this step out: the forward runs on the active rows' slice of
        # the cache (views when the rows are contiguous), whose new positions are then taken back;
        # the idle rows get zeros there, masked out.
        full = cache.layers
        cache.layers = [layer.rows(active, L) for layer in full]
        sub = self._model_logits(ids[active], mask[active], pos[active], last[active], cache)
        for layer, part in zip(full, cache.layers):
            layer.merge_rows(part, active)
        cache.layers = full
        logits = sub.new_zeros((B, sub.shape[-1]))
        logits[active] = sub
        return mask, logits

    def _open_from_prefix_cache(self, rows: list[_Row], feeds: list[list[tuple[int, int]]], cache: StreamingCache,
                                mask: torch.Tensor) -> tuple[torch.Tensor, list[list[tuple[int, int]]]]:
        """Serve rows whose session opens this step from the prefix cache (``config.prefix_cache``).

        Their prefix keys/values (computed once per run, batch 1, positions ``0..P-1``) are
        appended to the cache (P new positions: the row's prefix, masked zeros for other rows),
        and the prefix is removed from their feed. Returns the extended mask (B, T + P) and the
        feeds left for the forward.
        """
        if not self.config.prefix_cache:
            return mask, feeds
        P = len(self._prefix_ids)
        hit = [i for i, (row, f) in enumerate(zip(rows, feeds))
               if row.pos == 0 and len(f) >= P and [t for t, _ in f[:P]] == self._prefix_ids]
        if not hit:
            return mask, feeds
        if self._prefix_kv is None:
            ids = torch.tensor([self._prefix_ids], device=self.device)
            own = StreamingCache()
            self.model(input_ids=ids, past_key_values=own, use_cache=True, logits_to_keep=1)
            self._prefix_kv = [(layer.keys.clone(), layer.values.clone()) for layer in own.layers]
        idx = torch.tensor(hit, device=self.device)
        for layer_idx, (k, v) in enumerate(self._prefix_kv):
            new_k, new_v = k.new_zeros((len(rows), *k.shape[1:])), v.new_zeros((len(rows), *v.shape[1:]))
            new_k[idx], new_v[idx] = k, v
            cache.update(new_k, new_v, layer_idx)
        new_mask = torch.zeros((len(rows), P), dtype=torch.long, device=self.device)
        new_mask[idx] = 1
        for i in hit:
            rows[i].fed(feeds[i][:P])
        self.stats["prefix_hits"] += len(hit)
        return torch.cat([mask, new_mask], dim=1), [f[P:] if i in hit else f for i, f in enumerate(feeds)]

    def _split(self, feeds: list[list[tuple[int, int]]], cache: StreamingCache):
        """``(multi-token feeds, one-token feeds)`` when a step is worth splitting, else None."""
        if self.config.split_min_waste is None:
            return None
        L = max(len(f) for f in feeds)
        n_one = sum(len(f) == 1 for f in feeds)
        if L < 2 or n_one == 0 or n_one * (L - 1) < self.config.split_min_waste or not self._can_slice(cache):
            return None
        return [f if len(f) > 1 else [] for f in feeds], [f if len(f) == 1 else [] for f in feeds]

    @staticmethod
    def _can_slice(cache: StreamingCache) -> bool:
        """Row slicing needs the engine's full-attention layers (:class:`GrowableLayer`), initialised."""
        return bool(cache.layers) and all(type(layer) is GrowableLayer and layer.is_initialized for layer in cache.layers)

    def _model_logits(self, ids, mask, pos, last, cache) -> torch.Tensor:
        """Forward ``ids`` (R, L) and return the logits at each row's last real token (R, V)."""
        R, L = ids.shape
        keep_idx = torch.unique(last)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask,
            position_ids=pos.to(self.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=keep_idx.to(self.device) if L > 1 else 1,
        )
        logits = out.logits  # (R, K, V)
        if L > 1:
            col = torch.searchsorted(keep_idx, last)
            logits = logits[torch.arange(R), col.to(logits.device)]
        else:
            logits = logits[:, -1]
        return logits.float()

    def _sample(self, logits: torch.Tensor, generators: list[torch.Generator]) -> list[int]:
        """Greedy or sampled next tokens for rows ``logits`` (R, V)."""
        if self.config.temperature == 0:
            return logits.argmax(-1).tolist()
        scores = self.warpers(None, logits.cpu())
        probs = torch.softmax(scores, dim=-1)
        return [int(torch.multinomial(p, 1, generator=g)) for p, g in zip(probs, generators)]

    def _maybe_compact(self, cache: StreamingCache, mask: torch.Tensor) -> torch.Tensor:
        """Gather padding out of the cache when it dominates. Returns the new mask (B, T')."""
        B, T = mask.shape
        if T < self.config.compact_min_len or mask.sum().item() >= self.config.compact_ratio * B * T:
            return mask
        counts = mask.sum(1)
        width = int(counts.max().item())
        # left-aligned padding in the compacted cache: order of valid positions is preserved
        idx = torch.zeros((B, width), dtype=torch.long, device=mask.device)
        new_mask = torch.zeros((B, width), dtype=torch.long, device=mask.device)
        for b in range(B):
            valid = mask[b].nonzero().squeeze(1)
            n = valid.numel()
            if n:
                idx[b, width - n:] = valid
                idx[b, : width - n] = valid[0]
                new_mask[b, width - n:] = 1
        for layer in cache.layers:
            k = layer.keys
            gi = idx[:, None, :, None].expand(B, k.shape[1], width, k.shape[3])
            layer.keys = torch.gather(k, 2, gi)
            layer.values = torch.gather(layer.values, 2, gi)
        self.stats["compactions"] += 1
        return new_mask


def run_episode(engine: StreamingEngine, inp: EpisodeInput, **kwargs) -> EpisodeResult:
    """Run a single episode and return its result (convenience over :meth:`StreamingEngine.run`)."""
    return next(iter(engine.run([inp], batch_size=1, **kwargs)))
