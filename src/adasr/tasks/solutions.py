"""Solutions as steps: a GSM8K reference solution (``<<expr=result>>`` annotations) or a
free-form, model-written one (its arithmetic read from the text).

Both parsers return :class:`Step`\\ s: the text of each step, the numbers it reads (operands) and
the numbers it computes (results), as canonical keys (:func:`adasr.tasks.text.number_key`). The
step-to-chunk aligner (:mod:`adasr.tasks.align`) places them after the question's chunks.

* **Reference solutions** (:func:`parse_solution`). Each non-blank line of the solution before
  ``####`` is one step. Its text, as the model sees it, is the line with the ``<<...>>``
  annotations removed ("Natalia sold 48/2 = 24 clips in May."; a line that does not end in
  ``.``, ``?`` or ``!`` gets a period, since steps are joined by spaces into one thought). Its
  operands are the numbers in the left-hand side of each of its annotations, except those
  produced by an earlier annotation of the same step; its results are the right-hand sides.
* **Free-form solutions** (:func:`parse_free_solution`) carry no annotations: LaTeX operators are
  turned into Python ones, then every chain "E0 = E1 = ... = En" of arithmetic expressions gives
  one annotation (:func:`read_arithmetic`; operands: the numbers of E0 up to the first part with
  an operator; the numbers of later parts are intermediate results, like the value of En).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adasr.tasks.text import (
    canonical_answer,
    expression_numbers,
    math_text,
    number_key,
    numbers_close,
    parse_number,
    safe_eval,
)

__all__ = ["ParseFailure", "Step", "parse_solution", "parse_free_solution", "read_arithmetic", "has_computation"]

_ANNOTATION = re.compile(r"<<(.*?)>>", re.S)
_EXPR = r"[\d.()+\-*/ ]*\d[\d.()+\-*/ ]*"
_CHAIN = re.compile(rf"(?<![\w.])({_EXPR})(?:=\s*({_EXPR}))+")
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•]|#+|\*\*Step|Step\s+\d)")
_HAS_OP = re.compile(r"\d\s*[-+*/]\s*[\d(]|\)\s*[-+*/]")


class ParseFailure(ValueError):
    """A solution (or a GSM8K record) that cannot be parsed or streamified; ``reason`` is a short
    category (what :class:`adasr.tasks.streamify.StreamifyReport` counts)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class Step:
    """One solution step.

    Attributes:
        text: the line shown to the model (annotations removed).
        operands: canonical numbers in the left-hand sides of its annotations, except those
            produced by an earlier annotation of the same line.
        results: canonical numbers on the right-hand sides of its annotations.
        annotated: whether the line had at least one ``<<expr=result>>`` annotation.
        consistent: every annotation's expression evaluates to its result (GSM8K rounding).
        chunk: index of the chunk whose thought holds this step, or ``None`` (deep stage).
        placed: whether the operand rule placed it (``False``: fallback to the deep stage,
            because it had no annotation or its operands never became known).
    """

    text: str
    operands: tuple[float, ...] = ()
    results: tuple[float, ...] = ()
    annotated: bool = False
    consistent: bool = True
    chunk: int | None = None
    placed: bool = False
    span: tuple[int, int] | None = None
    """Free-form solutions: ``(start, end)`` character offsets of the step in the solution text."""
    deep_reason: str | None = None
    """Why :func:`adasr.tasks.align.align_steps` could not place the step before the last chunk
    (``None``: placed): one of :data:`adasr.tasks.align.DEEP_REASONS`."""


# --------------------------------------------------------------------------- reference solutions


def parse_solution(answer: str) -> tuple[list[Step], str]:
    """Split a GSM8K ``answer`` field into steps and the canonical final answer.

    Raises:
        ParseFailure: no ``####`` marker, an empty or non-numeric final answer, no steps, or a
            malformed annotation (unbalanced ``<<``/``>>`` or not of the form ``expr=result``
            with a numeric result).
    """
    if "####" not in answer:
        raise ParseFailure("no #### marker")
    sol, final = answer.rsplit("####", 1)
    final = canonical_answer(final)
    if not final:
        raise ParseFailure("empty final answer")
    if parse_number(final) is None or not re.fullmatch(r"-?[\d.]+(?:/\d+)?", final):
        raise ParseFailure("non-numeric final answer", final)
    if sol.count("<<") != sol.count(">>"):
        raise ParseFailure("malformed annotation", "unbalanced << >>")
    steps: list[Step] = []
    for line in sol.splitlines():
        if not line.strip():
            continue
        operands: list[float] = []
        results: list[float] = []
        consistent = True
        anns = _ANNOTATION.findall(line)
        for ann in anns:
            if ann.count("=") < 1:
                raise ParseFailure("malformed annotation", f"<<{ann}>> has no '='")
            lhs, rhs = ann.rsplit("=", 1)
            res = parse_number(rhs)
            if res is None or not lhs.strip():
                raise ParseFailure("malformed annotation", f"<<{ann}>>")
            # operands produced by an earlier annotation of the same line are not needed from
            # outside the step
            operands.extend(k for k in expression_numbers(lhs.replace(",", "")) if k not in results)
            results.append(number_key(res))
            val = safe_eval(lhs.split("=")[0])
            if val is None or not numbers_close(val, res):
                consistent = False
        text = re.sub(r"[ \t]+", " ", _ANNOTATION.sub("", line)).strip()
        if text[-1] not in ".!?":  # steps are joined into one thought: end each as a sentence
            text += "."
        steps.append(
            Step(text=text, operands=tuple(operands), results=tuple(results), annotated=bool(anns),
                 consistent=consistent)
        )
    if not steps:
        raise ParseFailure("no solution steps")
    return steps, final


# --------------------------------------------------------------------------- free-form solutions


def read_arithmetic(text: str) -> tuple[list[float], list[float], bool]:
    """``(operands, results, consistent)`` of the arithmetic chains ``E0 = E1 = ... = En`` written
    in ``text`` (LaTeX arithmetic understood, :func:`adasr.tasks.text.math_text`), as canonical
    keys: the annotations a free-form solution carries implicitly. A chain computes something only
    with an operator in ``E0..E(n-1)``; ``consistent`` is ``False`` when a part does not evaluate
    to the chain's result."""
    operands: list[float] = []
    results: list[float] = []
    consistent = True
    for m in _CHAIN.finditer(math_text(text)):
        parts = [p.strip().rstrip(".").rstrip() for p in m.group(0).split("=")]  # "= 12." ends a sentence
        parts = [p for p in parts if p]
        if len(parts) < 2 or not _HAS_OP.search(" ".join(parts[:-1])):
            continue  # "x = 5" or "2 = 2": nothing computed
        res = safe_eval(parts[-1])
        if res is None:
            continue
        computed = False  # after the first part with an operator, numbers are intermediate results
        for p in parts[:-1]:
            val = safe_eval(p)
            if val is not None and not numbers_close(val, res):
                consistent = False
            nums = expression_numbers(p)
            if computed:  # "2*1 + 2*3 = 2 + 6 = 8": 2 and 6 were computed, not read from the input
                results.extend(nums)
            else:
                operands.extend(k for k in nums if k not in results)
                computed = bool(_HAS_OP.search(p))
        results.append(number_key(res))
    return operands, results, consistent


def parse_free_solution(text: str) -> list[Step]:
    """Split a free-form (model-written) solution into steps with operands read from its text.

    A step is a paragraph or a list item ("1.", "-", "###", "Step 2"); display math
    (``\\[ ... \\]``) and other continuation lines belong to the step above them. A step is
    *annotated* when it writes at least one computation ``E0 = ... = En`` with an operator in
    ``E0..E(n-1)`` (LaTeX ``\\times``, ``\\div``, ``\\frac{a}{b}`` and ``%`` understood).

    Raises:
        ParseFailure: the text has no non-blank line.
    """
    spans: list[list[int]] = []  # [start, end) of each block in ``text``
    in_math = False
    new_block = True
    for m in re.finditer(r"[^\n]*(?:\n|$)", text):
        line = m.group(0).rstrip("\n")
        if not line.strip():
            new_block = not in_math
            if m.end() == len(text):
                break
            continue
        starts_item = _LIST_ITEM.match(line) is not None and not in_math
        if new_block or (starts_item and spans):
            spans.append([m.start(), m.start()])
        spans[-1][1] = m.start() + len(line.rstrip())
        new_block = False
        opened, closed = line.count("\\["), line.count("\\]")
        in_math = (in_math or opened > closed) and not (closed > opened or (in_math and closed))
    steps = []
    for a, b in spans:
        body = text[a:b].strip()
        ops, res, ok = read_arithmetic(body)
        steps.append(Step(text=body, operands=tuple(ops), results=tuple(res), annotated=bool(res),
                          consistent=ok, span=(a, b)))
    if not steps:
        raise ParseFailure("no solution steps")
    return steps


def has_computation(text: str) -> bool:
    """Whether ``text`` writes an arithmetic chain ``E0 = ... = En`` (LaTeX understood), whether
    or not it computes anything (see :func:`read_arithmetic`)."""
    return _CHAIN.search(math_text(text)) is not None
