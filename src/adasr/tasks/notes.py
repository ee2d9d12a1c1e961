"""Streaming thoughts from a free-form solution's steps: their note styles and their fitting into
the room the input's arrival leaves.

A thought after chunk ``k`` is a note on the computing steps placed there (:mod:`adasr.tasks.align`).
:func:`terse_note` reduces a step to its computations (a short note: an adaptive thought is
closed when the next chunk arrives); :class:`ThoughtFit` says how many tokens fit after each
chunk at an operating point, and :func:`fit_thoughts` moves steps later (or to the deep stage)
until every thought fits. The styles themselves are chosen in
:func:`adasr.tasks.streamify.streamify_solution` (:data:`NOTE_STYLES`, :data:`DEEP_STYLES`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from adasr.tasks.solutions import Step, has_computation
from adasr.tasks.text import unwrap_latex_text

__all__ = ["NOTE_STYLES", "DEEP_STYLES", "terse_note", "ThoughtFit", "fit_thoughts"]

_MATH_BLOCK = re.compile(r"\\\[(.+?)\\\]|\\\((.+?)\\\)", re.S)
_LABEL = re.compile(r"^\s*\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}")
_MARKER = r"^\s*(?:\d+[.)]|[-*•])\s+"  # a list item's marker
_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+(?=[A-Z*\\-])|" + _MARKER)
_CONNECTIVE = re.compile(r"^(?:(?:therefore|thus|so|hence|now|next|then|first|second|finally|also|and)\b,?\s*)+", re.I)
NOTE_STYLES = ("steps", "prose", "terse")
"""Styles of a free-form solution's streaming thoughts (:func:`adasr.tasks.streamify.streamify_solution`)."""
DEEP_STYLES = ("verbatim", "terse")
"""Styles of a free-form solution's deep stage (:func:`adasr.tasks.streamify.streamify_solution`)."""


def terse_note(step: str) -> str:
    """A computing step reduced to its computations, in the model's own notation.

    Each math block (``\\[...\\]`` or ``\\(...\\)``) that computes something (holds ``=``)
    becomes one note: its body with ``\\text{...}`` labels unwrapped ("Lisa's earnings =
    \\frac{60}{2} = 30"); a block without a label keeps the words of its sentence before it
    ("the total cost of the ice cream is 10 \\times 4 = 40"), so the note still says what the
    number is. A step without math blocks keeps its sentences that compute ("50 / 60 = 0.8333
    hours."). Notes are joined by "; ". List markers and bold headers are dropped.
    """
    flat = " ".join(step.split())
    notes = []
    last = 0
    for m in _MATH_BLOCK.finditer(flat):
        body = " ".join((m.group(1) or m.group(2)).split())
        before, last = flat[last:m.start()], m.end()
        if "=" not in body:
            continue
        if _LABEL.match(body):
            note = unwrap_latex_text(body)
        else:
            lead = _SENTENCE_END.split(before)[-1].replace("**", "").strip()
            lead = _CONNECTIVE.sub("", re.sub(_MARKER, "", lead))
            note = f"{lead} {unwrap_latex_text(body)}".strip()
        notes.append(note)
    if not notes:
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat)
        notes = [_CONNECTIVE.sub("", re.sub(_MARKER, "", x)) for x in sentences
                 if has_computation(x)]
    notes = [n[:1].upper() + n[1:] for n in notes if n]
    return "; ".join(notes) if notes else flat


@dataclass(frozen=True)
class ThoughtFit:
    """How much thought fits after a chunk when the input arrives in real time.

    An adaptive thought after chunk ``k`` gets at most ``min(max_tokens, words(chunk k+1) *
    tokens_per_word)`` tokens: the arrival slack of the next chunk times the decode rate
    (``tokens_per_word`` = decode tokens/s / words/s; 7 / 2.5 = 2.8, the pinned rate of the
    project's evaluations). See :func:`fit_thoughts`.

    Attributes:
        tokens_per_word: decode rate over arrival rate, tokens per word of input.
        max_tokens: the thought budget's cap, tokens.
        count: tokens of a text (the model's tokenizer).
    """

    tokens_per_word: float
    max_tokens: int
    count: Callable[[str], int]

    def capacity(self, chunks: Sequence[str]) -> list[int]:
        """Token room of the thought after each chunk but the last (``len(chunks) - 1``)."""
        return [min(self.max_tokens, int(len(c.split()) * self.tokens_per_word)) for c in chunks[1:]]


def fit_thoughts(steps: list[Step], capacity: Sequence[int], note: Callable[[Step], str],
                 count: Callable[[str], int]) -> None:
    """Move placed steps to later chunks, or to the deep stage, so that each thought fits its
    room (modifies ``Step.chunk`` in place).

    Steps keep their order: each chunk's thought takes the earliest waiting computing steps
    (those placed at or before it and not yet written) while their notes fit its ``capacity``;
    the rest wait for the next chunk. Whatever still waits after the last thought goes to the
    deep stage, with every later step (placement stays monotone). A step never moves earlier,
    so the "every quantity it uses is known" rule of :func:`adasr.tasks.align.align_steps` still holds. Prose
    steps travel with the computing step that follows them.

    Args:
        steps: aligned steps (:func:`adasr.tasks.align.align_steps`).
        capacity: tokens of room after chunk ``k`` for ``k < N - 1``.
        note: the text a step contributes to its thought.
        count: tokens of a text.
    """
    units: list[list[Step]] = []  # a computing step with the prose before it
    pending: list[Step] = []
    for st in steps:
        if st.chunk is None:
            break
        pending.append(st)
        if st.annotated:
            units.append(pending)
            pending = []
    queue: list[list[Step]] = []
    i = 0
    for k, room in enumerate(capacity):
        while i < len(units) and units[i][-1].chunk is not None and units[i][-1].chunk <= k:
            queue.append(units[i])
            i += 1
        used = 0
        while queue:
            cost = count(note(queue[0][-1])) + (1 if used else 0)
            if used + cost > room:
                break
            used += cost
            for st in queue.pop(0):
                st.chunk = k
    spilled = [st for unit in queue for st in unit]
    if spilled:
        first = steps.index(spilled[0])
        for st in steps[first:]:
            st.chunk = None
