"""What every proactive family shares: the record, the build report, the rejection of an item,
the two kinds of family, phrasing templates, distractor sentences and the continuation of a
record past its answer.

A generated family (:class:`GeneratedFamily`) writes its sentences from **templates**: strings
with ``{name}`` fields, kept as tuples of alternative phrasings next to the family's generator.
The generator writes a sentence with :func:`pick` and the family's solver reads it back with
:func:`template_re` over the whole tuple, so a new phrasing is one more string in the tuple.

**Template sets** (knob ``templates``, :data:`TEMPLATE_SETS`): every tuple is split by position
into *training* phrasings and *held-out* phrasings: the 4th, 8th, ... (index ``i % 4 == 3``,
:func:`template_subset`) are held out, the others are for training; every tuple of the
generated families has at least 4 phrasings, so each holds out at least one. ``first`` (the
default) writes every sentence with the tuple's first phrasing and draws nothing (the items the
families built before they had more than one phrasing, byte for byte); ``train`` draws each
sentence from the training phrasings, ``heldout`` from the held-out ones (a stream no training
phrasing wrote), ``all`` from all. ``first`` is a subset of ``train``: the first phrasing is
never held out. ``more``, ``wide``, ``wider`` and ``widest`` (:data:`TRAINING_ONLY_SETS`) draw from the training
phrasings plus the tuple's **training-only phrasings** (:func:`add_training_phrasings`):
phrasings outside the tuple, so adding them moves no held-out phrasing and changes no
``train``/``heldout`` build. Each training-only phrasing belongs to one of these sets and each set
includes the sets before it (``wide`` = ``more`` plus its own, ``wider`` = ``wide`` plus its own, ...),
so a phrasing added to a set changes no build of the sets before it; a tuple with none is drawn as
in ``train``.

**Distractors** (:data:`DISTRACTORS`, :func:`interleave`): unrelated sentences ("Maria made a
cup of tea.", "There were 12 chairs in the room.") put among the facts (knob
``distractor_prob``: before each fact with that probability) and after them (knob ``tail``:
that many at the end, the shape "question, facts, then unrelated sentences"); drawn from the
same template set, never the evidence, read and skipped by every solver (:func:`is_distractor`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from adasr.protocol import is_response, parse_answer, same_answer
from adasr.tasks.families import Family

__all__ = [
    "Rejected",
    "ProactiveReport",
    "make_record",
    "proactive_turns",
    "continue_record",
    "GeneratedFamily",
    "SourceFamily",
    "TEMPLATE_SETS",
    "TRAINING_ONLY_SETS",
    "HELDOUT_EVERY",
    "NAMES",
    "DISTRACTORS",
    "template_re",
    "template_subset",
    "add_training_phrasings",
    "training_phrasings",
    "solver_res",
    "pick",
    "is_distractor",
    "interleave",
]


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
        """Count one rejected item under ``reason``."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    @property
    def n_rejected(self) -> int:
        """Rejected items, all reasons."""
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
    """A proactive record (:mod:`adasr.tasks.proactive`): silent thoughts up to ``evidence``, then
    the response.

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


def continue_record(record: dict, wrong_turn: str | None = None, at: int | None = None,
                    after: list[str] | None = None) -> dict:
    """``record`` continued past its answer, for training a model that keeps listening after it
    (``--revisions 1``; build knobs ``continuation`` and ``correction_at``). A copy; the chunks,
    answer, evidence and response stay.

    * ``wrong_turn`` ``None``: **silence after a right answer**: one silent turn (``""``) for
      each chunk ``e + 1 .. N - 2`` (the last chunk of a stream has no turn: it closes the
      stream). Nothing is added when ``e >= N - 2``.
    * ``wrong_turn`` (a response turn committing a wrong answer, e.g. ``"14 + 13 = 26.
      \\boxed{26}"``), ``at`` ``None``: **a correction after a wrong answer**: the response turn
      at ``e`` becomes ``wrong_turn`` and the record's own response turn follows at chunk
      ``e + 1``, which ends the episode (one revision).
    * ``wrong_turn`` and ``at`` (a chunk ``1 .. e - 1``): **a premature wrong answer corrected at
      the evidence**: the turn at ``at`` becomes ``wrong_turn``, the record's own turns follow
      (its notes, then its response at ``e``), then silence as for a right answer. The
      correction comes with the evidence, not at a fixed distance after the first answer.

    ``after`` (with ``wrong_turn`` ``None`` or ``at``): the turns of chunks ``e + 1 .. N - 2``
    in place of the silence, e.g. the checks the model keeps writing after its answer (build knob
    ``after_answer``); a response among them may only confirm the record's answer.

    The wrong turn is context, not a target (:func:`adasr.train.sft_data.context_turns`).

    Raises:
        ValueError: ``record`` already continues past its evidence, ``wrong_turn`` is not a
            response or commits the record's answer, chunk ``e + 1`` has no turn
            (``e + 1 > N - 2``, ``at`` ``None``), ``at`` is not a chunk before the evidence, or
            ``after`` is not ``N - 2 - e`` turns committing no other answer (or is given with a
            correction at the next chunk).
    """
    e, n = record["evidence_chunk"], len(record["chunks"])
    thoughts = list(record["thoughts"])
    if len(thoughts) != e + 1:
        raise ValueError(f"record {record.get('id')!r} already has {len(thoughts)} turns for evidence chunk {e}")
    silence = [""] * max(0, n - 2 - e)
    if after is not None:
        if len(after) != len(silence) or any(is_response(t) and not same_answer(parse_answer(t), str(record["answer"]))
                                             for t in after):
            raise ValueError(f"after: {len(silence)} turns committing no other answer for chunks {e + 1} .. {n - 2}, "
                             f"got {after!r}")
        if wrong_turn is not None and at is None:
            raise ValueError("after: a correction at the next chunk ends the episode; no turns follow it")
        silence = list(after)
    if wrong_turn is None:
        return {**record, "thoughts": thoughts + silence}
    committed = "".join((parse_answer(wrong_turn) or "").split())
    if not committed or committed == "".join(str(record["answer"]).split()):
        raise ValueError(f"wrong_turn {wrong_turn!r} does not commit a wrong answer")
    if at is not None:
        if not 1 <= at < e:
            raise ValueError(f"at={at}: a premature answer comes at a chunk 1 .. {e - 1} (evidence {e})")
        thoughts[at] = wrong_turn
        return {**record, "thoughts": thoughts + silence}
    if e + 1 > n - 2:
        raise ValueError(f"no turn after chunk {e + 1} of {n}: the correction has no chunk to follow")
    thoughts = thoughts[:e] + [wrong_turn, thoughts[e]]
    return {**record, "thoughts": thoughts}


# --------------------------------------------------------------------------- families


@dataclass(frozen=True)
class GeneratedFamily(Family):
    """A family whose items are generated from a seed and checked by a solver.

    Attributes:
        config: the family's knobs -> its generator config (validates them; raises ConfigError).
        generate: ``(rng, config) -> (chunks, intended)``: one item's chunks and, when the
            generator knows them, its ``(answer, evidence)`` (``None``: the solver decides).
            Raises :class:`Rejected` for an unusable draw.
        solve: chunks -> ``(answer, evidence)``, read from the chunk texts alone in order (the
            earliest chunk after which the answer is settled). Raises :class:`Rejected`.
        notes: ``(chunks, evidence, config) -> notes`` (state notes, knob ``notes``; ``config``
            is the family's generator config, for knobs that shape the notes), or ``None``.
        mistake: ``(rng, chunks, answer) -> wrong answer``: a plausible wrong answer to the
            item (an arithmetic slip, the near miss's value, the other yes/no), never
            ``answer``; the first answer of a correction episode (knob ``correction_prob``).

    ``generate``'s evidence may be negative, counted from the end of the stream (``-1``: the
    last chunk, whatever sentences the build adds after the facts); the build maps it onto the
    chunks it streams (:func:`interleave`).
    """

    config: Callable[[dict], dict]
    generate: Callable[[random.Random, dict], tuple[list[str], tuple[str, int] | None]]
    solve: Callable[[list[str]], tuple[str, int]]
    notes: Callable[[list[str], int, dict | None], list[str]] | None = None
    mistake: Callable[[random.Random, list[str], str], str] | None = None


@dataclass(frozen=True)
class SourceFamily(Family):
    """A family whose items are read from a source file (``proactive_gsm8k``).

    Attributes:
        source: what ``source`` must be, for the error without one.
        build: ``(size, seed, split, source, knobs) -> (records, report)``; knobs without ``split``.
    """

    source: str
    build: Callable[..., tuple[list[dict], ProactiveReport]]


# --------------------------------------------------------------------------- templates

TRAINING_ONLY_SETS: tuple[str, ...] = ("more", "wide", "wider", "widest")
"""The template sets with training-only phrasings, in order: each includes the ones before it."""

TEMPLATE_SETS: tuple[str, ...] = ("first", "train", "heldout", "all") + TRAINING_ONLY_SETS
"""Values of the knob ``templates`` (module docstring); ``first`` is the default."""

HELDOUT_EVERY = 4
"""Of every ``HELDOUT_EVERY`` phrasings of a tuple, the last is held out (index ``i % 4 == 3``)."""

_FIELD = re.compile(r"\{(\w+)\}")


def template_re(template: str, **fields: str) -> re.Pattern:
    """A regex of the sentences ``template`` writes: each ``{name}`` field becomes the group
    ``name`` (pattern ``fields[name]``, default ``.+?``), the rest matches literally, the whole
    sentence (``^...$``)."""
    parts = _FIELD.split(template)  # literal, field name, literal, ...
    rx = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{fields.get(p, '.+?')})" for i, p in enumerate(parts))
    return re.compile(f"^{rx}$")


_TRAINING_ONLY: dict[tuple[str, ...], dict[str, tuple[str, ...]]] = {}


def add_training_phrasings(phrasings: tuple[str, ...], extra: tuple[str, ...],
                           template_set: str = "more") -> tuple[str, ...]:
    """Register ``extra`` as training-only phrasings of the tuple ``phrasings``, drawn by
    ``template_set`` (one of :data:`TRAINING_ONLY_SETS`) and the sets after it; returns ``extra``.
    The family's solver must read them too (its regexes over ``phrasings +
    training_phrasings(phrasings)``).

    Raises:
        ValueError: an unknown set or one the tuple already has; an extra phrasing is one of the
            tuple's (held out or not) or of its other training-only ones, repeats, or uses a field
            the tuple's phrasings do not.
    """
    if template_set not in TRAINING_ONLY_SETS:
        raise ValueError(f"training-only phrasings belong to one of {', '.join(TRAINING_ONLY_SETS)}, not {template_set!r}")
    registered = _TRAINING_ONLY.get(tuple(phrasings), {})
    if template_set in registered:
        raise ValueError(f"the tuple already has training-only phrasings in {template_set!r}: {phrasings[0]!r}")
    fields = {f for p in phrasings for f in _FIELD.findall(p)}
    taken = set(phrasings) | {p for ps in registered.values() for p in ps}
    if set(extra) & taken or len(set(extra)) != len(extra):
        raise ValueError(f"training-only phrasings must be new and distinct: {extra!r}")
    for p in extra:
        if not set(_FIELD.findall(p)) <= fields:
            raise ValueError(f"training-only phrasing {p!r} uses a field outside {sorted(fields)}")
    _TRAINING_ONLY.setdefault(tuple(phrasings), {})[template_set] = tuple(extra)
    return tuple(extra)


def training_phrasings(phrasings: Sequence[str], which: str = TRAINING_ONLY_SETS[-1]) -> tuple[str, ...]:
    """The training-only phrasings of the tuple ``phrasings`` that template set ``which`` draws
    (those of ``which`` and of the sets before it in :data:`TRAINING_ONLY_SETS`; ``()`` when
    none). The default, the last set, is every one: what a solver must read."""
    registered = _TRAINING_ONLY.get(tuple(phrasings), {})
    upto = TRAINING_ONLY_SETS[:TRAINING_ONLY_SETS.index(which) + 1]
    return tuple(p for s in upto for p in registered.get(s, ()))


def solver_res(phrasings: tuple[str, ...], **fields: str) -> tuple[re.Pattern, ...]:
    """The regexes a solver reads a tuple with (:func:`template_re`, ``fields`` as there): its
    phrasings and every training-only phrasing registered for it (:func:`training_phrasings`)."""
    return tuple(template_re(p, **fields) for p in phrasings + training_phrasings(phrasings))


def template_subset(phrasings: Sequence[str], which: str) -> tuple[str, ...]:
    """The phrasings of template set ``which`` (:data:`TEMPLATE_SETS`): ``first``: the first;
    ``heldout``: every :data:`HELDOUT_EVERY`-th (indices 3, 7, ...); ``train``: the others;
    ``all``: all; a set of :data:`TRAINING_ONLY_SETS`: ``train`` plus the tuple's
    :func:`training_phrasings` of that set. The training and held-out subsets are disjoint and together the tuple.

    Raises:
        ValueError: an unknown set, or ``heldout`` of a tuple with fewer than 4 phrasings (none
            held out).
    """
    if which == "first":
        return (phrasings[0],)
    if which == "all":
        return tuple(phrasings)
    held = [i % HELDOUT_EVERY == HELDOUT_EVERY - 1 for i in range(len(phrasings))]
    if which == "heldout":
        if not any(held):
            raise ValueError(f"no held-out phrasing among {len(phrasings)} (at least {HELDOUT_EVERY} needed): "
                             f"{phrasings[0]!r}")
        return tuple(p for p, h in zip(phrasings, held) if h)
    if which == "train" or which in TRAINING_ONLY_SETS:
        train = tuple(p for p, h in zip(phrasings, held) if not h)
        return train if which == "train" else train + training_phrasings(phrasings, which)
    raise ValueError(f"unknown template set {which!r}: one of {', '.join(TEMPLATE_SETS)}")


def pick(rng: random.Random, phrasings: Sequence[str], which: str = "first") -> str:
    """One phrasing of template set ``which`` (:func:`template_subset`), drawn with ``rng``;
    ``first`` draws nothing (so the default builds stay as they were before a tuple had more than
    one phrasing)."""
    subset = template_subset(phrasings, which)
    return subset[0] if which == "first" else rng.choice(subset)


# --------------------------------------------------------------------------- distractors

NAMES: tuple[str, ...] = tuple(
    "Maria Omar Priya Lucas Hana Diego Amara Felix Ingrid Kenji Leila Marco Nadia Oscar Rosa "
    "Samir Tara Victor Wen Yusuf Zoe Anton Bianca Carlos Dalia Emil Freya Goran Ines Jonas".split())
"""First names: the people of ``proactive_perception`` and the ``{name}`` of templates."""

DISTRACTORS: tuple[str, ...] = (
    "The weather was mild that day.",
    "{name} made a cup of tea.",
    "Someone laughed in the next room.",
    "{name} hummed a song.",
    "The hallway smelled of fresh paint.",
    "{name} checked the mailbox twice.",
    "A bird landed on the windowsill.",
    "The radio played an old tune.",
    "{name} is {n} years old.",
    "The parking lot had {n} cars in it.",
    "{name} read a few pages of a novel.",
    "There were {n} chairs in the room.",
    "Nobody said anything for a while.",
    "{name} likes the color green.",
    "The bus stop is {n} minutes away.",
    "{name} forgot a scarf at home.",
)
"""Unrelated sentences (``{name}``: one of :data:`NAMES`, ``{n}``: 2..40), split into training and
held-out phrasings like every template tuple."""

_DISTRACTOR_RES = tuple(template_re(d, name=r"[A-Z][a-z]+", n=r"\d+") for d in DISTRACTORS)


def is_distractor(chunk: str) -> bool:
    """Whether ``chunk`` is a sentence of :data:`DISTRACTORS` (every solver skips those)."""
    return any(rx.match(chunk) for rx in _DISTRACTOR_RES)


def interleave(rng: random.Random, chunks: list[str], prob: float, tail: tuple[int, int],
               which: str = "first") -> tuple[list[str], list[int]]:
    """``chunks`` (the question, then the facts) with distractor sentences of template set
    ``which`` (``first``: the training set; a stream has several): one before each fact with
    probability ``prob``, then ``randint(*tail)`` after the last fact; no sentence twice in a
    stream while the set allows. Returns ``(new chunks, where)``: ``where[k]`` is the new index of chunk ``k``.
    Draws nothing when ``prob`` is 0 and ``tail`` is ``(0, 0)``."""
    if prob <= 0 and tail[1] <= 0:
        return list(chunks), list(range(len(chunks)))
    subset = template_subset(DISTRACTORS, "train" if which == "first" else which)
    used: set[str] = set()

    def one() -> str:
        for _ in range(50):  # not the same sentence twice in a stream, as far as the subset allows
            s = rng.choice(subset).format(name=rng.choice(NAMES), n=rng.randint(2, 40))
            if s not in used:
                break
        used.add(s)
        return s

    out, where = [chunks[0]], [0]
    for c in chunks[1:]:
        if rng.random() < prob:
            out.append(one())
        where.append(len(out))
        out.append(c)
    out += [one() for _ in range(rng.randint(*tail))]
    return out, where
