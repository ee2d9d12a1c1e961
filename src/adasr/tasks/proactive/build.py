"""Building proactive items: the families by name, the generated families' build loop (solver
check, duplicates, the train/test split) and the entry points :func:`build_proactive` and
:func:`build_proactive_with_report` (the rules: :mod:`adasr.tasks.proactive`)."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

from adasr.errors import ConfigError
from adasr.tasks.families import Families, check_seed, check_size, choice_knob, int_knob
from adasr.tasks.proactive import gsm8k, perception, temporal, threshold
from adasr.tasks.proactive.base import GeneratedFamily, ProactiveReport, Rejected, SourceFamily, make_record
from adasr.tasks.splits import assert_disjoint, normalize_question

__all__ = [
    "FAMILIES",
    "PROACTIVE_TASKS",
    "SPLITS",
    "DEFAULT_HELDOUT_SIZE",
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
    questions skipped."""
    task = fam.name
    cfg = fam.config(knobs)
    report = ProactiveReport(task=task, split=split, requested=size)
    out: list[dict] = []
    seen: set[str] = set()
    max_draws = 50 * size + 1000
    i = 0
    while len(out) < size and i < max_draws:
        rng = random.Random(f"{task}|{split}|{seed}|{i}")
        idx, i = i, i + 1
        report.drawn += 1
        try:
            chunks, intended = fam.generate(rng, cfg)
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
        notes = fam.notes(chunks, evidence) if cfg.get("notes") else None
        out.append(make_record(task, f"{task}-{split}-{seed}-{idx}", chunks, evidence, answer, notes))
    report.built = len(out)
    return out, report


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
    fam.check_knobs(knobs, _COMMON_KNOBS)
    if source is not None:
        raise ConfigError(f"task {task!r} is generated: it takes no source")
    heldout = int_knob(knobs, "heldout_size", DEFAULT_HELDOUT_SIZE)
    fam_knobs = {k: v for k, v in knobs.items() if k not in _COMMON_KNOBS}
    fam.config(fam_knobs)  # validate before any generation
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
        **knobs: ``split`` (``"train"``, default, or ``"test"``), ``heldout_size`` (generated
            families) and the family's difficulty knobs.

    Raises:
        ConfigError: unknown task or knob, bad size/seed/knob value, GSM8K without source.
        DataError: the source is missing or malformed; a train/test overlap (never expected).
    """
    return build_proactive_with_report(task, size, seed, source=source, **knobs)[0]
