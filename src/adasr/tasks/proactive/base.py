"""What every proactive family shares: the record, the build report, the rejection of an item,
the two kinds of family, and phrasing templates.

A generated family (:class:`GeneratedFamily`) writes its sentences from **templates**: strings
with ``{name}`` fields, kept as tuples of alternative phrasings next to the family's generator.
The generator writes a sentence with :func:`pick` (one phrasing: nothing is drawn, so a family's
items stay the same until a phrasing is added) and the family's solver reads it back with
:func:`template_re` over the same tuple, so a new phrasing is one more string in the tuple.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from adasr.tasks.families import Family

__all__ = [
    "Rejected",
    "ProactiveReport",
    "make_record",
    "proactive_turns",
    "GeneratedFamily",
    "SourceFamily",
    "template_re",
    "pick",
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
        notes: ``(chunks, evidence) -> notes`` (state notes, knob ``notes``), or ``None``.
    """

    config: Callable[[dict], dict]
    generate: Callable[[random.Random, dict], tuple[list[str], tuple[str, int] | None]]
    solve: Callable[[list[str]], tuple[str, int]]
    notes: Callable[[list[str], int], list[str]] | None = None


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

_FIELD = re.compile(r"\{(\w+)\}")


def template_re(template: str, **fields: str) -> re.Pattern:
    """A regex of the sentences ``template`` writes: each ``{name}`` field becomes the group
    ``name`` (pattern ``fields[name]``, default ``.+?``), the rest matches literally, the whole
    sentence (``^...$``)."""
    parts = _FIELD.split(template)  # literal, field name, literal, ...
    rx = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{fields.get(p, '.+?')})" for i, p in enumerate(parts))
    return re.compile(f"^{rx}$")


def pick(rng: random.Random, phrasings: Sequence[str]) -> str:
    """One of ``phrasings`` drawn with ``rng``; the only one without drawing (so that a family's
    items do not change until it has a second phrasing)."""
    return phrasings[0] if len(phrasings) == 1 else rng.choice(phrasings)
