"""Streamified GSM8K: streaming chain-of-thought training data without a teacher model.

A GSM8K reference solution is a list of steps (one per line before ``####``) whose arithmetic
is annotated as ``<<expr=result>>``. We stream the question one sentence (chunk) at a time and
move every step to the *earliest chunk after which it can be computed*; those steps become that
chunk's streaming thought, the rest form the deep stage, which ends with ``\\boxed{answer}``.

Output records follow the shared streaming-episode schema (one SFT episode each)::

    id: str, task: "gsm8k", question: str, chunks: list[str] (N),
    thoughts: list[str] (N-1; "" is a skip), deep: str (ends with "\\boxed{<answer>}"),
    answer: str (canonical: commas stripped)

Alignment rules (our definitions)
---------------------------------
* **Steps.** Each non-blank line of the solution before ``####`` is one step. Its text, as the
  model sees it, is the line with the ``<<...>>`` annotations removed ("Natalia sold 48/2 = 24
  clips in May.").
* **Operands and results.** A step's operands are the numbers in the left-hand side of each of
  its annotations, except those produced by an earlier annotation of the same step; its results
  are the right-hand sides.
* **Literal values of a chunk** (:func:`known_numbers`): numbers written in it (normalized:
  thousands commas, ``$``, trailing ``.0``; ``25%`` also gives ``0.25``; ``3/4`` also gives
  ``0.75``) and number words (:data:`NUMBER_WORDS`: "zero".."twenty", the tens up to "ninety",
  "hundred", "thousand", "million", "dozen" = 12, "half" = 2 and 0.5, "twice" / "double" = 2,
  "triple" / "thrice" = 3, "quadruple" = 4, "quarter" / "fourth" = 4 and 0.25, "third" = 3,
  "fifth".."tenth" = 5..10, "pair" = 2; hyphenated tens such as "twenty-five" = 25).
* **Implied-unit constants** (:data:`UNIT_CONSTANTS`, deliberately conservative), known from
  the first chunk after which all their trigger words have appeared: 1 always; 2 with "both /
  couple / twins / round trip / every other / each way / back and forth"; 100 and 0.01 with
  "% / percent" (100 also with "cent"); 60 with "hour / minute / second"; 24 with "day" and
  "hour"; 7 with "week"; 52 with "week" and "year"; 365 with "day" and "year"; 12 with "month"
  and "year", or "foot" and "inch"; 30 with "month" and "day"; 4 with "month" and "week"; 1000
  with a metric prefix ("ml", "kg", "km", "milli", "kilo"); 16 with "ounce" and "pound"; 3 with
  "foot" and "yard".
* **When an operand is known.** An operand is known at once if it is the result of an earlier
  step. Otherwise it is a literal value, and if several chunks mention it we must guess which
  mention the step uses (``2`` in "2 feet of tape" and in "two large boxes"): **mentions** are
  disambiguated by the words around them — the mentioning chunk whose content words (lower-cased,
  plural "s" stripped, not in :data:`STOPWORDS`, each weighted ``1/(number of chunks containing
  it)``) best match the step's text wins; ties go to the later chunk (the conservative choice),
  except that the last chunk, usually the question restating earlier numbers, must match
  strictly better. An implied-unit constant is known from its trigger chunk if that is earlier.
  A step's earliest chunk ``e_i`` is the latest chunk at which one of its operands becomes
  known.
* **Word anchors.** A step is also not placed before (a) the first chunk containing a number
  word its text uses for one of its operands ("half of the remaining pages ... 84/2"), nor (b)
  the first chunk containing any of its content words, unless that chunk is the last one: the
  last chunk is usually the question sentence, and computing towards what it asks from
  already-known quantities is anticipation, not a leak ("Natalia sold 48+24 = 72 clips
  altogether in April and May." after chunk 0).
* **Monotone placement.** Steps keep their original order: step ``i`` goes to chunk
  ``max(e_i, anchors_i, chunk(i-1))``. We chose this over a dependency-graph placement because a
  solution's steps are written as a narrative (later steps refer to earlier ones in words, not
  only through numbers), so the streaming thoughts stay a prefix of the reference solution and
  the deep stage its suffix. The price: a step that must wait delays every later one.
* **Deep stage.** A step goes to the deep stage if it has no annotation, if one of its operands
  is never known, or if it lands on the last chunk (no thought follows the last chunk: the
  stream closes with it); by monotonicity every later step then goes there too. The deep stage
  is the remaining steps (one per line) followed by ``The answer is \\boxed{<final>}.``. Step
  lines that do not end in ``.``, ``?`` or ``!`` get a period, since steps are joined by spaces
  into one thought.

Limitations: this is a heuristic without a teacher model. A value mentioned twice whose wrong
mention also matches the step's words can still place a step one chunk early, and steps that
use knowledge outside the lists above (e.g. "Jamie Grey" has 4 letters) go to the deep stage.

A problem is **clean** when every annotation is consistent (its expression evaluates to its
result, up to the rounding GSM8K uses), every step has an annotation whose operands become known
(so it was placed by the rule above, not by a fallback), and the final ``####`` answer is the
result of one of the annotations (the boxed answer is derived by the steps). Problems that are
not clean are still converted; problems that fail to parse at all (no ``####``, an empty or
non-numeric final answer, no steps, a malformed ``<<...>>`` annotation, an empty question) are
excluded and counted by reason in :class:`StreamifyReport`.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from adasr import stream as _stream

__all__ = [
    "NUMBER_WORDS",
    "STOPWORDS",
    "UNIT_CONSTANTS",
    "Step",
    "StreamifiedProblem",
    "StreamifyReport",
    "ParseFailure",
    "canonical_answer",
    "known_numbers",
    "parse_solution",
    "streamify_problem",
    "streamify_solution",
    "parse_free_solution",
    "align_steps",
    "streamify_gsm8k",
]

# --------------------------------------------------------------------------- number knowledge

NUMBER_WORDS: dict[str, tuple[float, ...]] = {
    **{
        w: (float(i),)
        for i, w in enumerate(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
        )
    },
    **{w: (float(10 * i),) for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)},
    "hundred": (100.0,),
    "thousand": (1000.0,),
    "million": (1e6,),
    "dozen": (12.0,),
    "dozens": (12.0,),
    "half": (2.0, 0.5),
    "halves": (2.0, 0.5),
    "twice": (2.0,),
    "double": (2.0,),
    "doubled": (2.0,),
    "doubles": (2.0,),
    "triple": (3.0,),
    "tripled": (3.0,),
    "triples": (3.0,),
    "thrice": (3.0,),
    "quadruple": (4.0,),
    "quadrupled": (4.0,),
    "quarter": (4.0, 0.25),
    "quarters": (4.0, 0.25),
    "third": (3.0,),
    "thirds": (3.0,),
    "fourth": (4.0, 0.25),
    "fourths": (4.0, 0.25),
    **{
        w + suf: (float(i),)
        for i, w in enumerate("fifth sixth seventh eighth ninth tenth".split(), 5)
        for suf in ("", "s")
    },
    "pair": (2.0,),
    "pairs": (2.0,),
}
"""Number words (lower case) and the values they make known."""

_DAY = r"\bdays?\b|\bdaily\b"
_HOUR = r"\bhours?\b|\bhourly\b"
_WEEK = r"\bweeks?\b|\bweekly\b"
_YEAR = r"\byears?\b|\byearly\b|\bannual(?:ly)?\b"
_MONTH = r"\bmonths?\b|\bmonthly\b"

UNIT_CONSTANTS: tuple[tuple[float, tuple[str, ...]], ...] = (
    (1.0, ()),
    (2.0, (r"\bboth\b|\bcouples?\b|\btwins?\b|\bround[- ]trips?\b|\bevery other\b|\beach way\b"
           r"|\bback and forth\b",)),
    (100.0, (r"%|\bpercent|\bcents?\b",)),
    (0.01, (r"%|\bpercent",)),
    (60.0, (r"\bhours?\b|\bminutes?\b|\bseconds?\b|\bhourly\b",)),
    (24.0, (_DAY, _HOUR)),
    (7.0, (_WEEK,)),
    (52.0, (_WEEK, _YEAR)),
    (365.0, (_DAY, _YEAR)),
    (12.0, (_MONTH, _YEAR)),
    (12.0, (r"\bfoot\b|\bfeet\b", r"\binch")),
    (30.0, (_MONTH, _DAY)),
    (4.0, (_MONTH, _WEEK)),
    (1000.0, (r"\bml\b|\bmilli|\bkilo|\bkg\b|\bkm\b|\bmg\b",)),
    (16.0, (r"\bounces?\b|\boz\b", r"\bpounds?\b|\blbs?\b")),
    (3.0, (r"\bfoot\b|\bfeet\b", r"\byards?\b")),
)
"""Implied-unit constants: ``(value, trigger patterns)``. The value is known once *every*
pattern has matched the (lower-cased) chunks so far; an empty tuple means always known."""

STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after against all also am among an and any are as at be because been before
    being below between both but by can could did do does doing done down during each either else
    for from further had has have having he her here hers herself him himself his how however i if
    in into is it its itself just let me might must my myself no nor not now of off on or our ours
    out over own she should so some such than that the their theirs them themselves then there
    therefore these they this those through thus to too under until up us very was we were what
    when where which while who whom whose why will with would yet you your yours yourself
    """.split()
)
"""Function words: never content words (see "Word anchors" and "Mentions")."""

_CONTENT_WORD = re.compile(r"[a-z]+(?:['\u2019]s)?")
_UNIT_RES = tuple((v, tuple(re.compile(p) for p in pats)) for v, pats in UNIT_CONSTANTS)
_NUM_IN_TEXT = re.compile(r"(?<![\d.])(\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(\s*%|\s*percent)?")
_FRACTION = re.compile(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.])")
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_NUM_IN_EXPR = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_ANNOTATION = re.compile(r"<<(.*?)>>", re.S)


def _key(x: float) -> float:
    """Canonical form of a number for set membership (floats rounded to 6 decimals)."""
    return round(float(x), 6)


def _word_values(word: str) -> list[float]:
    if word in NUMBER_WORDS:
        return list(NUMBER_WORDS[word])
    parts = word.split("-")
    if len(parts) > 1:
        vals = [v for p in parts for v in NUMBER_WORDS.get(p, ())]
        # "twenty-five" -> 25 (tens + unit), "one-half" -> its parts only
        if len(parts) == 2 and parts[0] in NUMBER_WORDS and parts[1] in NUMBER_WORDS:
            a, b = NUMBER_WORDS[parts[0]][0], NUMBER_WORDS[parts[1]][0]
            if a >= 20 and a % 10 == 0 and 1 <= b <= 9:
                vals.append(a + b)
        return vals
    return []


def known_numbers(text: str) -> set[float]:
    """Numbers a reader knows from ``text`` (digits and number words), as canonical keys.

    Implied-unit constants are not included (see :func:`_unit_constants`).
    """
    low = text.lower()
    out: set[float] = set()
    for m in _NUM_IN_TEXT.finditer(low):
        v = float(m.group(1).replace(",", ""))
        out.add(_key(v))
        if m.group(2):
            out.add(_key(v / 100))
    for m in _FRACTION.finditer(low):
        den = float(m.group(2))
        if den:
            out.add(_key(float(m.group(1)) / den))
    for w in _WORD.findall(low):
        out.update(_key(v) for v in _word_values(w))
    return out


def _unit_constants(text: str) -> set[float]:
    low = text.lower()
    return {_key(v) for v, pats in _UNIT_RES if all(p.search(low) for p in pats)}


def canonical_answer(text: str) -> str:
    """Canonical final answer: whitespace and thousands commas removed, ``$`` dropped,
    a trailing ``.0`` (``.00``...) removed."""
    s = text.strip().replace(",", "").replace("$", "").strip()
    s = re.sub(r"^(-?\d+)\.0+$", r"\1", s)
    return s


# --------------------------------------------------------------------------- solution parsing


class ParseFailure(ValueError):
    """A GSM8K record that cannot be streamified; ``reason`` is a short category."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def _safe_eval(expr: str) -> float | None:
    """Evaluate an arithmetic expression (numbers, + - * / // % **, parentheses) or ``None``."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(b) > 64:
                raise ValueError("exponent too large")
            return _BINOPS[type(node.op)](a, b)
        raise ValueError("not arithmetic")

    try:
        return ev(ast.parse(expr.replace(",", "").strip(), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None


def _parse_number(s: str) -> float | None:
    s = s.strip().replace(",", "").replace("$", "")
    try:
        return float(s)
    except ValueError:
        pass
    return _safe_eval(s)  # e.g. a result written as "1/3"


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
    """Why :func:`align_steps` could not place the step before the last chunk (``None``: placed):
    one of :data:`DEEP_REASONS`."""


DEEP_REASONS = ("answer", "no arithmetic", "operand not found", "operand in the last chunk",
                "after a deep-stage step")
"""Why a step stays after end of input (:attr:`Step.deep_reason`): it holds the ``\\boxed{}``
answer (or is prose after it); it computes nothing the aligner can read; an operand is in no chunk
of the question (and no earlier result); its operands are complete only with the last chunk; or an
earlier step went to the deep stage (placement is monotone)."""


def _close(a: float, b: float) -> bool:
    # GSM8K rounds results (e.g. 10/3 = 3.33); accept rounding to 2 decimals or 0.5% error.
    return math.isclose(a, b, rel_tol=5e-3, abs_tol=5e-3 + 1e-9)


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
    if _parse_number(final) is None or not re.fullmatch(r"-?[\d.]+(?:/\d+)?", final):
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
            res = _parse_number(rhs)
            if res is None or not lhs.strip():
                raise ParseFailure("malformed annotation", f"<<{ann}>>")
            # operands produced by an earlier annotation of the same line are not needed from
            # outside the step
            operands.extend(
                k for k in (_key(float(x)) for x in _NUM_IN_EXPR.findall(lhs.replace(",", "")))
                if k not in results
            )
            results.append(_key(res))
            val = _safe_eval(lhs.split("=")[0])
            if val is None or not _close(val, res):
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


# --------------------------------------------------------------------------- alignment


@dataclass
class StreamifiedProblem:
    """One streamified problem: the shared-schema ``record``, its ``steps`` (with their chunk
    assignments), whether it is ``clean`` and, if not, the ``issues`` found."""

    record: dict
    steps: list[Step]
    clean: bool
    issues: list[str] = field(default_factory=list)

    @property
    def stream_steps(self) -> int:
        return sum(s.chunk is not None for s in self.steps)


def _split(question: str) -> list[str]:
    chunks = [c.strip() for c in _stream.split_sentences(question)]
    return [c for c in chunks if c]


def _words(text: str) -> set[str]:
    out: set[str] = set()
    for w in _WORD.findall(text.lower()):
        out.add(w)
        out.update(w.split("-"))
    return out


def _stem(word: str) -> str:
    if word.endswith("'s") or word.endswith("\u2019s"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def _content_words(text: str) -> set[str]:
    return {
        _stem(w)
        for w in _CONTENT_WORD.findall(text.lower())
        if len(w) >= 3 and w not in STOPWORDS and w not in NUMBER_WORDS
    }


def _anchor_chunk(step: Step, chunk_words: list[set[str]], chunk_content: list[set[str]]) -> int:
    """Earliest chunk allowed by the words of ``step``'s text (see "Word anchors").

    * number words: for every number word in the step text whose value is one of the step's
      operands, the first chunk containing that word;
    * content words: for every content word of the step, the first chunk containing it, unless
      that is the last chunk (the question sentence: computing towards what it asks from known
      quantities is anticipation, not a leak).

    Words that no chunk contains do not constrain. Returns 0 when nothing constrains the step.
    """
    ops = set(step.operands)
    lo = 0
    for w in _words(step.text):
        if w in NUMBER_WORDS and ops.intersection(_key(v) for v in NUMBER_WORDS[w]):
            first = next((k for k, ws in enumerate(chunk_words) if w in ws), None)
            if first is not None:
                lo = max(lo, first)
    last = len(chunk_content) - 1
    for w in _content_words(step.text):
        first = next((k for k, ws in enumerate(chunk_content) if w in ws), None)
        if first is not None and first < last:
            lo = max(lo, first)
    return lo


def _release_chunk(
    value: float,
    step_words: set[str],
    mentions: list[set[float]],
    units_after: list[set[float]],
    chunk_content: list[set[str]],
    df: Counter,
) -> int | None:
    """The chunk after which a step may use the literal ``value`` (see "Mentions"), or ``None``.

    Among the chunks that mention ``value``, take the one whose content words best match the
    step's (each shared word weighs ``1/df``: a word found in fewer chunks says more); ties go
    to the later chunk, except that the last chunk (usually the question, often restating
    earlier numbers) must match strictly better to win. An implied-unit constant is known from
    the first chunk that triggers it, if that comes earlier.
    """
    last = len(mentions) - 1
    best, best_score = None, -1.0
    for k, vals in enumerate(mentions):
        if value not in vals:
            continue
        score = sum(1.0 / df[w] for w in step_words & chunk_content[k])
        if score > best_score + 1e-9 or (abs(score - best_score) <= 1e-9 and k != last):
            best, best_score = k, score
    unit = next((k for k, u in enumerate(units_after) if value in u), None)
    if best is None:
        return unit
    return best if unit is None else min(best, unit)


@dataclass
class _ChunkIndex:
    """What the alignment rules need to know about a problem's chunks."""

    mentions: list[set[float]]  # literal values (digits, number words) per chunk
    units_after: list[set[float]]  # implied-unit constants known after each chunk
    words: list[set[str]]
    content: list[set[str]]
    df: Counter

    @classmethod
    def of(cls, chunks: list[str]) -> "_ChunkIndex":
        units_after: list[set[float]] = []
        text_so_far = ""
        for c in chunks:
            text_so_far += " " + c
            units_after.append(_unit_constants(text_so_far))
        content = [_content_words(c) for c in chunks]
        return cls([known_numbers(c) for c in chunks], units_after, [_words(c) for c in chunks], content,
                   Counter(w for ws in content for w in ws))


def align_steps(chunks: list[str], steps: list[Step], *, unannotated: str = "deep") -> None:
    """Place each step after the earliest chunk once every quantity it uses is known (sets
    ``Step.chunk``/``Step.placed``; the rules are in the module docstring).

    Args:
        chunks: the question's chunks (N).
        steps: the solution's steps, in order; modified in place.
        unannotated: what a step without arithmetic does: ``"deep"`` (reference solutions: it
            and every later step go to the deep stage) or ``"attach"`` (free-form solutions:
            prose travels with the next step that computes something; trailing prose and any
            step holding ``\\boxed{}`` go to the deep stage).
    """
    if unannotated not in ("deep", "attach"):
        raise ValueError(f"unannotated must be 'deep' or 'attach', got {unannotated!r}")
    idx = _ChunkIndex.of(chunks)
    n = len(chunks)
    results_so_far: set[float] = set()
    prev_chunk = 0
    to_deep = False  # once a step goes to the deep stage, every later step follows it
    waiting: list[Step] = []  # prose steps attached to the next computing step
    for st in steps:
        if unannotated == "attach" and not st.annotated and "\\boxed" not in st.text:
            waiting.append(st)
            continue
        target = None
        if st.annotated and "\\boxed" not in st.text:
            target = max(prev_chunk, _anchor_chunk(st, idx.words, idx.content))
            words = _content_words(st.text)
            for op in st.operands:
                if op in results_so_far:
                    continue
                k = _release_chunk(op, words, idx.mentions, idx.units_after, idx.content, idx.df)
                if k is None:
                    target = None  # never known: fallback to the deep stage
                    break
                target = max(target, k)
        if to_deep:
            reason = "after a deep-stage step"
        elif "\\boxed" in st.text:
            reason = "answer"
        elif not st.annotated:
            reason = "no arithmetic"
        elif target is None:
            reason = "operand not found"
        elif target == n - 1:
            reason = "operand in the last chunk"
        else:
            reason = None
        if target is None:
            to_deep = True  # no annotation, operands never known, or the answer: the deep stage
        else:
            st.placed = True
            prev_chunk = target
            if target == n - 1:
                to_deep = True  # lands on the last chunk: no thought follows it
        for s in [*waiting, st]:
            s.chunk = None if to_deep else target
            s.deep_reason = reason if to_deep else None
        waiting = []
        results_so_far.update(st.results)
    for s in waiting:  # trailing prose: the deep stage, with the answer
        s.chunk, s.deep_reason = None, "answer"


# Free-form solutions (the model's own, e.g. from self-distillation) carry no <<expr=result>>
# annotations: their arithmetic is read from the text. LaTeX operators are turned into Python
# ones, then every chain "E0 = E1 = ... = En" of arithmetic expressions gives one annotation
# (operands: the numbers of E0 up to the first part with an operator; the numbers of later parts
# are intermediate results, like the value of En).
_LATEX_OPS = (
    ("\\times", "*"), ("\\cdot", "*"), ("×", "*"), ("·", "*"), ("\\div", "/"), ("÷", "/"),
    ("\\left", ""), ("\\right", ""), ("\\$", ""), ("$", ""), ("£", ""), ("€", ""), ("\\%", "%"), ("\\,", ""), ("{,}", ""),
    ("\\[", " "), ("\\]", " "), ("\\(", " "), ("\\)", " "), ("−", "-"), ("–", "-"),
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")
_EXPR = r"[\d.()+\-*/ ]*\d[\d.()+\-*/ ]*"
_CHAIN = re.compile(rf"(?<![\w.])({_EXPR})(?:=\s*({_EXPR}))+")
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•]|#+|\*\*Step|Step\s+\d)")


def _math_text(text: str) -> str:
    """``text`` with LaTeX arithmetic turned into plain ``+ - * /`` expressions."""
    s = _LATEX_TEXT.sub(" ", text)  # \\text{hours}: a unit inside math, not a quantity
    for _ in range(3):  # nested fractions
        s = _LATEX_FRAC.sub(r"((\1)/(\2))", s)
    for a, b in _LATEX_OPS:
        s = s.replace(a, b)
    s = _THOUSANDS_IN_TEXT.sub("", s)
    return re.sub(r"(?<=\d)\s*%", "/100", s)


_THOUSANDS_IN_TEXT = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_HAS_OP = re.compile(r"\d\s*[-+*/]\s*[\d(]|\)\s*[-+*/]")


def _annotations(text: str) -> tuple[list[float], list[float], bool]:
    """``(operands, results, consistent)`` of the arithmetic chains written in ``text``."""
    operands: list[float] = []
    results: list[float] = []
    consistent = True
    for m in _CHAIN.finditer(_math_text(text)):
        parts = [p.strip().rstrip(".").rstrip() for p in m.group(0).split("=")]  # "= 12." ends a sentence
        parts = [p for p in parts if p]
        if len(parts) < 2 or not _HAS_OP.search(" ".join(parts[:-1])):
            continue  # "x = 5" or "2 = 2": nothing computed
        res = _safe_eval(parts[-1])
        if res is None:
            continue
        computed = False  # after the first part with an operator, numbers are intermediate results
        for p in parts[:-1]:
            val = _safe_eval(p)
            if val is not None and not _close(val, res):
                consistent = False
            nums = [_key(float(x)) for x in _NUM_IN_EXPR.findall(p)]
            if computed:  # "2*1 + 2*3 = 2 + 6 = 8": 2 and 6 were computed, not read from the input
                results.extend(nums)
            else:
                operands.extend(k for k in nums if k not in results)
                computed = bool(_HAS_OP.search(p))
        results.append(_key(res))
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
        ops, res, ok = _annotations(body)
        steps.append(Step(text=body, operands=tuple(ops), results=tuple(res), annotated=bool(res),
                          consistent=ok, span=(a, b)))
    if not steps:
        raise ParseFailure("no solution steps")
    return steps


_MATH_BLOCK = re.compile(r"\\\[(.+?)\\\]|\\\((.+?)\\\)", re.S)
_LABEL = re.compile(r"^\s*\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}")
_MARKER = r"^\s*(?:\d+[.)]|[-*•])\s+"  # a list item's marker
_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+(?=[A-Z*\\-])|" + _MARKER)
_CONNECTIVE = re.compile(r"^(?:(?:therefore|thus|so|hence|now|next|then|first|second|finally|also|and)\b,?\s*)+", re.I)
NOTE_STYLES = ("steps", "prose", "terse")
DEEP_STYLES = ("verbatim", "terse")


def terse_note(step: str) -> str:
    """A computing step reduced to its computations, in the model's own notation.

    Each math block (``\\[...\\]`` or ``\\(...\\)``) that computes something (holds ``=``)
    becomes one note: its body with ``\\text{...}`` labels unwrapped ("Lisa's earnings =
    \\frac{60}{2} = 30"); a block without a label keeps the words of its sentence before it
    ("the total cost of the ice cream is 10 \\times 4 = 40"), so the note still says what the
    number is. A step without math blocks keeps its sentences that compute ("50 / 60 = 0.8333
    hours."). Notes are joined by "; ". List markers and bold headers are dropped.
    """
    flat = " ".join(step.split())
    notes = []
    last = 0
    for m in _MATH_BLOCK.finditer(flat):
        body = " ".join((m.group(1) or m.group(2)).split())
        before, last = flat[last:m.start()], m.end()
        if "=" not in body:
            continue
        if _LABEL.match(body):
            note = _LATEX_TEXT.sub(lambda t: t.group(1).strip(), body)
        else:
            lead = _SENTENCE_END.split(before)[-1].replace("**", "").strip()
            lead = _CONNECTIVE.sub("", re.sub(_MARKER, "", lead))
            note = f"{lead} {_LATEX_TEXT.sub(lambda t: t.group(1).strip(), body)}".strip()
        notes.append(note)
    if not notes:
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat)
        notes = [_CONNECTIVE.sub("", re.sub(_MARKER, "", x)) for x in sentences
                 if _CHAIN.search(_math_text(x))]
    notes = [n[:1].upper() + n[1:] for n in notes if n]
    return "; ".join(notes) if notes else flat


@dataclass(frozen=True)
class ThoughtFit:
    """How much thought fits after a chunk when the input arrives in real time.

    An adaptive thought after chunk ``k`` gets at most ``min(max_tokens, words(chunk k+1) *
    tokens_per_word)`` tokens: the arrival slack of the next chunk times the decode rate
    (``tokens_per_word`` = decode tokens/s / words/s; 7 / 2.5 = 2.8, the pinned rate of the
    project's evaluations). See :func:`fit_thoughts`.

    Attributes:
        tokens_per_word: decode rate over arrival rate, tokens per word of input.
        max_tokens: the thought budget's cap, tokens.
        count: tokens of a text (the model's tokenizer).
    """

    tokens_per_word: float
    max_tokens: int
    count: Callable[[str], int]

    def capacity(self, chunks: Sequence[str]) -> list[int]:
        """Token room of the thought after each chunk but the last (``len(chunks) - 1``)."""
        return [min(self.max_tokens, int(len(c.split()) * self.tokens_per_word)) for c in chunks[1:]]


def fit_thoughts(steps: list[Step], capacity: Sequence[int], note: Callable[[Step], str],
                 count: Callable[[str], int]) -> None:
    """Move placed steps to later chunks, or to the deep stage, so that each thought fits its
    room (modifies ``Step.chunk`` in place).

    Steps keep their order: each chunk's thought takes the earliest waiting computing steps
    (those placed at or before it and not yet written) while their notes fit its ``capacity``;
    the rest wait for the next chunk. Whatever still waits after the last thought goes to the
    deep stage, with every later step (placement stays monotone). A step never moves earlier,
    so the "every quantity it uses is known" rule of :func:`align_steps` still holds. Prose
    steps travel with the computing step that follows them.

    Args:
        steps: aligned steps (:func:`align_steps`).
        capacity: tokens of room after chunk ``k`` for ``k < N - 1``.
        note: the text a step contributes to its thought.
        count: tokens of a text.
    """
    units: list[list[Step]] = []  # a computing step with the prose before it
    pending: list[Step] = []
    for st in steps:
        if st.chunk is None:
            break
        pending.append(st)
        if st.annotated:
            units.append(pending)
            pending = []
    queue: list[list[Step]] = []
    i = 0
    for k, room in enumerate(capacity):
        while i < len(units) and units[i][-1].chunk is not None and units[i][-1].chunk <= k:
            queue.append(units[i])
            i += 1
        used = 0
        while queue:
            cost = count(note(queue[0][-1])) + (1 if used else 0)
            if used + cost > room:
                break
            used += cost
            for st in queue.pop(0):
                st.chunk = k
    spilled = [st for unit in queue for st in unit]
    if spilled:
        first = steps.index(spilled[0])
        for st in steps[first:]:
            st.chunk = None


def streamify_solution(question: str, solution: str, final: str, *, id: str = "",
                       task: str = "gsm8k", notes: str = "steps", one_line: bool = False,
                       fit: ThoughtFit | None = None, deep_style: str = "verbatim") -> StreamifiedProblem:
    """Streamify a free-form solution (e.g. the model's own, from :mod:`adasr.train.distill`).

    Same chunking and placement rules as :func:`streamify_problem` (:func:`align_steps`), with
    steps and operands read by :func:`parse_free_solution`; prose without arithmetic travels
    with the next computing step, and the step with the ``\\boxed{}`` answer, with everything
    after it, forms the deep stage (``The answer is \\boxed{final}.`` is appended when the
    solution boxes nothing). The deep stage is a slice of the solution text, exactly as the
    model wrote it. A streaming thought is a short note on the computing steps placed after its
    chunk; ``notes`` picks its style:

    * ``"steps"``: the computing steps, one per line, as the model wrote them; the prose placed
      with them (plans, restated facts: "To find the total, we need to ...") is dropped;
    * ``"prose"``: the whole slice of the solution, prose included;
    * ``"terse"``: each computing step reduced to its computations (:func:`terse_note`): thoughts
      short enough to fit the slack between chunks (an adaptive thought is closed when the
      next chunk arrives: at 2.5 words/s and 7 tokens/s a 12-word chunk leaves ~34 tokens).

    ``one_line`` collapses each thought's whitespace (line breaks of lists and display math
    included) to single spaces, the thought format of protocol ``v2`` (a thought ends at its
    first line break). ``fit``: thoughts are made to fit the room the input's arrival leaves
    (:func:`fit_thoughts`); steps that do not fit move to later chunks or the deep stage.
    ``deep_style="terse"`` writes the deep stage's computing steps as :func:`terse_note` lines
    (one per step; the prose between them dropped) and keeps the step with ``\\boxed{}`` and
    what follows it verbatim: a concise deep stage (``"verbatim"``: the solution's slice).

    Raises:
        ParseFailure: empty question or solution.
        ValueError: an unknown ``notes`` style.
    """
    if notes not in NOTE_STYLES:
        raise ValueError(f"notes must be one of {NOTE_STYLES}, got {notes!r}")
    if deep_style not in DEEP_STYLES:
        raise ValueError(f"deep_style must be one of {DEEP_STYLES}, got {deep_style!r}")
    if not isinstance(question, str) or not question.strip():
        raise ParseFailure("empty question")
    chunks = _split(question)
    steps = parse_free_solution(solution or "")
    align_steps(chunks, steps, unannotated="attach")
    note_of = (lambda st: terse_note(st.text)) if notes == "terse" else (lambda st: st.text)
    if fit is not None:
        fit_thoughts(steps, fit.capacity(chunks), note_of, fit.count)

    def text_of(group: list[Step]) -> str:  # placement is monotone: a group is one slice
        return solution[group[0].span[0]:group[-1].span[1]].strip() if group else ""

    def thought(k: int) -> str:
        group = [s for s in steps if s.chunk == k]
        if notes == "prose":
            text = text_of(group)
        else:
            text = ("; " if notes == "terse" else "\n").join(note_of(s) for s in group if s.annotated)
        return re.sub(r"\s+", " ", text).strip() if one_line else text

    thoughts = [thought(k) for k in range(len(chunks) - 1)]
    deep_steps = [s for s in steps if s.chunk is None]
    if deep_style == "terse":
        boxed = next((i for i, s in enumerate(deep_steps) if "\\boxed" in s.text), len(deep_steps))
        lines = [terse_note(s.text) for s in deep_steps[:boxed] if s.annotated]
        deep = "\n".join([*lines, text_of(deep_steps[boxed:])]).strip()
    else:
        deep = text_of(deep_steps)
    if "\\boxed" not in deep:
        deep = (deep + "\n\n" if deep else "") + f"The answer is \\boxed{{{canonical_answer(final)}}}."
    record = {"id": id, "task": task, "question": question.strip(), "chunks": chunks, "thoughts": thoughts,
              "deep": deep, "answer": canonical_answer(final)}
    issues = ["inconsistent arithmetic"] if any(not s.consistent for s in steps) else []
    return StreamifiedProblem(record=record, steps=steps, clean=not issues, issues=issues)


def streamify_problem(question: str, answer: str, *, id: str = "", task: str = "gsm8k") -> StreamifiedProblem:
    """Streamify one GSM8K problem (``question`` and its reference ``answer`` field).

    Raises:
        ParseFailure: the problem cannot be converted (see :func:`parse_solution`; also an
            empty question).
    """
    if not isinstance(question, str) or not question.strip():
        raise ParseFailure("empty question")
    if not isinstance(answer, str):
        raise ParseFailure("no #### marker", "answer is not a string")
    steps, final = parse_solution(answer)
    chunks = _split(question)
    if not chunks:
        raise ParseFailure("empty question")
    align_steps(chunks, steps, unannotated="deep")
    n = len(chunks)
    thoughts = [" ".join(s.text for s in steps if s.chunk == k) for k in range(n - 1)]
    deep_lines = [s.text for s in steps if s.chunk is None]
    deep_lines.append(f"The answer is \\boxed{{{final}}}.")
    record = {
        "id": id,
        "task": task,
        "question": question.strip(),
        "chunks": chunks,
        "thoughts": thoughts,
        "deep": "\n".join(deep_lines),
        "answer": final,
    }

    issues: list[str] = []
    if any(not s.consistent for s in steps):
        issues.append("inconsistent annotation")
    if any(not s.annotated for s in steps):
        issues.append("step without annotation")
    elif any(not s.placed for s in steps):
        issues.append("operands never known")
    fin = _parse_number(final)
    if fin is None or all(not _close(r, fin) for s in steps for r in s.results):
        issues.append("final answer not derived by an annotation")
    return StreamifiedProblem(record=record, steps=steps, clean=not issues, issues=issues)


# --------------------------------------------------------------------------- batch conversion


@dataclass
class StreamifyReport:
    """Statistics of one :func:`streamify_gsm8k` run.

    Attributes:
        total: records read.
        converted: records converted (not excluded).
        clean: converted records that are clean (see the module docstring).
        excluded: reasons for excluded records -> count.
        not_clean: issues of converted but unclean records -> count (one record may count
            under several issues).
        skip_rate: fraction of non-final chunks (over all converted records) whose thought is
            ``""``.
        mean_chunks: mean number of chunks per converted record.
        mean_stream_steps_fraction: mean over converted records of (steps in streaming
            thoughts / all steps).
        stream_steps_fraction: pooled (steps in streaming thoughts / all steps), over all
            converted records.
        with_thought: fraction of converted records with at least one non-empty thought.
    """

    total: int = 0
    converted: int = 0
    clean: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    not_clean: dict[str, int] = field(default_factory=dict)
    skip_rate: float = 0.0
    mean_chunks: float = 0.0
    mean_stream_steps_fraction: float = 0.0
    stream_steps_fraction: float = 0.0
    with_thought: float = 0.0

    @property
    def clean_fraction(self) -> float:
        """Clean records / records read."""
        return self.clean / self.total if self.total else 0.0

    @property
    def converted_fraction(self) -> float:
        """Converted records / records read."""
        return self.converted / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["clean_fraction"] = self.clean_fraction
        d["converted_fraction"] = self.converted_fraction
        return d


def streamify_gsm8k(
    records: Iterable[dict], *, clean_only: bool = False, id_prefix: str = "gsm8k-"
) -> tuple[list[dict], StreamifyReport]:
    """Streamify GSM8K records (``{"question", "answer"}``, optional ``"id"``).

    Args:
        records: GSM8K records, e.g. from :func:`adasr.jsonl.read_jsonl`.
        clean_only: keep only clean conversions (the report still counts all).
        id_prefix: ids are ``record["id"]`` when present, else ``f"{id_prefix}{i}"`` with ``i``
            the record's position in ``records``.

    Returns:
        ``(episodes, report)``: shared-schema records and the conversion statistics.
    """
    out: list[dict] = []
    rep = StreamifyReport()
    excluded: Counter = Counter()
    not_clean: Counter = Counter()
    n_nonfinal = n_skip = n_chunks = n_steps = n_stream = n_with = 0
    fracs: list[float] = []
    for i, rec in enumerate(records):
        rep.total += 1
        rid = str(rec.get("id", f"{id_prefix}{i}")) if isinstance(rec, dict) else f"{id_prefix}{i}"
        try:
            if not isinstance(rec, dict):
                raise ParseFailure("not a record")
            p = streamify_problem(rec.get("question"), rec.get("answer"), id=rid)
        except ParseFailure as e:
            excluded[e.reason] += 1
            continue
        rep.converted += 1
        rep.clean += p.clean
        not_clean.update(p.issues)
        r = p.record
        n_chunks += len(r["chunks"])
        n_nonfinal += len(r["thoughts"])
        n_skip += sum(t == "" for t in r["thoughts"])
        n_with += any(r["thoughts"])
        n_steps += len(p.steps)
        n_stream += p.stream_steps
        fracs.append(p.stream_steps / len(p.steps))
        if p.clean or not clean_only:
            out.append(r)
    rep.excluded = dict(excluded)
    rep.not_clean = dict(not_clean)
    if rep.converted:
        rep.skip_rate = n_skip / n_nonfinal if n_nonfinal else 1.0
        rep.mean_chunks = n_chunks / rep.converted
        rep.mean_stream_steps_fraction = sum(fracs) / len(fracs)
        rep.stream_steps_fraction = n_stream / n_steps if n_steps else 0.0
        rep.with_thought = n_with / rep.converted
    return out, rep
