"""Text tools shared by the task modules: numbers and units in words, a safe arithmetic
evaluator, words and content words, LaTeX arithmetic as plain expressions.

Numbers are compared as canonical keys (:func:`number_key`: floats rounded to 6 decimals), so a
value read from a question ("two dozen", "$1,200", "25%") and one computed in a solution meet in
one set. Used by the solution parsers (:mod:`adasr.tasks.solutions`), the step-to-chunk aligner
(:mod:`adasr.tasks.align`), the thought notes (:mod:`adasr.tasks.notes`) and the proactive GSM8K
family (:mod:`adasr.tasks.proactive.gsm8k`). Pure functions of text; imports nothing of adasr.
"""

from __future__ import annotations

import ast
import math
import operator
import re

__all__ = [
    "NUMBER_WORDS",
    "UNIT_CONSTANTS",
    "STOPWORDS",
    "number_key",
    "known_numbers",
    "unit_constants",
    "expression_numbers",
    "canonical_answer",
    "safe_eval",
    "parse_number",
    "numbers_close",
    "words",
    "content_words",
    "math_text",
    "unwrap_latex_text",
]

# --------------------------------------------------------------------------- numbers in words

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
"""Function words: never content words (:func:`content_words`)."""

_CONTENT_WORD = re.compile(r"[a-z]+(?:['\u2019]s)?")
_UNIT_RES = tuple((v, tuple(re.compile(p) for p in pats)) for v, pats in UNIT_CONSTANTS)
_NUM_IN_TEXT = re.compile(r"(?<![\d.])(\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(\s*%|\s*percent)?")
_FRACTION = re.compile(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.])")
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_NUM_IN_EXPR = re.compile(r"\d+(?:\.\d+)?|\.\d+")


def number_key(x: float) -> float:
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

    Implied-unit constants are not included (see :func:`unit_constants`).
    """
    low = text.lower()
    out: set[float] = set()
    for m in _NUM_IN_TEXT.finditer(low):
        v = float(m.group(1).replace(",", ""))
        out.add(number_key(v))
        if m.group(2):
            out.add(number_key(v / 100))
    for m in _FRACTION.finditer(low):
        den = float(m.group(2))
        if den:
            out.add(number_key(float(m.group(1)) / den))
    for w in _WORD.findall(low):
        out.update(number_key(v) for v in _word_values(w))
    return out


def unit_constants(text: str) -> set[float]:
    """The implied-unit constants (:data:`UNIT_CONSTANTS`) that ``text`` triggers, as canonical keys."""
    low = text.lower()
    return {number_key(v) for v, pats in _UNIT_RES if all(p.search(low) for p in pats)}


def canonical_answer(text: str) -> str:
    """Canonical final answer: whitespace and thousands commas removed, ``$`` dropped,
    a trailing ``.0`` (``.00``...) removed."""
    s = text.strip().replace(",", "").replace("$", "").strip()
    s = re.sub(r"^(-?\d+)\.0+$", r"\1", s)
    return s


def expression_numbers(expr: str) -> list[float]:
    """The numbers written in an arithmetic expression, in order, as canonical keys (no sign:
    ``"-3*4"`` gives 3 and 4; commas are not read, strip thousands commas first)."""
    return [number_key(float(x)) for x in _NUM_IN_EXPR.findall(expr)]


# --------------------------------------------------------------------------- arithmetic

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def safe_eval(expr: str) -> float | None:
    """The value of an arithmetic expression (numbers, ``+ - * / // % **``, parentheses;
    thousands commas ignored; exponents above 64 refused), or ``None`` when ``expr`` is anything
    else or fails (division by zero, overflow). Never calls ``eval``: the parsed tree is walked."""

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


def parse_number(s: str) -> float | None:
    """A number written as digits (``$`` and thousands commas ignored) or as an arithmetic
    expression (a result written as ``1/3``), or ``None``."""
    s = s.strip().replace(",", "").replace("$", "")
    try:
        return float(s)
    except ValueError:
        pass
    return safe_eval(s)  # e.g. a result written as "1/3"


def numbers_close(a: float, b: float) -> bool:
    """Whether a computed value ``a`` matches a written result ``b``: GSM8K rounds results (e.g.
    10/3 = 3.33), so rounding to 2 decimals or a 0.5% error is accepted."""
    return math.isclose(a, b, rel_tol=5e-3, abs_tol=5e-3 + 1e-9)


# --------------------------------------------------------------------------- words


def words(text: str) -> set[str]:
    """The lower-cased words of ``text`` (hyphenated words and also their parts: "twenty-five",
    "twenty", "five")."""
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


def content_words(text: str) -> set[str]:
    """The content words of ``text``: lower-cased, possessive and plural "s" stripped, at least three
    letters, neither a :data:`STOPWORDS` function word nor a :data:`NUMBER_WORDS` number word."""
    return {
        _stem(w)
        for w in _CONTENT_WORD.findall(text.lower())
        if len(w) >= 3 and w not in STOPWORDS and w not in NUMBER_WORDS
    }


# --------------------------------------------------------------------------- LaTeX arithmetic
# Free-form solutions (the model's own) write arithmetic in LaTeX; these turn it into plain
# Python expressions for :func:`safe_eval` and the chain reader of :mod:`adasr.tasks.solutions`.

_LATEX_OPS = (
    ("\\times", "*"), ("\\cdot", "*"), ("×", "*"), ("·", "*"), ("\\div", "/"), ("÷", "/"),
    ("\\left", ""), ("\\right", ""), ("\\$", ""), ("$", ""), ("£", ""), ("€", ""), ("\\%", "%"), ("\\,", ""), ("{,}", ""),
    ("\\[", " "), ("\\]", " "), ("\\(", " "), ("\\)", " "), ("−", "-"), ("–", "-"),
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")
_THOUSANDS_IN_TEXT = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def math_text(text: str) -> str:
    """``text`` with LaTeX arithmetic turned into plain ``+ - * /`` expressions."""
    s = _LATEX_TEXT.sub(" ", text)  # \\text{hours}: a unit inside math, not a quantity
    for _ in range(3):  # nested fractions
        s = _LATEX_FRAC.sub(r"((\1)/(\2))", s)
    for a, b in _LATEX_OPS:
        s = s.replace(a, b)
    s = _THOUSANDS_IN_TEXT.sub("", s)
    return re.sub(r"(?<=\d)\s*%", "/100", s)


def unwrap_latex_text(text: str) -> str:
    """``text`` with each ``\\text{...}`` (``\\mathrm``, ``\\textbf``, ``\\mbox``) replaced by its
    stripped content ("\\text{ hours }" -> "hours")."""
    return _LATEX_TEXT.sub(lambda t: t.group(1).strip(), text)
