"""The task registry: one :class:`~adasr.tasks.base.Task` per task name, and one entry point for
streaming-episode datasets.

``get_task("gsm8k")`` or ``task_for(item)`` returns the task that loads, grades and builds items
of that name: every caller (evaluation, ``adasr run``, distillation, RL rewards, ``adasr data
build``) grades through it, ``task_for(item).grade(prediction, item.reference)``:

* ``gsm8k``: items from a GSM8K-format JSONL (:func:`adasr.tasks.gsm8k.load_gsm8k`), graded by
  :func:`adasr.tasks.gsm8k.is_correct` (numeric fast path, then math-verify), episodes from the
  reference solutions (:func:`adasr.tasks.streamify.streamify_gsm8k`);
* the procedural families (:data:`adasr.tasks.procedural.PROCEDURAL_TASKS`): generated items,
  graded by the reasoning-gym generator's scorer;
* the proactive families (:data:`adasr.tasks.proactive.PROACTIVE_TASKS`): generated (or, for
  ``proactive_gsm8k``, reordered GSM8K) items with an evidence chunk, graded by their scorer.

``build_dataset("gsm8k", source="train.jsonl", size=500)`` or
``build_dataset("chain_sum", size=1000, seed=0, terms=4)`` returns a ``datasets.Dataset`` in the
shared schema (see :mod:`adasr.tasks.streamify`); :func:`adasr.jsonl.write_jsonl` saves one record
a line. The proactive tasks (``build_dataset("proactive_perception", size=200, split="test")``, see
:mod:`adasr.tasks.proactive`) add the columns ``evidence_chunk`` and ``response``
(:data:`PROACTIVE_FEATURES`). ``datasets`` is imported only when a dataset is built, so grading
stays light.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from adasr.errors import ConfigError, DataError
from adasr.jsonl import read_jsonl
from adasr.tasks.base import Item, OnError, Task
from adasr.tasks.gsm8k import is_correct, load_gsm8k
from adasr.tasks.proactive import PROACTIVE_TASKS, ProactiveReport, build_proactive_with_report
from adasr.tasks.proactive import score as proactive_score
from adasr.tasks.procedural import PROCEDURAL_TASKS, build_procedural
from adasr.tasks.procedural import score as procedural_score
from adasr.tasks.streamify import streamify_gsm8k

if TYPE_CHECKING:  # pragma: no cover - typing only (datasets is imported when a dataset is built)
    import datasets

__all__ = [
    "TASKS",
    "FEATURES",
    "PROACTIVE_FEATURES",
    "DEFAULT_PROCEDURAL_SIZE",
    "GSM8KTask",
    "ProceduralTask",
    "ProactiveTask",
    "get_task",
    "task_for",
    "build_dataset",
    "build_proactive_dataset",
]

DEFAULT_PROCEDURAL_SIZE = 1000
"""Episodes built for a procedural task when ``size`` is not given."""

_GSM8K_KNOBS = ("clean_only",)


def _items(records: list[dict]) -> list[Item]:
    """Items of shared-schema episode records (reference = ``answer``; ``line`` = 0: generated)."""
    return [Item(id=r["id"], question=r["question"], reference=str(r["answer"]), chunks=list(r["chunks"]),
                 task=r["task"], evidence_chunk=r.get("evidence_chunk")) for r in records]


class _GeneratedTask:
    """A task whose items are built (:meth:`episodes`), not read: ``load`` turns its episodes into items."""

    name: str

    def load(self, source: str | os.PathLike | None = None, *, limit: int | None = None, seed: int = 0,
             on_error: OnError | None = None, **knobs: Any) -> list[Item]:
        """``limit`` items built from ``seed`` (and ``source`` where the task reads one): the
        episodes of :meth:`episodes` as :class:`~adasr.tasks.base.Item`\\ s (``on_error`` is
        unused: generated items are never malformed). A file of built episodes loads with
        :func:`adasr.tasks.gsm8k.load_gsm8k` instead."""
        return _items(self.episodes(size=limit, seed=seed, source=source, **knobs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class GSM8KTask:
    """GSM8K: items read from a GSM8K-format JSONL, graded by :func:`adasr.tasks.gsm8k.is_correct`."""

    name = "gsm8k"

    def load(self, source: str | os.PathLike | None = None, *, limit: int | None = None, seed: int = 0,
             on_error: OnError | None = None, **knobs: Any) -> list[Item]:
        """The items of ``source`` in file order (:func:`adasr.tasks.gsm8k.load_gsm8k`; ``seed``
        is unused). Raises ConfigError without a source or with knobs; DataError: see there."""
        if source is None:
            raise ConfigError("task 'gsm8k' needs source=<path of a GSM8K JSON-lines file>")
        if knobs:
            raise ConfigError(f"loading task 'gsm8k' takes no knobs, got {', '.join(sorted(knobs))}")
        return load_gsm8k(source, limit=limit, on_error=on_error)

    def grade(self, prediction: str | None, reference: str) -> bool:
        """:func:`adasr.tasks.gsm8k.is_correct` (never raises)."""
        return is_correct(prediction, str(reference))

    def episodes(self, *, size: int | None = None, seed: int = 0, source: str | os.PathLike | None = None,
                 **knobs: Any) -> list[dict]:
        """The problems of ``source`` (at most ``size``, file order; ``seed`` unused) as streaming
        episodes whose thoughts are the reference solution's steps
        (:func:`adasr.tasks.streamify.streamify_gsm8k`). Knob: ``clean_only``."""
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
        return records

    def __repr__(self) -> str:
        return "GSM8KTask()"


class ProceduralTask(_GeneratedTask):
    """A reasoning-gym family (:mod:`adasr.tasks.procedural`): one fact per chunk, graded by the
    generator's own scorer."""

    def __init__(self, name: str):
        self.name = name

    def grade(self, prediction: str | None, reference: str) -> bool:
        """:func:`adasr.tasks.procedural.score`."""
        return procedural_score(self.name, prediction, str(reference))

    def episodes(self, *, size: int | None = None, seed: int = 0, source: str | os.PathLike | None = None,
                 **knobs: Any) -> list[dict]:
        """``size`` verified episodes (default :data:`DEFAULT_PROCEDURAL_SIZE`) from ``seed`` and
        the family's difficulty knobs; a procedural task reads no ``source``."""
        if source is not None:
            raise ConfigError(f"task {self.name!r} is generated: it takes no source")
        records = build_procedural(self.name, DEFAULT_PROCEDURAL_SIZE if size is None else size, seed, **knobs)
        if not records:
            raise DataError(f"task {self.name!r} produced no verified episodes (knobs {knobs})")
        return records


class ProactiveTask(_GeneratedTask):
    """A proactive family (:mod:`adasr.tasks.proactive`): items with an evidence chunk, graded by
    :func:`adasr.tasks.proactive.score`."""

    def __init__(self, name: str):
        self.name = name

    def grade(self, prediction: str | None, reference: str) -> bool:
        """:func:`adasr.tasks.proactive.score`."""
        return proactive_score(self.name, prediction, str(reference))

    def episodes(self, *, size: int | None = None, seed: int = 0, source: str | os.PathLike | None = None,
                 **knobs: Any) -> list[dict]:
        """Proactive records (knobs ``split`` and the family's; ``source`` for ``proactive_gsm8k``)."""
        return self.episodes_with_report(size=size, seed=seed, source=source, **knobs)[0]

    def episodes_with_report(self, *, size: int | None = None, seed: int = 0,
                             source: str | os.PathLike | None = None, **knobs: Any) -> tuple[list[dict], ProactiveReport]:
        """:meth:`episodes` and the build report (items drawn, built, rejected by reason).

        Raises:
            DataError: also when no item could be built (the message has the rejection counts).
        """
        records, report = build_proactive_with_report(self.name, size, seed, source=source, **knobs)
        if not records:
            raise DataError(f"no proactive item with a determinable evidence chunk: {report.message()}")
        return records, report


_REGISTRY: dict[str, Task] = {
    "gsm8k": GSM8KTask(),
    **{name: ProceduralTask(name) for name in PROCEDURAL_TASKS},
    **{name: ProactiveTask(name) for name in PROACTIVE_TASKS},
}

TASKS: tuple[str, ...] = ("gsm8k", "episodes", *PROCEDURAL_TASKS, *PROACTIVE_TASKS)
"""Every task name :func:`build_dataset` accepts: the registered tasks and ``episodes``, which
reads ready streaming episodes (the shared schema, e.g. ``episodes.jsonl`` of ``adasr data
distill``) from ``source``; each of those records is graded by its own ``task``."""


def get_task(name: str) -> Task:
    """The task registered under ``name``.

    Raises:
        ConfigError: unknown name (the message lists the registered ones).
    """
    task = _REGISTRY.get(name) if isinstance(name, str) else None
    if task is None:
        raise ConfigError(f"unknown task {name!r}: valid tasks are {', '.join(_REGISTRY)}")
    return task


def task_for(item: Item | dict) -> Task:
    """The task that grades ``item``: an :class:`~adasr.tasks.base.Item` (its ``task``) or a
    shared-schema record (its ``"task"`` key; ``gsm8k`` when absent).

    Raises:
        ConfigError: the item names an unknown task.
    """
    name = item.get("task", "gsm8k") if isinstance(item, dict) else item.task
    return get_task(name)


@lru_cache(maxsize=None)
def _features() -> tuple:
    import datasets

    features = datasets.Features(
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
    proactive = datasets.Features(
        {**features, "evidence_chunk": datasets.Value("int64"), "response": datasets.Value("string")})
    optional = {"forced_skips": datasets.List(datasets.Value("int64")),  # the keys of _OPTIONAL_KEYS
                "note_targets": datasets.List(datasets.Value("float64"))}
    return features, proactive, optional


_EPISODE_KEYS = ("id", "task", "question", "chunks", "thoughts", "deep", "answer")
_PROACTIVE_KEYS = ("evidence_chunk", "response")
_OPTIONAL_KEYS = ("forced_skips", "note_targets")
"""Columns kept when the first record has them: chain_sum's ``skip_forced``, GSM8K's reference
``note_targets`` (:func:`adasr.tasks.streamify.note_targets`, the per-note reward's targets)."""


def __getattr__(name: str):
    """``FEATURES`` (the shared streaming-episode schema as ``datasets`` features) and
    ``PROACTIVE_FEATURES`` (plus ``evidence_chunk`` and ``response``), built on first use."""
    if name == "FEATURES":
        return _features()[0]
    if name == "PROACTIVE_FEATURES":
        return _features()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
            ``{"question", "answer"}`` records; ``episodes``: a JSON-lines file of ready
            streaming episodes, or of proactive records (with ``evidence_chunk`` and
            ``response``: all of them, then, and the dataset has :data:`PROACTIVE_FEATURES`).
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
    if task == "episodes":
        records = _read_episodes(source, size, knobs)
    else:
        records = get_task(task).episodes(size=size, seed=seed, source=source, **knobs)
    import datasets

    proactive = bool(records) and "evidence_chunk" in records[0]  # (task episodes: a user's proactive records)
    streaming, proactive_features, optional = _features()
    base = proactive_features if proactive else streaming
    features = datasets.Features({**base, **{k: optional[k] for k in _OPTIONAL_KEYS if records and k in records[0]}})
    return datasets.Dataset.from_list(records, features=features)


def _read_episodes(source, size: int | None, knobs: dict) -> list[dict]:
    """Ready streaming episodes of ``source`` (task ``episodes``), checked against the schema."""
    if source is None:
        raise ConfigError("task 'episodes' needs source=<path of a streaming-episode JSON-lines file>")
    if knobs:
        raise ConfigError(f"task 'episodes' takes no knobs, got {', '.join(sorted(knobs))}")
    records = read_jsonl(source, limit=size)
    if not records:
        raise DataError(f"no episodes in {source}")
    proactive = "evidence_chunk" in records[0]
    keys = _EPISODE_KEYS + (_PROACTIVE_KEYS if proactive else ())
    for i, r in enumerate(records):
        missing = sorted(set(keys) - set(r))
        if missing:
            kind = "proactive record (like record 1)" if proactive else "streaming episode"
            raise DataError(f"{source}: record {i + 1} is not a {kind} (missing {', '.join(missing)})")
        n, t = len(r["chunks"]), len(r["thoughts"])
        if proactive and not (isinstance(r["evidence_chunk"], int) and 0 <= r["evidence_chunk"] < n
                              and r["evidence_chunk"] + 1 <= t <= n):
            raise DataError(f"{source}: record {i + 1} has evidence_chunk {r['evidence_chunk']!r} and {t} thoughts "
                            f"for {n} chunks (a proactive record has evidence_chunk + 1 thoughts, more when it "
                            f"continues past its answer, at most one per chunk)")
        if not proactive and t not in (n - 1, n):
            raise DataError(f"{source}: record {i + 1} has {t} thoughts for {n} chunks")
    optional = tuple(k for k in _OPTIONAL_KEYS if k in records[0])
    return [{k: r[k] for k in keys} | {k: r.get(k) or [] for k in optional} for r in records]


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
    import datasets

    if task not in PROACTIVE_TASKS:
        raise ConfigError(f"unknown proactive task {task!r}: valid tasks are {', '.join(PROACTIVE_TASKS)}")
    records, report = get_task(task).episodes_with_report(size=size, seed=seed, source=source, **knobs)
    return datasets.Dataset.from_list(records, features=_features()[1]), report
