"""Build the proactive training mix for Qwen2.5-Coder-0.5B and the held-out evaluation sets of
issue 24 into ``data/proactive/`` (no model, seconds on a CPU), and check that no held-out question
occurs in any training file there.

    python tools/build_proactive_data.py            # writes the files below, then checks
    python tools/build_proactive_data.py --check    # only checks the files already there

Files (seed 0; knobs in :data:`TRAIN` and :data:`HELDOUT`; the knobs: ``adasr.tasks.proactive``):

* ``qwen_mix_train.jsonl``: 1200 training streams, shuffled: 600 ``proactive_threshold``
  (weighted toward ``total`` streams, divisibility and negative running totals), 300
  ``proactive_perception``, 300 ``proactive_temporal``; all with state notes, phrased from the
  **training templates**, with distractor sentences, and **continued past the answer**
  (silence after it, or a wrong first answer corrected at the next chunk in 25% of the streams
  where a chunk with a turn follows the evidence).
* ``qwen_mix_check_train.jsonl``: the same 1200 streams, but each threshold ``total`` note ends
  with its comparison to the threshold ("12 + 7 = 19. 19 > 25? no."; :data:`MIXES`).
* ``qwen_mix_more_train.jsonl``: the check mix with more phrasings of a ``total`` question: the
  threshold streams use template set ``more`` (training phrasings plus training-only ones that
  no held-out file uses).
* ``qwen_mix_wide_train.jsonl``: the check mix with every family phrased from template set
  ``wide`` (``more`` plus training-only phrasings of the ``first`` questions and conditions and of
  the temporal premises and questions).
* ``qwen_mix_wider_train.jsonl``: the wide mix with the perception questions phrased from
  template set ``wider`` (``wide`` plus training-only perception questions).
* ``qwen_mix_widest_train.jsonl``: the wider mix with the perception facts phrased from template
  set ``widest`` (``wider`` plus training-only perception facts).
* ``qwen_mix_compare_train.jsonl``: the wide mix with perception notes that compare the fact's
  pair with the asked one ("Felix home = Felix work? no.", knob ``compare``) and corrections
  of premature answers at the evidence chunk instead of at the chunk after a wrong answer (knob
  ``correction_at=premature``).
* ``qwen_mix_revise_train.jsonl``: the wide mix's items with a premature wrong answer corrected at
  the evidence chunk wherever one can be placed (``correction_at=premature``, ``correction_prob=1``).
* ``qwen_rl_pool_train.jsonl``: the widest mix's knobs on other items (seed 1): the pool of
  training streams for GRPO, whose rollouts must disagree for the group advantages to carry signal
  (``tools/select_rl_streams.py``).
* ``{pt,pp,ptm}_test_items.jsonl``: 100 held-out streams per family (threshold, perception,
  temporal; ``split=test``) on **held-out items**: training templates, the default difficulty,
  the same distractor settings as training.
* ``{pt,pp,ptm}_test_templates.jsonl``: 100 per family on **held-out templates**: the same knobs
  but every sentence (question, facts, distractors) phrased from the held-out templates, which no
  training stream uses.

* ``{pt,pp,ptm}_val.jsonl``: 100 validation streams per family on **other training-template
  items** (``split=train``, seed 7, the held-out files' knobs): for choosing an inference setting
  (the commit threshold, docs/DESIGN.md) without looking at a held-out file. A stream whose
  question is in a training or held-out file is dropped.

The check (also run by ``tests/test_proactive_templates.py`` on the committed files): the
questions of every ``*_test*.jsonl`` file here are disjoint from those of every ``*train*.jsonl``
file here (the SmolLM2 mix included). A build first drops any training stream whose question is
in a held-out file (none expected; the count is printed), then checks.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from adasr.jsonl import read_jsonl, write_jsonl
from adasr.protocol import parse_answer
from adasr.tasks.proactive import build_proactive_with_report
from adasr.tasks.splits import assert_disjoint, heldout_questions, normalize_question

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "data" / "proactive"

STREAM = dict(distractor_prob=0.15, min_tail=0, max_tail=2)
"""Distractor sentences of every file: before each fact with probability 0.15, 0-2 after the facts."""

TRAIN: dict[str, tuple[int, dict]] = {
    "proactive_threshold": (600, dict(total_prob=0.6, divisible_prob=0.4, negative_prob=0.3)),
    "proactive_perception": (300, {}),
    "proactive_temporal": (300, {}),
}
"""Training streams per family and the family's own knobs; every family adds
``templates=train, notes=True, continuation=True, correction_prob=0.25`` and :data:`STREAM`."""

MIXES: dict[str, dict[str, dict]] = {
    "qwen_mix_train.jsonl": {},
    "qwen_mix_check_train.jsonl": {"proactive_threshold": {"total_check": True}},
    "qwen_mix_more_train.jsonl": {"proactive_threshold": {"total_check": True, "templates": "more"}},
    "qwen_mix_wide_train.jsonl": {"proactive_threshold": {"total_check": True, "templates": "wide"},
                                  "proactive_perception": {"templates": "wide"},
                                  "proactive_temporal": {"templates": "wide"}},
    "qwen_mix_wider_train.jsonl": {"proactive_threshold": {"total_check": True, "templates": "wider"},
                                   "proactive_perception": {"templates": "wider"},
                                   "proactive_temporal": {"templates": "wider"}},
    "qwen_mix_widest_train.jsonl": {"proactive_threshold": {"total_check": True, "templates": "widest"},
                                    "proactive_perception": {"templates": "widest"},
                                    "proactive_temporal": {"templates": "widest"}},
    "qwen_mix_compare_train.jsonl": {"proactive_threshold": {"total_check": True, "templates": "wide",
                                                             "correction_at": "premature"},
                                     "proactive_perception": {"templates": "wide", "compare": True,
                                                              "correction_at": "premature"},
                                     "proactive_temporal": {"templates": "wide", "correction_at": "premature"}},
}
"""The training mixes: file name -> extra knobs per family. ``qwen_mix_check_train.jsonl`` is
``qwen_mix_train.jsonl`` stream for stream (the same items, order and turns) except that each
threshold ``total`` note ends with its comparison to the threshold ("19 > 25? no.", knob
``total_check``). ``qwen_mix_more_train.jsonl`` is the check mix with the threshold streams
phrased from template set ``more`` (the training phrasings plus the training-only ``total``
questions, ``threshold.TOTAL_QUESTIONS_MORE``); its threshold items differ (other draws).
``qwen_mix_wide_train.jsonl`` phrases every family from template set ``wide``: ``more`` plus
training-only phrasings of the ``first`` questions, their conditions and the temporal premises
and questions (``threshold.FIRST_QUESTIONS_WIDE``, ``threshold.CONDITIONS_WIDE``,
``temporal.PREMISES_WIDE``, ``temporal.QUESTIONS_WIDE``); perception has none, so its streams are
those of the check mix. ``qwen_mix_wider_train.jsonl``: template set ``wider``, ``wide`` plus
training-only perception questions (``perception.QUESTIONS_WIDER``); its threshold and temporal
streams are those of the wide mix. ``qwen_mix_widest_train.jsonl``: template set ``widest``,
``wider`` plus training-only perception facts (``perception.FACTS_WIDEST``).
``qwen_mix_compare_train.jsonl``: the items of the wide mix (the same draws; only the perception
notes and the continuations differ) with the knobs of issue 24's two remaining misses: perception
notes naming the asked pair (``compare``) and premature answers corrected at the evidence
(``correction_at="premature"``). ``qwen_mix_revise_train.jsonl``: the wide mix's items with every
premature correction the knob can place (``correction_at="premature"``, ``correction_prob=1``): the
revision knob of RESULTS §38 (a correction comes only with the evidence, so more of them cannot
teach a change of a right answer)."""

MIXES["qwen_mix_revise_train.jsonl"] = {task: {**knobs, "correction_at": "premature", "correction_prob": 1.0}
                                         for task, knobs in MIXES["qwen_mix_wide_train.jsonl"].items()}

MIXES["qwen_mix_revise_checks_train.jsonl"] = {task: {**knobs, "after_answer": "checks"}
                                                for task, knobs in MIXES["qwen_mix_revise_train.jsonl"].items()}
"""The revise mix with the model checking on after its answer (``after_answer="checks"``): the same
items, wrong answers and corrections; after the response, each chunk's failed check ("Wen work?
no.") in place of silence (RESULTS §40)."""

MIXES["qwen_mix_revise_confirm_train.jsonl"] = {task: {**knobs, "after_answer": "confirm"}
                                                 for task, knobs in MIXES["qwen_mix_revise_train.jsonl"].items()}
"""The revise mix with held checks after the answer confirming it (``after_answer="confirm"``): the
knob RESULTS §40 points to after ``checks`` revised 43 right threshold answers."""

MIX_SEEDS: dict[str, int] = {"qwen_rl_pool_train.jsonl": 1}
"""Mixes drawn with another seed than 0 (other items): the GRPO pool, from which
``tools/select_rl_streams.py`` keeps the streams on which sampled rollouts of the SFT policy disagree."""
MIXES["qwen_rl_pool_train.jsonl"] = MIXES["qwen_mix_widest_train.jsonl"]

HELDOUT: dict[str, str] = {"proactive_threshold": "pt", "proactive_perception": "pp", "proactive_temporal": "ptm"}
"""The held-out files' prefixes: ``<prefix>_test_items.jsonl`` and ``<prefix>_test_templates.jsonl``."""

HELDOUT_SIZE = 100

VAL_SEED = 7
"""The validation files' seed (training items of seed 0 and the GRPO pool's seed 1 are others)."""


def heldout_files(out: Path) -> list[Path]:
    """The held-out files in ``out`` (every ``*_test*.jsonl``)."""
    return sorted(out.glob("*_test*.jsonl"))


def val_files(out: Path) -> list[Path]:
    """The validation files in ``out`` (every ``*_val.jsonl``)."""
    return sorted(out.glob("*_val.jsonl"))


def train_files(out: Path) -> list[Path]:
    """The training files in ``out`` (every ``*train*.jsonl``)."""
    return sorted(out.glob("*train*.jsonl"))


def check(out: Path) -> int:
    """Raise ``DataError`` if a held-out or validation question of ``out`` occurs in a training
    file of ``out``, or a held-out question in a validation file; returns the number of held-out
    questions checked."""
    held = heldout_questions(heldout_files(out))
    val = heldout_questions(val_files(out)) if val_files(out) else set()
    for path in train_files(out):
        questions = [r["question"] for r in read_jsonl(path)]
        assert_disjoint(questions, held, f"training file {path.name}")
        assert_disjoint(questions, val, f"training file {path.name} (validation questions)")
    for path in val_files(out):
        assert_disjoint((r["question"] for r in read_jsonl(path)), held, f"validation file {path.name}")
    return len(held)


def build(out: Path) -> None:
    """Write the files of the module docstring into ``out``, then :func:`check` them."""
    for task, prefix in HELDOUT.items():
        for name, templates in (("items", "train"), ("templates", "heldout")):
            recs, report = build_proactive_with_report(task, HELDOUT_SIZE, 0, split="test", templates=templates, **STREAM)
            write_jsonl(recs, out / f"{prefix}_test_{name}.jsonl")
            print(f"{prefix}_test_{name}.jsonl: {report.message()}")
    held = heldout_questions(heldout_files(out))
    for name, extra in MIXES.items():
        mix: list[dict] = []
        for task, (size, knobs) in TRAIN.items():
            recs, report = build_proactive_with_report(task, size, MIX_SEEDS.get(name, 0), **{
                "split": "train", "templates": "train", "notes": True, "continuation": True, "correction_prob": 0.25,
                **STREAM, **knobs, **extra.get(task, {})})
            kept = [r for r in recs if normalize_question(r["question"]) not in held]
            print(f"{name} {task}: {report.message()}; {len(recs) - len(kept)} dropped (question in a held-out file)")
            mix += kept
        random.Random(0).shuffle(mix)
        write_jsonl(mix, out / name)
        corrections = sum(any(a is not None and a != r["answer"] for a in map(parse_answer, r["thoughts"]))
                          for r in mix)  # a wrong first answer (at the evidence, or premature)
        print(f"{name}: {len(mix)} streams, {corrections} with a corrected first answer")
    used = held | {normalize_question(r["question"]) for p in train_files(out) for r in read_jsonl(p)}
    for task, prefix in HELDOUT.items():
        recs, report = build_proactive_with_report(task, HELDOUT_SIZE + 20, VAL_SEED, split="train", templates="train",
                                                   **STREAM)
        fresh = [r for r in recs if normalize_question(r["question"]) not in used]
        write_jsonl(fresh[:HELDOUT_SIZE], out / f"{prefix}_val.jsonl")
        print(f"{prefix}_val.jsonl: {report.message()}; {len(recs) - len(fresh)} dropped (question in a training or "
              f"held-out file), kept the first {min(HELDOUT_SIZE, len(fresh))}")
    n = check(out)
    print(f"checked: none of {n} held-out questions is in {', '.join(p.name for p in train_files(out))}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT, help="the data folder (default data/proactive)")
    ap.add_argument("--check", action="store_true", help="only check the files already there")
    args = ap.parse_args(argv)
    if args.check:
        print(f"checked: none of {check(args.out)} held-out questions is in a training file of {args.out}")
    else:
        build(args.out)


if __name__ == "__main__":
    sys.exit(main())
