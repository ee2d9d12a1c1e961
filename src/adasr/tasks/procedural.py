"""Procedural streaming tasks built from ``reasoning-gym`` generators.

Each generator item (``question``, ``answer``, ``metadata``) is re-rendered as a stream with one
fact per chunk, a streaming thought that updates a running value after each fact (``""`` — a
skip — when the fact changes nothing), and a deep stage that states the result and boxes it.
The answer we compute from the facts is checked with the generator's own ``score_answer``
against the generator's ``answer``; items that do not match are skipped and counted.

Records follow the shared streaming-episode schema (see :mod:`adasr.tasks.streamify`)::

    id, task, question (the chunks joined by spaces), chunks (N), thoughts (N-1), deep, answer
    [, forced_skips (thought indices whose skip is the engine's: ``chain_sum``'s ``skip_forced``)]

Families and their knobs (all optional; ``seed`` and ``size`` are arguments of
:func:`build_procedural`). Defaults are small so that a 135M model can learn the task:

``chain_sum`` (arithmetic; reasoning-gym ``chain_sum``)
    "Start with 12." "Add 7." "Subtract 3." "What is the result?"; thoughts "" (nothing to
    update yet), "12 + 7 = 19.", "19 - 3 = 16."; deep "The result is 16. \\boxed{16}".
    Knobs: ``terms`` (exact number of terms; or ``min_terms``/``max_terms``, default 3-5),
    ``digits`` (exact digits per term; or ``min_digits``/``max_digits``, default 1-2),
    ``allow_negation`` (negative terms, default ``False``), ``final`` (the deep stage:
    ``"sentence"``, default, is ``The result is N. \\boxed{N}``; ``"boxed"`` is ``\\boxed{N}`` alone).
    ``skip_prob`` (default 0): each fact's thought is skipped (``""``) with this probability and
    its operation is **folded** into the next thought, or into the deep stage after the last fact
    ("Start with 7." "Add 5." "Subtract 3." -> thoughts "", "", "7 + 5 - 3 = 9."): episodes for a
    machine that falls behind its input, where ``--skip-backlog`` skips the thoughts of chunks
    that waited and ingests them together (RESULTS.md section 25). Which thoughts are skipped is
    drawn from the item's expression, so the same (seed, knobs) gives the same records.
    ``thought`` (default ``"step"``): ``"step"`` writes the operation and its result
    ("12 + 7 = 19."); ``"value"`` writes the running value alone ("19.", ~3 tokens instead of ~8),
    a streaming thought short enough to keep up with the input on a machine 4x slower than its
    budgets assume (RESULTS.md section 25).
    ``skip_forced`` (default ``False``): the knob's skips are the **engine's** (forced under a
    backlog), not the model's: each record lists them in ``forced_skips`` (thought indices) and
    SFT renders those turns as context, untrained (:func:`adasr.train.sft_data.context_turns`),
    so a model learns to fold the operations of a forced skip into its next thought without
    learning to skip by itself.
``letter_counting`` (counting; reasoning-gym ``letter_counting``)
    'Count the letter "e" in the text that follows.' then ``words_per_chunk`` words per chunk,
    then 'How many times does the letter "e" appear in the text?'. The thought after a words
    chunk spells each word containing the letter and keeps a running count
    ('"then" (t-h-e-n) has 1. Total so far: 3.'); chunks without the letter are skipped.
    Knobs: ``words`` (exact span length; or ``min_words``/``max_words``, default 4-8),
    ``words_per_chunk`` (default 2).
``leg_counting`` (counting with world knowledge; reasoning-gym ``leg_counting``)
    the generator's instruction, then one animal group per chunk ("3 ducks.", proper plurals),
    then "How many
    legs are there in total?"; thought "3 ducks have 3 * 2 = 6 legs. Total so far: 6.";
    legless animals are skipped. Knobs: ``animals`` (exact number of kinds; or
    ``min_animals``/``max_animals``, default 2-4), ``min_instances``/``max_instances``
    (default 1-5).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from adasr.errors import ConfigError
from adasr.protocol import parse_answer
from adasr.tasks.families import (
    Families,
    Family,
    bool_knob,
    check_seed,
    check_size,
    choice_knob,
    int_knob,
    prob_knob,
    range_knob,
)

__all__ = [
    "PROCEDURAL_TASKS",
    "ProceduralReport",
    "build_procedural",
    "build_procedural_with_report",
    "score",
]


# --------------------------------------------------------------------------- knobs

_CHAIN_SUM_THOUGHTS = ("step", "value")  # chain_sum's ``thought`` knob: "12 + 7 = 19." or "19."


def _bounds(knobs: dict, exact: str, default: tuple[int, int]) -> dict:
    """Generator kwargs ``min_<exact>``/``max_<exact>`` of a range knob (:func:`range_knob`)."""
    lo, hi = range_knob(knobs, exact, default)
    return {f"min_{exact}": lo, f"max_{exact}": hi}


def _chain_sum_kwargs(knobs: dict) -> dict:
    kw = {**_bounds(knobs, "terms", (3, 5)), **_bounds(knobs, "digits", (1, 2))}
    kw["allow_negation"] = bool_knob(knobs, "allow_negation", False)
    _chain_sum_final(knobs)
    prob_knob(knobs, "skip_prob", 0.0)
    bool_knob(knobs, "skip_forced", False)
    choice_knob(knobs, "thought", "step", _CHAIN_SUM_THOUGHTS)
    return kw


def _chain_sum_final(knobs: dict) -> str:
    final = knobs.get("final", "sentence")
    if final not in ("sentence", "boxed"):
        raise ConfigError(f"final must be 'sentence' or 'boxed', got {final!r}")
    return final


def _letter_counting_kwargs(knobs: dict) -> dict:
    kw = _bounds(knobs, "words", (4, 8))
    _words_per_chunk(knobs)
    return kw


def _words_per_chunk(knobs: dict) -> int:
    return int_knob(knobs, "words_per_chunk", 2)


def _leg_counting_kwargs(knobs: dict) -> dict:
    return {**_bounds(knobs, "animals", (2, 4)), **_bounds(knobs, "instances", (1, 5))}


# --------------------------------------------------------------------------- renderers
# Each renderer turns one generator item into (chunks, thoughts, deep, computed answer, extra record fields).


def _render_chain_sum(item: dict, knobs: dict) -> tuple[list[str], list[str], str, str, dict]:
    expression = item["metadata"]["expression"]
    toks = expression.split()
    if len(toks) % 2 == 0:
        raise ValueError(f"unexpected expression {expression!r}")
    skip_prob = prob_knob(knobs, "skip_prob", 0.0)
    terse = choice_knob(knobs, "thought", "step", _CHAIN_SUM_THOUGHTS) == "value"
    rng = random.Random(expression)  # str seeds are hashed with SHA-512: the same on every run
    value = int(toks[0])
    chunks = [f"Start with {value}."]
    thoughts = [""]  # nothing to update yet
    start, pending = value, []  # the last value a thought wrote, the operations folded since
    forced: list[int] = []  # the thoughts the knob skipped
    for op, term in zip(toks[1::2], toks[2::2]):
        t = int(term)
        if op == "+":
            chunks.append(f"Add {t}.")
            value += t
        elif op == "-":
            chunks.append(f"Subtract {t}.")
            value -= t
        else:
            raise ValueError(f"unexpected operator {op!r}")
        pending.append(f"{op} {f'({t})' if t < 0 else t}")
        if skip_prob and rng.random() < skip_prob:
            forced.append(len(thoughts))
            thoughts.append("")  # skipped: the operation is folded into the next thought
            continue
        thoughts.append(f"{value}." if terse else f"{start} {' '.join(pending)} = {value}.")
        start, pending = value, []
    chunks.append("What is the result?")
    fold = (f"{value}. " if terse else f"{start} {' '.join(pending)} = {value}. ") if pending else ""
    boxed = f"\\boxed{{{value}}}"
    deep = fold + (boxed if _chain_sum_final(knobs) == "boxed" else f"The result is {value}. {boxed}")
    extra = {"forced_skips": forced} if bool_knob(knobs, "skip_forced", False) else {}
    return chunks, thoughts, deep, str(value), extra


def _render_letter_counting(item: dict, knobs: dict) -> tuple[list[str], list[str], str, str, dict]:
    meta = item["metadata"]
    letter = meta["target_letter"]
    words = list(meta["span"])
    per = _words_per_chunk(knobs)
    chunks = [f'Count the letter "{letter}" in the text that follows.']
    thoughts = [""]
    total = 0
    for i in range(0, len(words), per):
        group = words[i : i + per]
        chunks.append(" ".join(group))
        parts = []
        for w in group:
            n = w.lower().count(letter)
            if n:
                total += n
                parts.append(f'"{w}" ({"-".join(w.lower())}) has {n}.')
        thoughts.append(" ".join(parts) + f" Total so far: {total}." if parts else "")
    chunks.append(f'How many times does the letter "{letter}" appear in the text?')
    times = "time" if total == 1 else "times"
    deep = f'The letter "{letter}" appears {total} {times}. \\boxed{{{total}}}'
    return chunks, thoughts, deep, str(total), {}


_IRREGULAR_PLURALS = {
    "sheep": "sheep", "deer": "deer", "shrimp": "shrimp", "starfish": "starfish",
    "jellyfish": "jellyfish", "woodlouse": "woodlice", "praying mantis": "praying mantises",
}


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    return noun + "s"


def _render_leg_counting(item: dict, knobs: dict) -> tuple[list[str], list[str], str, str, dict]:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    chunks = ["Your task is to count how many legs there are in total when given a list of animals."]
    thoughts = [""]
    total = 0
    for animal, count in item["metadata"]["animals"].items():
        legs = ANIMALS[animal]
        name = f"{count} {animal if count == 1 else _plural(animal)}"
        chunks.append(f"{name}.")
        if legs == 0:
            thoughts.append("")  # adds nothing: skip
            continue
        total += count * legs
        verb = "have" if count > 1 else "has"
        thoughts.append(f"{name} {verb} {count} * {legs} = {count * legs} legs. Total so far: {total}.")
    chunks.append("How many legs are there in total?")
    return chunks, thoughts, f"There are {total} legs in total. \\boxed{{{total}}}", str(total), {}


@dataclass(frozen=True)
class _ProceduralFamily(Family):
    """A reasoning-gym family: its ``generator`` (reasoning-gym dataset name), the generator
    ``kwargs`` of its knobs, and ``render`` (one generator item and the knobs -> chunks,
    thoughts, deep stage, computed answer, extra record fields such as ``forced_skips``)."""

    generator: str
    kwargs: Callable[[dict], dict]
    render: Callable[[dict, dict], tuple[list[str], list[str], str, str, dict]]


_FAMILIES: Families[_ProceduralFamily] = Families("procedural", [
    _ProceduralFamily(
        "chain_sum",
        ("terms", "min_terms", "max_terms", "digits", "min_digits", "max_digits", "allow_negation", "final",
         "skip_prob", "skip_forced", "thought"),
        "chain_sum", _chain_sum_kwargs, _render_chain_sum,
    ),
    _ProceduralFamily(
        "letter_counting", ("words", "min_words", "max_words", "words_per_chunk"),
        "letter_counting", _letter_counting_kwargs, _render_letter_counting,
    ),
    _ProceduralFamily(
        "leg_counting", ("animals", "min_animals", "max_animals", "instances", "min_instances", "max_instances"),
        "leg_counting", _leg_counting_kwargs, _render_leg_counting,
    ),
])

PROCEDURAL_TASKS: tuple[str, ...] = _FAMILIES.names
"""Names of the procedural task families."""


# --------------------------------------------------------------------------- building


@dataclass
class ProceduralReport:
    """What :func:`build_procedural_with_report` did: generator items ``drawn``, records
    ``built``, items ``mismatched`` (our computed answer failed the generator's scorer) and
    items that could not be rendered (``errors``, message -> count)."""

    task: str
    drawn: int = 0
    built: int = 0
    mismatched: int = 0
    errors: dict[str, int] = field(default_factory=dict)


def build_procedural_with_report(task: str, size: int, seed: int = 0, **knobs: Any) -> tuple[list[dict], ProceduralReport]:
    """Like :func:`build_procedural`, also returning a :class:`ProceduralReport`."""
    fam = _FAMILIES.get(task)
    check_size(size)
    check_seed(seed)
    fam.check_knobs(knobs)
    gen_kwargs = fam.kwargs(knobs)

    import reasoning_gym

    # items depend only on (seed, index), so a larger virtual size leaves spare items for the
    # (rare) ones we skip
    capacity = 2 * size + 16
    try:
        ds = reasoning_gym.create_dataset(fam.generator, size=capacity, seed=seed, **gen_kwargs)
    except (AssertionError, TypeError, ValueError) as e:
        raise ConfigError(f"invalid knobs for task {task!r} ({gen_kwargs}): {e or type(e).__name__}") from None

    report = ProceduralReport(task=task)
    out: list[dict] = []
    for idx in range(capacity):
        if len(out) >= size:
            break
        item = ds[idx]
        report.drawn += 1
        try:
            chunks, thoughts, deep, computed, extra = fam.render(item, knobs)
        except (KeyError, ValueError, TypeError) as e:
            msg = f"{type(e).__name__}: {e}"
            report.errors[msg] = report.errors.get(msg, 0) + 1
            continue
        if computed != item["answer"] or ds.score_answer(computed, item) < 1.0:
            report.mismatched += 1
            continue
        assert len(thoughts) == len(chunks) - 1
        out.append(
            {
                "id": f"{task}-{seed}-{idx}",
                "task": task,
                "question": " ".join(chunks),
                "chunks": chunks,
                "thoughts": thoughts,
                "deep": deep,
                "answer": computed,
                **extra,
            }
        )
    report.built = len(out)
    return out, report


def build_procedural(task: str, size: int, seed: int = 0, **knobs: Any) -> list[dict]:
    """Build ``size`` verified streaming episodes of a procedural task.

    Args:
        task: one of :data:`PROCEDURAL_TASKS`.
        size: number of episodes (fewer only if the generator runs out of matching items).
        seed: generator seed; the same (task, size, seed, knobs) gives the same records.
        **knobs: per-family difficulty knobs (module docstring).

    Returns:
        Records in the shared streaming-episode schema.

    Raises:
        ConfigError: unknown task (the message lists the valid ones), ``size < 1``, an unknown
            or invalid knob.
    """
    return build_procedural_with_report(task, size, seed, **knobs)[0]


# --------------------------------------------------------------------------- scoring


@lru_cache(maxsize=None)
def _scorer(task: str) -> Callable[[str | None, dict], float]:
    import reasoning_gym

    fam = _FAMILIES.get(task)
    return reasoning_gym.create_dataset(fam.generator, size=1, seed=0).score_answer


def _extract(prediction: str | None) -> str | None:
    if prediction is None:
        return None
    if "\\boxed" in prediction:
        boxed = parse_answer(prediction)
        if boxed is not None:
            return boxed.strip()
    return prediction.strip()


def score(task: str, prediction: str | None, answer: str) -> bool:
    """Whether ``prediction`` (a bare answer, or text whose last ``\\boxed{}`` is the answer) is
    correct for ``answer``, by the reasoning-gym generator's own ``score_answer`` (full credit
    only). Graders of every task: :func:`adasr.tasks.registry.get_task`.

    Raises:
        ConfigError: ``task`` is not a procedural task.
    """
    fn = _scorer(task)
    pred = _extract(prediction)
    if pred is None or pred == "":
        return False
    return fn(pred, {"answer": str(answer), "metadata": {}}) >= 1.0
