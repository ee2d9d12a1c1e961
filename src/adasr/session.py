"""One streaming episode in the engine: its state machine, in token ids and typed events.

A :class:`Session` is the host-side state of one episode (its keys/values live in a row of the
runner's shared KV cache; the session holds no pointer to the engine). Each step the scheduler
asks it what to feed (:meth:`Session.plan`): it polls its source, ingests the next waiting chunk
(asking the policy for the thought budget), starts the deep stage at end of input, or feeds the
token it sampled last. After the forward it is handed its sampled token
(:meth:`Session.on_token`), which may end a thought, the deep stage or the episode.

Its :class:`SessionStatus` says what it is doing::

    WAITING ──▶ INGESTING ──▶ WAITING ──▶ THINKING ──▶ WAITING ... ──▶ DEEP ──▶ FINISHED
       (any status) ──abort──▶ ABORTED

* ``WAITING`` — nothing to feed: waiting for a row, or for the next chunk to arrive (leftover
  turn-closer tokens may ride along in other sessions' steps);
* ``INGESTING`` — feeding input the model did not generate: the system prompt, a chunk's turn
  (with a forced skip or no thought after it);
* ``THINKING`` — generating a streaming thought (the step that ingests its chunk included);
* ``DEEP`` — generating the deep stage (the step that feeds the end-of-input turn included);
* ``FINISHED`` — the answer is complete; ``ABORTED`` — dropped by :meth:`StreamingEngine.abort`.

Why it ended is its :class:`FinishReason` (the shape of vLLM's ``FINISHED_STOPPED`` /
``FINISHED_LENGTH_CAPPED`` / ``FINISHED_ABORTED`` request statuses): ``stopped`` (the model ended
its answer), ``length_capped`` (the deep stage reached ``max_deep_tokens``), ``answered_early`` (a
proactive response committed the answer before end of input) or ``aborted``. Records and the
``answer`` event carry it.

Token-level rules (docs/DESIGN.md, "Streaming protocol"): a thought ends when the model ends its
turn, at its budget (the engine forces the closer), at its first line break with one-line
thoughts (``Protocol.one_line_thoughts``), or — with ``policy.yield_on_arrival`` — when the next
chunk (or the end of a live input) arrives. A policy that holds turns (:meth:`~adasr.policy.ThoughtPolicy.holds_turn`:
the adaptive policy in the middle of a step, the proactive one inside a response) keeps the
thought open past both, up to its ``thought_budget``.

Proactive policies: a streaming thought that commits an answer (a **response**) ends the episode,
or, with ``policy.revisions > 0``, leaves it listening (``WAITING``) with the answer committed: a
later response with another answer revises it, the last allowed revision or the end of input ends
the episode, and no deep stage runs (docs/DESIGN.md, "Revisions").
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, NamedTuple, Sequence

import torch

from adasr.errors import InputError
from adasr.events import Answer, Arrive, DeepStart, Eoi, Event, Ingest, Response, Thought, Token
from adasr.policy import PolicyContext, ThoughtPolicy
from adasr.protocol import Stage, StreamingFormat, find_boxed, same_answer
from adasr.sampling import SamplingParams
from adasr.stream import ArrivalSource, Chunk, RealClock, VirtualClock


@dataclass
class EpisodeInput:
    """One episode to run: an id, its arrival source, and optionally a reference answer, a seed
    and, for proactive streams, the evidence chunk (0-based index of the earliest chunk after
    which the answer is determined; recorded for the proactive metrics)."""

    id: str
    source: ArrivalSource
    reference: str | None = None
    seed: int | None = None
    evidence_chunk: int | None = None

Feed = list[tuple[int, int]]
"""Tokens to feed, as ``(token id, stage)`` pairs."""


class Plan(NamedTuple):
    """A session's part of the next step (:meth:`Session.plan`).

    Attributes:
        feed: the tokens to feed.
        must_run: whether they must run now (``False``: the session is idle; they may ride along
            with other sessions' steps, or wait).
        restart: the session's KV cache starts over before ``feed`` (a fresh deep-stage context,
            ``Protocol.fresh_deep``): ``feed`` opens a new context at position 0.
    """

    feed: Feed
    must_run: bool
    restart: bool = False


class SessionStatus(Enum):
    """What a session is doing (see the module docstring)."""

    WAITING = "waiting"
    INGESTING = "ingesting"
    THINKING = "thinking"
    DEEP = "deep"
    FINISHED = "finished"
    ABORTED = "aborted"

    @property
    def ended(self) -> bool:
        """FINISHED or ABORTED: the session feeds nothing more."""
        return self in (SessionStatus.FINISHED, SessionStatus.ABORTED)


class FinishReason(Enum):
    """Why a session ended (as vLLM's finished request statuses); the value is the one records
    (``finish_reason``) and events carry."""

    STOPPED = "stopped"
    """The model ended the turn that holds the answer (its end-of-turn token): the deep stage."""
    LENGTH_CAPPED = "length_capped"
    """The deep stage reached its cap (``max_deep_tokens``) before the model ended it."""
    ANSWERED_EARLY = "answered_early"
    """A proactive response committed the answer before end of input (the episode then ends with
    it, at once or, with revisions, at end of input); no deep stage ran."""
    ABORTED = "aborted"
    """Dropped (:meth:`adasr.engine.StreamingEngine.abort`: a client gone, a timeout); no record."""


class _Response(NamedTuple):
    """A committed proactive answer: the chunk it followed, its session time, the answer, and
    whether the model ended its thought itself (``False``: cut by its budget or an arrival)."""

    chunk: int
    t: float
    prediction: str | None
    stopped: bool


@dataclass
class _Turn:
    """The assistant turn being generated: its budget and tokens, and how much of its text
    :class:`~adasr.events.Token` events have reported (incremental decoding)."""

    budget: int
    slack_budget: int | None = None
    tokens: list[int] = field(default_factory=list)
    text_from: int = 0  # tokens[text_from:text_to] decode to the last reported text's tail
    text_to: int = 0


class Session:
    """The state of one episode (see the module docstring).

    Args:
        inp: the episode (id, source, reference, seed).
        fmt: the protocol pieces.
        policy: the thought-budget policy.
        max_deep_tokens: cap on the deep stage, tokens.
        seed: the engine's base seed (the sampling generator is seeded from it and the episode).
        decode: text of token ids (special tokens dropped).
        on_event: called with every event as it happens (per-token ones included).
        sampling: this episode's :class:`~adasr.sampling.SamplingParams`; ``None``: the engine's.
        revision_sampling: the settings of its turns after a committed proactive answer (a
            stricter commit threshold for revisions, :meth:`adasr.engine.EngineConfig.revision_sampling`);
            ``None``: ``sampling``.

    Attributes:
        status: :class:`SessionStatus`.
        finish_reason: :class:`FinishReason` once the session ended, else ``None``.
        t0: clock time at which the stream started (set at admission, :meth:`start`).
        events: the event timeline kept for the result (no per-token events).
    """

    def __init__(self, inp: "EpisodeInput", fmt: StreamingFormat, policy: ThoughtPolicy, *, max_deep_tokens: int,
                 seed: int, decode: Callable[[Sequence[int]], str], on_event: Callable[[Event], None] | None = None,
                 sampling: SamplingParams | None = None, revision_sampling: SamplingParams | None = None):
        self.inp, self.id, self.fmt, self.policy = inp, inp.id, fmt, policy
        self.layout = policy.layout
        self.max_deep_tokens = max_deep_tokens
        self.decode, self.on_event = decode, on_event
        self.first_sampling, self.revision_sampling = sampling, revision_sampling
        episode_seed = inp.seed if inp.seed is not None else zlib.crc32(inp.id.encode())
        self.generator = torch.Generator().manual_seed((seed * 1_000_003 + episode_seed) % 2**64)  # any int
        self.status = SessionStatus.WAITING
        self.finish_reason: FinishReason | None = None
        self.t0 = 0.0
        self.clock: VirtualClock | RealClock | None = None
        self.wall0 = time.perf_counter()
        self.pending: Feed = [(t, Stage.INPUT) for t in fmt.prefix_ids(self.layout)]
        self.ids: list[int] = []  # every token fed so far
        self.stage: list[int] = []  # their stages
        self.waiting: list[Chunk] = []  # arrived, not yet ingested
        self.chunks: list[Chunk] = []  # ingested
        self.thoughts: list[list[int] | None] = []
        self.turn: _Turn | None = None  # the turn being generated (THINKING / DEEP)
        self.deep: list[int] = []
        self.answer_text = ""
        # proactive: each committed answer: the first response, then revisions
        self.responses: list[_Response] = []
        self.events: list[Event] = []
        self.backlogs: list[float] = []
        self.overrun = 0
        self.first_gen_at_input: int | None = None
        self.eoi_at: float | None = None
        self.first_deep_t: float | None = None
        self.done_t: float | None = None
        self.post_input_tokens = 0

    @property
    def sampling(self) -> SamplingParams | None:
        """The settings the next token is drawn with (``None``: the engine's): ``revision_sampling``
        once an answer is committed (if set), else ``sampling``."""
        if self.responses and self.revision_sampling is not None:
            return self.revision_sampling
        return self.first_sampling

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, t0: float, clock: VirtualClock | RealClock) -> None:
        """Admission: the stream starts at clock time ``t0`` on ``clock``."""
        self.t0, self.clock, self.wall0 = t0, clock, time.perf_counter()

    def abort(self) -> None:
        """Drop the session (:attr:`finish_reason` ``ABORTED``)."""
        self.status, self.finish_reason = SessionStatus.ABORTED, FinishReason.ABORTED

    @property
    def answer_chunk(self) -> int | None:
        """The chunk after which the committed answer came (the last response's), or ``None``."""
        return self.responses[-1].chunk if self.responses else None

    @property
    def answer_complete(self) -> bool:
        """Whether the model ended the turn that holds the answer itself: the deep stage
        ``stopped``, or, answered early, the thought of the last committed response (not cut by
        its budget or an arrival). ``False`` before the session finished."""
        if self.finish_reason is FinishReason.ANSWERED_EARLY:
            return self.responses[-1].stopped
        return self.finish_reason is FinishReason.STOPPED

    @property
    def token_ids(self) -> list[int]:
        """Every token of the episode: those fed, then those left pending (the closer of the last
        turn, never fed because the episode is over)."""
        return self.ids + [t for t, _ in self.pending]

    @property
    def token_stage(self) -> list[int]:
        """The stage of each of :attr:`token_ids`."""
        return self.stage + [s for _, s in self.pending]

    # -- time helpers ------------------------------------------------------------------------
    def rel(self, now: float) -> float:
        """Clock time relative to this episode's start (seconds)."""
        return now - self.t0

    def next_wake(self) -> float | None:
        """Absolute clock time of this session's next known arrival, or None."""
        nxt = self.inp.source.next_arrival_s()
        return None if nxt is None else self.t0 + nxt

    def emit(self, ev: Event, keep: bool = True) -> None:
        if keep:
            self.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    # -- planning ----------------------------------------------------------------------------
    def plan(self, now: float, rate: float) -> Plan:
        """This session's part of the step at clock time ``now`` (``rate``: the engine's decode
        rate, tokens/s): the tokens to feed, whether they must run now (``False``: idle, they may
        ride along) and whether its cache starts over first (:class:`Plan`)."""
        S = SessionStatus
        t = self.rel(now)
        # sources are asked 1 ns late: a clock that jumped to t0 + arrival must see that arrival
        # despite float rounding in the subtraction above
        t_src = t + 1e-9
        for ch in self.inp.source.poll(t_src):
            self.waiting.append(ch)
            self.emit(Arrive(ch.arrival_s, self.id, ch.index, ch.text))
        feed, self.pending = self.pending, []
        # a yielding policy also yields to end of input: a live source closes after its last chunk
        # was ingested (a scheduled one closes with it, and no thought follows that chunk)
        arrived = self.waiting or (self.status is S.THINKING and self.inp.source.closed(t_src))
        if self.status is S.DEEP or (self.status is S.THINKING and not (arrived and self.policy.yield_on_arrival
                                                                       and not self.holding())):
            return Plan(feed, True)
        if self.status is S.THINKING:  # the next chunk (or EOI) arrived: close the thought, ingest it in the same forward
            feed += [(x, Stage.INPUT) for x in self.fmt.close_ids(generated_stop=False)]
            self._end_turn(False, t)
            if self.status is S.FINISHED:  # a proactive policy took the thought as the answer
                self.pending = feed
                return Plan([], False)
        src = self.inp.source
        if self.waiting:
            ch = self.waiting.pop(0)
            self.backlogs.append(max(0.0, t - ch.arrival_s))
            self.emit(Ingest(t, self.id, ch.index))
            feed += [(x, Stage.INPUT) for x in self.fmt.chunk_ids(ch.text, self.layout, first=not self.chunks)]
            self.chunks.append(ch)
            closes = src.closed(t_src) and not self.waiting  # the stream closed with this chunk
            if self.layout == "streaming" and not closes:
                ctx = PolicyContext(ch.index, t, src.next_arrival_s(), len(self.waiting), rate,
                                    tuple(c.arrival_s for c in self.chunks + self.waiting))
                budget = self.policy.budget_for(ctx)
                feed += [(x, Stage.INPUT) for x in self.fmt.assistant_header]
                if budget > 0:
                    self.turn, self.status = _Turn(budget, slack_budget=ctx.slack_budget()), S.THINKING
                else:  # forced skip: an empty assistant turn the model did not choose
                    self.thoughts.append([])
                    feed += [(x, Stage.INPUT) for x in self.fmt.close_ids(generated_stop=False)]
                    self.status = S.INGESTING
                return Plan(feed, True)
            if self.layout == "streaming":
                self.thoughts.append(None)
            if closes:  # the deep stage starts in the same forward
                return self._end_of_input(t, feed)
            self.status = S.INGESTING
            return Plan(feed, True)
        if src.closed(t_src):
            return self._end_of_input(t, feed)
        if feed and not self.ids and t >= 0:
            self.status = S.INGESTING  # the session opens: prefill the system prompt before input arrives
            return Plan(feed, True)
        self.status = S.WAITING  # idle: leftover closer tokens may ride along with other sessions
        return Plan(feed, False)

    def defer(self, feed: Feed) -> None:
        """Put back tokens that a step did not feed (they go first next time)."""
        self.pending = feed + self.pending

    def _end_of_input(self, t: float, feed: Feed) -> Plan:
        """End of input at session time ``t``: the deep stage starts (:meth:`_start_deep`), unless a
        proactive answer is already committed (a session listening for revisions): then the
        episode ends with it, and ``feed`` is left pending, never fed. Returns :meth:`plan`'s plan."""
        if not self.responses:
            return self._start_deep(t, feed)
        eoi = self.inp.source.eoi_s()
        self.eoi_at = eoi if eoi is not None else t
        self.emit(Eoi(self.eoi_at, self.id))
        self.pending = feed
        self._finish(t, FinishReason.ANSWERED_EARLY)
        return Plan([], False)

    def _start_deep(self, t: float, feed: Feed) -> Plan:
        """Enter the deep stage at end of input; the plan feeds ``feed`` (tokens still to feed)
        followed by the end-of-input ids. With a ``fresh_deep`` protocol the row's cache starts
        over instead (``Plan.restart``): the feed is the deep stage's fresh context alone.

        Raises:
            InputError: if the stream closed before any chunk arrived (empty input).
        """
        if not self.chunks:
            raise InputError(f"the input is empty: stream {self.id!r} closed before any text arrived")
        eoi = self.inp.source.eoi_s()
        self.eoi_at = eoi if eoi is not None else t
        self.emit(Eoi(self.eoi_at, self.id))
        self.emit(DeepStart(t, self.id))
        self.turn, self.status = _Turn(self.max_deep_tokens), SessionStatus.DEEP
        chunks = [c.text for c in self.chunks]
        if self.fmt.protocol.fresh_deep and self.layout == "streaming":
            notes = [self.decode(th) for th in self.thoughts if th]
            return Plan([(x, Stage.INPUT) for x in self.fmt.fresh_deep_ids(chunks, notes)], True, restart=True)
        return Plan(feed + [(x, Stage.INPUT) for x in self.fmt.eoi_ids(self.layout, chunks)], True)

    def fed(self, feed: Feed) -> None:
        """Record tokens the runner fed."""
        for tok, st in feed:
            self.ids.append(tok)
            self.stage.append(st)

    # -- after a forward ---------------------------------------------------------------------
    @property
    def generating(self) -> bool:
        """THINKING or DEEP: the step's logits give this session its next token."""
        return self.status in (SessionStatus.THINKING, SessionStatus.DEEP)

    def on_token(self, tok: int, now: float) -> None:
        """Handle the token sampled for this session at the end of a step (clock time ``now``)."""
        turn, fmt, t = self.turn, self.fmt, self.rel(now)
        stage = Stage.DEEP if self.status is SessionStatus.DEEP else Stage.STREAM
        if self.first_gen_at_input is None:
            self.first_gen_at_input = sum(1 for s in self.stage if s == Stage.INPUT)
        if self.eoi_at is not None and t > self.eoi_at or (self.eoi_at is None and self.inp.source.closed(t)):
            self.post_input_tokens += 1
        if stage == Stage.DEEP and self.first_deep_t is None:
            self.first_deep_t = t
        stop = tok in fmt.stop_ids
        if not stop and stage == Stage.STREAM and fmt.protocol.one_line_thoughts and tok in fmt.newline_ids:
            # a one-line thought ends at its line break: the engine closes the turn
            self.pending = [(x, Stage.INPUT) for x in fmt.close_ids(generated_stop=False)]
            self._end_turn(True, t)
            return
        if not stop:
            turn.tokens.append(tok)
            self.emit(Token(t, self.id, stage, tok, self._new_text(turn)), keep=False)
        # (the policy is asked whether it holds the turn only once the turn's own budget is reached)
        if stop or (len(turn.tokens) >= turn.budget and len(turn.tokens) >= self.turn_budget()):
            self.pending = [(fmt.end_of_turn_id, stage)] if stop else [(tok, stage)]
            self.pending += [(x, Stage.INPUT) for x in fmt.close_ids(generated_stop=stop)]
            self._end_turn(stop, t)
        else:
            self.pending = [(tok, stage)]

    def holding(self) -> bool:
        """Whether the streaming thought being generated is held open by the policy
        (:meth:`~adasr.policy.ThoughtPolicy.holds_turn`: e.g. a proactive response half written)."""
        if self.status is not SessionStatus.THINKING or not self.policy.holds_turns:
            return False
        return self.policy.holds_every_turn or self.policy.holds_turn(self.decode(self.turn.tokens))

    def turn_budget(self) -> int:
        """Tokens the current turn may take: its budget, or the policy's ``thought_budget`` cap while
        the policy holds the thought open (:meth:`holding`)."""
        budget = self.turn.budget
        if self.holding():
            budget = max(budget, getattr(self.policy, "thought_budget", budget))
        return budget

    def _new_text(self, turn: _Turn) -> str:
        """The text the turn's last token adds (incremental detokenization, as in vLLM: decode a
        short window twice; a window ending inside a multi-byte character reports nothing yet)."""
        seen = self.decode(turn.tokens[turn.text_from:turn.text_to])
        text = self.decode(turn.tokens[turn.text_from:])
        if len(text) <= len(seen) or text.endswith("\ufffd"):
            return ""
        turn.text_from, turn.text_to = turn.text_to, len(turn.tokens)
        return text[len(seen):]

    def _end_turn(self, stopped: bool, t: float) -> None:
        """The generated turn ended (``stopped``: the model ended it itself)."""
        turn, text = self.turn, self.decode(self.turn.tokens)
        self.turn = None
        if self.status is SessionStatus.THINKING:
            self.thoughts.append(list(turn.tokens))
            if turn.slack_budget is not None:
                self.overrun += max(0, len(turn.tokens) + int(stopped) - turn.slack_budget)
            self.emit(Thought(t, self.id, self.chunks[-1].index, text, len(turn.tokens) + int(stopped)))
            self.status = SessionStatus.WAITING
            if not self.policy.commits_answer(text):
                return
            # proactive: the thought is a response; it commits the answer before end of input
            boxed = find_boxed(text)
            prediction, chunk = (boxed[-1] if boxed else None), self.chunks[-1].index
            if self.responses and same_answer(prediction, self.responses[-1].prediction):
                return  # a confirmation of the committed answer: nothing changes
            revision = len(self.responses)
            self.responses.append(_Response(chunk, t, prediction, stopped))
            self.emit(Response(t, self.id, chunk, prediction, text, revision))
            self.done_t, self.answer_text = t, text
            if revision < self.policy.revisions:
                return  # keep listening: a later response may revise it
            eoi = self.inp.source.eoi_s()
            self.eoi_at = eoi if eoi is not None else t
            self._finish(t, FinishReason.ANSWERED_EARLY)
        else:
            self.deep = list(turn.tokens)
            self.done_t, self.answer_text = t, text
            self._finish(t, FinishReason.STOPPED if stopped else FinishReason.LENGTH_CAPPED)

    def _finish(self, t: float, reason: FinishReason) -> None:
        """The episode ends at session time ``t`` for ``reason`` with :attr:`answer_text` as its answer."""
        self.status, self.finish_reason = SessionStatus.FINISHED, reason
        boxed = find_boxed(self.answer_text)
        self.emit(Answer(t, self.id, boxed[-1] if boxed else None, self.answer_text, reason.value))
