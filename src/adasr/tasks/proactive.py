"""Proactive streaming benchmark (after StreamPro-Bench), built without a teacher model.

In *proactive* streaming the model decides **when** to answer: after each chunk it stays silent
(an empty streaming thought), or it commits ``\\boxed{answer}`` and the episode ends there. Every
item tells when that is right: ``evidence_chunk``, the 0-based index of the earliest chunk after
which the answer is determined by the chunks so far (our definitions per family, below).

Record (the shared streaming-episode schema of :mod:`adasr.tasks.streamify`, plus two fields)::

    id, task, question (the chunks joined by spaces), chunks (N), thoughts, deep, answer,
    evidence_chunk (int, 0 <= e < N), response ("\\boxed{<answer>}")

* ``thoughts`` = ``[""] * e + [response]`` (``e + 1`` entries, at most N): silent after every
  chunk before the evidence, the response right after it. The **proactive layout** of an SFT
  example is chunks ``0..e`` with those turns ("silent, ..., silent, respond") and nothing after
  (no end-of-input turn, no deep stage); :func:`proactive_turns` gives its ``(chunk, thought)``
  pairs. The chunks after ``e`` are part of the item (a benchmark streams them all, and a model
  that waits past the evidence is late).
* ``deep`` = ``""``: the proactive layout has no deep stage. A read-then-answer baseline
  renders all chunks, the end-of-input turn, then ``response`` as the deep stage. Rendering the
  record as a plain ``streaming`` episode (``adasr.train.sft.row_episode``) raises (no turn
  after chunk ``e + 1``), on purpose.

Families (``task`` names) and their definitions
-----------------------------------------------
The question always comes first (chunk 0); every chunk is one sentence.

``proactive_perception`` (perception: one stated fact)
    "Tell me the temperature reported by sensor Bravo." then fact lines: "Sensor Alpha reports 21
    degrees.", "Sensor Bravo reports 55 percent humidity." (a *near miss*: the target entity,
    another attribute), "Sensor Bravo reports 23 degrees." ... Scenes: ``sensors`` (temperature, humidity),
    ``people`` (the city where a person lives / works), ``prices`` (price, weight of an item).
    Every other entity is mentioned once. Answer: the stated value. **Evidence**: the chunk that
    states the asked attribute of the asked entity. Knobs: ``facts`` (fact chunks; or
    ``min_facts``/``max_facts``, default 4-8), ``position`` of the evidence among the facts
    (``uniform``, default; ``early``/``middle``/``late``: that third; ``last``), ``near_miss``
    (default ``True``), ``scene`` (``mixed``, default, or one scene).
``proactive_temporal`` (temporal reasoning over timestamped events)
    "The log lists events in time order; tell me whether the alarm rang before the door
    opened." then "At 09:10 the door opened." ... (times strictly increase with the event's real
    order; with ``ordered=False`` the chunks are shuffled and the question says "out of time
    order"). Kinds and **evidence** (``t(X)``: the chunk reporting X):

    * ``before`` ("whether A before B", answer ``yes``/``no``): in time order, ``min(t(A),
      t(B))``: the question presupposes that both events happen (they always do), so in a
      time-ordered log the first of the two to be reported happened first. Out of order,
      ``max(t(A), t(B))``: both times are needed.
    * ``after`` ("what happened right after A", answer the event, e.g. ``the alarm rang``): in
      time order, the chunk right after ``t(A)``; out of order, the last chunk (until the log
      ends, an unseen event could fall between).
    * ``interval`` ("how many minutes passed from when A to when B", A before B): ``max(t(A),
      t(B))``.

    Knobs: ``events`` (or ``min_events``/``max_events``, default 4-7), ``ordered`` (default
    ``True``), ``kinds`` (a list or a comma-separated string, default all three), ``max_gap``
    (minutes between consecutive events, drawn from 1..max_gap, default 30).
``proactive_threshold`` (proactive agency: act as soon as a condition holds)
    ``total``: "The total starts at 0; tell me the running total as soon as it exceeds 20." then
    "Add 7.", "Subtract 3.", ...; answer the running total right after it first
    exceeds the threshold (strictly greater). ``first``: "Tell me the first number that is
    divisible by 7." then "Next number: 12.", ...; conditions "divisible by k", "greater than T",
    "an even number greater than T", "a number ending in d"; answer that number. **Evidence**:
    the chunk where the condition first holds. Streams where it never holds are rejected
    (``threshold never crossed``, ``no number satisfies the condition``). Knobs: ``kind``
    (``mixed``, default, ``total``, ``first``), ``steps`` (or ``min_steps``/``max_steps``,
    default 5-9), ``max_term`` (default 15), ``min_threshold``/``max_threshold`` (default
    10-40), ``subtract_prob`` (default 0.25), ``max_number`` (``first``, default 99), ``notes``
    (default ``False``: silent turns; ``True``: each turn before the evidence is a state note,
    the running total's update or the number's check, and the response turn starts with the
    evidence chunk's note: :func:`_threshold_notes`).
``proactive_gsm8k`` (proactive agency on GSM8K, needs ``source``)
    A GSM8K problem reordered: its question sentence (the last sentence) first, then its other
    sentences (facts) in order, then ``distractors`` sentences of unrelated problems of the same
    split (``interleave=True`` mixes them among the facts instead). The answer is GSM8K's final
    answer. **Evidence**: the last fact sentence the reference solution needs: every annotated
    step (``<<expr=result>>``) of the solution is placed by the streamify alignment rules
    (:func:`adasr.tasks.align.align_steps`: earliest chunk after which its operands are
    known, word anchors, monotone; prose lines travel with the next computing step) run on the
    problem's own reordered sentences (distractors never take part), and the evidence is the
    chunk of the last annotated step. A problem is rejected when it has no annotated step, a
    step's operands never become known, an annotation is inconsistent, the final answer is not
    an annotation's result, a prose line computes something without an annotation, the
    solution does not parse, the problem has a single sentence, or its last sentence is not a
    question (it neither ends with "?" nor says "find", "calculate", "how", "what", ...). When
    the evidence comes before the last fact sentence, the problem is also rejected as
    *ambiguous* if a later fact sentence mentions a number that is an operand of the solution
    (:func:`adasr.tasks.text.known_numbers`), completes an implied-unit constant that is
    one, or shares a content word with the solution's text: on GSM8K such sentences are usually
    needed after all ("Then she colors the rest with green."), so only early evidence without
    any such link is kept. Sentences that change the answer with neither a number nor a shared
    word remain a limit of the heuristic. Distractor sentences share no capitalized name with
    the problem. Knobs: ``distractors`` (default 2), ``interleave``
    (default ``False``), ``heldout`` (problems at the end of ``source`` forming the test split,
    default :data:`adasr.tasks.splits.GSM8K_HELDOUT`).

Validation, determinism, splits
-------------------------------
Each procedural item is generated, then re-read by a family *solver* that parses the chunk texts
in order and finds the earliest chunk after which the answer is settled (with the rules above);
its answer and evidence must match the generator's, and items it cannot settle are rejected.
Rejections are counted by reason in :class:`ProactiveReport` (``message()`` says it in one line).

Item ``i`` of a procedural family depends only on ``(task, split, seed, i)`` (a string-seeded
``random.Random``), so a split is a stable sequence: a larger ``size`` extends a smaller build.
``split="test"`` items are the held-out set; ``split="train"`` skips every item whose question
(:func:`adasr.tasks.splits.normalize_question`) is among the first ``heldout_size`` (default
:data:`DEFAULT_HELDOUT_SIZE`) test items of the same seed and knobs, and checks the result with
:func:`adasr.tasks.splits.assert_disjoint`. Duplicate questions within a build are rejected.
For ``proactive_gsm8k`` the test split is the last ``heldout`` problems of ``source`` (the
project's GSM8K held-out set), the train split the others minus any whose question also occurs in
the test split.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from adasr.errors import ConfigError, DataError
from adasr.jsonl import read_jsonl
from adasr.protocol import parse_answer
from adasr.tasks.gsm8k import _to_number, is_correct
from adasr.stream import split_sentences
from adasr.tasks.align import align_steps
from adasr.tasks.solutions import ParseFailure, parse_solution, read_arithmetic
from adasr.tasks.splits import GSM8K_HELDOUT, assert_disjoint, normalize_question
from adasr.tasks.text import (
    NUMBER_WORDS,
    STOPWORDS,
    content_words,
    known_numbers,
    numbers_close,
    parse_number,
    unit_constants,
)

__all__ = [
    "PROACTIVE_TASKS",
    "SPLITS",
    "DEFAULT_HELDOUT_SIZE",
    "ProactiveReport",
    "Rejected",
    "build_proactive",
    "build_proactive_with_report",
    "proactive_turns",
    "make_record",
    "gsm8k_evidence",
    "score",
]

PROACTIVE_TASKS: tuple[str, ...] = (
    "proactive_perception",
    "proactive_temporal",
    "proactive_threshold",
    "proactive_gsm8k",
)
"""Task names of the proactive families."""

SPLITS: tuple[str, ...] = ("train", "test")

DEFAULT_HELDOUT_SIZE = 1000
"""Test items of a procedural family that a train build keeps out (see the module docstring)."""


class Rejected(Exception):
    """An item without a determinable evidence chunk, or otherwise unusable; ``reason`` is the
    short category counted in :class:`ProactiveReport`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class ProactiveReport:
    """What a build did: items ``drawn`` (generated or read), ``built``, and ``rejected`` items
    by reason (reason -> count)."""

    task: str
    split: str
    requested: int | None = None
    drawn: int = 0
    built: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def message(self) -> str:
        """One line: built/requested, drawn, and the rejections by reason."""
        want = f" of {self.requested} requested" if self.requested is not None else ""
        msg = f"{self.task} ({self.split}): built {self.built}{want} from {self.drawn} drawn"
        if self.rejected:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0])))
            msg += f"; rejected {self.n_rejected} ({reasons})"
        return msg


# --------------------------------------------------------------------------- records


def make_record(task: str, id: str, chunks: list[str], evidence: int, answer: str,
                notes: list[str] | None = None) -> dict:
    """A proactive record (module docstring): silent thoughts up to ``evidence``, then the response.

    With ``notes`` (one string per chunk ``0..evidence``; ``""`` = silent), the turns before the
    evidence are those notes and the response turn is ``notes[evidence]`` followed by the
    response (a note is a streaming thought that carries state, e.g. a running total; it does not
    answer). Raises ``ValueError`` for an evidence chunk outside the chunks or notes of the wrong
    length.
    """
    if not 0 <= evidence < len(chunks):
        raise ValueError(f"evidence chunk {evidence} outside 0..{len(chunks) - 1}")
    if notes is not None and len(notes) != evidence + 1:
        raise ValueError(f"{len(notes)} notes for {evidence + 1} turns")
    response = f"\\boxed{{{answer}}}"
    notes = notes or [""] * (evidence + 1)
    return {
        "id": id,
        "task": task,
        "question": " ".join(chunks),
        "chunks": list(chunks),
        "thoughts": list(notes[:evidence]) + [f"{notes[evidence]} {response}".strip()],
        "deep": "",
        "answer": answer,
        "evidence_chunk": evidence,
        "response": response,
    }


def proactive_turns(record: dict) -> list[tuple[str, str]]:
    """The proactive layout of a record: ``(chunk, thought)`` for chunks ``0..evidence_chunk``;
    every thought is ``""`` (silent) or a note but the last, which holds the response."""
    e = record["evidence_chunk"]
    return [(record["chunks"][k], record["thoughts"][k]) for k in range(e + 1)]


# --------------------------------------------------------------------------- knob helpers


def _int(knobs: dict, key: str, default: int, lo: int = 1) -> int:
    v = knobs.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{key} must be an integer >= {lo}, got {v!r}")
    return v


def _bool(knobs: dict, key: str, default: bool) -> bool:
    v = knobs.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}")
    return v


def _choice(knobs: dict, key: str, default: str, valid: tuple[str, ...]) -> str:
    v = knobs.get(key, default)
    if v not in valid:
        raise ConfigError(f"{key} must be one of {', '.join(valid)}, got {v!r}")
    return v


def _range(knobs: dict, exact: str, default: tuple[int, int], lo: int = 1) -> tuple[int, int]:
    """``exact`` (both bounds) or ``min_<exact>``/``max_<exact>``."""
    mn, mx = f"min_{exact}", f"max_{exact}"
    if knobs.get(exact) is not None:
        if mn in knobs or mx in knobs:
            raise ConfigError(f"give either {exact!r} or {mn!r}/{mx!r}, not both")
        v = _int(knobs, exact, default[0], lo)
        return v, v
    a = _int(knobs, mn, default[0], lo)
    b = _int(knobs, mx, default[1], lo)
    if a > b:
        if mn not in knobs:
            a = b
        elif mx not in knobs:
            b = a
        else:
            raise ConfigError(f"{mn} ({a}) must not exceed {mx} ({b})")
    return a, b


def _third(n: int, which: str, rng: random.Random) -> int:
    """A 0-based index in ``range(n)``: uniform, or in the early/middle/late third, or last."""
    if which == "uniform":
        return rng.randrange(n)
    if which == "last":
        return n - 1
    k = {"early": 0, "middle": 1, "late": 2}[which]
    lo, hi = math.floor(k * n / 3), max(math.floor(k * n / 3) + 1, math.floor((k + 1) * n / 3))
    return rng.randrange(lo, min(hi, n))


def _template_re(template: str) -> re.Pattern:
    """A regex for a fact template with ``{e}`` and ``{v}`` fields (named groups)."""
    parts = re.split(r"(\{[ev]\})", template)
    rx = "".join(
        "(?P<e>.+?)" if p == "{e}" else "(?P<v>.+?)" if p == "{v}" else re.escape(p) for p in parts
    )
    return re.compile(f"^{rx}$")


# --------------------------------------------------------------------------- perception


@dataclass(frozen=True)
class _Attr:
    question: str  # "Tell me the temperature reported by sensor {e}."
    fact: str  # "Sensor {e} reports {v} degrees."
    values: Callable[[random.Random], str]


_NAMES = (
    "Maria Omar Priya Lucas Hana Diego Amara Felix Ingrid Kenji Leila Marco Nadia Oscar Rosa "
    "Samir Tara Victor Wen Yusuf Zoe Anton Bianca Carlos Dalia Emil Freya Goran Ines Jonas"
).split()
_CITIES = (
    "Oslo Lima Cairo Quito Perth Dakar Lyon Porto Riga Seoul Tunis Hanoi Kyoto Accra Bergen "
    "Cork Delft Gdansk Malaga Nairobi"
).split()
_ITEMS = (
    "lamp kettle chair backpack blender mirror toaster helmet umbrella clock teapot rug "
    "bicycle guitar drill printer"
).split()

_SCENES: dict[str, tuple[tuple[str, ...], dict[str, _Attr]]] = {
    "sensors": (
        # words, not letters: "sensor B." would read as an initial, not a sentence end
        tuple("Alpha Bravo Charlie Delta Echo Foxtrot Golf Hotel India Juliet Kilo Mike Papa Romeo Sierra "
              "Tango".split()),
        {
            "temperature": _Attr("Tell me the temperature reported by sensor {e}.", "Sensor {e} reports {v} degrees.",
                                 lambda r: str(r.randint(10, 35))),
            "humidity": _Attr("Tell me the humidity reported by sensor {e}.", "Sensor {e} reports {v} percent humidity.",
                              lambda r: str(r.randint(20, 90))),
        },
    ),
    "people": (
        tuple(_NAMES),
        {
            "home": _Attr("Tell me the city where {e} lives.", "{e} lives in {v}.", lambda r: r.choice(_CITIES)),
            "work": _Attr("Tell me the city where {e} works.", "{e} works in {v}.", lambda r: r.choice(_CITIES)),
        },
    ),
    "prices": (
        tuple(_ITEMS),
        {
            "price": _Attr("Tell me the price of the {e} in dollars.", "The {e} costs {v} dollars.",
                           lambda r: str(r.randint(5, 120))),
            "weight": _Attr("Tell me the weight of the {e} in kilograms.", "The {e} weighs {v} kilograms.",
                            lambda r: str(r.randint(1, 30))),
        },
    ),
}
_POSITIONS = ("uniform", "early", "middle", "late", "last")


def _perception_config(knobs: dict) -> dict:
    return {
        "facts": _range(knobs, "facts", (4, 8)),
        "position": _choice(knobs, "position", "uniform", _POSITIONS),
        "near_miss": _bool(knobs, "near_miss", True),
        "scene": _choice(knobs, "scene", "mixed", ("mixed", *_SCENES)),
    }


def _perception_generate(rng: random.Random, cfg: dict) -> tuple[list[str], tuple[str, int]]:
    scene = rng.choice(sorted(_SCENES)) if cfg["scene"] == "mixed" else cfg["scene"]
    entities, attrs = _SCENES[scene]
    n_facts = rng.randint(*cfg["facts"])
    asked = rng.choice(sorted(attrs))
    others_attr = [a for a in sorted(attrs) if a != asked]
    ev_slot = _third(n_facts, cfg["position"], rng)
    near = cfg["near_miss"] and n_facts >= 2
    n_distract = n_facts - 1 - int(near)
    if n_distract + 1 > len(entities):
        raise ConfigError(f"at most {len(entities)} facts fit scene {scene!r}")
    target, *others = rng.sample(entities, n_distract + 1)
    answer = attrs[asked].values(rng)
    slots: list[str | None] = [None] * n_facts
    slots[ev_slot] = attrs[asked].fact.format(e=target, v=answer)
    free = [i for i in range(n_facts) if i != ev_slot]
    rng.shuffle(free)
    if near:
        a = attrs[rng.choice(others_attr)]
        v = a.values(rng)
        while v == answer:  # a near miss never carries the answer by chance
            v = a.values(rng)
        slots[free.pop()] = a.fact.format(e=target, v=v)
    for ent, i in zip(others, free):
        a = attrs[rng.choice(sorted(attrs))]
        slots[i] = a.fact.format(e=ent, v=a.values(rng))
    chunks = [attrs[asked].question.format(e=target), *slots]
    return chunks, (answer, ev_slot + 1)


@lru_cache(maxsize=None)
def _perception_patterns() -> list[tuple[re.Pattern, re.Pattern, str]]:
    return [(_template_re(a.question), _template_re(a.fact), f"{s}/{name}")
            for s, (_, attrs) in _SCENES.items() for name, a in attrs.items()]


def _perception_solve(chunks: list[str]) -> tuple[str, int]:
    for q_rx, fact_rx, _ in _perception_patterns():
        m = q_rx.match(chunks[0])
        if not m:
            continue
        target = m.group("e")
        for k in range(1, len(chunks)):
            f = fact_rx.match(chunks[k])
            if f and f.group("e") == target:
                return f.group("v"), k
        raise Rejected("fact never stated")
    raise Rejected("question not understood")


# --------------------------------------------------------------------------- temporal

_EVENTS = (
    "the door opened", "the alarm rang", "the lights turned on", "the kettle boiled", "the phone rang",
    "the dog barked", "the mail arrived", "the printer jammed", "the train departed", "the meeting started",
    "the power went out", "the window closed", "the oven beeped", "the bus arrived", "the fan stopped",
    "the gate locked", "the radio turned off", "the backup finished", "the truck left", "the drill began",
)
_KINDS = ("before", "after", "interval")
_ORDER_PREMISE = {True: "The log lists events in time order; ", False: "The log lists events out of time order; "}
_TEMPORAL_Q = {
    "before": "tell me whether {a} before {b}.",
    "after": "tell me what happened right after {a}.",
    "interval": "tell me how many minutes passed from when {a} to when {b}.",
}
_EVENT_LINE = re.compile(r"^At (\d\d):(\d\d) (.+)\.$")


def _temporal_config(knobs: dict) -> dict:
    kinds = knobs.get("kinds", _KINDS)
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    if not isinstance(kinds, (list, tuple)) or not kinds or any(k not in _KINDS for k in kinds):
        raise ConfigError(f"kinds must be a non-empty subset of {', '.join(_KINDS)}, got {knobs.get('kinds')!r}")
    events = _range(knobs, "events", (4, 7))
    if events[0] < 2:
        raise ConfigError("temporal items need at least 2 events")
    if events[1] > len(_EVENTS):
        raise ConfigError(f"at most {len(_EVENTS)} events")
    return {"events": events, "ordered": _bool(knobs, "ordered", True), "kinds": tuple(dict.fromkeys(kinds)),
            "max_gap": _int(knobs, "max_gap", 30)}


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _temporal_generate(rng: random.Random, cfg: dict) -> tuple[list[str], tuple[str, int]]:
    n = rng.randint(*cfg["events"])
    names = rng.sample(_EVENTS, n)  # in time order
    t = rng.randint(6 * 60, 17 * 60)
    times = []
    for _ in range(n):
        times.append(t)
        t += rng.randint(1, cfg["max_gap"])
    order = list(range(n))  # order[p] = event reported at fact position p
    if not cfg["ordered"]:
        rng.shuffle(order)
    pos = {ev: p + 1 for p, ev in enumerate(order)}  # chunk index of event i
    kind = rng.choice(cfg["kinds"])
    last = n  # chunk index of the last fact
    if kind == "before":
        i, j = rng.sample(range(n), 2)
        q = _TEMPORAL_Q[kind].format(a=names[i], b=names[j])
        answer = "yes" if times[i] < times[j] else "no"
        evidence = min(pos[i], pos[j]) if cfg["ordered"] else max(pos[i], pos[j])
    elif kind == "after":
        i = rng.randrange(n - 1)
        q = _TEMPORAL_Q[kind].format(a=names[i])
        answer = names[i + 1]
        evidence = pos[i + 1] if cfg["ordered"] else last
    else:
        i, j = sorted(rng.sample(range(n), 2))
        q = _TEMPORAL_Q[kind].format(a=names[i], b=names[j])
        answer = str(times[j] - times[i])
        evidence = max(pos[i], pos[j])
    chunks = [_ORDER_PREMISE[cfg["ordered"]] + q]
    chunks[0] = chunks[0][0].upper() + chunks[0][1:]
    chunks += [f"At {_hhmm(times[e])} {names[e]}." for e in order]
    return chunks, (answer, evidence)


_TEMPORAL_Q_RE = {k: _template_re(v.replace("{a}", "{e}").replace("{b}", "{v}")) for k, v in _TEMPORAL_Q.items()}


def _temporal_solve(chunks: list[str]) -> tuple[str, int]:
    head = chunks[0]
    ordered = None
    for flag, premise in _ORDER_PREMISE.items():
        if head.lower().startswith(premise.lower()):
            ordered, rest = flag, head[len(premise):]
    if ordered is None:
        raise Rejected("question not understood")
    for kind, rx in _TEMPORAL_Q_RE.items():
        m = rx.match(rest)
        if m:
            a, b = m.group("e"), (m.groupdict().get("v"))
            break
    else:
        raise Rejected("question not understood")
    events: list[tuple[str, int]] = []  # (event, minutes), in chunk order; the whole log is checked first
    for c in chunks[1:]:
        m = _EVENT_LINE.match(c)
        if not m:
            raise Rejected("unreadable event line")
        events.append((m.group(3), int(m.group(1)) * 60 + int(m.group(2))))
    if len({e for e, _ in events}) < len(events) or (
            ordered and any(t1 >= t2 for (_, t1), (_, t2) in zip(events, events[1:]))):
        raise Rejected("events out of order or repeated")
    seen: dict[str, int] = {}  # event -> minutes, of the chunks read so far
    order: list[str] = []
    for k, (ev, minutes) in enumerate(events, 1):
        seen[ev] = minutes
        order.append(ev)
        end = k == len(chunks) - 1
        if kind == "before":
            if ordered and ev in (a, b):
                return ("yes" if ev == a else "no"), k
            if not ordered and a in seen and b in seen:
                if seen[a] == seen[b]:
                    raise Rejected("tie")
                return ("yes" if seen[a] < seen[b] else "no"), k
        elif kind == "after":
            if ordered and len(order) >= 2 and order[-2] == a:
                return ev, k
            if not ordered and end and a in seen:
                later = [(t, e) for e, t in seen.items() if t > seen[a]]
                if not later:
                    raise Rejected("no event after the asked one")
                return min(later)[1], k
        elif a in seen and b in seen:
            if seen[b] < seen[a]:
                raise Rejected("interval end before its start")
            return str(seen[b] - seen[a]), k
    raise Rejected("answer never settled")


# --------------------------------------------------------------------------- threshold


def _threshold_config(knobs: dict) -> dict:
    p = knobs.get("subtract_prob", 0.25)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ConfigError(f"subtract_prob must be a number in [0, 1), got {p!r}")
    lo = _int(knobs, "min_threshold", 10)
    hi = _int(knobs, "max_threshold", max(40, lo))
    if lo > hi:
        raise ConfigError(f"min_threshold ({lo}) must not exceed max_threshold ({hi})")
    return {
        "kind": _choice(knobs, "kind", "mixed", ("mixed", "total", "first")),
        "steps": _range(knobs, "steps", (5, 9)),
        "max_term": _int(knobs, "max_term", 15),
        "threshold": (lo, hi),
        "subtract_prob": float(p),
        "max_number": _int(knobs, "max_number", 99, lo=10),
        "notes": _bool(knobs, "notes", False),
    }


_TOTAL_Q = re.compile(r"^The total starts at 0; tell me the running total as soon as it exceeds (\d+)\.$")
_FIRST_Q = re.compile(r"^Tell me the first number that is (.+)\.$")
_STEP = re.compile(r"^(Add|Subtract) (\d+)\.$")
_NUMBER = re.compile(r"^Next number: (\d+)\.$")
# (condition of a "first" question, its test on a number, its check in a state note)
_CONDITIONS: tuple[tuple[re.Pattern, Callable[[re.Match, int], bool], str], ...] = (
    (re.compile(r"^divisible by (\d+)$"), lambda m, x: x % int(m.group(1)) == 0, "divisible by {}"),
    (re.compile(r"^greater than (\d+)$"), lambda m, x: x > int(m.group(1)), "> {}"),
    (re.compile(r"^an even number greater than (\d+)$"), lambda m, x: x % 2 == 0 and x > int(m.group(1)),
     "even and > {}"),
    (re.compile(r"^a number ending in (\d)$"), lambda m, x: x % 10 == int(m.group(1)), "ends in {}"),
)


def _condition(cond: str) -> tuple[Callable[[int], bool], str]:
    """The test of a "first" question's condition and its note form ("> 52"); Rejected if unknown."""
    for rx, test, note in _CONDITIONS:
        c = rx.match(cond)
        if c:
            return (lambda x: test(c, x)), note.format(c.group(1))
    raise Rejected("question not understood")


def _threshold_generate(rng: random.Random, cfg: dict) -> tuple[list[str], None]:
    kind = rng.choice(("total", "first")) if cfg["kind"] == "mixed" else cfg["kind"]
    n = rng.randint(*cfg["steps"])
    if kind == "total":
        chunks = [f"The total starts at 0; tell me the running total as soon as it exceeds {rng.randint(*cfg['threshold'])}."]
        for _ in range(n):
            op = "Subtract" if rng.random() < cfg["subtract_prob"] else "Add"
            chunks.append(f"{op} {rng.randint(1, cfg['max_term'])}.")
        return chunks, None
    top = cfg["max_number"]
    c = rng.randrange(4)
    cond = (f"divisible by {rng.randint(3, 9)}", f"greater than {rng.randint(top // 2, top - 5)}",
            f"an even number greater than {rng.randint(top // 3, top - 10)}", f"a number ending in {rng.randint(0, 9)}")[c]
    chunks = [f"Tell me the first number that is {cond}."]
    chunks += [f"Next number: {rng.randint(1, top)}." for _ in range(n)]
    return chunks, None


def _threshold_solve(chunks: list[str]) -> tuple[str, int]:
    m = _TOTAL_Q.match(chunks[0])
    if m:
        threshold, total = int(m.group(1)), 0
        for k in range(1, len(chunks)):
            s = _STEP.match(chunks[k])
            if not s:
                raise Rejected("unreadable step")
            total += int(s.group(2)) if s.group(1) == "Add" else -int(s.group(2))
            if total > threshold:
                return str(total), k
        raise Rejected("threshold never crossed")
    m = _FIRST_Q.match(chunks[0])
    if m:
        test, _ = _condition(m.group(1))
        for k in range(1, len(chunks)):
            s = _NUMBER.match(chunks[k])
            if not s:
                raise Rejected("unreadable number line")
            if test(int(s.group(1))):
                return s.group(1), k
        raise Rejected("no number satisfies the condition")
    raise Rejected("question not understood")


def _threshold_notes(chunks: list[str], evidence: int) -> list[str]:
    """State notes of a threshold stream, one per chunk ``0..evidence`` (knob ``notes``).

    ``total``: the update of the running total in the chain_sum style ("12 + 7 = 19.",
    "19 - 3 = 16."), none after the question. ``first``: the check of each number ("36 > 52?
    no.", "45 divisible by 5? yes."), none after the question. Whether to respond is then decided
    on a value the model has just written rather than on one it must keep in its head.
    """
    notes = [""]
    m = _TOTAL_Q.match(chunks[0])
    if m:
        total = 0
        for k in range(1, evidence + 1):
            op, term = _STEP.match(chunks[k]).groups()
            new = total + int(term) if op == "Add" else total - int(term)
            notes.append(f"{total} {'+' if op == 'Add' else '-'} {term} = {new}.")
            total = new
        return notes
    test, ask = _condition(_FIRST_Q.match(chunks[0]).group(1))
    for k in range(1, evidence + 1):
        x = int(_NUMBER.match(chunks[k]).group(1))
        notes.append(f"{x} {ask}? {'yes' if test(x) else 'no'}.")
    return notes


# --------------------------------------------------------------------------- procedural building


@dataclass(frozen=True)
class _Family:
    config: Callable[[dict], dict]
    generate: Callable[[random.Random, dict], tuple[list[str], tuple[str, int] | None]]
    solve: Callable[[list[str]], tuple[str, int]]
    knobs: tuple[str, ...]
    notes: Callable[[list[str], int], list[str]] | None = None  # state notes (knob ``notes``)


_COMMON_KNOBS = ("split", "heldout_size")
_FAMILIES: dict[str, _Family] = {
    "proactive_perception": _Family(
        _perception_config, _perception_generate, _perception_solve,
        ("facts", "min_facts", "max_facts", "position", "near_miss", "scene"),
    ),
    "proactive_temporal": _Family(
        _temporal_config, _temporal_generate, _temporal_solve,
        ("events", "min_events", "max_events", "ordered", "kinds", "max_gap"),
    ),
    "proactive_threshold": _Family(
        _threshold_config, _threshold_generate, _threshold_solve,
        ("kind", "steps", "min_steps", "max_steps", "max_term", "min_threshold", "max_threshold",
         "subtract_prob", "max_number", "notes"),
        _threshold_notes,
    ),
}
_GSM8K_KNOBS = ("distractors", "interleave", "heldout")


def _split_knob(knobs: dict) -> str:
    return _choice(knobs, "split", "train", SPLITS)


def _check_knobs(task: str, knobs: dict, valid: tuple[str, ...]) -> None:
    unknown = sorted(set(knobs) - set(valid))
    if unknown:
        raise ConfigError(f"unknown knob(s) {', '.join(unknown)} for task {task!r}: valid knobs are {', '.join(valid)}")


def _freeze(knobs: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in knobs.items()))


@lru_cache(maxsize=16)
def _test_questions(task: str, seed: int, frozen: tuple, n: int) -> frozenset[str]:
    knobs = {k: list(v) if isinstance(v, tuple) else v for k, v in frozen}
    recs, _ = _build_procedural(task, n, seed, "test", knobs, set())
    return frozenset(normalize_question(r["question"]) for r in recs)


def _build_procedural(task: str, size: int, seed: int, split: str, knobs: dict,
                      exclude: set[str] | frozenset[str]) -> tuple[list[dict], ProactiveReport]:
    fam = _FAMILIES[task]
    cfg = fam.config(knobs)
    report = ProactiveReport(task=task, split=split, requested=size)
    out: list[dict] = []
    seen: set[str] = set()
    max_draws = 50 * size + 1000
    i = 0
    while len(out) < size and i < max_draws:
        rng = random.Random(f"{task}|{split}|{seed}|{i}")
        idx, i = i, i + 1
        report.drawn += 1
        try:
            chunks, intended = fam.generate(rng, cfg)
            answer, evidence = fam.solve(chunks)
            if intended is not None and intended != (answer, evidence):
                raise Rejected("generator and solver disagree")
        except Rejected as e:
            report.reject(e.reason)
            continue
        key = normalize_question(" ".join(chunks))
        if key in seen:
            report.reject("duplicate question")
            continue
        if key in exclude:
            report.reject("question in the test split")
            continue
        seen.add(key)
        notes = fam.notes(chunks, evidence) if cfg.get("notes") else None
        out.append(make_record(task, f"{task}-{split}-{seed}-{idx}", chunks, evidence, answer, notes))
    report.built = len(out)
    return out, report


# --------------------------------------------------------------------------- GSM8K

_ASKS = re.compile(r"\b(?:find|calculate|compute|determine|what|how|which|who|give|express)\b", re.I)
_CAP_WORD = re.compile(r"\b[A-Z][a-z]+\b")


def _names(sentences: list[str]) -> set[str]:
    """Capitalized words that are not function words, number words or common sentence starters."""
    return {w for s in sentences for w in _CAP_WORD.findall(s)
            if w.lower() not in STOPWORDS and w.lower() not in NUMBER_WORDS and w.lower() not in _STARTERS}


_STARTERS = frozenset("each every one last next first after before during since today yesterday tomorrow "
                      "once while including".split())


def gsm8k_evidence(question: str, answer: str) -> tuple[list[str], int, str]:
    """Reorder one GSM8K problem (question sentence first) and find its evidence chunk.

    Returns:
        ``(sentences, evidence, final)``: the question sentence followed by the fact sentences,
        the index (into those sentences) of the last one the reference solution needs, and the
        canonical final answer.

    Raises:
        Rejected: with the reason (see the module docstring).
    """
    try:
        steps, final = parse_solution(answer)
    except ParseFailure as e:
        raise Rejected(f"unparseable solution ({e.reason})") from None
    sents = split_sentences(question)
    if len(sents) < 2:
        raise Rejected("single sentence (no fact to wait for)")
    q = sents[-1]
    if not (q.rstrip().endswith("?") or _ASKS.search(q)):
        raise Rejected("last sentence is not a question")
    order = [q, *sents[:-1]]
    # "" after the real sentences: the alignment's last-chunk exceptions (made for the question
    # of a problem in its original order) then apply to no real sentence, and no step is sent to
    # the deep stage for landing on the last fact. Prose lines (no annotation) travel with the
    # next computing step: only the annotated arithmetic decides when the answer is computable.
    align_steps([*order, ""], steps, unannotated="attach")
    computing = [s for s in steps if s.annotated]
    if not computing:
        raise Rejected("no annotated step")
    if any(not s.placed or s.chunk is None for s in computing):
        raise Rejected("operands never known")
    if any(not s.consistent for s in computing):
        raise Rejected("inconsistent annotation")
    fin = parse_number(final)
    if fin is None or all(not numbers_close(r, fin) for s in steps for r in s.results):
        raise Rejected("final answer not derived by an annotation")
    if any(not s.annotated and read_arithmetic(s.text)[1] for s in steps):
        raise Rejected("arithmetic without annotation")
    evidence = max(s.chunk for s in computing)
    if evidence < len(order) - 1:
        # the alignment says the later sentences are not needed: reject the item when that is
        # uncertain (the later sentences could hold an operand or a word the solution uses)
        later = set().union(*(known_numbers(c) for c in order[evidence + 1:]))
        later |= unit_constants(" ".join(order)) - unit_constants(" ".join(order[: evidence + 1]))
        if later & {op for s in computing for op in s.operands}:
            raise Rejected("ambiguous evidence: a later sentence mentions an operand")
        words = set().union(*(content_words(s.text) for s in steps))
        if any(words & content_words(c) for c in order[evidence + 1:]):
            raise Rejected("ambiguous evidence: a later sentence shares words with the solution")
    return order, evidence, final


def _build_gsm8k(size: int | None, seed: int, split: str, source, knobs: dict) -> tuple[list[dict], ProactiveReport]:
    n_distract = _int(knobs, "distractors", 2, lo=0)
    interleave = _bool(knobs, "interleave", False)
    heldout = _int(knobs, "heldout", GSM8K_HELDOUT)
    recs = read_jsonl(source)
    if len(recs) <= heldout:
        raise DataError(f"{source} has {len(recs)} problems: not more than heldout={heldout}, so no train split")
    test_idx = range(len(recs) - heldout, len(recs))
    split_idx = test_idx if split == "test" else range(0, len(recs) - heldout)
    test_q = {normalize_question(recs[i].get("question", "")) for i in test_idx}
    task = "proactive_gsm8k"
    report = ProactiveReport(task=task, split=split, requested=size)
    out: list[dict] = []
    originals: list[str] = []
    seen: set[str] = set()
    sent_cache: dict[int, list[str]] = {}

    def sentences(j: int) -> list[str]:
        if j not in sent_cache:
            q = recs[j].get("question")
            sent_cache[j] = split_sentences(q) if isinstance(q, str) else []
        return sent_cache[j]

    for i in split_idx:
        if size is not None and len(out) >= size:
            break
        rec = recs[i]
        report.drawn += 1
        q, a = rec.get("question"), rec.get("answer")
        if not isinstance(q, str) or not isinstance(a, str) or not q.strip():
            report.reject("not a GSM8K record")
            continue
        key = normalize_question(q)
        if split == "train" and key in test_q:
            report.reject("question in the test split")
            continue
        if key in seen:
            report.reject("duplicate question")
            continue
        try:
            order, evidence, final = gsm8k_evidence(q, a)
        except Rejected as e:
            report.reject(e.reason)
            continue
        rng = random.Random(f"{task}|{split}|{seed}|{i}")
        names = _names(order)
        chosen: list[str] = []
        for _ in range(50 * max(n_distract, 1)):
            if len(chosen) >= n_distract:
                break
            j = rng.choice(split_idx)
            facts = sentences(j)[:-1]
            if j == i or not facts:
                continue
            s = rng.choice(facts)
            if s in chosen or s in order or s.rstrip().endswith("?") or names & _names([s]):
                continue
            chosen.append(s)
        if len(chosen) < n_distract:
            report.reject("no distractor sentence found")
            continue
        if interleave:
            slots = sorted(rng.sample(range(1, len(order) + n_distract), n_distract))
            chunks, facts, dis = [], iter(order), iter(chosen)
            pos = {}
            for k in range(len(order) + n_distract):
                if k in slots:
                    chunks.append(next(dis))
                else:
                    pos[len(pos)] = k
                    chunks.append(next(facts))
            ev_chunk = pos[evidence]
        else:
            chunks, ev_chunk = [*order, *chosen], evidence
        seen.add(key)
        originals.append(q)
        rid = str(rec["id"]) if rec.get("id") is not None else f"{task}-{split}-{seed}-{i}"
        out.append(make_record(task, rid, chunks, ev_chunk, final))
    report.built = len(out)
    if split == "train":
        assert_disjoint(originals, (recs[i].get("question", "") for i in test_idx), f"the {task} train split")
    return out, report


# --------------------------------------------------------------------------- entry points


def build_proactive_with_report(task: str, size: int | None = None, seed: int = 0, *, source=None,
                                **knobs: Any) -> tuple[list[dict], ProactiveReport]:
    """Like :func:`build_proactive`, also returning the :class:`ProactiveReport`."""
    if task not in PROACTIVE_TASKS:
        raise ConfigError(f"unknown proactive task {task!r}: valid tasks are {', '.join(PROACTIVE_TASKS)}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"size must be a positive integer, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    split = _split_knob(knobs)
    if task == "proactive_gsm8k":
        _check_knobs(task, knobs, ("split", *_GSM8K_KNOBS))
        if source is None:
            raise ConfigError("task 'proactive_gsm8k' needs source=<path of a GSM8K JSON-lines file>")
        return _build_gsm8k(size, seed, split, source, {k: v for k, v in knobs.items() if k != "split"})
    fam = _FAMILIES[task]
    _check_knobs(task, knobs, (*_COMMON_KNOBS, *fam.knobs))
    if source is not None:
        raise ConfigError(f"task {task!r} is generated: it takes no source")
    heldout = _int(knobs, "heldout_size", DEFAULT_HELDOUT_SIZE)
    fam_knobs = {k: v for k, v in knobs.items() if k not in _COMMON_KNOBS}
    fam.config(fam_knobs)  # validate before any generation
    n = 1000 if size is None else size
    exclude = frozenset() if split == "test" else _test_questions(task, seed, _freeze(fam_knobs), heldout)
    out, report = _build_procedural(task, n, seed, split, fam_knobs, exclude)
    if split == "train":
        assert_disjoint((r["question"] for r in out), exclude, f"the {task} train split")
    return out, report


def build_proactive(task: str, size: int | None = None, seed: int = 0, *, source=None, **knobs: Any) -> list[dict]:
    """Build proactive records (module docstring).

    Args:
        task: one of :data:`PROACTIVE_TASKS`.
        size: items wanted (procedural default 1000; GSM8K: all problems of the split when
            ``None``); fewer when the source runs out, see the report.
        seed: generator seed; the same arguments give the same records.
        source: GSM8K JSON-lines file (``proactive_gsm8k`` only).
        **knobs: ``split`` (``"train"``, default, or ``"test"``), ``heldout_size`` (procedural)
            and the family's difficulty knobs.

    Raises:
        ConfigError: unknown task or knob, bad size/seed/knob value, GSM8K without source.
        DataError: the source is missing or malformed; a train/test overlap (never expected).
    """
    return build_proactive_with_report(task, size, seed, source=source, **knobs)[0]


# --------------------------------------------------------------------------- scoring

_ARTICLES = re.compile(r"\b(?:the|a|an)\b")


def _norm_text(s: str) -> str:
    s = re.sub(r"[^\w\s:]", " ", s.lower())
    return re.sub(r"\s+", " ", _ARTICLES.sub(" ", s)).strip()


def score(task: str, prediction: str | None, answer: str) -> bool:
    """Whether ``prediction`` (a bare answer or text whose last ``\\boxed{}`` is the answer) is
    correct: numbers compare as numbers (:func:`adasr.tasks.gsm8k.is_correct`), other answers
    (``yes``/``no``, a city, an event) after lower-casing and dropping punctuation and articles
    (``"The alarm rang."`` = ``"alarm rang"``)."""
    if task not in PROACTIVE_TASKS:
        raise ConfigError(f"unknown proactive task {task!r}")
    if prediction is None:
        return False
    pred = parse_answer(prediction) if "\\boxed" in prediction else prediction
    if pred is None or not pred.strip():
        return False
    if task == "proactive_gsm8k" or _to_number(answer) is not None:
        return is_correct(pred, answer)
    return _norm_text(pred) == _norm_text(answer)
