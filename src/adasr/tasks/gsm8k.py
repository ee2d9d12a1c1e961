"""GSM8K: loading the JSONL data and checking answers.

Data format (``data/gsm8k/train.jsonl``, MIT licence): one JSON object per line with a
``question`` and an ``answer``; the answer is a worked solution whose final line is
``#### <final answer>``. An optional ``id`` field is used as the item id; otherwise the id is
``gsm8k-<file stem>-<line number>`` (e.g. ``gsm8k-train-12``), stable across runs, which is what
resumable evaluation keys on.

Answer checking (:func:`is_correct`) first tries a numeric fast path (currency signs, thousands
separators, units and ``\\boxed{}``/``$`` wrappers stripped; ``72.0 == 72``, ``$1,200 == 1200``,
``1/2 == 0.5``) and otherwise falls back to ``math_verify``. It never raises.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import warnings
from fractions import Fraction
from pathlib import Path

from adasr.errors import ConfigError, DataError
from adasr.jsonl import file_bytes, json_object, jsonl_lines
from adasr.tasks.base import Item, OnError

__all__ = ["load_gsm8k", "extract_reference", "is_correct", "to_number"]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def extract_reference(answer: str) -> str:
    """The final answer of a GSM8K solution: the text after the last ``####``, commas stripped.

    Raises:
        DataError: if there is no ``####`` or nothing follows it.
    """
    if not isinstance(answer, str) or "####" not in answer:
        raise DataError("the answer has no '#### <final answer>' line")
    ref = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not ref:
        raise DataError("nothing follows '####' in the answer")
    return ref


def _parse_line(raw: bytes, path: Path, lineno: int) -> Item:
    """Parse one JSONL line; raises DataError (without location) when it is malformed."""
    obj = json_object(raw)
    for key in ("question", "answer"):
        if key not in obj:
            raise DataError(f"missing key {key!r}")
        if not isinstance(obj[key], str):
            raise DataError(f"{key!r} must be a string, got {type(obj[key]).__name__}")
    question = obj["question"].strip()
    if not question:
        raise DataError("empty 'question'")
    chunks, task = None, "gsm8k"
    if "chunks" in obj:  # given chunks: an adasr streaming-dataset record (`adasr data build`,
        # whose answer is final) or a user's own stream (answer with '#### final')
        chunks, task = obj["chunks"], obj.get("task", "gsm8k")
        answer = obj["answer"]
        reference = extract_reference(answer) if "####" in answer else answer.strip()
        if not reference:
            raise DataError("empty 'answer'")
        if not isinstance(chunks, list) or not chunks or not all(isinstance(c, str) and c.strip() for c in chunks):
            raise DataError("'chunks' must be a non-empty list of non-blank strings")
        if not isinstance(task, str):
            raise DataError(f"'task' must be a string, got {type(task).__name__}")
    else:
        reference = extract_reference(obj["answer"])
    evidence = obj.get("evidence_chunk")
    if evidence is not None:
        if chunks is None:
            raise DataError("'evidence_chunk' needs 'chunks' (it indexes them)")
        if isinstance(evidence, bool) or not isinstance(evidence, int) or not 0 <= evidence < len(chunks):
            raise DataError(
                f"'evidence_chunk' must be an integer index into 'chunks' (0..{len(chunks) - 1}), got {evidence!r}"
            )
    timestamps = obj.get("timestamps")
    if timestamps is not None:
        if chunks is None:
            raise DataError("'timestamps' needs 'chunks' (one arrival time per chunk)")
        if (not isinstance(timestamps, list) or len(timestamps) != len(chunks)
                or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0
                           for t in timestamps)
                or any(b < a for a, b in zip(timestamps, timestamps[1:]))):
            raise DataError(f"'timestamps' must be {len(chunks)} non-decreasing arrival times in seconds (>= 0), "
                            "one per chunk")
        timestamps = [float(t) for t in timestamps]
    item_id = obj.get("id")
    if item_id is None:
        item_id = f"gsm8k-{path.stem}-{lineno}"
    elif isinstance(item_id, (str, int)) and not isinstance(item_id, bool) and str(item_id).strip():
        item_id = str(item_id).strip()
    else:
        raise DataError(f"'id' must be a non-empty string or integer, got {item_id!r}")
    return Item(id=item_id, question=question, reference=reference, line=lineno, chunks=chunks, task=task,
                evidence_chunk=evidence, timestamps=timestamps)


def load_gsm8k(
    path: str | Path,
    *,
    limit: int | None = None,
    on_error: OnError | None = None,
) -> list[Item]:
    """Load GSM8K items from a JSONL file of ``{"question", "answer"[, "id"]}`` objects.

    Records of adasr streaming datasets (``adasr data build``: with ``chunks``, ``task`` and a
    final ``answer``) load too: their chunks are streamed as given and graded by their task.
    So do a user's own streams: ``question``, ``answer`` with ``#### final``, ``chunks`` (a list
    of strings) and, for proactive streams, ``evidence_chunk`` (a 0-based index into ``chunks``;
    a line with a bad one is malformed) and ``timestamps`` (arrival times of the chunks in
    seconds, one per chunk, non-decreasing; default: the stream spec's words per second).
    Each item is graded by its ``task`` (:func:`adasr.tasks.registry.task_for`).

    A malformed line (invalid UTF-8 or JSON, a missing key, no ``####``, a duplicate id) is
    reported as ``on_error(DataError("<path>:<line>: <reason>"))`` and skipped; the rest of the
    file is still loaded. Blank lines are ignored. With ``on_error=None`` the errors are
    collected and one :class:`UserWarning` summarizes them after loading.

    Args:
        path: the JSONL file.
        limit: stop after this many valid items (``None``: all).
        on_error: called once per malformed line.

    Returns:
        The valid items in file order.

    Raises:
        DataError: if the file is missing or unreadable, or holds no valid item.
        ConfigError: if ``limit`` is not a positive integer.
    """
    path = Path(path)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")
    data = file_bytes(path, "dataset file")

    collected: list[DataError] = []
    report = on_error if on_error is not None else collected.append
    items: list[Item] = []
    seen: set[str] = set()
    n_bad = 0
    for lineno, raw in jsonl_lines(data):
        if limit is not None and len(items) >= limit:
            break
        try:
            item = _parse_line(raw, path, lineno)
            if item.id in seen:
                raise DataError(f"duplicate id {item.id!r}")
        except DataError as e:
            n_bad += 1
            report(DataError(f"{path}:{lineno}: {e}"))
            continue
        seen.add(item.id)
        items.append(item)

    if collected:
        more = f" (and {len(collected) - 1} more)" if len(collected) > 1 else ""
        warnings.warn(
            f"skipped {len(collected)} malformed line(s) in {path}: {collected[0]}{more}",
            UserWarning,
            stacklevel=2,
        )
    if not items:
        detail = f" ({n_bad} malformed line(s))" if n_bad else ""
        raise DataError(f"{path}: no valid GSM8K items{detail}")
    return items


# --------------------------------------------------------------------------------------------
# Answer checking
# --------------------------------------------------------------------------------------------

_MAX_VERIFY_CHARS = 1000  # longer predictions are not handed to math_verify (runaway parses)

_BOXED_WHOLE = re.compile(r"^\\(?:boxed|fbox)\s*\{(.*)\}$", re.S)
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_LEAD_VAR = re.compile(r"^[A-Za-z]\w*\s*=\s*")
_FRAC = re.compile(r"^(-?)\\frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*(-?[\d.]+)\s*\}$")
_REPLACE = (  # LaTeX noise around a number: currency, percent, spacing, sizing
    ("\\$", ""), ("$", ""), ("\\%", "%"), ("\\left", ""), ("\\right", ""), ("{,}", ""),
    ("\\,", " "), ("\\!", ""), ("\\;", " "), ("\\ ", " "), ("~", " "),
)
_NUM = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_SLASH = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*/\s*([-+]?\d+(?:\.\d+)?)$")
_UNIT_TAIL = re.compile(r"^(.*?\d\.?)\s*(?:%|°|[A-Za-z][A-Za-z .'/²³-]*)$")


def _normalize(text: str) -> str:
    s = text.strip()
    for _ in range(3):  # nested wrappers: $\boxed{...}$, \boxed{\$...}
        s = s.strip().strip("$").strip()
        m = _BOXED_WHOLE.match(s)
        if m:
            s = m.group(1)
    s = _TEXT_CMD.sub(r" \1 ", s)
    for tok, repl in _REPLACE:
        s = s.replace(tok, repl)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("−", "-")
    s = _THOUSANDS.sub("", s)
    s = _LEAD_VAR.sub("", s.strip())
    s = s.strip().rstrip(".").strip()
    return s


def to_number(text: str) -> Fraction | float | None:
    """The number ``text`` denotes, or ``None`` if it is not a plain number (with units).

    Wrappers and noise are stripped first (``\\boxed{}``, ``$``, thousands commas, ``\\text{}``,
    a leading ``x =``); ``"1/2"`` and ``\\frac{1}{2}`` give ``Fraction(1, 2)``, ``"72 dollars"``
    and ``"50%"`` their number (the unit dropped once).
    """
    s = _normalize(text)
    if not s:
        return None
    for _ in range(2):
        if _NUM.match(s):
            try:
                return Fraction(s)
            except (ValueError, ZeroDivisionError):
                try:
                    return float(s)
                except ValueError:
                    return None
        m = _SLASH.match(s)
        if m:
            try:
                return Fraction(m.group(1)) / Fraction(m.group(2))
            except (ValueError, ZeroDivisionError):
                return None
        m = _FRAC.match(s)
        if m:
            try:
                value = Fraction(m.group(2)) / Fraction(m.group(3))
            except (ValueError, ZeroDivisionError):
                return None
            return -value if m.group(1) else value
        m = _UNIT_TAIL.match(s)  # "72 dollars", "50%", "3.5 km/h": drop the unit once
        if not m:
            return None
        s = m.group(1).strip().rstrip(".")
    return None


def _numbers_equal(a: Fraction | float, b: Fraction | float) -> bool:
    fa, fb = float(a), float(b)
    if not (math.isfinite(fa) and math.isfinite(fb)):
        return False
    if isinstance(a, Fraction) and isinstance(b, Fraction) and a == b:
        return True
    return abs(fa - fb) <= 1e-6 * max(1.0, abs(fa), abs(fb))


class _TimeoutWarningFilter(logging.Filter):
    """Drops math_verify's one-off warning that its signal-based timeout is disabled: we
    disable it on purpose and enforce our own timeout (see :func:`_verify`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


_mv_lock = threading.Lock()
_mv: object | None = None  # the math_verify module, or False if unavailable


def _math_verify():
    global _mv
    with _mv_lock:
        if _mv is None:
            try:
                import math_verify

                for name in ("math_verify.parser", "math_verify.grader"):
                    logging.getLogger(name).addFilter(_TimeoutWarningFilter())
                _mv = math_verify
            except Exception:  # not installed or broken: numeric checking only
                _mv = False
    return _mv or None


def _no_signal_kwargs(fn, name: str) -> dict:
    """``{name: None}`` if ``fn`` accepts ``name`` (disables math_verify's SIGALRM timeout,
    which only works in the main thread), else ``{}``."""
    import inspect

    try:
        return {name: None} if name in inspect.signature(fn).parameters else {}
    except (TypeError, ValueError):
        return {}


def _verify(prediction: str, reference: str, timeout_s: float) -> bool:
    """math_verify comparison, run in a daemon thread joined with ``timeout_s``.

    math_verify's own timeouts use ``signal.alarm`` and fail outside the main thread, so they are
    disabled and this thread-based timeout is used instead; a runaway parse is abandoned (the
    daemon thread finishes in the background) and counts as incorrect.
    """
    mv = _math_verify()
    if mv is None or len(prediction) > _MAX_VERIFY_CHARS:
        return False
    parse_kw = _no_signal_kwargs(mv.parse, "parsing_timeout")
    verify_kw = _no_signal_kwargs(mv.verify, "timeout_seconds")

    def parse_any(text: str, wrappers: tuple[str, ...]) -> list:
        for w in wrappers:
            parsed = mv.parse(w.format(text), **parse_kw)
            if parsed:
                return parsed
        return []

    def work() -> bool:
        pred = prediction.strip()
        wrappers = ("{}",) if "\\boxed" in pred else ("\\boxed{{{}}}", "${}$", "{}")
        pred_parsed = parse_any(pred, wrappers)
        gold_parsed = parse_any(reference.strip(), ("${}$", "\\boxed{{{}}}", "{}"))
        if not pred_parsed or not gold_parsed:
            return False
        return bool(mv.verify(gold_parsed, pred_parsed, **verify_kw))

    result: list[bool] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException:  # math_verify may raise anything (sympy, antlr, timeouts)
            result.append(False)

    thread = threading.Thread(target=target, name="adasr-math-verify", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def is_correct(prediction: str | None, reference: str, *, timeout_s: float = 5.0) -> bool:
    """Whether ``prediction`` (e.g. the content of the last ``\\boxed{}``) matches ``reference``.

    Numbers are compared exactly as fractions, or with a relative tolerance of 1e-6 when one is a
    float: ``"72.0"`` vs ``"72"``, ``"$1,200"`` vs ``"1200"``, ``"1/2"`` vs ``"0.5"``,
    ``"18 dollars"`` vs ``"18"`` all match. Anything else goes to ``math_verify`` (symbolic
    equivalence), run with its signal-based timeouts disabled so this works from any thread, and
    bounded by ``timeout_s`` seconds of our own.

    Returns:
        ``False`` for ``None``/empty predictions, on any parse failure or timeout; never raises.
    """
    try:
        if prediction is None or reference is None:
            return False
        prediction, reference = str(prediction), str(reference)
        if not prediction.strip() or not reference.strip():
            return False
        ref_num = to_number(reference)
        if ref_num is not None:
            pred_num = to_number(prediction)
            if pred_num is not None:
                return _numbers_equal(pred_num, ref_num)
        if _normalize(prediction) == _normalize(reference):
            return True
        return _verify(prediction, reference, timeout_s)
    except Exception:
        return False
