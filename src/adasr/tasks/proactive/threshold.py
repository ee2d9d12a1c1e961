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
and the response turn starts with the evidence chunk's note: :func:`state_notes`),
``total_check`` (with ``notes``, default ``False``: a ``total`` note ends with its comparison to
the threshold, "19 > 25? no.", as a ``first`` note ends with its check, so that the decision to
respond is read from a written "yes" rather than from a comparison the model never writes).
Weights toward the errors measured on trained models (RESULTS §20: wrong running totals, wrong
divisibility checks, sign slips), each off (``None`` or 0) by default: ``total_prob`` (with
``kind=mixed``: the share of ``total`` streams; default ``None``, an even draw),
``divisible_prob`` (the share of ``first`` streams asking "divisible by k"; default ``None``, the
four conditions evenly) and ``negative_prob`` (the share of ``total`` streams that open with
one or two subtractions, so that the running total goes below 0 before it climbs; default 0).
The knobs every generated family takes (``templates``, distractors, ``continuation``):
:mod:`adasr.tasks.proactive.build`.

Phrasings (8 per tuple, 2 of them held out: :func:`~adasr.tasks.proactive.base.template_subset`):
:data:`TOTAL_QUESTIONS` (``{threshold}``; plus the training-only :data:`TOTAL_QUESTIONS_MORE`,
template set ``more``), :data:`STEP_LINES` (``{n}``, ``{name}``, per
operation), :data:`FIRST_QUESTIONS` (``{condition}``; plus the training-only
:data:`FIRST_QUESTIONS_WIDE`, template set ``wide``), the phrasings of each of :data:`CONDITIONS`
(``{k}``; 4 each, 1 held out; plus :data:`CONDITIONS_WIDE`), :data:`NUMBER_LINES` (``{n}``,
``{name}``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from adasr.errors import ConfigError
from adasr.tasks.families import bool_knob, choice_knob, int_knob, prob_knob, range_knob
from adasr.tasks.proactive.base import (NAMES, GeneratedFamily, Rejected, add_training_phrasings, is_distractor, pick,
                                        solver_res)

__all__ = ["TOTAL_QUESTIONS", "TOTAL_QUESTIONS_MORE", "STEP_LINES", "FIRST_QUESTIONS", "FIRST_QUESTIONS_WIDE", "NUMBER_LINES",
           "CONDITIONS", "CONDITIONS_WIDE", "Condition",
           "config", "generate", "solve", "state_notes", "mistake", "FAMILY"]

TOTAL_QUESTIONS: tuple[str, ...] = (
    "The total starts at 0; tell me the running total as soon as it exceeds {threshold}.",
    "Keep a running total starting from 0 and tell me the total once it is more than {threshold}.",
    "Start counting at 0; as soon as the sum goes above {threshold}, tell me the sum.",
    "Begin a tally at zero and report it the moment it passes {threshold}.",
    "We start at 0; tell me the running total when it first goes over {threshold}.",
    "Add up the changes that follow, starting from 0, and tell me the total as soon as it exceeds {threshold}.",
    "Track a score that starts at 0 and say the score as soon as it is greater than {threshold}.",
    "Sum the changes below from zero; when the result tops {threshold}, give me the result.",
)
"""The question of a ``total`` stream."""

TOTAL_QUESTIONS_MORE: tuple[str, ...] = add_training_phrasings(TOTAL_QUESTIONS, (
    "Accumulate the numbers that follow from 0 and say the total once it rises above {threshold}.",
    "Starting at 0, combine the changes; when the sum climbs past {threshold}, tell me the sum.",
    "Keep score from 0; the moment the score crosses {threshold}, give me the score.",
    "From a start of 0, apply each change and give me the running sum as soon as it is over {threshold}.",
    "Work out the total as the changes come in (it starts at 0); once it gets beyond {threshold}, give me the total.",
    "Count from zero with each change and tell me the count when it first rises beyond {threshold}.",
    "A counter starts at zero; tell me its value as soon as it surpasses {threshold}.",
    "Follow the changes from zero and, when the running sum goes past {threshold}, give me that sum.",
    "Let a running sum start at 0; say it right away when it is larger than {threshold}.",
    "Combine the changes from a start of zero and give me the value the moment it goes beyond {threshold}.",
    "Here are changes to a number that starts at 0; once the number is higher than {threshold}, state it.",
    "Apply the following changes to 0 and as soon as the outcome exceeds {threshold}, report the outcome.",
))
"""Training-only phrasings of a ``total`` question (template set ``more``:
:func:`~adasr.tasks.proactive.base.add_training_phrasings`). Written after RESULTS §34 measured the
shipped adapter on held-out templates (one held-out question phrasing right on 9 of 24 streams):
other verbs and sentence shapes for "starts at 0, say it once it is above T", none a phrasing of
:data:`TOTAL_QUESTIONS` and none using a held-out phrasing's verb ("tops", "passes") or opening."""

STEP_LINES: dict[str, tuple[str, ...]] = {
    "+": ("Add {n}.", "Plus {n}.", "{name} adds {n}.", "Then it grows by {n}.",
          "Increase it by {n}.", "Add another {n}.", "{name} puts in {n} more.", "{name} contributes {n}."),
    "-": ("Subtract {n}.", "Minus {n}.", "{name} takes away {n}.", "Then it shrinks by {n}.",
          "Decrease it by {n}.", "Take away another {n}.", "{name} removes {n}.", "{name} withdraws {n}."),
}
"""A step of a ``total`` stream, by operation (``{name}``: one of
:data:`~adasr.tasks.proactive.base.NAMES`)."""

FIRST_QUESTIONS: tuple[str, ...] = (
    "Tell me the first number that is {condition}.",
    "As soon as you hear a number that is {condition}, tell me that number.",
    "Say the first number in this list that is {condition}.",
    "Watch the numbers and report the earliest one that is {condition}.",
    "Let me know the first number that is {condition}.",
    "Tell me the first of the following numbers that is {condition}.",
    "Numbers are coming; tell me the first one that is {condition}.",
    "Find the first number that is {condition} and tell me right away.",
)
"""The question of a ``first`` stream (``{condition}``: a phrasing of one of :data:`CONDITIONS`)."""

FIRST_QUESTIONS_WIDE: tuple[str, ...] = add_training_phrasings(FIRST_QUESTIONS, (
    "Listen to the numbers and name the first one that is {condition}.",
    "I will read out numbers; give me the first that is {condition}.",
    "Stop me at the first number that is {condition} and say it.",
    "Out of the numbers below, give me the first one that is {condition}.",
    "Pick out the first number that is {condition} and say it.",
    "Give me the number as soon as one is {condition}.",
    "Keep listening and name the first number that is {condition}.",
    "Name the first number you hear that is {condition}.",
), "wide")
"""Training-only phrasings of a ``first`` question (template set ``wide``). Written after RESULTS
§35 measured the ``more`` adapter on held-out templates: 10 of 59 ``first`` streams answered
before their evidence, several by reading the question as a running total ("bigger than 84" ->
"84 + 51 = 135"). None is a phrasing of :data:`FIRST_QUESTIONS` and none uses a held-out
phrasing's verbs or words ("watch", "report", "earliest", "find", "right away")."""

NUMBER_LINES: tuple[str, ...] = (
    "Next number: {n}.", "The next number is {n}.", "{name} says {n}.", "Here comes {n}.",
    "Another number: {n}.", "{name} calls out {n}.", "Now the number {n}.", "{name} reads out {n}.",
)
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
    Condition(("divisible by {k}", "a multiple of {k}", "evenly divisible by {k}", "divisible by {k} with no remainder"),
              lambda r, top: r.randint(3, 9), lambda x, k: x % k == 0, "divisible by {k}"),
    Condition(("greater than {k}", "larger than {k}", "above {k}", "bigger than {k}"),
              lambda r, top: r.randint(top // 2, top - 5), lambda x, k: x > k, "> {k}"),
    Condition(("an even number greater than {k}", "even and greater than {k}", "an even number above {k}",
               "even and bigger than {k}"),
              lambda r, top: r.randint(top // 3, top - 10), lambda x, k: x % 2 == 0 and x > k, "even and > {k}"),
    Condition(("a number ending in {k}", "a number whose last digit is {k}", "a number that ends with the digit {k}",
               "a number with {k} as its last digit"),
              lambda r, top: r.randint(0, 9), lambda x, k: x % 10 == k, "ends in {k}", k=r"\d"),
)
"""The conditions of ``first`` questions."""

CONDITIONS_WIDE: tuple[tuple[str, ...], ...] = tuple(
    add_training_phrasings(cond.phrasings, extra, "wide") for cond, extra in zip(CONDITIONS, (
        ("exactly divisible by {k}", "a number that {k} divides", "a whole multiple of {k}", "a number {k} goes into"),
        ("more than {k}", "over {k}", "higher than {k}", "a number past {k}"),
        ("even and more than {k}", "an even number over {k}", "an even number higher than {k}", "even and above {k}"),
        ("a number whose final digit is {k}", "a number that ends in {k}", "a number with final digit {k}",
         "a number ending with {k}"),
    )))
"""Training-only phrasings of each of :data:`CONDITIONS`, in its order (template set ``wide``;
as :data:`FIRST_QUESTIONS_WIDE`: none uses a held-out phrasing's words, "remainder", "bigger",
"as its last digit")."""


def config(knobs: dict) -> dict:
    """The generator config of the family's knobs (module docstring). Raises ConfigError."""
    lo = int_knob(knobs, "min_threshold", 10)
    hi = int_knob(knobs, "max_threshold", max(40, lo))
    if lo > hi:
        raise ConfigError(f"min_threshold ({lo}) must not exceed max_threshold ({hi})")
    kind = choice_knob(knobs, "kind", "mixed", ("mixed", "total", "first"))
    if knobs.get("total_prob") is not None and kind != "mixed":
        raise ConfigError(f"total_prob weighs the kinds of kind=mixed, not kind={kind}")
    optional = {k: None if knobs.get(k) is None else prob_knob(knobs, k, 0.0) for k in ("total_prob", "divisible_prob")}
    return {
        "kind": kind,
        "steps": range_knob(knobs, "steps", (5, 9)),
        "max_term": int_knob(knobs, "max_term", 15),
        "threshold": (lo, hi),
        "subtract_prob": prob_knob(knobs, "subtract_prob", 0.25, upper=False),
        "max_number": int_knob(knobs, "max_number", 99, lo=10),
        "notes": bool_knob(knobs, "notes", False),
        "total_check": bool_knob(knobs, "total_check", False),
        **optional,
        "negative_prob": prob_knob(knobs, "negative_prob", 0.0),
    }


def _kind(rng: random.Random, cfg: dict) -> str:
    if cfg["kind"] != "mixed":
        return cfg["kind"]
    if cfg["total_prob"] is None:
        return rng.choice(("total", "first"))
    return "total" if rng.random() < cfg["total_prob"] else "first"


def _condition_index(rng: random.Random, cfg: dict) -> int:
    if cfg["divisible_prob"] is None:
        return rng.randrange(len(CONDITIONS))
    return 0 if rng.random() < cfg["divisible_prob"] else rng.randrange(1, len(CONDITIONS))


def generate(rng: random.Random, cfg: dict) -> tuple[list[str], None]:
    """One item's chunks (the question, then the steps or numbers); the solver finds the answer
    and the evidence (``None``). Nothing is drawn for a phrasing in template set ``first`` nor
    for a weighting knob left off, so the default items are those of the single-phrasing
    family."""
    which = cfg["templates"]
    kind = _kind(rng, cfg)
    n = rng.randint(*cfg["steps"])

    def line(phrasings: tuple[str, ...], **fields) -> str:
        template = pick(rng, phrasings, which)
        if "{name}" in template:
            fields["name"] = rng.choice(NAMES)
        return template.format(**fields)

    if kind == "total":
        chunks = [line(TOTAL_QUESTIONS, threshold=rng.randint(*cfg["threshold"]))]
        p = cfg["negative_prob"]
        negative = rng.randint(1, 2) if p > 0 and rng.random() < p else 0  # opening subtractions
        for j in range(n):
            op = "-" if j < negative or rng.random() < cfg["subtract_prob"] else "+"
            chunks.append(line(STEP_LINES[op], n=rng.randint(1, cfg["max_term"])))
        return chunks, None
    top = cfg["max_number"]
    c = _condition_index(rng, cfg)
    ks = [cond.draw(rng, top) for cond in CONDITIONS]  # every condition draws its k (the items' random stream)
    condition = pick(rng, CONDITIONS[c].phrasings, which).format(k=ks[c])
    chunks = [line(FIRST_QUESTIONS, condition=condition)]
    chunks += [line(NUMBER_LINES, n=rng.randint(1, top)) for _ in range(n)]
    return chunks, None


_NAME = r"[A-Z][a-z]+"
_TOTAL_Q = solver_res(TOTAL_QUESTIONS, threshold=r"\d+")
_STEPS = {op: solver_res(lines, n=r"\d+", name=_NAME) for op, lines in STEP_LINES.items()}
_FIRST_Q = solver_res(FIRST_QUESTIONS, condition=".+")
_NUMBER = solver_res(NUMBER_LINES, n=r"\d+", name=_NAME)
_CONDITION_RES = tuple((cond, solver_res(cond.phrasings, k=cond.k)) for cond in CONDITIONS)


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


def _question(head: str) -> tuple[str, int | None, Callable[[int], bool] | None, str]:
    """``("total", threshold, None, "")`` or ``("first", None, test, note form)`` of the question.

    Raises:
        Rejected: the question is not understood.
    """
    m = _match(_TOTAL_Q, head)
    if m:
        return "total", int(m.group("threshold")), None, ""
    m = _match(_FIRST_Q, head)
    if m:
        test, ask = _condition(m)
        return "first", None, test, ask
    raise Rejected("question not understood")


def _read(chunks: list[str]):
    """The question (:func:`_question`) and, per chunk after it, what it says: ``None`` for a
    distractor, else ``(total before, op, term, total after)`` (``total``) or the number as
    written (``first``)."""
    kind, threshold, test, ask = _question(chunks[0])
    lines: list = [None]
    total = 0
    for chunk in chunks[1:]:
        if is_distractor(chunk):
            lines.append(None)
        elif kind == "total":
            op, term = _step(chunk)
            new = total + term if op == "+" else total - term
            lines.append((total, op, term, new))
            total = new
        else:
            lines.append(_number(chunk))
    return kind, threshold, test, ask, lines


def solve(chunks: list[str]) -> tuple[str, int]:
    """``(answer, evidence)`` read from the chunks: the first chunk where the condition holds
    (distractor sentences skipped).

    Raises:
        Rejected: the question or a line is not understood, or the condition never holds.
    """
    kind, threshold, test, _, lines = _read(chunks)
    for k, line in enumerate(lines):
        if line is None:
            continue
        if kind == "total" and line[3] > threshold:
            return str(line[3]), k
        if kind == "first" and test(int(line)):
            return line, k
    raise Rejected("threshold never crossed" if kind == "total" else "no number satisfies the condition")


def state_notes(chunks: list[str], evidence: int, config: dict | None = None) -> list[str]:
    """State notes of a threshold stream, one per chunk ``0..evidence`` (knob ``notes``).

    ``total``: the update of the running total in the chain_sum style ("12 + 7 = 19.",
    "19 - 3 = 16."), with ``config["total_check"]`` followed by its comparison to the threshold
    ("12 + 7 = 19. 19 > 25? no."); none after the question. ``first``: the check of each number
    ("36 > 52? no.", "45 divisible by 5? yes."), none after the question. None after a
    distractor sentence. Whether to respond is then decided on a value the model has just
    written rather than on one it must keep in its head.

    Raises:
        Rejected: a chunk is not understood.
    """
    kind, threshold, test, ask, lines = _read(chunks)
    check = bool((config or {}).get("total_check"))
    notes = []
    for line in lines[: evidence + 1]:
        if line is None:
            notes.append("")
        elif kind == "total":
            note = f"{line[0]} {line[1]} {line[2]} = {line[3]}."
            if check:
                note += f" {line[3]} > {threshold}? {'yes' if line[3] > threshold else 'no'}."
            notes.append(note)
        else:
            notes.append(f"{line} {ask}? {'yes' if test(int(line)) else 'no'}.")
    return notes


def mistake(rng: random.Random, chunks: list[str], answer: str) -> str:
    """A plausible wrong answer (``GeneratedFamily.mistake``). ``total``: a slip in the last
    update that still exceeds the threshold ("14 + 13 = 28", "= 37", the sign of the term or of
    the total before it flipped); ``first``: another number of the stream; else the answer
    plus 1.

    Raises:
        Rejected: a chunk is not understood.
    """
    kind, threshold, _, _, lines = _read(chunks)
    right = int(answer)
    if kind == "total":
        before, op, term, _ = next(x for x in lines if x is not None and x[3] > threshold)
        flipped = before - term if op == "+" else before + term
        wrong = {w for w in (right - 2, right - 1, right + 1, right + 2, right + 10, right - 10, flipped,
                             right - 2 * before) if w > threshold}  # a slip that still crosses the threshold
    else:
        wrong = {int(x) for x in lines if x is not None}
    wrong.discard(right)
    return str(rng.choice(sorted(wrong))) if wrong else str(right + 1)


FAMILY = GeneratedFamily(
    "proactive_threshold",
    ("kind", "steps", "min_steps", "max_steps", "max_term", "min_threshold", "max_threshold", "subtract_prob",
     "max_number", "notes", "total_check", "total_prob", "divisible_prob", "negative_prob"),
    config, generate, solve, state_notes, mistake,
)
