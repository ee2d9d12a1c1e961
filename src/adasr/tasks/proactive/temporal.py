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
(minutes between consecutive events, drawn from 1..max_gap, default 30), ``notes`` (default
``False``: silent turns; ``True``: notes that keep the state the question needs,
:func:`state_notes`). The knobs every generated family takes (``templates``, distractors,
``continuation``): :mod:`adasr.tasks.proactive.build`.

Phrasings (4 or 8 per tuple, every 4th held out:
:func:`~adasr.tasks.proactive.base.template_subset`): :data:`PREMISES` (the log's order),
:data:`QUESTIONS` (per kind; ``{a}``, ``{b}``: the events), :data:`EVENT_LINES` (``{time}`` as
``HH:MM``, ``{event}``); training-only premises and questions: :data:`PREMISES_WIDE`,
:data:`QUESTIONS_WIDE` (template set ``wide``).
"""

from __future__ import annotations

import random

from adasr.errors import ConfigError
from adasr.tasks.families import bool_knob, int_knob, range_knob
from adasr.tasks.proactive.base import (GeneratedFamily, Rejected, add_training_phrasings, is_distractor, pick, solver_res,
                                        template_re, training_phrasings)

__all__ = ["EVENTS", "KINDS", "PREMISES", "QUESTIONS", "PREMISES_WIDE", "QUESTIONS_WIDE", "EVENT_LINES", "config",
           "generate", "solve", "state_notes", "mistake", "FAMILY"]

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
    True: ("The log lists events in time order; ", "These events are listed in the order they happened; ",
           "The entries below come in time order; ", "Events are reported as they happen; "),
    False: ("The log lists events out of time order; ", "These events are listed in no particular order; ",
            "The entries below are shuffled in time; ", "Events are reported out of order; "),
}
"""The question's opening, by whether the log is in time order; the question follows it, and
the chunk's first letter is capitalized."""

QUESTIONS: dict[str, tuple[str, ...]] = {
    "before": ("tell me whether {a} before {b}.", "tell me yes or no: {a} earlier than {b}.",
               "tell me if {a} sooner than {b}.", "say yes if {a} before {b}, otherwise say no."),
    "after": ("tell me what happened right after {a}.", "tell me the next thing that happened after {a}.",
              "tell me which event came directly after {a}.", "say which event came next after {a}."),
    "interval": ("tell me how many minutes passed from when {a} to when {b}.",
                 "tell me the number of minutes between when {a} and when {b}.",
                 "tell me how long, in minutes, it was from when {a} until {b}.",
                 "count the minutes that elapsed after {a} until {b}."),
}
"""The question of each kind (``{a}``, ``{b}``: events)."""

PREMISES_WIDE: dict[bool, tuple[str, ...]] = {
    True: add_training_phrasings(PREMISES[True], (
        "The events below are in the order of time; ", "The following events are given in chronological order; ",
        "What follows is a timeline, earliest first; ", "The updates arrive in the order things occurred; "), "wide"),
    False: add_training_phrasings(PREMISES[False], (
        "The following events are not in chronological order; ", "The lines below are mixed up in time; ",
        "What follows is a timeline in random order; "), "wide"),
}
QUESTIONS_WIDE: dict[str, tuple[str, ...]] = {
    "before": add_training_phrasings(QUESTIONS["before"], (
        "answer yes or no to whether {a} before {b}.", "yes or no: {a} ahead of {b}.",
        "I want to know whether {a} prior to {b}; answer yes or no.",
        "answer yes if {a} first and no if {b} first."), "wide"),
    "after": add_training_phrasings(QUESTIONS["after"], (
        "name the event that followed {a}.", "give me the event that happened just after {a}.",
        "tell me what occurred straight after {a}.", "I need the event that comes right after {a} in time."), "wide"),
    "interval": add_training_phrasings(QUESTIONS["interval"], (
        "give me the minutes from the moment {a} to the moment {b}.",
        "work out the time in minutes from when {a} until when {b}.",
        "give me the gap in minutes between when {a} and when {b}.",
        "tell me the minutes it took from when {a} until when {b}.",
        "measure the minutes from when {a} to when {b}."), "wide"),
}
"""Training-only premises and questions (template set ``wide``:
:func:`~adasr.tasks.proactive.base.add_training_phrasings`). Written after RESULTS §35 measured
the ``more`` adapter on held-out templates (temporal: 7% premature, the held-out ``interval``
question timely-correct on 16 of 30); none uses a held-out phrasing's words ("reported", "as
they happen", "say", "count", "elapsed")."""

EVENT_LINES: tuple[str, ...] = (
    "At {time} {event}.", "{Event} at {time}.", "The clock showed {time} when {event}.", "It was {time} when {event}.",
    "At exactly {time}, {event}.", "{time}: {event}.", "When the clock hit {time}, {event}.",
    "Right at {time}, {event}.",
)
"""A log line (``{time}``: ``HH:MM``; ``{Event}``: the event with a capital first letter)."""


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
            "max_gap": int_knob(knobs, "max_gap", 30), "notes": bool_knob(knobs, "notes", False)}


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _line(template: str, minutes: int, event: str) -> str:
    return template.format(time=_hhmm(minutes), event=event, Event=event[0].upper() + event[1:])


def generate(rng: random.Random, cfg: dict) -> tuple[list[str], tuple[str, int]]:
    """One item: its chunks (the question, then the log lines) and ``(answer, evidence)``
    (evidence ``-1``, the last chunk, for "right after" out of time order); each sentence's
    phrasing from template set ``cfg["templates"]`` (``first``: nothing drawn)."""
    which = cfg["templates"]
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
    question = pick(rng, QUESTIONS[kind], which)
    if kind == "before":
        i, j = rng.sample(range(n), 2)
        q = question.format(a=names[i], b=names[j])
        answer = "yes" if times[i] < times[j] else "no"
        evidence = min(pos[i], pos[j]) if cfg["ordered"] else max(pos[i], pos[j])
    elif kind == "after":
        i = rng.randrange(n - 1)
        q = question.format(a=names[i])
        answer = names[i + 1]
        evidence = pos[i + 1] if cfg["ordered"] else -1  # out of order: the end of the stream
    else:
        i, j = sorted(rng.sample(range(n), 2))
        q = question.format(a=names[i], b=names[j])
        answer = str(times[j] - times[i])
        evidence = max(pos[i], pos[j])
    chunks = [pick(rng, PREMISES[cfg["ordered"]], which) + q]
    chunks[0] = chunks[0][0].upper() + chunks[0][1:]
    chunks += [_line(pick(rng, EVENT_LINES, which), times[e], names[e]) for e in order]
    return chunks, (answer, evidence)


_QUESTION_RES = {kind: solver_res(qs) for kind, qs in QUESTIONS.items()}
_PREMISES_READ = {flag: premises + training_phrasings(premises) for flag, premises in PREMISES.items()}
_EVENT_LINE_RES = tuple(template_re(t, time=r"\d\d:\d\d", event=".+", Event="[A-Z].*") for t in EVENT_LINES)


def _question(head: str) -> tuple[bool, str, str, str | None]:
    """``(ordered, kind, a, b)`` of the question chunk (``b``: ``None`` for ``after``)."""
    ordered = None
    for flag, premises in _PREMISES_READ.items():
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
            fields = m.groupdict()
            event = fields["event"] if "event" in fields else fields["Event"][0].lower() + fields["Event"][1:]
            return event, int(hh) * 60 + int(mm)
    raise Rejected("unreadable event line")


def _read(chunks: list[str]) -> tuple[bool, str, str, str | None, list[tuple[str, int] | None]]:
    """The question (:func:`_question`) and, per chunk after it, ``(event, minutes)`` of its log
    line or ``None`` (a distractor sentence).

    Raises:
        Rejected: the question or a log line is not understood, the log is out of order (when it
            says it is not) or repeats an event.
    """
    ordered, kind, a, b = _question(chunks[0])
    lines = [None if is_distractor(c) else _event(c) for c in chunks[1:]]  # the whole log is checked first
    events = [x for x in lines if x is not None]
    if len({e for e, _ in events}) < len(events) or (
            ordered and any(t1 >= t2 for (_, t1), (_, t2) in zip(events, events[1:]))):
        raise Rejected("events out of order or repeated")
    return ordered, kind, a, b, lines


def _walk(chunks: list[str]):
    """Read the chunks in order: yield ``(k, line, seen, answer)`` per chunk ``k`` after the
    question, ``line`` its ``(event, minutes)`` or ``None``, ``seen`` event -> minutes of the
    log lines read so far, ``answer`` the answer once chunk ``k`` settles it (the evidence rules
    of the module docstring; then the walk ends), else ``None``.

    Raises:
        Rejected: as :func:`_read`; a tie, no event after the asked one, or an interval that
            ends before it starts.
    """
    ordered, kind, a, b, lines = _read(chunks)
    seen: dict[str, int] = {}  # event -> minutes, of the chunks read so far
    last: str | None = None  # the event of the log line before this one
    for k, line in enumerate(lines, 1):
        answer = None
        if line is not None:
            ev, minutes = line
            seen[ev] = minutes
            if kind == "before" and ordered and ev in (a, b):
                answer = "yes" if ev == a else "no"
            elif kind == "before" and not ordered and a in seen and b in seen:
                if seen[a] == seen[b]:
                    raise Rejected("tie")
                answer = "yes" if seen[a] < seen[b] else "no"
            elif kind == "after" and ordered and last == a:
                answer = ev
            elif kind == "interval" and a in seen and b in seen:
                if seen[b] < seen[a]:
                    raise Rejected("interval end before its start")
                answer = str(seen[b] - seen[a])
            last = ev
        if kind == "after" and not ordered and k == len(lines) and a in seen:  # the end of the stream
            later = [(t, e) for e, t in seen.items() if t > seen[a]]
            if not later:
                raise Rejected("no event after the asked one")
            answer = min(later)[1]
        yield k, line, seen, answer
        if answer is not None:
            return


def solve(chunks: list[str]) -> tuple[str, int]:
    """``(answer, evidence)`` read from the chunks (the evidence rules of the module docstring;
    distractor sentences skipped, but the stream's last chunk, whatever it says, ends the log).

    Raises:
        Rejected: the question or a log line is not understood, the log is out of order (when it
            says it is not) or repeats an event, or the answer is never settled.
    """
    for k, _, _, answer in _walk(chunks):
        if answer is not None:
            return answer, k
    raise Rejected("answer never settled")


def state_notes(chunks: list[str], evidence: int, config: dict | None = None) -> list[str]:
    """Notes of a temporal stream, one per chunk ``0..evidence`` (knob ``notes``): the state the
    question needs, written when it changes, short (a note and its response fit a 32-token
    thought on Qwen's tokenizer); none after the question, a distractor sentence or a log line
    that changes nothing.

    * the time of an asked event when it is reported: "the alarm rang at 09:10.";
    * ``before``, at the evidence: in time order "the alarm rang at 09:10, first." (the first
      of the two reported happened first); out of order the comparison of the asked events'
      times, A's first: "09:10 < 09:25? yes.";
    * ``after`` in time order: "next: the door opened." at the evidence; out of order, once the
      asked event is reported, the earliest event after it so far ("the alarm rang at 09:10.
      next so far: the door opened at 09:25."), written again when a log line beats it;
    * ``interval``, at the evidence: "09:25 - 09:10 = 15 minutes."

    The response turn starts with the evidence chunk's note.

    ``config`` (the family's generator config) shapes no note of this family.

    Raises:
        Rejected: as :func:`solve`.
    """
    ordered, kind, a, b, _ = _read(chunks)
    notes = [""]
    best: tuple[int, str] | None = None  # after, out of order: the earliest event after a so far
    for k, line, seen, answer in _walk(chunks):
        if k > evidence:
            break
        note = ""
        if kind == "after" and not ordered:
            parts = [f"{a} at {_hhmm(line[1])}."] if line is not None and line[0] == a else []
            later = min(((t, e) for e, t in seen.items() if t > seen[a]), default=None) if a in seen else None
            if later is not None and later != best:
                best = later
                parts.append(f"next so far: {later[1]} at {_hhmm(later[0])}.")
            note = " ".join(parts)
        elif line is not None:
            if kind == "after" and answer is not None:
                note = f"next: {answer}."
            elif kind == "before" and answer is not None:
                note = f"{line[0]} at {_hhmm(line[1])}, first." if ordered else \
                    f"{_hhmm(seen[a])} < {_hhmm(seen[b])}? {answer}."
            elif answer is not None:
                note = f"{_hhmm(seen[b])} - {_hhmm(seen[a])} = {answer} minutes."
            elif line[0] in (a, b):
                note = f"{line[0]} at {_hhmm(line[1])}."
        notes.append(note)
    return notes


def mistake(rng: random.Random, chunks: list[str], answer: str) -> str:
    """A plausible wrong answer (``GeneratedFamily.mistake``): ``before``: the other of yes/no;
    ``after``: another event of the log; ``interval``: off by 1, 5, 10 or 15 minutes (never
    below 1).

    Raises:
        Rejected: as :func:`solve`.
    """
    _, kind, _, _, lines = _read(chunks)
    if kind == "before":
        return "no" if answer == "yes" else "yes"
    if kind == "after":
        return rng.choice(sorted(line[0] for line in lines if line is not None and line[0] != answer))
    right = int(answer)
    return str(rng.choice([w for d in (1, 5, 10, 15) for w in (right - d, right + d) if w >= 1]))


FAMILY = GeneratedFamily("proactive_temporal",
                         ("events", "min_events", "max_events", "ordered", "kinds", "max_gap", "notes"),
                         config, generate, solve, state_notes, mistake)
