"""The task interface: :class:`Item` (one problem to stream) and :class:`Task` (load items,
grade a prediction, build streaming episodes).

Every task (GSM8K, the procedural families, the proactive families) is reached through
:func:`adasr.tasks.registry.get_task` (by name) or :func:`adasr.tasks.registry.task_for` (the
task of an item), so that evaluation, ``adasr run``, distillation, RL rewards and ``adasr data
build`` grade and build the same way. This module sits below every task module and imports none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

from adasr.errors import DataError

__all__ = ["Item", "Task", "OnError"]

OnError = Callable[[DataError], None]
"""Called once per malformed line of a data file (the line is skipped)."""


@dataclass
class Item:
    """One problem to stream, of any task.

    Attributes:
        id: stable item id (e.g. ``gsm8k-train-12``: what resumable evaluation keys on).
        question: the problem text (what is streamed when there are no ``chunks``).
        reference: the reference answer (GSM8K: the text after ``####``, commas stripped).
        line: 1-based line of the item in its source file (0 when it was generated).
        chunks: the chunks to stream, when the item gives them (else ``question`` is chunked).
        task: the task name that grades it (:func:`adasr.tasks.registry.task_for`).
        evidence_chunk: proactive items: 0-based index into ``chunks`` of the earliest chunk after
            which the answer is determined (``None`` when not given).
        timestamps: arrival times of ``chunks`` in seconds, one per chunk (``None``: chunks
            arrive at the stream spec's words per second).
    """

    id: str
    question: str
    reference: str
    line: int = 0
    chunks: list[str] | None = None
    task: str = "gsm8k"
    evidence_chunk: int | None = None
    timestamps: list[float] | None = None


@runtime_checkable
class Task(Protocol):
    """What every task provides (implementations: :mod:`adasr.tasks.registry`).

    Attributes:
        name: the task name (an item's ``task``; ``adasr data build --task``).
    """

    name: str

    def load(self, source: str | os.PathLike | None = None, *, limit: int | None = None, seed: int = 0,
             on_error: OnError | None = None, **knobs: Any) -> list[Item]:
        """The task's items: read from ``source`` (a JSONL file, see
        :func:`adasr.tasks.gsm8k.load_gsm8k`) or, for generated tasks without a source, built
        (``limit`` items from ``seed`` and the task's ``knobs``).

        Raises:
            ConfigError: a bad limit or knob, or a source the task needs but was not given.
            DataError: a missing or malformed source, or no valid item.
        """

    def grade(self, prediction: str | None, reference: str) -> bool:
        """Whether ``prediction`` (a bare answer or text whose last ``\\boxed{}`` is the answer)
        answers ``reference``; ``None`` is wrong. Never raises for a malformed prediction."""

    def episodes(self, *, size: int | None = None, seed: int = 0, source: str | os.PathLike | None = None,
                 **knobs: Any) -> list[dict]:
        """Streaming episodes in the shared schema (:mod:`adasr.tasks.streamify`): ``id, task,
        question, chunks, thoughts, deep, answer`` (proactive tasks add ``evidence_chunk`` and
        ``response``).

        Raises:
            ConfigError: a bad size, knob, or a missing source.
            DataError: a malformed source, or no valid episode.
        """
