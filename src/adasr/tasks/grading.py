"""Grading a prediction by its task: the one place that chooses a task's checker.

It sits above the task modules (gsm8k, procedural, proactive) so that none of them imports
another to grade: GSM8K answers go to :func:`adasr.tasks.gsm8k.is_correct` (numeric fast path,
then math-verify), procedural streams to the reasoning-gym scorer, proactive items to theirs.
"""

from __future__ import annotations

from adasr.tasks.gsm8k import is_correct
from adasr.tasks.proactive import score as proactive_score
from adasr.tasks.procedural import score as procedural_score

__all__ = ["grade"]


def grade(task: str, prediction: str | None, reference: str) -> bool:
    """Whether ``prediction`` (e.g. the last ``\\boxed{}`` content) is correct for ``task``.

    Args:
        task: ``gsm8k``, a procedural task (reasoning-gym family) or a ``proactive_*`` task.
        prediction: the model's answer, or ``None`` (always wrong).
        reference: the reference answer.
    """
    if task == "gsm8k":
        return is_correct(prediction, reference)
    if task.startswith("proactive_"):
        return proactive_score(task, prediction, reference)
    return procedural_score(task, prediction, reference)
