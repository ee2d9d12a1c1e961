"""``proactive_threshold`` (proactive agency: act as soon as a condition holds).

``total``: "The total starts at 0; tell me the running total as soon as it exceeds 20." then
"Add 7.", "Subtract 3.", ...; answer the running total right after it first exceeds the
threshold (strictly greater). ``first``: "Tell me the first number that is divisible by 7." then
"Next number: 12.", ...; conditions "divisible by k", "greater than T", "an even number greater
than T", "a number ending in d"; answer that number. **Evidence**: the chunk where the condition
first holds. Streams where it never holds are rejected (``threshold never crossed``, ``no number
satisfies the condition``).

Knobs: ``kind`` (``mixed``, default, ``total``, ``first``), ``steps`` (or
``min_steps``/``max_steps``, default 5-9), ``max_term`` (default 15),
``min_threshold``/``max_threshold`` (default 10-40), ``subtract_prob`` (default 0.25),
``max_number`` (``first``, default 99), ``notes`` (default ``False``: silent turns; ``True``:
each turn before the evidence is a state note, the running total's update or the number's check,
and the response turn starts with the evidence chunk's note: :func:`state_notes`).

Phrasings: :data:`TOTAL_QUESTIONS` (``{threshold}``), :data:`STEP_LINES` (``{n}``, per operation),
:data:`FIRST_QUESTIONS` (``{condition}``), the phrasings of each of :data:`CONDITIONS` (``{k}``),
:data:`NUMBER_LINES` (``{n}``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from adasr.errors import ConfigError
from adasr.tasks.families import bool_knob, choice_knob, int_knob, range_knob
from adasr.tasks.proactive.base import GeneratedFamily, Rejected, pick, template_re

__all__ = ["TOTAL_QUESTIONS", "STEP_LINES", "FIRST_QUESTIONS", "NUMBER_LINES", "CONDITIONS", "Condition",
           "config", "generate", "solve", "state_notes", "FAMILY"]

TOTAL_QUESTIONS: tuple[str, ...] = (
    "The total starts at 0; tell me the running total as soon as it exceeds {threshold}.",
)
"""The question of a ``total`` stream."""

STEP_LINES: dict[str, tuple[str, ...]] = {"+": ("Add {n}.",), "-": ("Subtract {n}.",)}
"""A step of a ``total`` stream, by operation."""

FIRST_QUESTIONS: tuple[str, ...] = ("Tell me the first number that is {condition}.",)
"""The question of a ``first`` stream (``{condition}``: a phrasing of one of :data:`CONDITIONS`)."""

NUMBER_LINES: tuple[str, ...] = ("Next number: {n}.",)
"""A number of a ``first`` stream."""


@dataclass(frozen=True)
class Condition:
    """A condition of a ``first`` question, on a number ``x`` with a parameter ``k``.

    Attributes:
        phrasings: how the question says it ("divisible by {k}").
        draw: ``(rng, max_number) -> k``.
        test: ``(x, k) -> bool``: whether ``x`` satisfies it.
        note: its check in a state note ("divisible by {k}": "45 divisible by 5? yes.").
        k: the regex of ``k`` in a question.
    """

    phrasings: tuple[str, ...]
    draw: Callable[[random.Random, int], int]
    test: Callable[[int, int], bool]
    note: str
    k: str = r"\d+"


CONDITIONS: tuple[Condition, ...] = (
    Condition(("divisible by {k}",), lambda r, top: r.randint(3, 9), lambda x, k: x % k == 0, "divisible by {k}"),
    Condition(("greater than {k}",), lambda r, top: r.randint(top // 2, top - 5), lambda x, k: x > k, "> {k}"),
    Condition(("an even number greater than {k}",), lambda r, top: r.randint(top // 3, top - 10),
              lambda x, k: x % 2 == 0 and x > k, "even and > {k}"),
    Condition(("a number ending in {k}",), lambda r, top: r.randint(0, 9), lambda x, k: x % 10 == k, "ends in {k}",
              k=r"\d"),
)
"""The conditions of ``first`` questions."""


def config(knobs: dict) -> dict:
    """The generator config of the family's knobs (module docstring). Raises ConfigError."""
    p = knobs.get("subtract_prob", 0.25)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ConfigError(f"subtract_prob must be a number in [0, 1), got {p!r}")
    lo = int_knob(knobs, "min_threshold", 10)
    hi = int_knob(knobs, "max_threshold", max(40, lo))
    if lo > hi:
        raise ConfigError(f"min_threshold ({lo}) must not exceed max_threshold ({hi})")
    return {
        "kind": choice_knob(knobs, "kind", "mixed", ("mixed", "total", "first")),
        "steps": range_knob(knobs, "steps", (5, 9)),
        "max_term": int_knob(knobs, "max_term", 15),
        "threshold": (lo, hi),
        "subtract_prob": float(p),
        "max_number": int_knob(knobs, "max_number", 99, lo=10),
        "notes": bool_knob(knobs, "notes", False),
    }


def generate(rng: random.Random, cfg: dict) -> tuple[list[str], None]:
    """One item's chunks (the question, then the steps or numbers); the solver finds the answer
    and the evidence (``None``)."""
    kind = rng.choice(("total", "first")) if cfg["kind"] == "mixed" else cfg["kind"]
    n = rng.randint(*cfg["steps"])
    if kind == "total":
        chunks = [pick(rng, TOTAL_QUESTIONS).format(threshold=rng.randint(*cfg["threshold"]))]
        for _ in range(n):
            op = "-" if rng.random() < cfg["subtract_prob"] else "+"
            chunks.append(pick(rng, STEP_LINES[op]).format(n=rng.randint(1, cfg["max_term"])))
        return chunks, None
    top = cfg["max_number"]
    c = rng.randrange(len(CONDITIONS))
    ks = [cond.draw(rng, top) for cond in CONDITIONS]  # every condition draws its k (the items' random stream)
    condition = pick(rng, CONDITIONS[c].phrasings).format(k=ks[c])
    chunks = [pick(rng, FIRST_QUESTIONS).format(condition=condition)]
    chunks += [pick(rng, NUMBER_LINES).format(n=rng.randint(1, top)) for _ in range(n)]
    return chunks, None


def _regexes(phrasings: tuple[str, ...], **fields: str) -> tuple[re.Pattern, ...]:
    return tuple(template_re(p, **fields) for p in phrasings)


_TOTAL_Q = _regexes(TOTAL_QUESTIONS, threshold=r"\d+")
_STEPS = {op: _regexes(lines, n=r"\d+") for op, lines in STEP_LINES.items()}
_FIRST_Q = _regexes(FIRST_QUESTIONS, condition=".+")
_NUMBER = _regexes(NUMBER_LINES, n=r"\d+")
_CONDITION_RES = tuple((cond, _regexes(cond.phrasings, k=cond.k)) for cond in CONDITIONS)


def _match(rxs: tuple[re.Pattern, ...], text: str) -> re.Match | None:
    return next((m for m in (rx.match(text) for rx in rxs) if m), None)


def _step(chunk: str) -> tuple[str, int]:
    """``(operation, term)`` of a step line."""
    for op, rxs in _STEPS.items():
        m = _match(rxs, chunk)
        if m:
            return op, int(m.group("n"))
    raise Rejected("unreadable step")


def _number(chunk: str) -> str:
    """The number of a number line, as written."""
    m = _match(_NUMBER, chunk)
    if not m:
        raise Rejected("unreadable number line")
    return m.group("n")


def _condition(question: re.Match) -> tuple[Callable[[int], bool], str]:
    """The test of a ``first`` question's condition and its note form ("> 52")."""
    for cond, rxs in _CONDITION_RES:
        c = _match(rxs, question.group("condition"))
        if c:
            k = c.group("k")
            return (lambda x: cond.test(x, int(k))), cond.note.format(k=k)
    raise Rejected("question not understood")


def solve(chunks: list[str]) -> tuple[str, int]:
    """``(answer, evidence)`` read from the chunks: the first chunk where the condition holds.

    Raises:
        Rejected: the question or a line is not understood, or the condition never holds.
    """
    m = _match(_TOTAL_Q, chunks[0])
    if m:
        threshold, total = int(m.group("threshold")), 0
        for k in range(1, len(chunks)):
            op, term = _step(chunks[k])
            total += term if op == "+" else -term
            if total > threshold:
                return str(total), k
        raise Rejected("threshold never crossed")
    m = _match(_FIRST_Q, chunks[0])
    if m:
        test, _ = _condition(m)
        for k in range(1, len(chunks)):
            x = _number(chunks[k])
            if test(int(x)):
                return x, k
        raise Rejected("no number satisfies the condition")
    raise Rejected("question not understood")


def state_notes(chunks: list[str], evidence: int) -> list[str]:
    """State notes of a threshold stream, one per chunk ``0..evidence`` (knob ``notes``).

    ``total``: the update of the running total in the chain_sum style ("12 + 7 = 19.",
    "19 - 3 = 16."), none after the question. ``first``: the check of each number ("36 > 52?
    no.", "45 divisible by 5? yes."), none after the question. Whether to respond is then decided
    on a value the model has just written rather than on one it must keep in its head.

    Raises:
        Rejected: a chunk is not understood.
    """
    notes = [""]
    if _match(_TOTAL_Q, chunks[0]):
        total = 0
        for k in range(1, evidence + 1):
            op, term = _step(chunks[k])
            new = total + term if op == "+" else total - term
            notes.append(f"{total} {op} {term} = {new}.")
            total = new
        return notes
    m = _match(_FIRST_Q, chunks[0])
    if not m:
        raise Rejected("question not understood")
    test, ask = _condition(m)
    for k in range(1, evidence + 1):
        x = int(_number(chunks[k]))
        notes.append(f"{x} {ask}? {'yes' if test(x) else 'no'}.")
    return notes


FAMILY = GeneratedFamily(
    "proactive_threshold",
    ("kind", "steps", "min_steps", "max_steps", "max_term", "min_threshold", "max_threshold", "subtract_prob",
     "max_number", "notes"),
    config, generate, solve, state_notes,
)
