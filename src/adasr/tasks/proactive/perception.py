"""``proactive_perception`` (perception: one stated fact).

"Tell me the temperature reported by sensor Bravo." then fact lines: "Sensor Alpha reports 21
degrees.", "Sensor Bravo reports 55 percent humidity." (a *near miss*: the target entity, another
attribute), "Sensor Bravo reports 23 degrees." ... Scenes: ``sensors`` (temperature, humidity),
``people`` (the city where a person lives / works), ``prices`` (price, weight of an item). Every
other entity is mentioned once. Answer: the stated value. **Evidence**: the chunk that states the
asked attribute of the asked entity.

Knobs: ``facts`` (fact chunks; or ``min_facts``/``max_facts``, default 4-8), ``position`` of the
evidence among the facts (``uniform``, default; ``early``/``middle``/``late``: that third;
``last``), ``near_miss`` (default ``True``), ``scene`` (``mixed``, default, or one scene),
``notes`` (default ``False``: silent turns; ``True``: after each fact the check of whether it
is the asked one, "Alpha temperature? no.", "Bravo humidity? no.", "Bravo temperature? yes.",
the last one starting the response turn: :func:`state_notes`), ``compare`` (default ``False``;
with ``notes``, each note sets the fact beside the asked entity and attribute, "Bravo humidity =
Bravo temperature? no.", so the check compares two written pairs). The knobs every generated family
takes (``templates``, distractors, ``continuation``): :mod:`adasr.tasks.proactive.build`.

Phrasings: each attribute's ``questions`` and ``facts`` (templates with ``{e}``, the entity, and
``{v}``, the value; 4 each, the 4th held out: :func:`~adasr.tasks.proactive.base.template_subset`)
in :data:`SCENES`; training-only questions: :data:`QUESTIONS_WIDER` (template set ``wider``), facts:
:data:`FACTS_WIDEST` (``widest``).
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
from adasr.tasks.proactive.base import (NAMES, GeneratedFamily, Rejected, add_training_phrasings, is_distractor, pick,
                                        solver_res)

__all__ = ["SCENES", "QUESTIONS_WIDER", "FACTS_WIDEST", "POSITIONS", "config", "generate", "solve", "state_notes", "mistake", "FAMILY"]


@dataclass(frozen=True)
class Attribute:
    """One attribute of a scene's entities (its name in a note: its key in :data:`SCENES`).

    Attributes:
        questions: phrasings of the question asking it ("Tell me the temperature reported by
            sensor {e}.").
        facts: phrasings of a fact stating it ("Sensor {e} reports {v} degrees.").
        values: draws a value.
    """

    questions: tuple[str, ...]
    facts: tuple[str, ...]
    values: Callable[[random.Random], str]


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
            "temperature": Attribute(
                ("Tell me the temperature reported by sensor {e}.", "Let me know the temperature that sensor {e} reads.",
                 "I need the temperature from sensor {e} as soon as you have it.",
                 "Report the temperature of sensor {e} once it comes in."),
                ("Sensor {e} reports {v} degrees.", "Sensor {e} reads {v} degrees.",
                 "The reading of sensor {e} is {v} degrees.", "Sensor {e} shows a temperature of {v} degrees."),
                lambda r: str(r.randint(10, 35))),
            "humidity": Attribute(
                ("Tell me the humidity reported by sensor {e}.", "Let me know the humidity that sensor {e} reads.",
                 "I need the humidity from sensor {e} as soon as you have it.",
                 "Report the humidity of sensor {e} once it comes in."),
                ("Sensor {e} reports {v} percent humidity.", "Sensor {e} reads {v} percent humidity.",
                 "The humidity at sensor {e} is {v} percent.", "Sensor {e} measures a humidity of {v} percent."),
                lambda r: str(r.randint(20, 90))),
        },
    ),
    "people": (
        NAMES,
        {
            "home": Attribute(
                ("Tell me the city where {e} lives.", "Let me know which city {e} lives in.",
                 "I want to know the home city of {e}.", "Find out where {e} lives and tell me the city."),
                ("{e} lives in {v}.", "{e} has a home in {v}.", "The home of {e} is in {v}.", "{e} resides in {v}."),
                lambda r: r.choice(_CITIES)),
            "work": Attribute(
                ("Tell me the city where {e} works.", "Let me know which city {e} works in.",
                 "I want to know the city where {e} has a job.", "Find out where {e} works and tell me the city."),
                ("{e} works in {v}.", "{e} has a job in {v}.", "The office of {e} is in {v}.",
                 "{e} commutes to work in {v}."),
                lambda r: r.choice(_CITIES)),
        },
    ),
    "prices": (
        tuple(_ITEMS),
        {
            "price": Attribute(
                ("Tell me the price of the {e} in dollars.", "Let me know how many dollars the {e} costs.",
                 "I need the price of the {e} in dollars.", "Find out what the {e} costs and tell me the dollars."),
                ("The {e} costs {v} dollars.", "The {e} is priced at {v} dollars.", "The {e} sells for {v} dollars.",
                 "You can buy the {e} for {v} dollars."),
                lambda r: str(r.randint(5, 120))),
            "weight": Attribute(
                ("Tell me the weight of the {e} in kilograms.", "Let me know how many kilograms the {e} weighs.",
                 "I need the weight of the {e} in kilograms.", "Find out what the {e} weighs and tell me the kilograms."),
                ("The {e} weighs {v} kilograms.", "The {e} has a weight of {v} kilograms.",
                 "The {e} comes in at {v} kilograms.", "On the scale, the {e} shows {v} kilograms."),
                lambda r: str(r.randint(1, 30))),
        },
    ),
}
"""Scenes: ``name -> (entities, {attribute name: Attribute})``."""

QUESTIONS_WIDER: dict[str, tuple[str, ...]] = {name: add_training_phrasings(SCENES[scene][1][name].questions, extra, "wider")
                                                for scene, name, extra in (
    ("sensors", "temperature", ("Give me the temperature of sensor {e} when it arrives.",
                                "Wait for sensor {e} and give me its temperature.", "Say what temperature sensor {e} reports.",
                                "I am waiting on the temperature at sensor {e}; give it to me.")),
    ("sensors", "humidity", ("Give me the humidity of sensor {e} when it arrives.",
                             "Wait for sensor {e} and give me its humidity.", "Say what humidity sensor {e} reports.",
                             "I am waiting on the humidity at sensor {e}; give it to me.")),
    ("people", "home", ("Give me the city {e} lives in.", "Name the city that is home to {e}.",
                        "Say which city {e} calls home.", "I am waiting to hear where {e} lives; name the city.")),
    ("people", "work", ("Give me the city {e} works in.", "Name the city where {e} has an office.",
                        "Say which city {e} goes to for work.", "I am waiting to hear where {e} works; name the city.")),
    ("prices", "price", ("Give me the price of the {e} in dollars.", "Say how many dollars the {e} sells for.",
                         "Name the dollar price of the {e}.", "I am waiting on the cost of the {e}; give it in dollars.")),
    ("prices", "weight", ("Give me the weight of the {e} in kilograms.", "Say how many kilograms the {e} weighs.",
                          "Name the weight of the {e} in kilograms.",
                          "I am waiting on the weight of the {e}; give it in kilograms.")),
)}
"""Training-only phrasings of each attribute's question (template set ``wider``:
:func:`~adasr.tasks.proactive.base.add_training_phrasings`). Written after RESULTS §37's ``wide``
adapter answered 6 held-out-template perception streams early, on the reading that it took the
held-out question ("Find out where {e} works and tell me the city.") for another attribute's; the
``wider`` run (§37) showed that reading wrong (the misread sentence is a held-out *fact*
phrasing) and did not help. None uses the held-out phrasings' words ("Find out", "and tell me
the ...", "Report ... once it comes in")."""

FACTS_WIDEST: dict[str, tuple[str, ...]] = {name: add_training_phrasings(SCENES[scene][1][name].facts, extra, "widest")
                                             for scene, name, extra in (
    ("sensors", "temperature", ("The temperature at sensor {e} is {v} degrees.", "Sensor {e} logs {v} degrees.",
                                "From sensor {e}: {v} degrees.", "Sensor {e} is at {v} degrees.")),
    ("sensors", "humidity", ("The air at sensor {e} holds {v} percent humidity.", "Sensor {e} logs {v} percent humidity.",
                             "From sensor {e}: {v} percent humidity.", "Humidity near sensor {e} is at {v} percent.")),
    ("people", "home", ("{e} stays at home in {v}.", "The house of {e} is in {v}.", "{e} has lived in {v} for years.",
                        "Home for {e} is {v}.")),
    ("people", "work", ("{e} is employed in {v}.", "The workplace of {e} is in {v}.", "{e} goes to a job in {v}.",
                        "Work for {e} is in {v}.")),
    ("prices", "price", ("The {e} has a price of {v} dollars.", "The {e} goes for {v} dollars.",
                         "The price tag on the {e} says {v} dollars.", "For {v} dollars, the {e} is yours.")),
    ("prices", "weight", ("The {e} weighs in at {v} kilograms.", "The {e} is {v} kilograms in weight.",
                          "The {e} has a mass of {v} kilograms.", "Lifting the {e} means lifting {v} kilograms.")),
)}
"""Training-only phrasings of each attribute's fact (template set ``widest``). Written after
RESULTS §37's ``wider`` run located the perception misses: the asked entity's *other* fact in a
held-out fact phrasing ("Felix resides in Oslo." for "where Felix works") checked "yes". None uses
the held-out facts' words ("shows", "measures", "resides", "commutes", "You can buy", "On the
scale"). Trained in ``configs/sft_proactive_qwen_mix_widest.yaml``: it did not move that miss
(RESULTS §37)."""

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
        "notes": bool_knob(knobs, "notes", False),
        "compare": bool_knob(knobs, "compare", False),
    }


def generate(rng: random.Random, cfg: dict) -> tuple[list[str], tuple[str, int]]:
    """One item: its chunks (the question, then the facts) and ``(answer, evidence)``; each
    sentence's phrasing from template set ``cfg["templates"]`` (``first``: nothing drawn).

    Raises:
        ConfigError: more facts than the scene has entities.
    """
    which = cfg["templates"]
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
    slots[ev_slot] = pick(rng, attrs[asked].facts, which).format(e=target, v=answer)
    free = [i for i in range(n_facts) if i != ev_slot]
    rng.shuffle(free)
    if near:
        a = attrs[rng.choice(others_attr)]
        v = a.values(rng)
        while v == answer:  # a near miss never carries the answer by chance
            v = a.values(rng)
        slots[free.pop()] = pick(rng, a.facts, which).format(e=target, v=v)
    for ent, i in zip(others, free):
        a = attrs[rng.choice(sorted(attrs))]
        slots[i] = pick(rng, a.facts, which).format(e=ent, v=a.values(rng))
    chunks = [pick(rng, attrs[asked].questions, which).format(e=target), *slots]
    return chunks, (answer, ev_slot + 1)


@lru_cache(maxsize=None)
def _patterns() -> list[tuple[str, tuple[re.Pattern, ...], tuple[re.Pattern, ...]]]:
    """Per attribute: its name and the regexes of its questions and of its facts."""
    return [(name, solver_res(a.questions), solver_res(a.facts))
            for _, attrs in SCENES.values() for name, a in attrs.items()]


def _first(rxs: tuple[re.Pattern, ...], text: str) -> re.Match | None:
    return next((m for m in (rx.match(text) for rx in rxs) if m), None)


def _read(chunks: list[str]) -> tuple[str, str, list[tuple[str, str, str] | None]]:
    """``(asked attribute, asked entity, facts)``: per chunk after the question, ``(attribute,
    entity, value)`` of the fact it states, or ``None`` (a distractor sentence, or no fact).

    Raises:
        Rejected: the question is not understood.
    """
    asked = next(((name, m.group("e")) for name, questions, _ in _patterns() if (m := _first(questions, chunks[0]))),
                 None)
    if asked is None:
        raise Rejected("question not understood")
    facts: list[tuple[str, str, str] | None] = []
    for chunk in chunks[1:]:
        fact = None
        if not is_distractor(chunk):
            fact = next(((name, f.group("e"), f.group("v")) for name, _, rxs in _patterns() if (f := _first(rxs, chunk))),
                        None)
        facts.append(fact)
    return asked[0], asked[1], facts


def solve(chunks: list[str]) -> tuple[str, int]:
    """``(answer, evidence)`` read from the chunks: the first fact stating the asked attribute of
    the asked entity (distractor sentences skipped).

    Raises:
        Rejected: the question is not understood, or the fact is never stated.
    """
    attr, target, facts = _read(chunks)
    for k, fact in enumerate(facts, 1):
        if fact is not None and fact[:2] == (attr, target):
            return fact[2], k
    raise Rejected("fact never stated")


def state_notes(chunks: list[str], evidence: int, config: dict | None = None) -> list[str]:
    """Notes of a perception stream, one per chunk ``0..evidence`` (knob ``notes``): after each
    fact the check of whether it states the asked attribute of the asked entity ("Alpha
    temperature? no.", the near miss "Bravo humidity? no.", then "Bravo temperature? yes."),
    none after the question or a distractor sentence. The response turn starts with the
    evidence's "yes" check.

    With ``config["compare"]`` each check names the asked pair beside the fact's ("Bravo humidity
    = Bravo temperature? no.", "Bravo temperature = Bravo temperature? yes."): the decision is a
    comparison of two pairs the model has just written, not of a written pair with the question
    held in mind (RESULTS.md section 37: "Felix home? yes." for "where Felix works").

    Raises:
        Rejected: the question is not understood.
    """
    attr, target, facts = _read(chunks)
    asked = f" = {target} {attr}" if (config or {}).get("compare") else ""
    notes = [""]
    for fact in facts[:evidence]:
        notes.append("" if fact is None else
                     f"{fact[1]} {fact[0]}{asked}? {'yes' if fact[:2] == (attr, target) else 'no'}.")
    return notes


def mistake(rng: random.Random, chunks: list[str], answer: str) -> str:
    """A plausible wrong answer (``GeneratedFamily.mistake``): the near miss's value (the asked
    entity, the other attribute) when there is one, else the value of another fact of the same
    attribute, else of any other fact; a fresh draw of the attribute when no fact differs.

    Raises:
        Rejected: the question is not understood.
    """
    attr, target, facts = _read(chunks)
    stated = [f for f in facts if f is not None and f[2] != answer]
    for pool in ([f for f in stated if f[1] == target], [f for f in stated if f[0] == attr], stated):
        if pool:
            return rng.choice(pool)[2]
    a = next(a for _, attrs in SCENES.values() for name, a in attrs.items() if name == attr)
    while (v := a.values(rng)) == answer:
        pass
    return v


FAMILY = GeneratedFamily("proactive_perception",
                         ("facts", "min_facts", "max_facts", "position", "near_miss", "scene", "notes", "compare"),
                         config, generate, solve, state_notes, mistake)
