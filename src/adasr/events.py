"""Typed engine events: what happened in a session, and when.

The engine reports each session's timeline as small frozen dataclasses, one type per event.
Every event has ``type`` (a fixed string per class), ``t`` (seconds on the session's clock since
its stream started) and ``id`` (the episode id); :meth:`Event.as_dict` gives the flat dict stored
in :attr:`adasr.engine.EpisodeResult.events` and printed by ``adasr run --json``.

=================  ===================================================================
type               fields
=================  ===================================================================
``arrive``         ``chunk``, ``text`` — a chunk arrived (``t`` is its arrival time)
``ingest``         ``chunk`` — its ingestion started
``token``          ``stage``, ``token``, ``text`` — one generated token (not kept in results)
``thought``        ``chunk``, ``text``, ``tokens`` — a streaming thought ended
``eoi``            — end of input
``deep_start``     — the deep stage started
``response``       ``chunk``, ``prediction``, ``text``, ``revision`` — a proactive streaming
                   thought committed an answer (``revision`` 0: the first response; k: the
                   k-th revision, docs/DESIGN.md "Revisions")
``answer``         ``prediction``, ``text``, ``finish_reason``, ``early`` — the episode's final
                   answer, why the episode ended (:class:`adasr.session.FinishReason`:
                   ``stopped`` | ``length_capped`` | ``answered_early``) and whether it was
                   answered early (``finish_reason == "answered_early"``)
=================  ===================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from adasr.protocol import Stage


@dataclass(frozen=True)
class Event:
    """Base of the engine events (see the module docstring)."""

    t: float
    id: str
    type: ClassVar[str] = ""
    _private: ClassVar[tuple[str, ...]] = ()  # fields left out of as_dict()
    _derived: ClassVar[tuple[str, ...]] = ()  # properties added to as_dict()

    def as_dict(self) -> dict:
        """``{"type", "t", <fields>, "id"}``: the event as a JSON-serializable dict."""
        out = {"type": self.type, "t": self.t}
        out.update((f.name, getattr(self, f.name)) for f in fields(self)
                   if f.name not in ("t", "id") and f.name not in self._private)
        out.update((name, getattr(self, name)) for name in self._derived)
        out["id"] = self.id
        return out


@dataclass(frozen=True)
class Arrive(Event):
    """Chunk ``chunk`` (its ``text``) arrived; ``t`` is its arrival time."""

    chunk: int
    text: str
    type: ClassVar[str] = "arrive"


@dataclass(frozen=True)
class Ingest(Event):
    """Chunk ``chunk`` started to be ingested (``t - arrival`` is its backlog)."""

    chunk: int
    type: ClassVar[str] = "ingest"


@dataclass(frozen=True)
class Token(Event):
    """One generated token: ``token`` (id) of ``stage`` (:class:`~adasr.protocol.Stage`) and its
    ``text``, the text it adds to its turn (decoded incrementally: empty while it ends inside a
    multi-byte character, which a later token completes). ``as_dict`` leaves ``text`` out."""

    stage: Stage
    token: int
    text: str = ""
    type: ClassVar[str] = "token"
    _private: ClassVar[tuple[str, ...]] = ("text",)


@dataclass(frozen=True)
class Thought(Event):
    """The streaming thought after chunk ``chunk`` ended: its ``text`` and length in ``tokens``
    (the end-of-turn token included when the model generated it)."""

    chunk: int
    text: str
    tokens: int
    type: ClassVar[str] = "thought"


@dataclass(frozen=True)
class Eoi(Event):
    """End of input; ``t`` is the last arrival (or when the stream closed)."""

    type: ClassVar[str] = "eoi"


@dataclass(frozen=True)
class DeepStart(Event):
    """The deep stage started (the end-of-input turn is fed in this step)."""

    type: ClassVar[str] = "deep_start"


@dataclass(frozen=True)
class Response(Event):
    """A proactive streaming thought after chunk ``chunk`` committed the answer ``prediction`` (the
    last ``\\boxed{}`` of ``text``) before end of input. ``revision`` is 0 for the episode's first
    response and ``k`` for its k-th revision (a response whose answer differs from the committed
    one; :class:`adasr.policy.ProactivePolicy`'s ``revisions``). A response repeating the
    committed answer is a confirmation and emits nothing."""

    chunk: int
    prediction: str | None
    text: str
    revision: int
    type: ClassVar[str] = "response"


@dataclass(frozen=True)
class Answer(Event):
    """The episode ended: ``prediction`` (the last ``\\boxed{}`` of ``text``, or ``None``),
    ``text`` (the deep stage, or the streaming thought that committed the answer) and
    ``finish_reason`` (the value of :class:`adasr.session.FinishReason`: ``"stopped"``,
    ``"length_capped"`` or ``"answered_early"``). ``as_dict`` adds :attr:`early`."""

    prediction: str | None
    text: str
    finish_reason: str
    type: ClassVar[str] = "answer"
    _derived: ClassVar[tuple[str, ...]] = ("early",)

    @property
    def early(self) -> bool:
        """Whether a proactive policy answered before end of input."""
        return self.finish_reason == "answered_early"

