"""Building proactive items: the families by name, the generated families' build loop (solver
check, duplicates, the train/test split) and the entry points :func:`build_proactive` and
:func:`build_proactive_with_report` (the rules: :mod:`adasr.tasks.proactive`).

Knobs every generated family takes (:data:`STREAM_KNOBS`; defaults build the items the families
built before these knobs existed, byte for byte):

* ``templates``: the template set its sentences are phrased from, ``first`` (default),
  ``train``, ``heldout``, ``all``, or a set with training-only phrasings
  (:data:`~adasr.tasks.proactive.base.TRAINING_ONLY_SETS`;
  :func:`~adasr.tasks.proactive.base.template_subset`). A training build should use
  ``train``, a training-only set or the default; a held-out-template evaluation set ``heldout``
  (``split=test``).
* ``distractor_prob`` (default 0) and ``tail`` (or ``min_tail``/``max_tail``, default 0):
  unrelated sentences before each fact with that probability, and that many after the facts
  (:func:`~adasr.tasks.proactive.base.interleave`); drawn with their own random stream, so the
  item under them is the one built without.
* ``continuation`` (default ``False``): records continue past the answer for training with
  revisions (:func:`~adasr.tasks.proactive.base.continue_record`): silent turns after a right
  answer, or, with probability ``correction_prob`` (default 0.25) when a turn follows the
  evidence chunk, a plausible wrong first answer (the family's ``mistake``; with notes, the
  evidence note carries the same slip) corrected at the next chunk. Own random stream too: the
  chunks are those built without.
* ``correction_at`` (default ``next``, with ``continuation``): where a correction episode puts
  its wrong answer. ``next``: at the evidence chunk, corrected at the chunk after it (above).
  ``premature``: at an earlier chunk that states the wrong value and whose note is a check
  ending "no." (written "yes." there: "Felix home = Felix work? yes. \\boxed{Oslo}"), the notes
  going on after it and the right response at the evidence chunk, then silence; a stream with
  no such chunk (or a family without checks) continues in silence. The slips a model makes
  (RESULTS.md section 37) are premature answers, which a correction at the next chunk never
  shows it how to revise.
* ``after_answer`` (default ``silence``, with ``continuation`` and ``notes``): the turns after
  the record's own response. ``silence``: silent turns (above). ``checks``: the family's notes of
  those chunks where the note ends with a check that fails ("Wen work? no.", "38 - 10 = 28.
  28 > 30? no."); a note ending with a check that holds keeps only what comes before the check
  (the running total's update "28 + 7 = 35.", so the next note's total was written), or is
  silence; a note without a check is silence. The model keeps checking after any answer, right
  or wrong, so a correction at the evidence is the same habit as a first response, not a change
  of behaviour that only a wrong answer (which the model cannot tell from a right one) would
  call for. No turn after the answer says "yes.", so none commits an answer. ``confirm``: as
  ``checks``, but a note ending with a check that holds is kept whole and followed by the
  record's answer, a confirmation the engine ignores ("72 > 59? yes. \\boxed{85}" after
  "85 > 59? yes. \\boxed{85}"): after a right answer a held check confirms it, after a
  premature wrong one the evidence's held check corrects it.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

import re

from adasr.errors import ConfigError
from adasr.tasks.families import Families, bool_knob, check_seed, check_size, choice_knob, int_knob, prob_knob, range_knob
from adasr.tasks.proactive import gsm8k, perception, temporal, threshold
from adasr.tasks.proactive.base import (
    TEMPLATE_SETS,
    GeneratedFamily,
    ProactiveReport,
    Rejected,
    SourceFamily,
    continue_record,
    interleave,
    make_record,
)
from adasr.tasks.splits import assert_disjoint, normalize_question

__all__ = [
    "FAMILIES",
    "PROACTIVE_TASKS",
    "SPLITS",
    "DEFAULT_HELDOUT_SIZE",
    "STREAM_KNOBS",
    "build_proactive",
    "build_proactive_with_report",
]

FAMILIES: Families[GeneratedFamily | SourceFamily] = Families(
    "proactive", [perception.FAMILY, temporal.FAMILY, threshold.FAMILY, gsm8k.FAMILY])
"""The proactive families; a new family is a module with a ``FAMILY``, registered here."""

PROACTIVE_TASKS: tuple[str, ...] = FAMILIES.names
"""Task names of the proactive families."""

SPLITS: tuple[str, ...] = ("train", "test")

DEFAULT_HELDOUT_SIZE = 1000
"""Test items of a generated family that a train build keeps out (see :mod:`adasr.tasks.proactive`)."""

_COMMON_KNOBS = ("split", "heldout_size")  # every generated family's

STREAM_KNOBS: tuple[str, ...] = ("templates", "distractor_prob", "tail", "min_tail", "max_tail", "continuation",
                                 "correction_prob", "correction_at", "after_answer")
"""Knobs every generated family takes besides ``split`` and ``heldout_size`` (module docstring)."""


CORRECTION_AT: tuple[str, ...] = ("next", "premature")
"""Values of the ``correction_at`` knob (module docstring)."""

AFTER_ANSWER: tuple[str, ...] = ("silence", "checks", "confirm")
"""Values of the ``after_answer`` knob (module docstring)."""

_PREMATURE_TRIES = 8  # wrong values drawn for a premature correction before the stream goes silent


def _stream_config(knobs: dict) -> dict:
    """The generator config of :data:`STREAM_KNOBS`. Raises ConfigError."""
    continuation = bool_knob(knobs, "continuation", False)
    for knob in ("correction_prob", "correction_at", "after_answer"):
        if knobs.get(knob) is not None and not continuation:
            raise ConfigError(f"{knob} needs continuation=true")
    return {
        "templates": choice_knob(knobs, "templates", "first", TEMPLATE_SETS),
        "distractor_prob": prob_knob(knobs, "distractor_prob", 0.0, upper=False),
        "tail": range_knob(knobs, "tail", (0, 0), lo=0),
        "continuation": continuation,
        "correction_prob": prob_knob(knobs, "correction_prob", 0.25),
        "correction_at": choice_knob(knobs, "correction_at", "next", CORRECTION_AT),
        "after_answer": choice_knob(knobs, "after_answer", "silence", AFTER_ANSWER),
    }


def _config(fam: GeneratedFamily, knobs: dict) -> dict:
    """The family's generator config plus :func:`_stream_config`. Raises ConfigError."""
    cfg = {**fam.config({k: v for k, v in knobs.items() if k not in STREAM_KNOBS}), **_stream_config(knobs)}
    if cfg["after_answer"] != "silence" and not (cfg.get("notes") and fam.notes is not None):
        raise ConfigError(f"after_answer={cfg['after_answer']} needs notes=true (and a family with notes; {fam.name} "
                          f"{'has none' if fam.notes is None else 'was built without'})")
    return cfg


def _token_re(value: str) -> re.Pattern:
    """``value`` as a whole token ("7" in "7 > 6" but not in "17" or "-7")."""
    return re.compile(rf"(?<![\w-]){re.escape(value)}(?!\w)")


def _slip(note: str, answer: str, wrong: str) -> str:
    """``note`` with the last mention of ``answer`` (as a whole token) in each of its sentences
    written as ``wrong``: the evidence note of a wrong first answer ("14 + 13 = 27." -> "14 + 13 =
    26.", "14 + 13 = 27. 27 > 20? yes." -> "14 + 13 = 26. 26 > 20? yes."); unchanged when it does
    not mention the answer."""
    def one(sentence: str) -> str:
        hits = list(_token_re(answer).finditer(sentence))
        return sentence if not hits else sentence[: hits[-1].start()] + wrong + sentence[hits[-1].end():]

    return "".join(one(part) for part in re.split(r"(?<=[.?!] )", note))


def _freeze(knobs: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in knobs.items()))


@lru_cache(maxsize=16)
def _test_questions(task: str, seed: int, frozen: tuple, n: int) -> frozenset[str]:
    knobs = {k: list(v) if isinstance(v, tuple) else v for k, v in frozen}
    recs, _ = _build_generated(FAMILIES.get(task), n, seed, "test", knobs, set())
    return frozenset(normalize_question(r["question"]) for r in recs)


def _build_generated(fam: GeneratedFamily, size: int, seed: int, split: str, knobs: dict,
                     exclude: set[str] | frozenset[str]) -> tuple[list[dict], ProactiveReport]:
    """Items ``0, 1, ...`` of ``(task, split, seed)`` until ``size`` are built (or 50 per wanted
    item, plus 1000, were drawn), each checked by the family's solver, duplicates and ``exclude``
    questions skipped. Item ``i`` draws from ``random.Random("task|split|seed|i")``, its
    distractors and continuation from that string plus ``|distractors`` / ``|continuation``."""
    task = fam.name
    cfg = _config(fam, knobs)
    report = ProactiveReport(task=task, split=split, requested=size)
    out: list[dict] = []
    seen: set[str] = set()
    max_draws = 50 * size + 1000
    i = 0
    while len(out) < size and i < max_draws:
        name = f"{task}|{split}|{seed}|{i}"
        rng = random.Random(name)
        idx, i = i, i + 1
        report.drawn += 1
        try:
            chunks, intended = fam.generate(rng, cfg)
            chunks, where = interleave(random.Random(f"{name}|distractors"), chunks, cfg["distractor_prob"],
                                       cfg["tail"], cfg["templates"])
            if intended is not None:
                e = intended[1]
                intended = (intended[0], where[e] if e >= 0 else len(chunks) + e)
            answer, evidence = fam.solve(chunks)
            if intended is not None and intended != (answer, evidence):
                raise Rejected("generator and solver disagree")
        except Rejected as e:
            report.reject(e.reason)
            continue
        key = normalize_question(" ".join(chunks))
        if key in seen:
            report.reject("duplicate question")
            continue
        if key in exclude:
            report.reject("question in the test split")
            continue
        seen.add(key)
        notes = fam.notes(chunks, evidence, cfg) if cfg.get("notes") else None
        rec = make_record(task, f"{task}-{split}-{seed}-{idx}", chunks, evidence, answer, notes)
        if cfg["continuation"]:
            rec = _continue(fam, rec, random.Random(f"{name}|continuation"), cfg, notes)
        out.append(rec)
    report.built = len(out)
    return out, report


def _continue(fam: GeneratedFamily, rec: dict, rng: random.Random, cfg: dict, notes: list[str] | None) -> dict:
    """``rec`` continued past its answer (knob ``continuation``): a correction with probability
    ``correction_prob`` where a turn follows the evidence chunk, else silence; with
    ``correction_at="premature"``, :func:`_premature`."""
    e, n = rec["evidence_chunk"], len(rec["chunks"])
    if cfg["correction_at"] == "premature":
        return _premature(fam, rec, rng, cfg, notes)
    if cfg["after_answer"] != "silence":
        raise ConfigError(f"after_answer={cfg['after_answer']} needs correction_at=premature (a correction at "
                          "the next chunk ends the episode)")
    if e + 1 > n - 2 or fam.mistake is None or rng.random() >= cfg["correction_prob"]:
        return continue_record(rec)
    wrong = fam.mistake(rng, rec["chunks"], rec["answer"])
    note = _slip(notes[e], rec["answer"], wrong) if notes else ""
    return continue_record(rec, f"{note} \\boxed{{{wrong}}}".strip())


def _premature(fam: GeneratedFamily, rec: dict, rng: random.Random, cfg: dict, notes: list[str] | None) -> dict:
    """``rec`` continued past its answer with ``correction_at="premature"``: with probability
    ``correction_prob``, a wrong value of the family's ``mistake`` answered at the last chunk
    before the evidence that states it and whose note is a check ending "no." (the note's "no."
    written "yes."), the record's own turns after it (knob docstring); else silence."""
    e = rec["evidence_chunk"]
    after = _checks_after(fam, rec, cfg)
    if fam.mistake is None or not notes or rng.random() >= cfg["correction_prob"]:
        return continue_record(rec, after=after)
    for _ in range(_PREMATURE_TRIES):
        wrong = fam.mistake(rng, rec["chunks"], rec["answer"])
        token = _token_re(wrong)
        at = next((k for k in range(e - 1, 0, -1)
                   if notes[k].endswith("? no.") and token.search(rec["chunks"][k])), None)
        if at is not None:
            return continue_record(rec, f"{notes[at].removesuffix('no.')}yes. \\boxed{{{wrong}}}", at=at, after=after)
    return continue_record(rec, after=after)


def _checks_after(fam: GeneratedFamily, rec: dict, cfg: dict) -> list[str] | None:
    """The turns after the record's response with ``after_answer`` ``checks`` or ``confirm``
    (module docstring): from the family's note of each chunk ``e + 1 .. N - 2``, a failed check
    kept; a held check cut off (what precedes it kept) or, with ``confirm``, kept and followed by
    the record's answer; other notes silenced. ``None`` (silence) with ``after_answer="silence"``."""
    if cfg["after_answer"] == "silence":
        return None
    e, n = rec["evidence_chunk"], len(rec["chunks"])
    notes = fam.notes(rec["chunks"], n - 2, cfg)[e + 1: n - 1]
    confirm = f"\\boxed{{{rec['answer']}}}" if cfg["after_answer"] == "confirm" else None
    return [_checks_only(t, confirm) for t in notes] + [""] * (n - 2 - e - len(notes))


def _checks_only(note: str, confirm: str | None = None) -> str:
    """``note`` if it ends with a failed check ("? no."); if it ends with a held check ("? yes."),
    ``note`` followed by ``confirm`` when given, else the sentences before that check ("" if
    none); else ""."""
    if note.endswith("? no."):
        return note
    if note.endswith("? yes."):
        if confirm is not None:
            return f"{note} {confirm}"
        return note.rsplit(". ", 1)[0] + "." if ". " in note else ""
    return ""


def build_proactive_with_report(task: str, size: int | None = None, seed: int = 0, *, source=None,
                                **knobs: Any) -> tuple[list[dict], ProactiveReport]:
    """Like :func:`build_proactive`, also returning the :class:`ProactiveReport`."""
    fam = FAMILIES.get(task)
    if size is not None:
        check_size(size)
    check_seed(seed)
    split = choice_knob(knobs, "split", "train", SPLITS)
    if isinstance(fam, SourceFamily):
        fam.check_knobs(knobs, ("split",))
        if source is None:
            raise ConfigError(f"task {task!r} needs source=<path of {fam.source}>")
        return fam.build(size, seed, split, source, {k: v for k, v in knobs.items() if k != "split"})
    fam.check_knobs(knobs, _COMMON_KNOBS + STREAM_KNOBS)
    if source is not None:
        raise ConfigError(f"task {task!r} is generated: it takes no source")
    heldout = int_knob(knobs, "heldout_size", DEFAULT_HELDOUT_SIZE)
    fam_knobs = {k: v for k, v in knobs.items() if k not in _COMMON_KNOBS}
    _config(fam, fam_knobs)  # validate before any generation
    n = 1000 if size is None else size
    exclude = frozenset() if split == "test" else _test_questions(task, seed, _freeze(fam_knobs), heldout)
    out, report = _build_generated(fam, n, seed, split, fam_knobs, exclude)
    if split == "train":
        assert_disjoint((r["question"] for r in out), exclude, f"the {task} train split")
    return out, report


def build_proactive(task: str, size: int | None = None, seed: int = 0, *, source=None, **knobs: Any) -> list[dict]:
    """Build proactive records (:mod:`adasr.tasks.proactive`).

    Args:
        task: one of :data:`PROACTIVE_TASKS`.
        size: items wanted (generated default 1000; GSM8K: all problems of the split when
            ``None``); fewer when the source runs out, see the report.
        seed: generator seed; the same arguments give the same records.
        source: GSM8K JSON-lines file (``proactive_gsm8k`` only).
        **knobs: ``split`` (``"train"``, default, or ``"test"``); generated families:
            ``heldout_size``, the knobs of :data:`STREAM_KNOBS` (module docstring) and the
            family's difficulty knobs.

    Raises:
        ConfigError: unknown task or knob, bad size/seed/knob value, GSM8K without source.
        DataError: the source is missing or malformed; a train/test overlap (never expected).
    """
    return build_proactive_with_report(task, size, seed, source=source, **knobs)[0]
