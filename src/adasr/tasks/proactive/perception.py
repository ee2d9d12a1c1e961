"""``proactive_perception`` (perception: one stated fact).

"Tell me the temperature reported by sensor Bravo." then fact lines: "Sensor Alpha reports 21
degrees.", "Sensor Bravo reports 55 percent humidity." (a *near miss*: the target entity, another
attribute), "Sensor Bravo reports 23 degrees." ... Scenes: ``sensors`` (temperature, humidity),
``people`` (the city where a person lives / works), ``prices`` (price, weight of an item). Every
other entity is mentioned once. Answer: the stated value. **Evidence**: the chunk that states the
asked attribute of the asked entity.

Knobs: ``facts`` (fact chunks; or ``min_facts``/``max_facts``, default 4-8), ``position`` of the
evidence among the facts (``uniform``, default; ``early``/``middle``/``late``: that third;
``last``), ``near_miss`` (default ``True``), ``scene`` (``mixed``, default, or one scene).

Phrasings: each attribute's ``questions`` and ``facts`` (templates with ``{e}``, the entity, and
``{v}``, the value) in :data:`SCENES`.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from adasr.errors import ConfigError
from adasr.tasks.families import bool_knob, choice_knob, range_knob
from adasr.tasks.proactive.base import GeneratedFamily, Rejected, pick, template_re

__all__ = ["SCENES", "POSITIONS", "config", "generate", "solve", "FAMILY"]


@dataclass(frozen=True)
class Attribute:
    """One attribute of a scene's entities.

    Attributes:
        questions: phrasings of the question asking it ("Tell me the temperature reported by
            sensor {e}.").
        facts: phrasings of a fact stating it ("Sensor {e} reports {v} degrees.").
        values: draws a value.
    """

    questions: tuple[str, ...]
    facts: tuple[str, ...]
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

SCENES: dict[str, tuple[tuple[str, ...], dict[str, Attribute]]] = {
    "sensors": (
        # words, not letters: "sensor B." would read as an initial, not a sentence end
        tuple("Alpha Bravo Charlie Delta Echo Foxtrot Golf Hotel India Juliet Kilo Mike Papa Romeo Sierra "
              "Tango".split()),
        {
            "temperature": Attribute(("Tell me the temperature reported by sensor {e}.",),
                                     ("Sensor {e} reports {v} degrees.",),
                                     lambda r: str(r.randint(10, 35))),
            "humidity": Attribute(("Tell me the humidity reported by sensor {e}.",),
                                  ("Sensor {e} reports {v} percent humidity.",),
                                  lambda r: str(r.randint(20, 90))),
        },
    ),
    "people": (
        tuple(_NAMES),
        {
            "home": Attribute(("Tell me the city where {e} lives.",), ("{e} lives in {v}.",),
                              lambda r: r.choice(_CITIES)),
            "work": Attribute(("Tell me the city where {e} works.",), ("{e} works in {v}.",),
                              lambda r: r.choice(_CITIES)),
        },
    ),
    "prices": (
        tuple(_ITEMS),
        {
            "price": Attribute(("Tell me the price of the {e} in dollars.",), ("The {e} costs {v} dollars.",),
                               lambda r: str(r.randint(5, 120))),
            "weight": Attribute(("Tell me the weight of the {e} in kilograms.",), ("The {e} weighs {v} kilograms.",),
                                lambda r: str(r.randint(1, 30))),
        },
    ),
}
"""Scenes: ``name -> (entities, {attribute name: Attribute})``."""

POSITIONS = ("uniform", "early", "middle", "late", "last")
"""Where the evidence falls among the facts (knob ``position``)."""


def _third(n: int, which: str, rng: random.Random) -> int:
    """A 0-based index in ``range(n)``: uniform, or in the early/middle/late third, or last."""
    if which == "uniform":
        return rng.randrange(n)
    if which == "last":
        return n - 1
    k = {"early": 0, "middle": 1, "late": 2}[which]
    lo, hi = math.floor(k * n / 3), max(math.floor(k * n / 3) + 1, math.floor((k + 1) * n / 3))
    return rng.randrange(lo, min(hi, n))


def config(knobs: dict) -> dict:
    """The generator config of the family's knobs (module docstring). Raises ConfigError."""
    return {
        "facts": range_knob(knobs, "facts", (4, 8)),
        "position": choice_knob(knobs, "position", "uniform", POSITIONS),
        "near_miss": bool_knob(knobs, "near_miss", True),
        "scene": choice_knob(knobs, "scene", "mixed", ("mixed", *SCENES)),
    }


def generate(rng: random.Random, cfg: dict) -> tuple[list[str], tuple[str, int]]:
    """One item: its chunks (the question, then the facts) and ``(answer, evidence)``.

    Raises:
        ConfigError: more facts than the scene has entities.
    """
    scene = rng.choice(sorted(SCENES)) if cfg["scene"] == "mixed" else cfg["scene"]
    entities, attrs = SCENES[scene]
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
    slots[ev_slot] = pick(rng, attrs[asked].facts).format(e=target, v=answer)
    free = [i for i in range(n_facts) if i != ev_slot]
    rng.shuffle(free)
    if near:
        a = attrs[rng.choice(others_attr)]
        v = a.values(rng)
        while v == answer:  # a near miss never carries the answer by chance
            v = a.values(rng)
        slots[free.pop()] = pick(rng, a.facts).format(e=target, v=v)
    for ent, i in zip(others, free):
        a = attrs[rng.choice(sorted(attrs))]
        slots[i] = pick(rng, a.facts).format(e=ent, v=a.values(rng))
    chunks = [pick(rng, attrs[asked].questions).format(e=target), *slots]
    return chunks, (answer, ev_slot + 1)


@lru_cache(maxsize=None)
def _patterns() -> list[tuple[tuple[re.Pattern, ...], tuple[re.Pattern, ...]]]:
    """Per attribute: the regexes of its questions and of its facts."""
    return [(tuple(template_re(q) for q in a.questions), tuple(template_re(f) for f in a.facts))
            for _, attrs in SCENES.values() for a in attrs.values()]


def solve(chunks: list[str]) -> tuple[str, int]:
    """``(answer, evidence)`` read from the chunks: the first fact stating the asked attribute of
    the asked entity.

    Raises:
        Rejected: the question is not understood, or the fact is never stated.
    """
    for questions, facts in _patterns():
        m = next((m for m in (rx.match(chunks[0]) for rx in questions) if m), None)
        if not m:
            continue
        target = m.group("e")
        for k in range(1, len(chunks)):
            f = next((f for f in (rx.match(chunks[k]) for rx in facts) if f), None)
            if f and f.group("e") == target:
                return f.group("v"), k
        raise Rejected("fact never stated")
    raise Rejected("question not understood")


FAMILY = GeneratedFamily("proactive_perception", ("facts", "min_facts", "max_facts", "position", "near_miss", "scene"),
                         config, generate, solve)
