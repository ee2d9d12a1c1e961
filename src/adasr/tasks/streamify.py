"""Streamified GSM8K: streaming chain-of-thought training data without a teacher model.

A GSM8K reference solution is a list of steps (one per line before ``####``) whose arithmetic
is annotated as ``<<expr=result>>`` (:func:`adasr.tasks.solutions.parse_solution`). We stream the
question one sentence (chunk) at a time and move every step to the *earliest chunk after which it
can be computed* (:func:`adasr.tasks.align.align_steps`, whose docstring has the rules); those
steps become that chunk's streaming thought, the rest form the deep stage: the remaining steps
(one per line) followed by ``The answer is \\boxed{<final>}.``. A model's own free-form solution
is streamified the same way (:func:`streamify_solution`; its thoughts are notes in a style of
:mod:`adasr.tasks.notes`).

Output records follow the shared streaming-episode schema (one SFT episode each)::

    id: str, task: "gsm8k", question: str, chunks: list[str] (N),
    thoughts: list[str] (N-1; "" is a skip), deep: str (ends with "\\boxed{<answer>}"),
    answer: str (canonical: commas stripped)

Records of reference solutions (:func:`streamify_problem`) also carry ``note_targets``:
list[float], the results of the reference steps placed before the last chunk that are not
numbers of the question, i.e. the intermediate results a streaming note can reach before end of
input (what the per-note reward of :func:`adasr.train.rewards.note_credit` checks).

A problem is **clean** when every annotation is consistent (its expression evaluates to its
result, up to the rounding GSM8K uses), every step has an annotation whose operands become known
(so it was placed by the alignment rules, not by a fallback), and the final ``####`` answer is the
result of one of the annotations (the boxed answer is derived by the steps). Problems that are
not clean are still converted; problems that fail to parse at all (no ``####``, an empty or
non-numeric final answer, no steps, a malformed ``<<...>>`` annotation, an empty question) are
excluded and counted by reason in :class:`StreamifyReport`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import groupby
from typing import Iterable

from adasr.stream import chunk_text, split_sentences
from adasr.tasks.align import align_steps
from adasr.tasks.notes import DEEP_STYLES, NOTE_STYLES, ThoughtFit, fit_thoughts, terse_note
from adasr.tasks.solutions import ParseFailure, Step, parse_free_solution, parse_solution
from adasr.tasks.text import canonical_answer, known_numbers, numbers_close, parse_number

EPISODE_CHUNKERS = ("sentence", "clause")
"""Chunkers (:func:`adasr.stream.chunk_text` names) a distilled solution's question can be cut
with (``--chunker`` of ``adasr data distill``)."""


def episode_chunks(question: str, chunker: str = "sentence") -> list[str]:
    """The chunks of a distilled solution's ``question`` (non-blank) with an episode chunker.

    Raises:
        ValueError: a chunker not in :data:`EPISODE_CHUNKERS`.
    """
    if chunker not in EPISODE_CHUNKERS:
        raise ValueError(f"chunker must be one of {EPISODE_CHUNKERS}, got {chunker!r}")
    return chunk_text(question, chunker)

__all__ = [
    "EPISODE_CHUNKERS",
    "StreamifiedProblem",
    "episode_chunks",
    "StreamifyReport",
    "note_targets",
    "streamify_problem",
    "streamify_solution",
    "streamify_gsm8k",
]


@dataclass
class StreamifiedProblem:
    """One streamified problem: the shared-schema ``record``, its ``steps`` (with their chunk
    assignments), whether it is ``clean`` and, if not, the ``issues`` found."""

    record: dict
    steps: list[Step]
    clean: bool
    issues: list[str] = field(default_factory=list)

    @property
    def stream_steps(self) -> int:
        """Steps placed in streaming thoughts (the rest are in the deep stage)."""
        return sum(s.chunk is not None for s in self.steps)


# --------------------------------------------------------------------------- one problem


def streamify_solution(question: str, solution: str, final: str, *, id: str = "",
                       task: str = "gsm8k", notes: str = "steps", one_line: bool = False,
                       fit: ThoughtFit | None = None, deep_style: str = "verbatim",
                       chunker: str = "sentence", goal_steps: str = "anticipate") -> StreamifiedProblem:
    """Streamify a free-form solution (e.g. the model's own, from :mod:`adasr.train.distill`).

    Same chunking and placement rules as :func:`streamify_problem`
    (:func:`~adasr.tasks.align.align_steps`), with steps and operands read by
    :func:`~adasr.tasks.solutions.parse_free_solution`; prose without arithmetic travels with the
    next computing step, and the step with the ``\\boxed{}`` answer, with everything
    after it, forms the deep stage (``The answer is \\boxed{final}.`` is appended when the
    solution boxes nothing). The deep stage is a slice of the solution text, exactly as the
    model wrote it. A streaming thought is a short note on the computing steps placed after its
    chunk; ``notes`` picks its style:

    * ``"steps"``: the computing steps, one per line, as the model wrote them; the prose placed
      with them (plans, restated facts: "To find the total, we need to ...") is dropped;
    * ``"prose"``: the whole slice of the solution, prose included;
    * ``"terse"``: each computing step reduced to its computations
      (:func:`~adasr.tasks.notes.terse_note`): thoughts short enough to fit the slack between
      chunks (an adaptive thought is closed when the next chunk arrives: at 2.5 words/s and 7
      tokens/s a 12-word chunk leaves ~34 tokens).

    ``one_line`` collapses each thought's whitespace (line breaks of lists and display math
    included) to single spaces, the thought format of ``Protocol.one_line_thoughts`` (a thought
    ends at its first line break). ``fit``: thoughts are made to fit the room the input's arrival
    leaves (:func:`~adasr.tasks.notes.fit_thoughts`); steps that do not fit move to later chunks
    or the deep stage. ``deep_style="terse"`` writes the deep stage's computing steps as
    :func:`~adasr.tasks.notes.terse_note` lines (one per step; the prose between them dropped) and
    keeps the step with ``\\boxed{}`` and what follows it verbatim: a concise deep stage
    (``"verbatim"``: the solution's slice). ``chunker``: how the question is cut into chunks,
    ``"sentence"`` or ``"clause"`` (:func:`~adasr.stream.split_clauses`: a final question clause
    on its own), the chunker the episodes are then run with (``--chunker``). ``goal_steps``:
    ``"after-question"`` keeps the solution's opening plan and the step computing ``final`` for the
    deep stage, which then opens with the plan (:func:`~adasr.tasks.align.align_steps`, "Goal
    steps"); ``"anticipate"`` (default) places them like any step.

    Raises:
        ParseFailure: empty question or solution.
        ValueError: an unknown ``notes`` style, deep style, chunker or ``goal_steps``.
    """
    if notes not in NOTE_STYLES:
        raise ValueError(f"notes must be one of {NOTE_STYLES}, got {notes!r}")
    if deep_style not in DEEP_STYLES:
        raise ValueError(f"deep_style must be one of {DEEP_STYLES}, got {deep_style!r}")
    if not isinstance(question, str) or not question.strip():
        raise ParseFailure("empty question")
    chunks = episode_chunks(question, chunker)
    steps = parse_free_solution(solution or "")
    align_steps(chunks, steps, unannotated="attach", goal_steps=goal_steps, answer=parse_number(str(final)))
    note_of = (lambda st: terse_note(st.text)) if notes == "terse" else (lambda st: st.text)
    if fit is not None:
        fit_thoughts(steps, fit.capacity(chunks), note_of, fit.count)

    def text_of(group: list[Step]) -> str:
        """The solution's text of ``group`` (steps in order): one slice per run of consecutive
        steps (placement is monotone, so a thought is one slice; a deep stage that opens with
        the plan is two), runs joined by a blank line."""
        runs = [list(run) for inside, run in groupby(steps, key=lambda s: any(s is g for g in group)) if inside]
        return "\n\n".join(solution[r[0].span[0]:r[-1].span[1]].strip() for r in runs)

    def thought(k: int) -> str:
        group = [s for s in steps if s.chunk == k]
        if notes == "prose":
            text = text_of(group)
        else:
            text = ("; " if notes == "terse" else "\n").join(note_of(s) for s in group if s.annotated)
        return re.sub(r"\s+", " ", text).strip() if one_line else text

    thoughts = [thought(k) for k in range(len(chunks) - 1)]
    deep_steps = [s for s in steps if s.chunk is None]
    if deep_style == "terse":
        boxed = next((i for i, s in enumerate(deep_steps) if "\\boxed" in s.text), len(deep_steps))
        lines = [terse_note(s.text) for s in deep_steps[:boxed] if s.annotated]
        deep = "\n".join([*lines, text_of(deep_steps[boxed:])]).strip()
    else:
        deep = text_of(deep_steps)
    if "\\boxed" not in deep:
        deep = (deep + "\n\n" if deep else "") + f"The answer is \\boxed{{{canonical_answer(final)}}}."
    record = {"id": id, "task": task, "question": question.strip(), "chunks": chunks, "thoughts": thoughts,
              "deep": deep, "answer": canonical_answer(final)}
    issues = ["inconsistent arithmetic"] if any(not s.consistent for s in steps) else []
    return StreamifiedProblem(record=record, steps=steps, clean=not issues, issues=issues)


def note_targets(question: str, steps: list[Step]) -> list[float]:
    """The intermediate results a streaming note can reach before end of input: the results of the
    aligned ``steps`` placed before the last chunk (``Step.chunk`` not ``None``), as canonical
    keys in solution order, without repeats and without numbers the ``question`` states (copying a
    given number computes nothing)."""
    given = known_numbers(question)
    out: list[float] = []
    for s in steps:
        if s.chunk is None:
            continue
        out.extend(r for r in s.results if r not in out and not any(numbers_close(r, g) for g in given))
    return out


def streamify_problem(question: str, answer: str, *, id: str = "", task: str = "gsm8k") -> StreamifiedProblem:
    """Streamify one GSM8K problem (``question`` and its reference ``answer`` field).

    Raises:
        ParseFailure: the problem cannot be converted (see
            :func:`~adasr.tasks.solutions.parse_solution`; also an empty question).
    """
    if not isinstance(question, str) or not question.strip():
        raise ParseFailure("empty question")
    if not isinstance(answer, str):
        raise ParseFailure("no #### marker", "answer is not a string")
    steps, final = parse_solution(answer)
    chunks = split_sentences(question)
    if not chunks:
        raise ParseFailure("empty question")
    align_steps(chunks, steps, unannotated="deep")
    n = len(chunks)
    thoughts = [" ".join(s.text for s in steps if s.chunk == k) for k in range(n - 1)]
    deep_lines = [s.text for s in steps if s.chunk is None]
    deep_lines.append(f"The answer is \\boxed{{{final}}}.")
    record = {
        "id": id,
        "task": task,
        "question": question.strip(),
        "chunks": chunks,
        "thoughts": thoughts,
        "deep": "\n".join(deep_lines),
        "answer": final,
        "note_targets": note_targets(question, steps),
    }

    issues: list[str] = []
    if any(not s.consistent for s in steps):
        issues.append("inconsistent annotation")
    if any(not s.annotated for s in steps):
        issues.append("step without annotation")
    elif any(not s.placed for s in steps):
        issues.append("operands never known")
    fin = parse_number(final)
    if fin is None or all(not numbers_close(r, fin) for s in steps for r in s.results):
        issues.append("final answer not derived by an annotation")
    return StreamifiedProblem(record=record, steps=steps, clean=not issues, issues=issues)


# --------------------------------------------------------------------------- batch conversion


@dataclass
class StreamifyReport:
    """Statistics of one :func:`streamify_gsm8k` run.

    Attributes:
        total: records read.
        converted: records converted (not excluded).
        clean: converted records that are clean (see the module docstring).
        excluded: reasons for excluded records -> count.
        not_clean: issues of converted but unclean records -> count (one record may count
            under several issues).
        skip_rate: fraction of non-final chunks (over all converted records) whose thought is
            ``""``.
        mean_chunks: mean number of chunks per converted record.
        mean_stream_steps_fraction: mean over converted records of (steps in streaming
            thoughts / all steps).
        stream_steps_fraction: pooled (steps in streaming thoughts / all steps), over all
            converted records.
        with_thought: fraction of converted records with at least one non-empty thought.
    """

    total: int = 0
    converted: int = 0
    clean: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    not_clean: dict[str, int] = field(default_factory=dict)
    skip_rate: float = 0.0
    mean_chunks: float = 0.0
    mean_stream_steps_fraction: float = 0.0
    stream_steps_fraction: float = 0.0
    with_thought: float = 0.0

    @property
    def clean_fraction(self) -> float:
        """Clean records / records read."""
        return self.clean / self.total if self.total else 0.0

    @property
    def converted_fraction(self) -> float:
        """Converted records / records read."""
        return self.converted / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["clean_fraction"] = self.clean_fraction
        d["converted_fraction"] = self.converted_fraction
        return d


def streamify_gsm8k(
    records: Iterable[dict], *, clean_only: bool = False, id_prefix: str = "gsm8k-"
) -> tuple[list[dict], StreamifyReport]:
    """Streamify GSM8K records (``{"question", "answer"}``, optional ``"id"``).

    Args:
        records: GSM8K records, e.g. from :func:`adasr.jsonl.read_jsonl`.
        clean_only: keep only clean conversions (the report still counts all).
        id_prefix: ids are ``record["id"]`` when present, else ``f"{id_prefix}{i}"`` with ``i``
            the record's position in ``records``.

    Returns:
        ``(episodes, report)``: shared-schema records and the conversion statistics.
    """
    out: list[dict] = []
    rep = StreamifyReport()
    excluded: Counter = Counter()
    not_clean: Counter = Counter()
    n_nonfinal = n_skip = n_chunks = n_steps = n_stream = n_with = 0
    fracs: list[float] = []
    for i, rec in enumerate(records):
        rep.total += 1
        rid = str(rec.get("id", f"{id_prefix}{i}")) if isinstance(rec, dict) else f"{id_prefix}{i}"
        try:
            if not isinstance(rec, dict):
                raise ParseFailure("not a record")
            p = streamify_problem(rec.get("question"), rec.get("answer"), id=rid)
        except ParseFailure as e:
            excluded[e.reason] += 1
            continue
        rep.converted += 1
        rep.clean += p.clean
        not_clean.update(p.issues)
        r = p.record
        n_chunks += len(r["chunks"])
        n_nonfinal += len(r["thoughts"])
        n_skip += sum(t == "" for t in r["thoughts"])
        n_with += any(r["thoughts"])
        n_steps += len(p.steps)
        n_stream += p.stream_steps
        fracs.append(p.stream_steps / len(p.steps))
        if p.clean or not clean_only:
            out.append(r)
    rep.excluded = dict(excluded)
    rep.not_clean = dict(not_clean)
    if rep.converted:
        rep.skip_rate = n_skip / n_nonfinal if n_nonfinal else 1.0
        rep.mean_chunks = n_chunks / rep.converted
        rep.mean_stream_steps_fraction = sum(fracs) / len(fracs)
        rep.stream_steps_fraction = n_stream / n_steps if n_steps else 0.0
        rep.with_thought = n_with / rep.converted
    return out, rep
