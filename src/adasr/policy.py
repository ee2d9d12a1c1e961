"""Thought-budget policies: how much the model may think after each chunk.

A policy is a small object the engine asks once per ingested chunk. It never touches the KV
cache; it only returns the token budget of the thought after that chunk (0 = forced skip). Its
setting ``thought_budget`` is the most tokens a thought may take (``--budget`` on the command
line). Modes (docs/DESIGN.md):

* ``batch`` — read-then-think: no streaming thoughts (batch layout).
* ``interleaved`` — a thought after every chunk with a fixed budget (StreamingThinker-like).
* ``adaptive`` — the model decides (it may end its turn at once: a skip), with the budget capped by
  the arrival slack: ``min(thought_budget, slack_s * decode_rate)`` (docs/DESIGN.md, "Latency
  model"), where ``decode_rate`` is the engine-wide decode rate (measured, or pinned by
  ``EngineConfig.decode_rate``). A thought is never cut in the middle of a step: at its budget or
  when the next chunk arrives it runs on to the end of its step (a bounded overrun), and a backlog
  of arrived chunks shortens later thoughts to one step instead (docs/DESIGN.md, "Slower, never
  wrong").

A ``proactive`` policy (answer before end of input) fits by subclassing :class:`ThoughtPolicy`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from adasr.defaults import DEFAULT_THOUGHT_BUDGET
from adasr.errors import ConfigError
from adasr.protocol import is_response

_STEP_END = re.compile(r"(?:[.!?]|\n)[\s\"')\]]*$")


@dataclass(frozen=True)
class PolicyContext:
    """What a policy sees when a chunk has just been scheduled for ingestion.

    Attributes:
        chunk_index: index of the chunk (0-based).
        now_s: current time on the session clock (seconds since the stream started).
        next_arrival_s: arrival time of the next chunk if known, else ``None`` (live source, or
            the chunk is the last one known so far).
        pending_chunks: chunks that have already arrived and wait behind this one.
        decode_tokens_per_s: the engine-wide decode rate, tokens per second of one row: measured
            by the engine (calibrated at start, then a moving average over decode steps), or
            pinned by ``EngineConfig.decode_rate``. The same for every row of a step.
        arrivals_s: arrival times (seconds since the stream started) of every chunk that has
            arrived so far, this one and the waiting ones included, in order. A live source's
            next arrival is estimated from them (:attr:`expected_next_arrival_s`).
    """

    chunk_index: int
    now_s: float
    next_arrival_s: float | None
    pending_chunks: int
    decode_tokens_per_s: float
    arrivals_s: tuple[float, ...] = ()

    @property
    def expected_next_arrival_s(self) -> float | None:
        """The next arrival, seconds: known (:attr:`next_arrival_s`), else estimated from the
        arrivals seen: the last one plus the mean gap between consecutive arrivals (with one
        arrival seen, the time it took to arrive from the start). ``None`` when nothing is known."""
        if self.next_arrival_s is not None:
            return self.next_arrival_s
        a = self.arrivals_s
        if not a:
            return None
        gap = (a[-1] - a[0]) / (len(a) - 1) if len(a) > 1 else a[0]
        return a[-1] + max(0.0, gap)

    @property
    def slack_s(self) -> float | None:
        """Seconds until the next chunk arrives (0 if one is already waiting; estimated for a live
        source, :attr:`expected_next_arrival_s`), or ``None`` if nothing is known."""
        if self.pending_chunks > 0:
            return 0.0
        nxt = self.expected_next_arrival_s
        if nxt is None:
            return None
        return max(0.0, nxt - self.now_s)

    @property
    def backlog_s(self) -> float:
        """Seconds this chunk waited from its arrival to now (0 if its arrival is not in
        :attr:`arrivals_s`)."""
        if self.chunk_index < len(self.arrivals_s):
            return max(0.0, self.now_s - self.arrivals_s[self.chunk_index])
        return 0.0

    def slack_budget(self) -> int | None:
        """Tokens that fit in the slack at the measured decode rate, or ``None`` if unknown."""
        slack = self.slack_s
        return None if slack is None else int(math.floor(slack * self.decode_tokens_per_s))


class ThoughtPolicy:
    """Base policy. Subclasses set ``name``/``layout`` and override :meth:`budget_for`."""

    name = "base"
    layout = "streaming"
    yield_on_arrival = False
    """If True, a streaming thought is closed as soon as the next chunk arrives."""

    revisions = 0
    """Proactive: how many times a committed answer may be revised (:class:`ProactivePolicy`)."""

    def budget_for(self, ctx: PolicyContext) -> int:
        """Token budget of the streaming thought after ``ctx.chunk_index`` (0: forced skip)."""
        raise NotImplementedError

    def commits_answer(self, thought: str) -> bool:
        """Proactive hook: True ends the episode with this streaming thought as the answer,
        before end of input (its last ``\\boxed{}`` is the prediction). Default: never."""
        return False

    holds_turns = False  # True: the session asks :meth:`holds_turn` (decoding the thought) when the turn's
    # budget is reached or a chunk arrives
    holds_every_turn = False  # True (with holds_turns): every thought is held whatever its text, so the
    # session decodes nothing to ask, and a backend may request up to thought_budget tokens at once

    def holds_turn(self, text: str) -> bool:
        """Whether the thought whose text so far is ``text`` may run past its slack budget (up to
        ``thought_budget`` tokens) and must not yield to an arriving chunk. Asked only when
        :attr:`holds_turns` is set. Default: never."""
        return False


class BatchPolicy(ThoughtPolicy):
    """Read-then-think baseline: chunks are prefilled as they arrive, no thoughts."""

    name, layout = "batch", "batch"

    def budget_for(self, ctx: PolicyContext) -> int:
        return 0


@dataclass
class InterleavedPolicy(ThoughtPolicy):
    """A thought after every chunk with a fixed budget (``thought_budget`` tokens), whatever the slack."""

    thought_budget: int = DEFAULT_THOUGHT_BUDGET
    name = "interleaved"

    def budget_for(self, ctx: PolicyContext) -> int:
        return self.thought_budget


@dataclass
class AdaptivePolicy(ThoughtPolicy):
    """Slack-sized thoughts that are never cut in the middle of a step (ours; docs/DESIGN.md,
    "Slower, never wrong").

    Budget ``max(1, min(thought_budget, floor(slack_s * decode_rate)))`` tokens (0 when
    ``thought_budget`` is 0), where ``slack_s`` is the time to the next arrival: known for a
    scheduled stream, estimated from the arrivals seen for a live one
    (:attr:`PolicyContext.expected_next_arrival_s`), 0 while arrived chunks wait (a backlog). The
    model may stop earlier by ending its turn (an empty turn is a skip). A thought still running
    when its budget is spent or the next chunk arrives is closed at the end of its current step
    (:func:`step_complete`: a line or a sentence), never inside it: it may overrun its budget up to
    ``thought_budget`` tokens while the arrived chunks wait, and the backlog then shortens the
    later thoughts to at most one step each. So a machine slower than the budgets assume answers
    later, not wrong: before this design a thought was closed the moment a chunk arrived
    ("7 + 5 = "), and a busy machine turned a correct streamer into a wrong one (RESULTS.md
    section 25).

    ``unknown_slack_budget`` tokens are allowed when nothing is known of the arrivals (never the
    case once a chunk has arrived).

    ``skip_backlog_s`` (the latency knob of RESULTS.md section 25; default ``None``: off): when a
    chunk has waited at least this many seconds and later chunks wait behind it, its thought is
    skipped (budget 0) instead of shortened to one step, so the waiting chunks are ingested
    together and the next thought covers them. It trades thoughts for latency on a machine that
    cannot keep up: the backlog is worked off by ingestion (one prefill) instead of one thought
    per chunk."""

    thought_budget: int = DEFAULT_THOUGHT_BUDGET
    unknown_slack_budget: int = 32
    skip_backlog_s: float | None = None
    name = "adaptive"
    yield_on_arrival = True
    holds_turns = True

    def slack_sized_budget(self, ctx: PolicyContext) -> int:
        """``min(thought_budget, floor(slack_s * decode_rate))`` tokens (``unknown_slack_budget`` in
        place of the slack's tokens when nothing is known of the arrivals); 0 when chunks wait."""
        slack = ctx.slack_budget()
        return min(self.thought_budget, self.unknown_slack_budget if slack is None else slack)

    def budget_for(self, ctx: PolicyContext) -> int:
        if self.thought_budget <= 0:
            return 0
        if self.skip_backlog_s is not None and ctx.pending_chunks > 0 and ctx.backlog_s >= self.skip_backlog_s:
            return 0
        return max(1, self.slack_sized_budget(ctx))

    def holds_turn(self, text: str) -> bool:
        """A thought in the middle of a step is held open (:func:`step_complete`)."""
        return not step_complete(text)


def step_complete(text: str) -> bool:
    """Whether a streaming thought's text so far ends at a step boundary: it is empty (nothing
    written yet), or it ends with a line break or a sentence end (``.``, ``!``, ``?``, possibly
    followed by closing quotes, brackets or spaces). ``"7 + 5 = "``, ``" "`` and ``"\\n"`` (a step begun,
    nothing written) are not complete; ``"7 + 5 = 12."`` is."""
    return not text or (bool(text.strip()) and _STEP_END.search(text) is not None)


@dataclass
class ProactivePolicy(AdaptivePolicy):
    """Proactive streaming (after StreamPro; docs/DESIGN.md "Proactive streaming (ours)"): after
    each chunk the model stays silent (an empty turn: a skip), writes a one-line note, or
    **responds** with ``\\boxed{answer}``, which commits the answer and ends the episode before
    end of input. Budgets as :class:`AdaptivePolicy`. An episode still unanswered at end of
    input runs the deep stage as usual. Protocol ``proactive-v1`` unless the config names one
    (:func:`adasr.protocol.mode_protocol`).

    ``revisions`` (ours; docs/DESIGN.md, "Revisions"): with ``revisions = 0`` (the default) the
    first response ends the episode. With ``revisions = R > 0`` the session keeps listening after
    a response: later chunks are ingested with their streaming turns, a response repeating the
    committed answer confirms it, a response with a different answer **revises** it (the new
    answer replaces the old), and the episode ends at the ``R``-th revision or at end of input,
    whichever comes first, with the last committed answer (no deep stage once an answer is
    committed).
    """

    revisions: int = 0
    name = "proactive"
    holds_every_turn = True  # holds_turn is True whatever the text

    def commits_answer(self, thought: str) -> bool:
        """A streaming thought with a non-empty ``\\boxed{}`` is the response (:func:`is_response`)."""
        return is_response(thought)

    def holds_turn(self, text: str) -> bool:
        """Slower, never wrong (as :class:`AdaptivePolicy`, one step further): a proactive turn is
        one line, a note and, when the note decides so, the response ("67 > 52? yes. \\boxed{67}"),
        so it is held until the model ends it (up to ``thought_budget`` tokens), whatever the slack
        or an arriving chunk. A budget of at least one token (the adaptive floor) gives every chunk
        its turn, a backlog included: a machine slower than the budgets assume answers later,
        not never. Before, a backlog forced silence and a note was cut at the next arrival, so on
        a busy CPU the evidence chunk's check was never written and nothing was answered
        (RESULTS.md section 32)."""
        return True


MODES = ("batch", "interleaved", "adaptive", "proactive")


def make_policy(mode: str, *, thought_budget: int = DEFAULT_THOUGHT_BUDGET, revisions: int = 0,
                skip_backlog_s: float | None = None) -> ThoughtPolicy:
    """Policy for a mode name; ``thought_budget`` is the most tokens a thought may take (the fixed
    interleaved budget, the adaptive cap; unused by ``batch``); ``revisions``: how many times a
    proactive response may be revised (:class:`ProactivePolicy`; only ``proactive`` takes one);
    ``skip_backlog_s``: ``adaptive`` only, skip the thought of a chunk that waited this many
    seconds while later chunks wait (:class:`AdaptivePolicy`; ``None``: off).

    Raises:
        ConfigError: for an unknown mode, a negative budget, ``revisions`` negative or given to
            a mode other than ``proactive``, or ``skip_backlog_s`` negative or given to a mode other
            than ``adaptive``.
    """
    if skip_backlog_s is not None and (skip_backlog_s < 0 or mode != "adaptive"):
        raise ConfigError(f"skip-backlog must be >= 0 seconds and applies to --mode adaptive only (got "
                          f"{skip_backlog_s} with mode {mode!r})")
    if thought_budget < 0:
        raise ConfigError(f"thought budget must be >= 0 tokens, got {thought_budget}")
    if isinstance(revisions, bool) or not isinstance(revisions, int) or revisions < 0:
        raise ConfigError(f"revisions must be an integer >= 0, got {revisions!r}")
    if revisions and mode != "proactive":
        raise ConfigError(f"revisions apply to --mode proactive only (got mode {mode!r}): drop --revisions or "
                          f"use --mode proactive")
    if mode == "batch":
        return BatchPolicy()
    if mode == "interleaved":
        return InterleavedPolicy(thought_budget=thought_budget)
    if mode == "adaptive":
        return AdaptivePolicy(thought_budget=thought_budget, skip_backlog_s=skip_backlog_s)
    if mode == "proactive":
        return ProactivePolicy(thought_budget=thought_budget, revisions=revisions)
    raise ConfigError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
