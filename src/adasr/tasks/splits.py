"""Held-out splits and the overlap check that keeps evaluation data out of training.

GSM8K ships one file (``train.jsonl``); adasr carves its held-out problems from the end of it
(:data:`GSM8K_HELDOUT`: the last 400 problems) and trains/distills from the top. Since GSM8K
repeats a few questions verbatim, position alone is not enough: every consumer of training data
checks question text against the held-out files with :func:`drop_overlap` /
:func:`assert_disjoint` (questions compared after :func:`normalize_question`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Sequence, TypeVar

from adasr.errors import DataError
from adasr.jsonl import json_object, jsonl_lines

__all__ = ["GSM8K_HELDOUT", "normalize_question", "heldout_questions", "drop_overlap", "assert_disjoint"]

GSM8K_HELDOUT = 400
"""Problems at the end of GSM8K ``train.jsonl`` kept out of every training and distillation run."""

T = TypeVar("T")


def normalize_question(text: str) -> str:
    """Lower-cased question with whitespace collapsed (the key of the overlap check)."""
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def heldout_questions(paths: Iterable[str | os.PathLike]) -> set[str]:
    """Normalized questions of the records in JSONL files (any record with a ``question``).

    Raises:
        DataError: a file is missing or unreadable, or holds no record with a question.
    """
    out: set[str] = set()
    for p in paths:
        path = Path(p)
        try:
            data = path.read_bytes()
            data.decode("utf-8")  # a held-out file that is not UTF-8 is refused whole, not skipped
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read held-out file {path}: {e}") from None
        found = 0
        for _, line in jsonl_lines(data):
            try:
                rec = json_object(line)
            except DataError:
                continue  # a malformed line cannot match a question
            if isinstance(rec.get("question"), str):
                out.add(normalize_question(rec["question"]))
                found += 1
        if not found:
            raise DataError(f"held-out file {path} has no record with a question")
    return out


def drop_overlap(items: Sequence[T], exclude: Iterable[str | os.PathLike]) -> tuple[list[T], int]:
    """``items`` (objects with a ``question``) without those whose question is in an ``exclude``
    file; returns ``(kept, number dropped)``."""
    held = heldout_questions(exclude)
    kept = [it for it in items if normalize_question(it.question) not in held]
    return kept, len(items) - len(kept)


def assert_disjoint(train_questions: Iterable[str], heldout: Iterable[str], what: str = "training data") -> None:
    """Raise if any held-out question occurs in ``train_questions``.

    Raises:
        DataError: naming how many overlap and one example.
    """
    held = {normalize_question(q) for q in heldout}
    shared = sorted({normalize_question(q) for q in train_questions} & held)
    if shared:
        raise DataError(f"{len(shared)} held-out question(s) occur in {what}, e.g. {shared[0][:80]!r}")
