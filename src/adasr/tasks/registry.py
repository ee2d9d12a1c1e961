"""One entry point for streaming-episode datasets: GSM8K (streamified) and procedural tasks.

``build_dataset("gsm8k", source="train.jsonl", size=500)`` or
``build_dataset("chain_sum", size=1000, seed=0, terms=4)`` returns a ``datasets.Dataset`` in the
shared schema (see :mod:`adasr.tasks.streamify`); :func:`write_jsonl` saves one record a line.
The proactive tasks (``build_dataset("proactive_perception", size=200, split="test")``, see
:mod:`adasr.tasks.proactive`) add the columns ``evidence_chunk`` and ``response``
(:data:`PROACTIVE_FEATURES`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import datasets

from adasr.errors import ConfigError, DataError
from adasr.tasks.proactive import PROACTIVE_TASKS, ProactiveReport, build_proactive_with_report
from adasr.tasks.procedural import PROCEDURAL_TASKS, build_procedural, score
from adasr.tasks.streamify import read_jsonl, streamify_gsm8k

__all__ = [
    "TASKS",
    "FEATURES",
    "PROACTIVE_FEATURES",
    "DEFAULT_PROCEDURAL_SIZE",
    "build_dataset",
    "build_proactive_dataset",
    "write_jsonl",
    "score",
]

TASKS: tuple[str, ...] = ("gsm8k", "episodes", *PROCEDURAL_TASKS, *PROACTIVE_TASKS)
"""Every task name :func:`build_dataset` accepts. ``episodes`` reads ready streaming episodes
(the shared schema, e.g. ``episodes.jsonl`` of ``adasr data distill``) from ``source``."""

DEFAULT_PROCEDURAL_SIZE = 1000
"""Episodes built for a procedural task when ``size`` is not given."""

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "task": datasets.Value("string"),
        "question": datasets.Value("string"),
        "chunks": datasets.List(datasets.Value("string")),
        "thoughts": datasets.List(datasets.Value("string")),
        "deep": datasets.Value("string"),
        "answer": datasets.Value("string"),
    }
)
"""The shared streaming-episode schema as ``datasets`` features."""

PROACTIVE_FEATURES = datasets.Features(
    {**FEATURES, "evidence_chunk": datasets.Value("int64"), "response": datasets.Value("string")}
)
"""Proactive records: the shared schema plus ``evidence_chunk`` and ``response``."""

_GSM8K_KNOBS = ("clean_only",)


def build_dataset(
    task: str,
    *,
    size: int | None = None,
    seed: int = 0,
    source: str | os.PathLike | None = None,
    **knobs: Any,
) -> datasets.Dataset:
    """Build a streaming-episode dataset.

    Args:
        task: ``"gsm8k"``, a procedural or a proactive task (:data:`TASKS` lists them all).
        size: GSM8K: read at most this many problems from ``source`` (file order; all when
            ``None``); procedural: number of episodes (default :data:`DEFAULT_PROCEDURAL_SIZE`);
            proactive: items wanted (see :func:`build_proactive_dataset`).
        seed: procedural / proactive generator seed (GSM8K keeps file order and ignores it).
        source: GSM8K and ``proactive_gsm8k``: path of a JSON-lines file of
            ``{"question", "answer"}`` records.
        **knobs: GSM8K: ``clean_only`` (keep only clean conversions); procedural: the family's
            difficulty knobs (see :mod:`adasr.tasks.procedural`); proactive: ``split`` and the
            family's knobs (see :mod:`adasr.tasks.proactive`).

    Raises:
        ConfigError: unknown task (the message lists the valid ones), a bad size or knob, GSM8K
            without ``source``.
        DataError: the source file is missing or malformed, or no valid episode was built.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}: valid tasks are {', '.join(TASKS)}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"size must be a positive integer, got {size!r}")
    if task in PROACTIVE_TASKS:
        return build_proactive_dataset(task, size=size, seed=seed, source=source, **knobs)[0]
    if task == "gsm8k":
        if source is None:
            raise ConfigError("task 'gsm8k' needs source=<path of a GSM8K JSON-lines file>")
        unknown = sorted(set(knobs) - set(_GSM8K_KNOBS))
        if unknown:
            raise ConfigError(
                f"unknown knob(s) {', '.join(unknown)} for task 'gsm8k': valid knobs are {', '.join(_GSM8K_KNOBS)}"
            )
        records, report = streamify_gsm8k(read_jsonl(source, limit=size), clean_only=bool(knobs.get("clean_only")))
        if not records:
            reasons = ", ".join(f"{k}: {v}" for k, v in report.excluded.items()) or "no clean problems"
            raise DataError(f"no valid GSM8K problems in {source} ({report.total} read; {reasons})")
    elif task == "episodes":
        if source is None:
            raise ConfigError("task 'episodes' needs source=<path of a streaming-episode JSON-lines file>")
        if knobs:
            raise ConfigError(f"task 'episodes' takes no knobs, got {', '.join(sorted(knobs))}")
        records = read_jsonl(source, limit=size)
        for i, r in enumerate(records):
            missing = sorted(set(FEATURES) - set(r))
            if missing:
                raise DataError(f"{source}: record {i + 1} is not a streaming episode (missing {', '.join(missing)})")
            if len(r["thoughts"]) not in (len(r["chunks"]) - 1, len(r["chunks"])):
                raise DataError(f"{source}: record {i + 1} has {len(r['thoughts'])} thoughts for {len(r['chunks'])} chunks")
        records = [{k: r[k] for k in FEATURES} for r in records]
        if not records:
            raise DataError(f"no episodes in {source}")
    else:
        records = build_procedural(task, DEFAULT_PROCEDURAL_SIZE if size is None else size, seed, **knobs)
        if not records:
            raise DataError(f"task {task!r} produced no verified episodes (knobs {knobs})")
    return datasets.Dataset.from_list(records, features=FEATURES)


def build_proactive_dataset(
    task: str,
    *,
    size: int | None = None,
    seed: int = 0,
    source: str | os.PathLike | None = None,
    **knobs: Any,
) -> tuple[datasets.Dataset, ProactiveReport]:
    """Build a proactive dataset (:mod:`adasr.tasks.proactive`) with its build report.

    Returns:
        ``(dataset, report)``: :data:`PROACTIVE_FEATURES` columns; the report counts the items
        drawn, built and rejected by reason (``report.message()``).

    Raises:
        ConfigError: unknown task or knob, a bad size, seed or knob value, GSM8K without source.
        DataError: the source is missing or malformed, or no item could be built (the message
            has the rejection counts).
    """
    records, report = build_proactive_with_report(task, size, seed, source=source, **knobs)
    if not records:
        raise DataError(f"no proactive item with a determinable evidence chunk: {report.message()}")
    return datasets.Dataset.from_list(records, features=PROACTIVE_FEATURES), report


def write_jsonl(dataset: datasets.Dataset | Iterable[dict], path: str | os.PathLike) -> int:
    """Write one JSON record a line (UTF-8), creating parent folders; returns the count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", encoding="utf-8") as f:
        for rec in dataset:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n
