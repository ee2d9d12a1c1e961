"""Proactive streaming benchmark (after StreamPro-Bench), built without a teacher model.

In *proactive* streaming the model decides **when** to answer: after each chunk it stays silent
(an empty streaming thought), or it commits ``\\boxed{answer}`` and the episode ends there. Every
item tells when that is right: ``evidence_chunk``, the 0-based index of the earliest chunk after
which the answer is determined by the chunks so far (our definitions per family, below).

Record (the shared streaming-episode schema of :mod:`adasr.tasks.streamify`, plus two fields)::

    id, task, question (the chunks joined by spaces), chunks (N), thoughts, deep, answer,
    evidence_chunk (int, 0 <= e < N), response ("\\boxed{<answer>}")

* ``thoughts`` = ``[""] * e + [response]`` (``e + 1`` entries, at most N): silent after every
  chunk before the evidence, the response right after it (with ``notes``: notes instead of
  silences; with ``continuation``: turns after the response too,
  :func:`~adasr.tasks.proactive.base.continue_record`). The **proactive layout** of an SFT
  example is chunks ``0..e`` with those turns ("silent, ..., silent, respond") and nothing after
  (no end-of-input turn, no deep stage); :func:`~adasr.tasks.proactive.base.proactive_turns`
  gives its ``(chunk, thought)`` pairs. The chunks after ``e`` are part of the item (a benchmark
  streams them all, and a model that waits past the evidence is late).
* ``deep`` = ``""``: the proactive layout has no deep stage. A read-then-answer baseline
  renders all chunks, the end-of-input turn, then ``response`` as the deep stage. Rendering the
  record as a plain ``streaming`` episode (``adasr.train.sft_data.row_episode``) raises (no turn
  after chunk ``e + 1``), on purpose.

Families (``task`` names), one module each with its definitions, knobs and phrasings
-------------------------------------------------------------------------------------
The question always comes first (chunk 0); every chunk is one sentence.

* ``proactive_perception`` (:mod:`~adasr.tasks.proactive.perception`): one stated fact among
  others ("Tell me the temperature reported by sensor Bravo." ... "Sensor Bravo reports 23
  degrees."); evidence: the chunk stating it.
* ``proactive_temporal`` (:mod:`~adasr.tasks.proactive.temporal`): temporal reasoning over a
  timestamped log ("... tell me whether the alarm rang before the door opened." "At 09:10 the
  door opened." ...); evidence: the chunk that settles it.
* ``proactive_threshold`` (:mod:`~adasr.tasks.proactive.threshold`): act as soon as a condition
  holds (a running total exceeds a threshold, the first number with a property); evidence: the
  chunk where it first holds.
* ``proactive_gsm8k`` (:mod:`~adasr.tasks.proactive.gsm8k`, needs ``source``): a GSM8K problem
  reordered, question first; evidence: the last fact sentence the reference solution needs.

The generated families (the first three) are each a
:class:`~adasr.tasks.proactive.base.GeneratedFamily` whose sentences come from phrasing templates
(:mod:`~adasr.tasks.proactive.base`: a new phrasing is one more string in the family's tuple;
every 4th phrasing is held out of training, knob ``templates``); every family, procedural ones
included, shares the registry and knob readers of :mod:`adasr.tasks.families`. Building, and the
knobs every generated family takes (``templates``, distractor sentences, ``continuation`` past
the answer for training with revisions): :mod:`~adasr.tasks.proactive.build`; grading:
:mod:`~adasr.tasks.proactive.scoring`.

Validation, determinism, splits
-------------------------------
Each generated item is re-read by its family's *solver*, which parses the chunk texts in order
and finds the earliest chunk after which the answer is settled (with the rules above);
its answer and evidence must match the generator's, and items it cannot settle are rejected.
Rejections are counted by reason in :class:`~adasr.tasks.proactive.base.ProactiveReport`
(``message()`` says it in one line).

Item ``i`` of a generated family depends only on ``(task, split, seed, i)`` (a string-seeded
``random.Random``), so a split is a stable sequence: a larger ``size`` extends a smaller build.
``split="test"`` items are the held-out set; ``split="train"`` skips every item whose question
(:func:`adasr.tasks.splits.normalize_question`) is among the first ``heldout_size`` (default
:data:`~adasr.tasks.proactive.build.DEFAULT_HELDOUT_SIZE`) test items of the same seed and knobs,
and checks the result with :func:`adasr.tasks.splits.assert_disjoint`. Duplicate questions
within a build are rejected. For ``proactive_gsm8k`` the test split is the last ``heldout``
problems of ``source`` (the project's GSM8K held-out set), the train split the others minus any
whose question also occurs in the test split.
"""

from adasr.tasks.proactive.base import ProactiveReport, Rejected, make_record, proactive_turns
from adasr.tasks.proactive.build import (
    DEFAULT_HELDOUT_SIZE,
    PROACTIVE_TASKS,
    SPLITS,
    build_proactive,
    build_proactive_with_report,
)
from adasr.tasks.proactive.gsm8k import gsm8k_evidence
from adasr.tasks.proactive.scoring import score

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
