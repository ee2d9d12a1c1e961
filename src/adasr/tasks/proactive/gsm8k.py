"""``proactive_gsm8k`` (proactive agency on GSM8K, needs ``source``): GSM8K problems reordered,
their evidence chunk found by the step-to-chunk aligner.

A GSM8K problem reordered: its question sentence (the last sentence) first, then its other
sentences (facts) in order, then ``distractors`` sentences of unrelated problems of the same
split (``interleave=True`` mixes them among the facts instead). The answer is GSM8K's final
answer. **Evidence**: the last fact sentence the reference solution needs: every annotated
step (``<<expr=result>>``) of the solution is placed by the alignment rules
(:func:`adasr.tasks.align.align_steps`: earliest chunk after which its operands are
known, word anchors, monotone; prose lines travel with the next computing step) run on the
problem's own reordered sentences (distractors never take part), and the evidence is the
chunk of the last annotated step. A problem is rejected when it has no annotated step, a
step's operands never become known, an annotation is inconsistent, the final answer is not
an annotation's result, a prose line computes something without an annotation, the
solution does not parse, the problem has a single sentence, or its last sentence is not a
question (it neither ends with "?" nor says "find", "calculate", "how", "what", ...). When
the evidence comes before the last fact sentence, the problem is also rejected as
*ambiguous* if a later fact sentence mentions a number that is an operand of the solution
(:func:`adasr.tasks.text.known_numbers`), completes an implied-unit constant that is
one, or shares a content word with the solution's text: on GSM8K such sentences are usually
needed after all ("Then she colors the rest with green."), so only early evidence without
any such link is kept. Sentences that change the answer with neither a number nor a shared
word remain a limit of the heuristic. Distractor sentences share no capitalized name with
the problem. Knobs: ``distractors`` (default 2), ``interleave``
(default ``False``), ``heldout`` (problems at the end of ``source`` forming the test split,
default :data:`adasr.tasks.splits.GSM8K_HELDOUT`).

The test split is the last ``heldout`` problems of ``source`` (the project's GSM8K held-out set),
the train split the others minus any whose question also occurs in the test split.
"""

from __future__ import annotations

import os
import random
import re

from adasr.errors import DataError
from adasr.jsonl import read_jsonl
from adasr.stream import split_sentences
from adasr.tasks.align import align_steps
from adasr.tasks.families import bool_knob, int_knob
from adasr.tasks.proactive.base import ProactiveReport, Rejected, SourceFamily, make_record
from adasr.tasks.solutions import ParseFailure, parse_solution, read_arithmetic
from adasr.tasks.splits import GSM8K_HELDOUT, assert_disjoint, normalize_question
from adasr.tasks.text import (
    NUMBER_WORDS,
    STOPWORDS,
    content_words,
    known_numbers,
    numbers_close,
    parse_number,
    unit_constants,
)

__all__ = ["gsm8k_evidence", "build", "FAMILY"]

_ASKS = re.compile(r"\b(?:find|calculate|compute|determine|what|how|which|who|give|express)\b", re.I)
_CAP_WORD = re.compile(r"\b[A-Z][a-z]+\b")
_STARTERS = frozenset("each every one last next first after before during since today yesterday tomorrow "
                      "once while including".split())


def _names(sentences: list[str]) -> set[str]:
    """Capitalized words that are not function words, number words or common sentence starters."""
    return {w for s in sentences for w in _CAP_WORD.findall(s)
            if w.lower() not in STOPWORDS and w.lower() not in NUMBER_WORDS and w.lower() not in _STARTERS}


def gsm8k_evidence(question: str, answer: str) -> tuple[list[str], int, str]:
    """Reorder one GSM8K problem (question sentence first) and find its evidence chunk.

    Returns:
        ``(sentences, evidence, final)``: the question sentence followed by the fact sentences,
        the index (into those sentences) of the last one the reference solution needs, and the
        canonical final answer.

    Raises:
        Rejected: with the reason (see the module docstring).
    """
    try:
        steps, final = parse_solution(answer)
    except ParseFailure as e:
        raise Rejected(f"unparseable solution ({e.reason})") from None
    sents = split_sentences(question)
    if len(sents) < 2:
        raise Rejected("single sentence (no fact to wait for)")
    q = sents[-1]
    if not (q.rstrip().endswith("?") or _ASKS.search(q)):
        raise Rejected("last sentence is not a question")
    order = [q, *sents[:-1]]
    # "" after the real sentences: the alignment's last-chunk exceptions (made for the question
    # of a problem in its original order) then apply to no real sentence, and no step is sent to
    # the deep stage for landing on the last fact. Prose lines (no annotation) travel with the
    # next computing step: only the annotated arithmetic decides when the answer is computable.
    align_steps([*order, ""], steps, unannotated="attach")
    computing = [s for s in steps if s.annotated]
    if not computing:
        raise Rejected("no annotated step")
    if any(not s.placed or s.chunk is None for s in computing):
        raise Rejected("operands never known")
    if any(not s.consistent for s in computing):
        raise Rejected("inconsistent annotation")
    fin = parse_number(final)
    if fin is None or all(not numbers_close(r, fin) for s in steps for r in s.results):
        raise Rejected("final answer not derived by an annotation")
    if any(not s.annotated and read_arithmetic(s.text)[1] for s in steps):
        raise Rejected("arithmetic without annotation")
    evidence = max(s.chunk for s in computing)
    if evidence < len(order) - 1:
        # the alignment says the later sentences are not needed: reject the item when that is
        # uncertain (the later sentences could hold an operand or a word the solution uses)
        later = set().union(*(known_numbers(c) for c in order[evidence + 1:]))
        later |= unit_constants(" ".join(order)) - unit_constants(" ".join(order[: evidence + 1]))
        if later & {op for s in computing for op in s.operands}:
            raise Rejected("ambiguous evidence: a later sentence mentions an operand")
        words = set().union(*(content_words(s.text) for s in steps))
        if any(words & content_words(c) for c in order[evidence + 1:]):
            raise Rejected("ambiguous evidence: a later sentence shares words with the solution")
    return order, evidence, final


def build(size: int | None, seed: int, split: str, source: str | os.PathLike,
          knobs: dict) -> tuple[list[dict], ProactiveReport]:
    """The ``split`` records of ``source`` (at most ``size``; all when ``None``) with ``knobs``
    (``distractors``, ``interleave``, ``heldout``; module docstring) and the build report.

    Raises:
        ConfigError: a bad knob value.
        DataError: the source is missing or malformed or too short for a train split; a
            train/test overlap (never expected).
    """
    n_distract = int_knob(knobs, "distractors", 2, lo=0)
    interleave = bool_knob(knobs, "interleave", False)
    heldout = int_knob(knobs, "heldout", GSM8K_HELDOUT)
    recs = read_jsonl(source)
    if len(recs) <= heldout:
        raise DataError(f"{source} has {len(recs)} problems: not more than heldout={heldout}, so no train split")
    test_idx = range(len(recs) - heldout, len(recs))
    split_idx = test_idx if split == "test" else range(0, len(recs) - heldout)
    test_q = {normalize_question(recs[i].get("question", "")) for i in test_idx}
    task = "proactive_gsm8k"
    report = ProactiveReport(task=task, split=split, requested=size)
    out: list[dict] = []
    originals: list[str] = []
    seen: set[str] = set()
    sent_cache: dict[int, list[str]] = {}

    def sentences(j: int) -> list[str]:
        if j not in sent_cache:
            q = recs[j].get("question")
            sent_cache[j] = split_sentences(q) if isinstance(q, str) else []
        return sent_cache[j]

    for i in split_idx:
        if size is not None and len(out) >= size:
            break
        rec = recs[i]
        report.drawn += 1
        q, a = rec.get("question"), rec.get("answer")
        if not isinstance(q, str) or not isinstance(a, str) or not q.strip():
            report.reject("not a GSM8K record")
            continue
        key = normalize_question(q)
        if split == "train" and key in test_q:
            report.reject("question in the test split")
            continue
        if key in seen:
            report.reject("duplicate question")
            continue
        try:
            order, evidence, final = gsm8k_evidence(q, a)
        except Rejected as e:
            report.reject(e.reason)
            continue
        rng = random.Random(f"{task}|{split}|{seed}|{i}")
        names = _names(order)
        chosen: list[str] = []
        for _ in range(50 * max(n_distract, 1)):
            if len(chosen) >= n_distract:
                break
            j = rng.choice(split_idx)
            facts = sentences(j)[:-1]
            if j == i or not facts:
                continue
            s = rng.choice(facts)
            if s in chosen or s in order or s.rstrip().endswith("?") or names & _names([s]):
                continue
            chosen.append(s)
        if len(chosen) < n_distract:
            report.reject("no distractor sentence found")
            continue
        if interleave:
            slots = sorted(rng.sample(range(1, len(order) + n_distract), n_distract))
            chunks, facts, dis = [], iter(order), iter(chosen)
            pos = {}
            for k in range(len(order) + n_distract):
                if k in slots:
                    chunks.append(next(dis))
                else:
                    pos[len(pos)] = k
                    chunks.append(next(facts))
            ev_chunk = pos[evidence]
        else:
            chunks, ev_chunk = [*order, *chosen], evidence
        seen.add(key)
        originals.append(q)
        rid = str(rec["id"]) if rec.get("id") is not None else f"{task}-{split}-{seed}-{i}"
        out.append(make_record(task, rid, chunks, ev_chunk, final))
    report.built = len(out)
    if split == "train":
        assert_disjoint(originals, (recs[i].get("question", "") for i in test_idx), f"the {task} train split")
    return out, report


FAMILY = SourceFamily("proactive_gsm8k", ("distractors", "interleave", "heldout"), "a GSM8K JSON-lines file", build)
