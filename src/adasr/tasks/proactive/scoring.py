"""Grading a proactive prediction: numbers as numbers, other answers as normalized text."""

from __future__ import annotations

import re

from adasr.errors import ConfigError
from adasr.protocol import parse_answer
from adasr.tasks.gsm8k import is_correct, to_number
from adasr.tasks.proactive.build import PROACTIVE_TASKS

__all__ = ["score"]

_ARTICLES = re.compile(r"\b(?:the|a|an)\b")


def _norm_text(s: str) -> str:
    s = re.sub(r"[^\w\s:]", " ", s.lower())
    return re.sub(r"\s+", " ", _ARTICLES.sub(" ", s)).strip()


def score(task: str, prediction: str | None, answer: str) -> bool:
    """Whether ``prediction`` (a bare answer or text whose last ``\\boxed{}`` is the answer) is
    correct: numbers compare as numbers (:func:`adasr.tasks.gsm8k.is_correct`), other answers
    (``yes``/``no``, a city, an event) after lower-casing and dropping punctuation and articles
    (``"The alarm rang."`` = ``"alarm rang"``).

    Raises:
        ConfigError: ``task`` is not a proactive task.
    """
    if task not in PROACTIVE_TASKS:
        raise ConfigError(f"unknown proactive task {task!r}")
    if prediction is None:
        return False
    pred = parse_answer(prediction) if "\\boxed" in prediction else prediction
    if pred is None or not pred.strip():
        return False
    if task == "proactive_gsm8k" or to_number(answer) is not None:
        return is_correct(pred, answer)
    return _norm_text(pred) == _norm_text(answer)
