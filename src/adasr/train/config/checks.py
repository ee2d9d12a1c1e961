"""Checks the training configs share: the task and its data file, ranges, the closest name.

Each raises :class:`~adasr.errors.ConfigError` with a one-line message naming the key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Sequence

from adasr.errors import ConfigError

__all__ = ["known_tasks", "check_task", "positive", "non_negative", "closest", "first_line"]


def known_tasks() -> list[str]:
    """Task names the dataset registry builds (``gsm8k``, ``episodes`` and the procedural tasks)."""
    from adasr.tasks.registry import TASKS

    return list(TASKS)


def check_task(task: str, data_path: str | None) -> None:
    """Raise :class:`ConfigError` for an unknown task, or a missing/absent data file."""
    names = known_tasks()
    if task not in names:
        hint = closest(str(task), names)
        raise ConfigError(f"unknown task {task!r}{f' (did you mean {hint!r}?)' if hint else ''}: "
                          f"use one of {', '.join(names)}")
    if data_path is not None and not Path(data_path).expanduser().exists():
        raise ConfigError(f"data_path {data_path} does not exist")
    if task == "gsm8k" and data_path is None:
        raise ConfigError("task gsm8k needs data_path (the GSM8K train.jsonl, e.g. ../shared/data/gsm8k/train.jsonl)")
    if task == "episodes" and data_path is None:
        raise ConfigError("task episodes needs data_path (a streaming-episode JSONL, e.g. from adasr data distill)")


def positive(cfg: Any, *names: str) -> None:
    """Raise :class:`ConfigError` unless every field ``names`` of ``cfg`` is >= 1."""
    for n in names:
        if getattr(cfg, n) < 1:
            raise ConfigError(f"{n} must be >= 1, got {getattr(cfg, n)}")


def non_negative(cfg: Any, *names: str) -> None:
    """Raise :class:`ConfigError` unless every field ``names`` of ``cfg`` is >= 0."""
    for n in names:
        if getattr(cfg, n) < 0:
            raise ConfigError(f"{n} must be >= 0, got {getattr(cfg, n)}")


def closest(name: str, names: Sequence[str]) -> str | None:
    """The name of ``names`` closest to ``name`` (``difflib``), or ``None`` when none is close."""
    hint = difflib.get_close_matches(name, list(names), n=1)
    return hint[0] if hint else None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): how a parent
    class's error becomes a one-line :class:`ConfigError`."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
