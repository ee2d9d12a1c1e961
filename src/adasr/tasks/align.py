"""The step-to-chunk aligner: after which chunk of a streamed question each solution step can
be written.

:func:`align_steps` moves every step of a solution (:mod:`adasr.tasks.solutions`) to the
*earliest chunk after which it can be computed*; the steps after a chunk become that chunk's
streaming thought, the rest the deep stage. Used for reference solutions
(:func:`adasr.tasks.streamify.streamify_problem`), free-form model solutions
(:func:`adasr.tasks.streamify.streamify_solution`) and the evidence chunk of proactive GSM8K items
(:func:`adasr.tasks.proactive.gsm8k.gsm8k_evidence`).

Alignment rules (our definitions)
---------------------------------
* **Steps, operands and results**: :mod:`adasr.tasks.solutions` (a reference solution: one step a
  line, operands from its ``<<expr=result>>`` annotations).
* **Literal values of a chunk** (:func:`~adasr.tasks.text.known_numbers`): numbers written in it
  (normalized: thousands commas, ``$``, trailing ``.0``; ``25%`` also gives ``0.25``; ``3/4``
  also gives ``0.75``) and number words (:data:`~adasr.tasks.text.NUMBER_WORDS`: "zero".."twenty",
  the tens up to "ninety", "hundred", "thousand", "million", "dozen" = 12, "half" = 2 and 0.5,
  "twice" / "double" = 2, "triple" / "thrice" = 3, "quadruple" = 4, "quarter" / "fourth" = 4 and
  0.25, "third" = 3, "fifth".."tenth" = 5..10, "pair" = 2; hyphenated tens such as
  "twenty-five" = 25).
* **Implied-unit constants** (:data:`~adasr.tasks.text.UNIT_CONSTANTS`, deliberately conservative),
  known from the first chunk after which all their trigger words have appeared: 1 always; 2 with
  "both / couple / twins / round trip / every other / each way / back and forth"; 100 and 0.01
  with "% / percent" (100 also with "cent"); 60 with "hour / minute / second"; 24 with "day" and
  "hour"; 7 with "week"; 52 with "week" and "year"; 365 with "day" and "year"; 12 with "month"
  and "year", or "foot" and "inch"; 30 with "month" and "day"; 4 with "month" and "week"; 1000
  with a metric prefix ("ml", "kg", "km", "milli", "kilo"); 16 with "ounce" and "pound"; 3 with
  "foot" and "yard".
* **When an operand is known.** An operand is known at once if it is the result of an earlier
  step. Otherwise it is a literal value, and if several chunks mention it we must guess which
  mention the step uses (``2`` in "2 feet of tape" and in "two large boxes"): **mentions** are
  disambiguated by the words around them — the mentioning chunk whose content words (lower-cased,
  plural "s" stripped, not in :data:`~adasr.tasks.text.STOPWORDS`, each weighted ``1/(number of
  chunks containing it)``) best match the step's text wins; ties go to the later chunk (the
  conservative choice), except that the last chunk, usually the question restating earlier
  numbers, must match strictly better. An implied-unit constant is known from its trigger chunk
  if that is earlier. A step's earliest chunk ``e_i`` is the latest chunk at which one of its
  operands becomes known.
* **Word anchors.** A step is also not placed before (a) the first chunk containing a number
  word its text uses for one of its operands ("half of the remaining pages ... 84/2"), nor (b)
  the first chunk containing any of its content words, unless that chunk is the last one: the
  last chunk is usually the question sentence, and computing towards what it asks from
  already-known quantities is anticipation, not a leak ("Natalia sold 48+24 = 72 clips
  altogether in April and May." after chunk 0).
* **Monotone placement.** Steps keep their original order: step ``i`` goes to chunk
  ``max(e_i, anchors_i, chunk(i-1))``. We chose this over a dependency-graph placement because a
  solution's steps are written as a narrative (later steps refer to earlier ones in words, not
  only through numbers), so the streaming thoughts stay a prefix of the reference solution and
  the deep stage its suffix. The price: a step that must wait delays every later one.
* **Deep stage.** A step goes to the deep stage if it has no annotation, if one of its operands
  is never known, or if it lands on the last chunk (no thought follows the last chunk: the
  stream closes with it); by monotonicity every later step then goes there too (what the deep
  stage then holds: :mod:`adasr.tasks.streamify`).
* **Goal steps** (``goal_steps="after-question"``; default ``"anticipate"``: the rules above
  alone). A model's own solution opens with a plan that restates what the question asks ("To
  determine how many slices are left, we need to follow these steps: 1. ..."), and its last
  computing step computes the answer. Both need the question: written before it arrives, in a
  training episode, they teach a streamer to guess the question, and a guessed goal is followed
  to a wrong answer (benchmarks/RESULTS.md §45). With ``"after-question"`` the prose before the
  first computing step goes to the deep stage (reason ``"plan"``; it is the only exception to
  monotone placement: the steps after it are still placed, and the deep stage opens with the
  plan), and a step whose result is the final answer (``answer``) goes there too, with every
  later step (reason ``"answer"``).

Limitations: this is a heuristic without a teacher model. A value mentioned twice whose wrong
mention also matches the step's words can still place a step one chunk early, and steps that
use knowledge outside the lists above (e.g. "Jamie Grey" has 4 letters) go to the deep stage.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from adasr.tasks.solutions import Step
from adasr.tasks.text import NUMBER_WORDS, content_words, known_numbers, number_key, unit_constants, words

__all__ = ["DEEP_REASONS", "GOAL_STEPS", "align_steps"]

DEEP_REASONS = ("answer", "no arithmetic", "operand not found", "operand in the last chunk",
                "after a deep-stage step", "plan")
"""Why a step stays after end of input (:attr:`Step.deep_reason`): it holds the ``\\boxed{}``
answer (or is prose after it; with goal steps after the question, it computes the answer); it
computes nothing the aligner can read; an operand is in no chunk of the question (and no earlier
result); its operands are complete only with the last chunk; an earlier step went to the deep
stage (placement is monotone); or (goal steps after the question) it is the solution's opening
plan."""

GOAL_STEPS = ("anticipate", "after-question")
"""Where the goal steps (the opening plan, the step computing the answer) may go: placed by the
operand rules like any step (``"anticipate"``), or in the deep stage (``"after-question"``)."""


def _anchor_chunk(step: Step, chunk_words: list[set[str]], chunk_content: list[set[str]]) -> int:
    """Earliest chunk allowed by the words of ``step``'s text (see "Word anchors").

    * number words: for every number word in the step text whose value is one of the step's
      operands, the first chunk containing that word;
    * content words: for every content word of the step, the first chunk containing it, unless
      that is the last chunk (the question sentence: computing towards what it asks from known
      quantities is anticipation, not a leak).

    Words that no chunk contains do not constrain. Returns 0 when nothing constrains the step.
    """
    ops = set(step.operands)
    lo = 0
    for w in words(step.text):
        if w in NUMBER_WORDS and ops.intersection(number_key(v) for v in NUMBER_WORDS[w]):
            first = next((k for k, ws in enumerate(chunk_words) if w in ws), None)
            if first is not None:
                lo = max(lo, first)
    last = len(chunk_content) - 1
    for w in content_words(step.text):
        first = next((k for k, ws in enumerate(chunk_content) if w in ws), None)
        if first is not None and first < last:
            lo = max(lo, first)
    return lo


def _release_chunk(
    value: float,
    step_words: set[str],
    mentions: list[set[float]],
    units_after: list[set[float]],
    chunk_content: list[set[str]],
    df: Counter,
) -> int | None:
    """The chunk after which a step may use the literal ``value`` (see "Mentions"), or ``None``.

    Among the chunks that mention ``value``, take the one whose content words best match the
    step's (each shared word weighs ``1/df``: a word found in fewer chunks says more); ties go
    to the later chunk, except that the last chunk (usually the question, often restating
    earlier numbers) must match strictly better to win. An implied-unit constant is known from
    the first chunk that triggers it, if that comes earlier.
    """
    last = len(mentions) - 1
    best, best_score = None, -1.0
    for k, vals in enumerate(mentions):
        if value not in vals:
            continue
        score = sum(1.0 / df[w] for w in step_words & chunk_content[k])
        if score > best_score + 1e-9 or (abs(score - best_score) <= 1e-9 and k != last):
            best, best_score = k, score
    unit = next((k for k, u in enumerate(units_after) if value in u), None)
    if best is None:
        return unit
    return best if unit is None else min(best, unit)


@dataclass
class _ChunkIndex:
    """What the alignment rules need to know about a problem's chunks."""

    mentions: list[set[float]]  # literal values (digits, number words) per chunk
    units_after: list[set[float]]  # implied-unit constants known after each chunk
    words: list[set[str]]
    content: list[set[str]]
    df: Counter

    @classmethod
    def of(cls, chunks: list[str]) -> "_ChunkIndex":
        units_after: list[set[float]] = []
        text_so_far = ""
        for c in chunks:
            text_so_far += " " + c
            units_after.append(unit_constants(text_so_far))
        content = [content_words(c) for c in chunks]
        return cls([known_numbers(c) for c in chunks], units_after, [words(c) for c in chunks], content,
                   Counter(w for ws in content for w in ws))


def align_steps(chunks: list[str], steps: list[Step], *, unannotated: str = "deep",
                goal_steps: str = "anticipate", answer: float | None = None) -> None:
    """Place each step after the earliest chunk once every quantity it uses is known (sets
    ``Step.chunk``/``Step.placed``; the rules are in the module docstring).

    Args:
        chunks: the question's chunks (N).
        steps: the solution's steps, in order; modified in place.
        unannotated: what a step without arithmetic does: ``"deep"`` (reference solutions: it
            and every later step go to the deep stage) or ``"attach"`` (free-form solutions:
            prose travels with the next step that computes something; trailing prose and any
            step holding ``\\boxed{}`` go to the deep stage).
        goal_steps: ``"anticipate"`` (default) or ``"after-question"``: the opening plan (prose
            before the first computing step, with ``unannotated="attach"``) and the step whose
            result is ``answer`` go to the deep stage ("Goal steps" in the module docstring).
        answer: the final answer's value, for ``goal_steps="after-question"`` (``None``: no step
            is recognised as computing the answer).

    Raises:
        ValueError: an unknown ``unannotated`` or ``goal_steps``.
    """
    if unannotated not in ("deep", "attach"):
        raise ValueError(f"unannotated must be 'deep' or 'attach', got {unannotated!r}")
    if goal_steps not in GOAL_STEPS:
        raise ValueError(f"goal_steps must be one of {GOAL_STEPS}, got {goal_steps!r}")
    after_question = goal_steps == "after-question"
    idx = _ChunkIndex.of(chunks)
    n = len(chunks)
    results_so_far: set[float] = set()
    prev_chunk = 0
    to_deep = False  # once a step goes to the deep stage, every later step follows it
    waiting: list[Step] = []  # prose steps attached to the next computing step
    opening = True  # no computing step seen yet: prose waiting now is the opening plan
    for st in steps:
        if unannotated == "attach" and not st.annotated and "\\boxed" not in st.text:
            waiting.append(st)
            continue
        if after_question and opening and waiting:
            for s in waiting:
                s.chunk, s.deep_reason = None, "plan"
            waiting = []
        opening = False
        computes_answer = (after_question and answer is not None and st.annotated
                           and any(number_key(r) == number_key(answer) for r in st.results))
        target = None
        if st.annotated and "\\boxed" not in st.text and not computes_answer:
            target = max(prev_chunk, _anchor_chunk(st, idx.words, idx.content))
            step_words = content_words(st.text)
            for op in st.operands:
                if op in results_so_far:
                    continue
                k = _release_chunk(op, step_words, idx.mentions, idx.units_after, idx.content, idx.df)
                if k is None:
                    target = None  # never known: fallback to the deep stage
                    break
                target = max(target, k)
        if to_deep:
            reason = "after a deep-stage step"
        elif "\\boxed" in st.text or computes_answer:
            reason = "answer"
        elif not st.annotated:
            reason = "no arithmetic"
        elif target is None:
            reason = "operand not found"
        elif target == n - 1:
            reason = "operand in the last chunk"
        else:
            reason = None
        if target is None:
            to_deep = True  # no annotation, operands never known, or the answer: the deep stage
        else:
            st.placed = True
            prev_chunk = target
            if target == n - 1:
                to_deep = True  # lands on the last chunk: no thought follows it
        for s in [*waiting, st]:
            s.chunk = None if to_deep else target
            s.deep_reason = reason if to_deep else None
        waiting = []
        results_so_far.update(st.results)
    for s in waiting:  # trailing prose: the deep stage, with the answer
        s.chunk, s.deep_reason = None, "answer"
