"""``proactive_temporal`` (temporal reasoning over timestamped events).

"The log lists events in time order; tell me whether the alarm rang before the door opened." then
"At 09:10 the door opened." ... (times strictly increase with the event's real order; with
``ordered=False`` the chunks are shuffled and the question says "out of time order"). Kinds and
**evidence** (``t(X)``: the chunk reporting X):

* ``before`` ("whether A before B", answer ``yes``/``no``): in time order, ``min(t(A), t(B))``:
  the question presupposes that both events happen (they always do), so in a time-ordered log
  the first of the two to be reported happened first. Out of order, ``max(t(A), t(B))``: both
  times are needed.
* ``after`` ("what happened right after A", answer the event, e.g. ``the alarm rang``): in time
  order, the chunk right after ``t(A)``; out of order, the last chunk (until the log ends, an
  unseen event could fall between).
* ``interval`` ("how many minutes passed from when A to when B", A before B): ``max(t(A), t(B))``.

Knobs: ``events`` (or ``min_events``/``max_events``, default 4-7), ``ordered`` (default
``True``), ``kinds`` (a list or a comma-separated string, default all three), ``max_gap``
(minutes between consecutive events, drawn from 1..max_gap, default 30).

Phrasings: :data:`PREMISES` (the log's order), :data:`QUESTIONS` (per kind; ``{a}``, ``{b}``: the
events), :data:`EVENT_LINES` (``{time}`` as ``HH:MM``, ``{event}``).
"""

from __future__ import annotations

import random

from adasr.errors import ConfigError
from adasr.tasks.families import bool_knob, int_knob, range_knob
from adasr.tasks.proactive.base import GeneratedFamily, Rejected, pick, template_re

__all__ = ["EVENTS", "KINDS", "PREMISES", "QUESTIONS", "EVENT_LINES", "config", "generate", "solve", "FAMILY"]

EVENTS = (
    "the door opened", "the alarm rang", "the lights turned on", "the kettle boiled", "the phone rang",
    "the dog barked", "the mail arrived", "the printer jammed", "the train departed", "the meeting started",
    "the power went out", "the window closed", "the oven beeped", "the bus arrived", "the fan stopped",
    "the gate locked", "the radio turned off", "the backup finished", "the truck left", "the drill began",
)
"""The events a log reports (lower case, past tense)."""

KINDS = ("before", "after", "interval")
"""Question kinds (knob ``kinds``)."""

PREMISES: dict[bool, tuple[str, ...]] = {
    True: ("The log lists events in time order; ",),
    False: ("The log lists events out of time order; ",),
}
"""The question's opening, by whether the log is in time order; the question follows it, and
the chunk's first letter is capitalized."""

QUESTIONS: dict[str, tuple[str, ...]] = {
    "before": ("tell me whether {a} before {b}.",),
    "after": ("tell me what happened right after {a}.",),
    "interval": ("tell me how many minutes passed from when {a} to when {b}.",),
}
"""The question of each kind (``{a}``, ``{b}``: events)."""

EVENT_LINES: tuple[str, ...] = ("At {time} {event}.",)
"""A log line (``{time}``: ``HH:MM``)."""


def config(knobs: dict) -> dict:
    """The generator config of the family's knobs (module docstring). Raises ConfigError."""
    kinds = knobs.get("kinds", KINDS)
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    if not isinstance(kinds, (list, tuple)) or not kinds or any(k not in KINDS for k in kinds):
        raise ConfigError(f"kinds must be a non-empty subset of {', '.join(KINDS)}, got {knobs.get('kinds')!r}")
    events = range_knob(knobs, "events", (4, 7))
    if events[0] < 2:
        raise ConfigError("temporal items need at least 2 events")
    if events[1] > len(EVENTS):
        raise ConfigError(f"at most {len(EVENTS)} events")
    return {"events": events, "ordered": bool_knob(knobs, "ordered", True), "kinds": tuple(dict.fromkeys(kinds)),
            "max_gap": int_knob(knobs, "max_gap", 30)}


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def generate(rng: random.Random, cfg: dict) -> tuple[list[str], tuple[str, int]]:
    """One item: its chunks (the question, then the log lines) and ``(answer, evidence)``."""
    n = rng.randint(*cfg["events"])
    names = rng.sample(EVENTS, n)  # in time order
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
    question = pick(rng, QUESTIONS[kind])
    last = n  # chunk index of the last fact
    if kind == "before":
        i, j = rng.sample(range(n), 2)
        q = question.format(a=names[i], b=names[j])
        answer = "yes" if times[i] < times[j] else "no"
        evidence = min(pos[i], pos[j]) if cfg["ordered"] else max(pos[i], pos[j])
    elif kind == "after":
        i = rng.randrange(n - 1)
        q = question.format(a=names[i])
        answer = names[i + 1]
        evidence = pos[i + 1] if cfg["ordered"] else last
    else:
        i, j = sorted(rng.sample(range(n), 2))
        q = question.format(a=names[i], b=names[j])
        answer = str(times[j] - times[i])
        evidence = max(pos[i], pos[j])
    chunks = [pick(rng, PREMISES[cfg["ordered"]]) + q]
    chunks[0] = chunks[0][0].upper() + chunks[0][1:]
    chunks += [pick(rng, EVENT_LINES).format(time=_hhmm(times[e]), event=names[e]) for e in order]
    return chunks, (answer, evidence)


_QUESTION_RES = {kind: tuple(template_re(q) for q in qs) for kind, qs in QUESTIONS.items()}
_EVENT_LINE_RES = tuple(template_re(t, time=r"\d\d:\d\d", event=".+") for t in EVENT_LINES)


def _question(head: str) -> tuple[bool, str, str, str | None]:
    """``(ordered, kind, a, b)`` of the question chunk (``b``: ``None`` for ``after``)."""
    ordered = None
    for flag, premises in PREMISES.items():
        for premise in premises:
            if head.lower().startswith(premise.lower()):
                ordered, rest = flag, head[len(premise):]
    if ordered is None:
        raise Rejected("question not understood")
    for kind, rxs in _QUESTION_RES.items():
        for rx in rxs:
            m = rx.match(rest)
            if m:
                return ordered, kind, m.group("a"), m.groupdict().get("b")
    raise Rejected("question not understood")


def _event(line: str) -> tuple[str, int]:
    """``(event, minutes)`` of a log line."""
    for rx in _EVENT_LINE_RES:
        m = rx.match(line)
        if m:
            hh, mm = m.group("time").split(":")
            return m.group("event"), int(hh) * 60 + int(mm)
    raise Rejected("unreadable event line")


def solve(chunks: list[str]) -> tuple[str, int]:
    """``(answer, evidence)`` read from the chunks (the evidence rules of the module docstring).

    Raises:
        Rejected: the question or a log line is not understood, the log is out of order (when it
            says it is not) or repeats an event, or the answer is never settled.
    """
    ordered, kind, a, b = _question(chunks[0])
    events = [_event(c) for c in chunks[1:]]  # (event, minutes), in chunk order; the whole log is checked first
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


FAMILY = GeneratedFamily("proactive_temporal", ("events", "min_events", "max_events", "ordered", "kinds", "max_gap"),
                         config, generate, solve)
