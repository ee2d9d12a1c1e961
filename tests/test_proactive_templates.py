"""Proactive families, issue 24: phrasing templates and their train / held-out split, distractor
sentences, state notes of perception and temporal, the threshold weights, records continued past
the answer (and how SFT renders them), and the committed data files of data/proactive/ with
their overlap check (tools/build_proactive_data.py)."""

from __future__ import annotations

import functools
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adasr.errors import ConfigError, DataError
from adasr.jsonl import read_jsonl
from adasr.protocol import STAGE_INPUT, StreamingFormat, is_response, parse_answer
from adasr.stream import split_sentences
from adasr.tasks.proactive import build_proactive, build_proactive_with_report, make_record, perception, score
from adasr.tasks.proactive import temporal, threshold
from adasr.train.sft_data import context_turns
from adasr.tasks.proactive.base import (
    DISTRACTORS,
    TRAINING_ONLY_SETS,
    NAMES,
    add_training_phrasings,
    continue_record,
    interleave,
    is_distractor,
    pick,
    template_re,
    template_subset,
    training_phrasings,
)
from script_helpers import load_script

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "proactive"
TOOL = REPO / "tools" / "build_proactive_data.py"
GENERATED = ("proactive_perception", "proactive_temporal", "proactive_threshold")


def _tool():
    return load_script("tools/build_proactive_data.py")


# ---------------------------------------------------------------------------------------------
# Every template tuple, and which phrasings a stream used

FIELDS = dict(n=r"\d+", name=r"[A-Z][a-z]+", threshold=r"\d+", k=r"\d+", time=r"\d\d:\d\d", event=".+",
              Event="[A-Z].+", a=".+", b=".+", condition=".+")


def _tuples() -> dict[str, dict[str, tuple[str, ...]]]:
    """Family -> tuple name -> phrasings (every template tuple of the generated families)."""
    th = {"total question": threshold.TOTAL_QUESTIONS, "first question": threshold.FIRST_QUESTIONS,
          "number": threshold.NUMBER_LINES, **{f"step {op}": lines for op, lines in threshold.STEP_LINES.items()},
          **{f"condition {i}": c.phrasings for i, c in enumerate(threshold.CONDITIONS)}}
    pe = {f"{attr} {part}": getattr(a, part) for _, attrs in perception.SCENES.values()
          for attr, a in attrs.items() for part in ("questions", "facts")}
    tm = {"event line": temporal.EVENT_LINES, **{f"premise {o}": p for o, p in temporal.PREMISES.items()},
          **{f"{kind} question": q for kind, q in temporal.QUESTIONS.items()}}
    return {"proactive_threshold": th, "proactive_perception": pe, "proactive_temporal": tm,
            "distractors": {"distractor": DISTRACTORS}}


@functools.lru_cache(maxsize=None)
def _patterns(task: str) -> tuple[tuple[str, int, re.Pattern], ...]:
    """``(tuple name, index, regex)`` of every phrasing of ``task`` and of the distractors (the
    premises' first letter in lower case)."""
    tuples = {**_tuples()[task], **_tuples()["distractors"]}
    return tuple((name, i, template_re(p[0].lower() + p[1:] if name.startswith("premise") else p, **FIELDS))
                 for name, phr in tuples.items() for i, p in enumerate(phr))


def _used(task: str, chunks: list[str]) -> set[tuple[str, int]]:
    """The ``(tuple name, index)`` of every phrasing the stream's sentences match (the temporal
    question split into premise and question; a threshold ``first`` question's condition too)."""
    texts = list(chunks)
    if task == "proactive_temporal":
        premise, rest = chunks[0].split("; ", 1)
        texts[0:1] = [premise[0].lower() + premise[1:] + "; ", rest]
    used: set[tuple[str, int]] = set()
    for text in texts:
        hits = {(name, i) for name, i, rx in _patterns(task) if rx.match(text)}
        assert hits, f"no template writes {text!r}"
        used |= hits
        if task == "proactive_threshold" and any(name == "first question" for name, _ in hits):
            cond = next(m for p in threshold.FIRST_QUESTIONS if (m := template_re(p, condition=".+").match(text)))
            used |= {(f"condition {c}", i) for c, cd in enumerate(threshold.CONDITIONS) for i, p in
                     enumerate(cd.phrasings) if template_re(p, k=r"\d+").match(cond.group("condition"))}
    return used


def test_every_tuple_has_4_phrasings_split_into_disjoint_train_and_heldout_sets():
    for task, tuples in _tuples().items():
        for name, phrasings in tuples.items():
            assert len(phrasings) >= 4 and len(set(phrasings)) == len(phrasings), (task, name)
            train, held = template_subset(phrasings, "train"), template_subset(phrasings, "heldout")
            assert held and train and not set(train) & set(held), (task, name)
            assert sorted(train + held) == sorted(phrasings) == sorted(template_subset(phrasings, "all"))
            assert template_subset(phrasings, "first") == (phrasings[0],) and phrasings[0] in train
            assert held == tuple(phrasings[3::4])  # the last of every 4
    with pytest.raises(ValueError, match="no held-out phrasing"):
        template_subset(("a", "b", "c"), "heldout")
    with pytest.raises(ValueError, match="unknown template set"):
        template_subset(("a",), "dev")
    rng = random.Random(0)
    assert {pick(rng, ("a", "b", "c", "d", "e"), "heldout") for _ in range(20)} == {"d"}
    state = rng.getstate()
    assert pick(rng, ("a", "b"), "first") == "a" and rng.getstate() == state  # first draws nothing


def test_training_only_phrasings_extend_train_and_move_no_heldout_phrasing():
    q = threshold.TOTAL_QUESTIONS
    more = template_subset(q, "more")
    assert more == template_subset(q, "train") + threshold.TOTAL_QUESTIONS_MORE == template_subset(q, "train") + training_phrasings(q)
    assert not set(more) & set(template_subset(q, "heldout")) and template_subset(q, "all") == q
    assert template_subset(threshold.NUMBER_LINES, "more") == template_subset(threshold.NUMBER_LINES, "train")  # none added
    for bad in ((q[3],), ("x {threshold}.", "x {threshold}."), ("{nope} over.",)):
        with pytest.raises(ValueError):
            add_training_phrasings(q, bad)
    assert training_phrasings(q) == threshold.TOTAL_QUESTIONS_MORE  # a failed registration changes nothing
    recs = build_proactive("proactive_threshold", 120, 0, split="train", templates="more", kind="total", notes=True)
    heads = {r["chunks"][0] for r in recs}
    extra = [rx for rx in (template_re(p, threshold=r"\d+") for p in threshold.TOTAL_QUESTIONS_MORE)]
    assert sum(any(rx.match(h) for rx in extra) for h in heads) > 40  # the solver reads them (else rejected)
    assert all(split_sentences(r["question"]) == r["chunks"] for r in recs)  # one sentence a chunk
    assert not any(template_re(p, threshold=r"\d+").match(h) for p in template_subset(q, "heldout") for h in heads)


SAMPLE = dict(n="7", name="Maria", threshold="30", k="5", time="09:10", event="the door opened",
              Event="The door opened", a="the alarm rang", b="the door opened", condition="divisible by 5", e="B", v="12")


def test_wide_extends_more_and_every_phrasing_is_read_as_its_own_tuple():
    """Each template set of TRAINING_ONLY_SETS = the one before it + its own training-only
    phrasings (``more`` = ``train`` + its own), none held out; and no
    sentence any phrasing (training-only ones included) writes is matched by another tuple's
    phrasing of the same family, so a solver cannot read a question as another kind."""
    added = 0
    for task, tuples in _tuples().items():
        rxs = [(name, template_re(p[0].lower() + p[1:] if name.startswith("premise") else p, **FIELDS))
               for name, phr in tuples.items() for p in phr + training_phrasings(phr)]
        for name, phr in tuples.items():
            train, held = template_subset(phr, "train"), template_subset(phr, "heldout")
            sets = [template_subset(phr, w) for w in TRAINING_ONLY_SETS]  # more, wide, wider, widest
            for w, this, before in zip(TRAINING_ONLY_SETS, sets, [train] + sets):
                assert this == train + training_phrasings(phr, w) and this[:len(before)] == before, (task, name, w)
            assert sets[-1] == train + training_phrasings(phr) and not set(sets[-1]) & set(held), (task, name)
            added += len(sets[-1]) - len(sets[0])
            for p in phr + training_phrasings(phr):
                text = p.format(**SAMPLE)
                text = text[0].lower() + text[1:] if name.startswith("premise") else text
                assert {n for n, rx in rxs if rx.match(text)} == {name}, (task, name, text)
    assert added >= 80
    with pytest.raises(ValueError, match="already has"):
        add_training_phrasings(threshold.FIRST_QUESTIONS, ("Name it when one is {condition}.",), "wide")
    with pytest.raises(ValueError, match="new and distinct"):  # one of its `wide` phrasings again
        add_training_phrasings(threshold.CONDITIONS[1].phrasings, ("over {k}",), "more")
    with pytest.raises(ValueError, match="belong to one of"):
        add_training_phrasings(threshold.NUMBER_LINES, ("Say {n}.",), "dev")


@pytest.mark.parametrize("task", GENERATED)
def test_widest_streams_use_training_and_training_only_phrasings_and_no_heldout_one(task):
    """``widest`` streams (every training-only set), read by the solver (else rejected): every sentence is written by a
    training or training-only phrasing, never a held-out one; the training-only ones are drawn."""
    tuples = {**_tuples()[task], **_tuples()["distractors"]}
    lower = {name: name.startswith("premise") for name in tuples}

    def regexes(which):
        return [template_re(p[0].lower() + p[1:] if lower[name] else p, **FIELDS)
                for name, phr in tuples.items() for p in template_subset(phr, which)]

    wide, held, extra = regexes("widest"), regexes("heldout"), [
        template_re(p[0].lower() + p[1:] if lower[name] else p, **FIELDS)
        for name, phr in tuples.items() for p in training_phrasings(phr)]
    recs = build_proactive(task, 150, 3, split="train", templates="widest", distractor_prob=0.3, tail=1)
    n_extra = 0
    for r in recs:
        assert split_sentences(r["question"]) == r["chunks"]
        texts = list(r["chunks"])
        if task == "proactive_temporal":
            premise, rest = texts[0].split("; ", 1)
            texts[0:1] = [premise[0].lower() + premise[1:] + "; ", rest]
        if task == "proactive_threshold" and (m := next((m for p in template_subset(threshold.FIRST_QUESTIONS, "widest")
                                                          if (m := template_re(p, condition=".+").match(texts[0]))), None)):
            texts.append(m.group("condition"))
        for text in texts:
            assert any(rx.match(text) for rx in wide) and not any(rx.match(text) for rx in held), text
        n_extra += any(rx.match(t) for rx in extra for t in texts)
    assert n_extra > 30, n_extra


@pytest.mark.parametrize("task", GENERATED)
def test_heldout_streams_use_only_heldout_phrasings_and_train_streams_none(task):
    knobs = dict(distractor_prob=0.3, tail=1)
    tuples = {**_tuples()[task], **_tuples()["distractors"]}
    for which in ("train", "heldout"):
        used: set[tuple[str, int]] = set()
        for r in build_proactive(task, 150, 2, split="test", templates=which, **knobs):
            assert split_sentences(r["question"]) == r["chunks"]  # one sentence a chunk, every phrasing
            used |= _used(task, r["chunks"])
        held = {(name, i) for name, i in used if i % 4 == 3}
        assert (held == used) if which == "heldout" else not held, which
        # 150 streams draw every phrasing of the set (but the out-of-order premises: ordered=True)
        wanted = {(name, i) for name, phr in _tuples()[task].items() for i in range(len(phr))
                  if (i % 4 == 3) == (which == "heldout") and name != "premise False"}
        assert wanted <= used, sorted(wanted - used)


def test_default_builds_are_the_committed_files_byte_for_byte():
    """templates=first (the default) and no distractors draw nothing new: the committed held-out
    files and the SmolLM2 training mix rebuild exactly (data/proactive/README.md)."""
    for task, name in (("proactive_threshold", "pt"), ("proactive_perception", "pp"), ("proactive_temporal", "ptm")):
        assert build_proactive(task, 100, 0, split="test") == read_jsonl(DATA / f"{name}_test.jsonl")
    mix = sorted(read_jsonl(DATA / "mix_train.jsonl"), key=lambda r: r["id"])
    built = (build_proactive("proactive_threshold", 320, 0, split="train", notes=True)
             + build_proactive("proactive_perception", 160, 0, split="train")
             + build_proactive("proactive_temporal", 160, 0, split="train"))
    assert sorted(built, key=lambda r: r["id"]) == mix


@pytest.mark.parametrize("task", GENERATED)
def test_new_knobs_are_deterministic_and_the_splits_disjoint(task):
    knobs = dict(templates="all", distractor_prob=0.2, tail=(1 if task != "proactive_threshold" else 0),
                 notes=True, continuation=True, correction_prob=0.5)
    knobs["heldout_size"] = 200  # a train build skips the first 200 test items
    a = build_proactive(task, 60, 5, **knobs)
    assert a == build_proactive(task, 60, 5, **knobs) and build_proactive(task, 20, 5, **knobs) == a[:20]
    assert a != build_proactive(task, 60, 6, **knobs)
    test, report = build_proactive_with_report(task, 200, 5, split="test", **knobs)
    assert "generator and solver disagree" not in report.rejected
    assert not {r["question"].lower() for r in a} & {r["question"].lower() for r in test}


# ---------------------------------------------------------------------------------------------
# Distractors


def test_distractors_are_skipped_and_never_read_as_facts():
    rng = random.Random(1)
    sentences = {d.format(name=rng.choice(NAMES), n=rng.randint(2, 40)) for d in DISTRACTORS for _ in range(5)}
    assert all(is_distractor(s) for s in sentences)
    facts = [p for tuples in (_tuples()[t] for t in GENERATED) for phr in tuples.values() for p in phr]
    for s in sentences:
        assert not any(template_re(p, **FIELDS).match(s) for p in facts), s
    assert not is_distractor("Add 5.") and not is_distractor("Sensor Bravo reports 23 degrees.")
    q = "The total starts at 0; tell me the running total as soon as it exceeds 20."
    # the new user's shape: question, facts, then unrelated sentences (numbers included)
    assert threshold.solve([q, "Add 12.", "Maria is 30 years old.", "Add 9.", "There were 7 chairs in the room."]) == \
        ("21", 3)
    assert threshold.state_notes([q, "Add 12.", "Maria is 30 years old.", "Add 9."], 3) == \
        ["", "0 + 12 = 12.", "", "12 + 9 = 21."]


def test_interleave_maps_the_evidence_and_keeps_the_item():
    chunks = ["Q.", "F1.", "F2.", "F3."]
    same, where = interleave(random.Random(0), chunks, 0.0, (0, 0))
    assert same == chunks and where == [0, 1, 2, 3]
    out, where = interleave(random.Random(0), chunks, 0.99, (2, 2), "heldout")
    assert [out[k] for k in where] == chunks and len(out) == 4 + 3 + 2
    assert all(is_distractor(c) for i, c in enumerate(out) if i not in where) and is_distractor(out[-1])
    heldout = [template_re(d, name=r"[A-Z][a-z]+", n=r"\d+") for d in template_subset(DISTRACTORS, "heldout")]
    assert all(any(rx.match(c) for rx in heldout) for i, c in enumerate(out) if i not in where)
    for task in GENERATED:
        plain = build_proactive(task, 30, 3, split="test", templates="train")
        noisy = build_proactive(task, 30, 3, split="test", templates="train", distractor_prob=0.3, min_tail=1, max_tail=2)
        assert len(plain) == len(noisy)
        for a, b in zip(plain, noisy):  # the same items, the same answers, with distractors among them
            assert [c for c in b["chunks"] if not is_distractor(c)] == a["chunks"] and a["answer"] == b["answer"]
            assert b["chunks"][b["evidence_chunk"]] == a["chunks"][a["evidence_chunk"]]
            assert is_distractor(b["chunks"][-1])
    with pytest.raises(ConfigError, match="distractor_prob"):
        build_proactive("proactive_perception", 2, distractor_prob=1.0)


def test_out_of_order_after_is_settled_by_the_last_chunk_whatever_it_is():
    recs = build_proactive("proactive_temporal", 40, 0, split="test", ordered=False, kinds="after", tail=1)
    assert all(r["evidence_chunk"] == len(r["chunks"]) - 1 and is_distractor(r["chunks"][-1]) for r in recs)


# ---------------------------------------------------------------------------------------------
# State notes of perception and temporal


def test_perception_notes_hand_checked():
    chunks = ["Tell me the temperature reported by sensor Bravo.", "Sensor Alpha reports 21 degrees.",
              "Maria made a cup of tea.", "Sensor Bravo reports 55 percent humidity.", "Sensor Bravo reads 23 degrees."]
    assert perception.solve(chunks) == ("23", 4)
    assert perception.state_notes(chunks, 4) == ["", "Alpha temperature? no.", "", "Bravo humidity? no.",
                                                 "Bravo temperature? yes."]
    rec = make_record("proactive_perception", "x", chunks, 4, "23", perception.state_notes(chunks, 4))
    assert rec["thoughts"][-1] == "Bravo temperature? yes. \\boxed{23}"
    people = ["Let me know which city Omar works in.", "Omar has a home in Oslo.", "The office of Omar is in Lima."]
    assert perception.solve(people) == ("Lima", 2)
    assert perception.state_notes(people, 2) == ["", "Omar home? no.", "Omar work? yes."]

    compare = {"compare": True}
    assert perception.state_notes(people, 2, compare) == ["", "Omar home = Omar work? no.", "Omar work = Omar work? yes."]
    assert perception.state_notes(chunks, 4, compare)[1:] == [
        "Alpha temperature = Bravo temperature? no.", "", "Bravo humidity = Bravo temperature? no.",
        "Bravo temperature = Bravo temperature? yes."]


def test_compare_knob_changes_only_the_perception_notes():
    plain = build_proactive("proactive_perception", 40, 2, split="test", templates="train", notes=True)
    compared = build_proactive("proactive_perception", 40, 2, split="test", templates="train", notes=True, compare=True)
    for a, b in zip(plain, compared):
        assert {k: v for k, v in a.items() if k != "thoughts"} == {k: v for k, v in b.items() if k != "thoughts"}
        asked = re.search(r"= (\w+ \w+)\? yes\.", b["thoughts"][-1]).group(1)
        for x, y in zip(a["thoughts"], b["thoughts"]):
            assert (x == y == "") or y == x.replace("?", f" = {asked}?", 1)
    with pytest.raises(ConfigError, match="compare"):
        build_proactive("proactive_temporal", 2, compare=True)

def test_temporal_notes_hand_checked():
    log = ["At 09:00 the lights turned on.", "At 09:10 the alarm rang.", "Nobody said anything for a while.",
           "At 09:25 the door opened.", "At 09:40 the dog barked."]
    ordered = "The log lists events in time order; "
    before = [ordered + "tell me whether the door opened before the alarm rang.", *log]
    assert temporal.solve(before) == ("no", 2)
    assert temporal.state_notes(before, 2) == ["", "", "the alarm rang at 09:10, first."]
    after = [ordered + "tell me what happened right after the alarm rang.", *log]
    assert temporal.solve(after) == ("the door opened", 4)  # the distractor between settles nothing
    assert temporal.state_notes(after, 4) == ["", "", "the alarm rang at 09:10.", "", "next: the door opened."]
    interval = [ordered + "tell me how many minutes passed from when the lights turned on to when the dog barked.", *log]
    assert temporal.state_notes(interval, 5) == ["", "the lights turned on at 09:00.", "", "", "",
                                                 "09:40 - 09:00 = 40 minutes."]
    shuffled = [log[3], log[0], log[1], "Maria hummed a song.", log[4]]  # door 09:25, lights 09:00, alarm 09:10, dog
    unordered = "The log lists events out of time order; "
    b = [unordered + "tell me whether the alarm rang before the door opened.", *shuffled]
    assert temporal.solve(b) == ("yes", 3)
    assert temporal.state_notes(b, 3) == ["", "the door opened at 09:25.", "", "09:10 < 09:25? yes."]
    a = [unordered + "tell me what happened right after the lights turned on.", *shuffled]
    assert temporal.solve(a) == ("the alarm rang", 5)  # the last chunk, though a log line could have come
    assert temporal.state_notes(a, 5) == [
        "", "", "the lights turned on at 09:00. next so far: the door opened at 09:25.",
        "next so far: the alarm rang at 09:10.", "", ""]


@pytest.mark.parametrize("task", ("proactive_perception", "proactive_temporal"))
def test_notes_knob_changes_only_the_thoughts(task):
    knobs = dict(templates="train", distractor_prob=0.2, ordered=False) if task == "proactive_temporal" else \
        dict(templates="train", distractor_prob=0.2)
    plain = build_proactive(task, 40, 3, split="test", **knobs)
    noted = build_proactive(task, 40, 3, split="test", notes=True, **knobs)
    for a, b in zip(plain, noted):
        assert {k: v for k, v in a.items() if k != "thoughts"} == {k: v for k, v in b.items() if k != "thoughts"}
        assert b["thoughts"][-1].endswith(b["response"]) and len(b["thoughts"]) == b["evidence_chunk"] + 1
        assert all(t == "" for c, t in zip(b["chunks"], b["thoughts"][:-1]) if is_distractor(c))
        assert score(task, parse_answer(b["thoughts"][-1]), b["answer"])
    assert sum(bool(t) for r in noted for t in r["thoughts"][:-1]) > len(noted)  # notes before the evidence


# ---------------------------------------------------------------------------------------------
# Threshold weights


def test_threshold_weights():
    def kind(r):
        return "total" if threshold._read(r["chunks"])[0] == "total" else "first"

    def build(**knobs):
        return build_proactive("proactive_threshold", 40, 0, split="test", **knobs)

    assert {kind(r) for r in build(total_prob=1.0)} == {"total"}
    assert {kind(r) for r in build(total_prob=0.0)} == {"first"}
    div = build(kind="first", divisible_prob=1.0, notes=True)
    assert all("divisible by" in r["thoughts"][-1] for r in div)
    neg = build(kind="total", negative_prob=1.0, notes=True)
    assert all(r["thoughts"][1].startswith("0 - ") for r in neg)
    assert sum(any(" = -" in t for t in r["thoughts"]) for r in neg) > 20  # the total goes below 0
    with pytest.raises(ConfigError, match="total_prob weighs the kinds of kind=mixed"):
        build_proactive("proactive_threshold", 2, kind="first", total_prob=0.5)
    with pytest.raises(ConfigError, match="negative_prob must be a number in"):
        build_proactive("proactive_threshold", 2, negative_prob=2)


# ---------------------------------------------------------------------------------------------
# Continuation past the answer (training for --revisions 1)


def test_continue_record_silence_and_correction():
    chunks = ["Q.", "A.", "B.", "C.", "D."]
    rec = make_record("proactive_threshold", "x", chunks, 1, "7", ["", "3 + 4 = 7."])
    assert continue_record(rec)["thoughts"] == ["", "3 + 4 = 7. \\boxed{7}", "", ""]  # chunk 4 closes: no turn
    fixed = continue_record(rec, "3 + 4 = 8. \\boxed{8}")
    assert fixed["thoughts"] == ["", "3 + 4 = 8. \\boxed{8}", "3 + 4 = 7. \\boxed{7}"]
    assert context_turns(fixed) == [1] and context_turns(rec) == [] and fixed["chunks"] == chunks
    with pytest.raises(ValueError, match="does not commit a wrong answer"):
        continue_record(rec, "\\boxed{7}")
    with pytest.raises(ValueError, match="already has"):
        continue_record(fixed)
    late = make_record("proactive_threshold", "y", chunks, 3, "7")
    with pytest.raises(ValueError, match="no turn after chunk 4"):
        continue_record(late, "\\boxed{8}")
    assert continue_record(late)["thoughts"] == late["thoughts"]


@pytest.mark.parametrize("task", GENERATED)
def test_continuation_knob(task):
    base = build_proactive(task, 80, 4, split="test", templates="train", notes=True)
    cont = build_proactive(task, 80, 4, split="test", templates="train", notes=True, continuation=True,
                           correction_prob=0.5)
    corrected = 0
    for a, b in zip(base, cont):
        e, n = a["evidence_chunk"], len(a["chunks"])
        assert {k: v for k, v in a.items() if k != "thoughts"} == {k: v for k, v in b.items() if k != "thoughts"}
        assert b["thoughts"][:e] == a["thoughts"][:e]
        if context_turns(b):
            corrected += 1
            wrong = b["thoughts"][e]
            assert context_turns(b) == [e] and len(b["thoughts"]) == e + 2 and b["thoughts"][e + 1] == a["thoughts"][e]
            assert not score(task, parse_answer(wrong), a["answer"]) and e + 1 <= n - 2
        else:
            assert b["thoughts"] == a["thoughts"] + [""] * max(0, n - 2 - e)
    assert corrected > 10
    none = build_proactive(task, 40, 4, split="test", templates="train", continuation=True, correction_prob=0.0)
    assert not any(context_turns(r) for r in none)
    with pytest.raises(ConfigError, match="correction_prob needs continuation=true"):
        build_proactive(task, 2, correction_prob=0.5)



def test_continue_record_premature_correction():
    chunks = ["Q.", "A 5.", "B 9.", "C 7.", "D.", "E."]
    rec = make_record("proactive_threshold", "x", chunks, 3, "7", ["", "5 odd? no.", "9 > 6? no.", "7 > 6? yes."])
    fixed = continue_record(rec, "9 > 6? yes. \\boxed{9}", at=2)
    assert fixed["thoughts"] == ["", "5 odd? no.", "9 > 6? yes. \\boxed{9}", "7 > 6? yes. \\boxed{7}", ""]
    assert context_turns(fixed) == [2]
    for at in (0, 3):
        with pytest.raises(ValueError, match="a premature answer comes at a chunk 1 .. 2"):
            continue_record(rec, "\\boxed{9}", at=at)


def test_continue_record_after_the_answer():
    chunks = ["Q.", "A 5.", "B 9.", "C 7.", "D 4.", "E."]
    rec = make_record("proactive_threshold", "x", chunks, 2, "9", ["", "5 > 6? no.", "9 > 6? yes."])
    assert continue_record(rec, after=["7 > 6? no.", ""])["thoughts"] == ["", "5 > 6? no.", "9 > 6? yes. \\boxed{9}",
                                                                         "7 > 6? no.", ""]
    fixed = continue_record(rec, "5 > 6? yes. \\boxed{5}", at=1, after=["", "4 > 6? no."])
    assert fixed["thoughts"][1:] == ["5 > 6? yes. \\boxed{5}", "9 > 6? yes. \\boxed{9}", "", "4 > 6? no."]
    for bad in ([""], ["", "", ""], ["7 > 6? yes. \\boxed{7}", ""]):
        with pytest.raises(ValueError, match="after: 2 turns committing no other answer"):
            continue_record(rec, after=bad)
    confirmed = continue_record(rec, after=["7 > 6? yes. \\boxed{9}", ""])  # a confirmation of the answer
    assert confirmed["thoughts"][3] == "7 > 6? yes. \\boxed{9}" and context_turns(confirmed) == []
    with pytest.raises(ValueError, match="a correction at the next chunk ends the episode"):
        continue_record(rec, "\\boxed{5}", after=["", ""])


@pytest.mark.parametrize("task", ("proactive_perception", "proactive_threshold"))
def test_checks_after_the_answer(task):
    knobs = dict(split="test", templates="train", notes=True, continuation=True, correction_prob=1.0,
                 correction_at="premature")
    quiet = build_proactive(task, 80, 6, **knobs)
    checks = build_proactive(task, 80, 6, **knobs, after_answer="checks")
    kept = 0
    for a, b in zip(quiet, checks):
        e = a["evidence_chunk"]
        assert {k: v for k, v in a.items() if k != "thoughts"} == {k: v for k, v in b.items() if k != "thoughts"}
        assert b["thoughts"][: e + 1] == a["thoughts"][: e + 1] and context_turns(b) == context_turns(a)
        assert len(b["thoughts"]) == len(a["thoughts"]) and not any(a["thoughts"][e + 1:])
        for t in b["thoughts"][e + 1:]:  # checks that fail, or a running total's update; never a response
            assert not is_response(t) and "yes" not in t and (not t or t.endswith("? no.") or t.endswith("."))
            kept += bool(t)
    assert kept > 40
    confirm = build_proactive(task, 80, 6, **knobs, after_answer="confirm")
    confirmed = 0
    for a, b in zip(checks, confirm):  # the same turns, but a held check confirms the record's answer
        e = a["evidence_chunk"]
        assert b["thoughts"][: e + 1] == a["thoughts"][: e + 1] and context_turns(b) == context_turns(a)
        for ta, tb in zip(a["thoughts"][e + 1:], b["thoughts"][e + 1:]):
            if is_response(tb):
                confirmed += 1
                assert tb.endswith(f"? yes. \\boxed{{{a['answer']}}}") and tb.startswith(ta.removesuffix("."))
            else:
                assert tb == ta
    assert confirmed > (10 if task == "proactive_threshold" else -1)
    with pytest.raises(ConfigError, match="after_answer=checks needs notes=true"):
        build_proactive(task, 2, split="test", continuation=True, after_answer="checks")
    with pytest.raises(ConfigError, match="after_answer=checks needs correction_at=premature"):
        build_proactive(task, 2, split="test", notes=True, continuation=True, after_answer="checks")
    with pytest.raises(ConfigError, match="after_answer needs continuation=true"):
        build_proactive(task, 2, notes=True, after_answer="checks")


def test_checks_after_the_answer_keep_the_running_total():
    [rec] = [r for r in build_proactive("proactive_threshold", 40, 6, split="test", kind="total", total_check=True,
                                        notes=True, continuation=True, correction_prob=0.0, correction_at="premature",
                                        after_answer="checks")
             if any(" = " in t and "?" not in t for t in r["thoughts"])][:1]
    totals = [t for t in rec["thoughts"] if " = " in t]
    for prev, cur in zip(totals, totals[1:]):  # each update starts from the total the previous one wrote
        assert cur.split(" ")[0] == prev.split(" = ")[1].split(".")[0]


@pytest.mark.parametrize("task", ("proactive_perception", "proactive_threshold"))
def test_premature_corrections(task):
    knobs = dict(split="test", templates="train", notes=True, continuation=True)
    base = build_proactive(task, 120, 5, **knobs, correction_prob=0.0)
    prem = build_proactive(task, 120, 5, **knobs, correction_prob=1.0, correction_at="premature")
    corrected = 0
    for a, b in zip(base, prem):
        assert {k: v for k, v in a.items() if k != "thoughts"} == {k: v for k, v in b.items() if k != "thoughts"}
        if not context_turns(b):
            assert b["thoughts"] == a["thoughts"]
            continue
        corrected += 1
        [k] = context_turns(b)
        e, wrong = b["evidence_chunk"], parse_answer(b["thoughts"][k])
        assert 1 <= k < e and not score(task, wrong, a["answer"]) and re.search(rf"\b{re.escape(wrong)}\b", b["chunks"][k])
        assert a["thoughts"][k].endswith("? no.") and b["thoughts"][k] == f"{a['thoughts'][k][:-3]}yes. \\boxed{{{wrong}}}"
        assert b["thoughts"][:k] + b["thoughts"][k + 1:] == a["thoughts"][:k] + a["thoughts"][k + 1:]
    assert corrected > 10
    with pytest.raises(ConfigError, match="correction_at needs continuation=true"):
        build_proactive(task, 2, correction_at="premature")
    with pytest.raises(ConfigError, match="correction_at"):
        build_proactive(task, 2, continuation=True, correction_at="later")

def test_a_wrong_threshold_note_carries_the_slip():
    recs = build_proactive("proactive_threshold", 60, 0, split="test", kind="total", notes=True, continuation=True,
                           correction_prob=1.0)
    fixed = [r for r in recs if context_turns(r)]
    assert len(fixed) > 20
    for r in fixed:
        e = r["evidence_chunk"]
        wrong, right = r["thoughts"][e], r["thoughts"][e + 1]
        threshold_ = int(re.search(r"\d+", r["chunks"][0]).group())
        w = int(parse_answer(wrong))
        assert wrong == re.sub(r"= -?\d+\. \\boxed\{.*\}$", f"= {w}. \\\\boxed{{{w}}}", right) and w > threshold_
    # with total_check the slip reaches the comparison too: "= 36. 36 > 35? yes." for a right 46
    checked = build_proactive("proactive_threshold", 60, 0, split="test", kind="total", notes=True, continuation=True,
                              correction_prob=1.0, total_check=True)
    for r in (r for r in checked if context_turns(r)):
        e = r["evidence_chunk"]
        w = parse_answer(r["thoughts"][e])
        assert re.search(rf"= {w}\. {w} > \d+\? yes\. \\boxed\{{{w}\}}$", r["thoughts"][e]), r["thoughts"][e]


def test_sft_renders_a_continued_record_without_training_the_wrong_answer(tiny_tokenizer):
    import datasets

    from adasr.train.sft_data import StreamingCollator, prepare_episodes, render_row, row_episode

    fmt = StreamingFormat(tiny_tokenizer, "proactive-v1")
    chunks = ["Tell me the first number that is divisible by 7.", "Next number: 12.", "Next number: 49.",
              "Next number: 50.", "Next number: 3."]
    rec = make_record("proactive_threshold", "x", chunks, 2, "49")
    fixed = continue_record(rec, "\\boxed{12}")
    quiet = continue_record(rec)
    assert row_episode(quiet, "proactive").chunks == chunks[:4] and row_episode(fixed, "proactive").chunks == chunks[:4]
    r_rec, _ = render_row(fmt, rec, "proactive")
    r, respond = render_row(fmt, fixed, "proactive")
    starts = [p for p, d in enumerate(r.decision) if d]
    assert len(starts) == 3  # silent, silent, the correction: the wrong answer's turn has no decision
    wrong_ids = tiny_tokenizer.encode("\\boxed{12}")
    trained = [i for i, s in zip(r.input_ids, r.stage) if s != STAGE_INPUT]
    assert respond[starts[-1]] and sum(respond) == 1
    text = tiny_tokenizer.decode(trained)
    assert "\\boxed{49}" in text and "\\boxed{12}" not in text and len(r.input_ids) > len(r_rec.input_ids)
    assert any(r.input_ids[p:p + len(wrong_ids)] == wrong_ids for p in range(len(r.input_ids)))  # still in context
    _, stats = prepare_episodes(datasets.Dataset.from_list([fixed, quiet]), fmt, 4096, "proactive")
    assert stats.class_counts == {"skip": 2 + 3, "think": 0, "respond": 2}
    batch = StreamingCollator(tiny_tokenizer, fmt, layout="proactive")([fixed])
    assert batch["respond_mask"].sum() == 1 and batch["decision_mask"].sum() == 3


def test_episodes_task_reads_continued_records(tmp_path):
    from adasr.jsonl import write_jsonl
    from adasr.tasks.registry import build_dataset

    recs = build_proactive("proactive_perception", 10, 0, split="test", continuation=True, correction_prob=0.5)
    write_jsonl(recs, tmp_path / "c.jsonl")
    ds = build_dataset("episodes", source=str(tmp_path / "c.jsonl"))
    assert [list(t) for t in ds["thoughts"]] == [r["thoughts"] for r in recs]
    bad = {**recs[0], "thoughts": recs[0]["thoughts"] + [""] * len(recs[0]["chunks"])}
    write_jsonl([bad], tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="at most one per chunk"):
        build_dataset("episodes", source=str(tmp_path / "bad.jsonl"))


# ---------------------------------------------------------------------------------------------
# The committed files and their overlap check


def test_committed_heldout_files_share_no_question_with_any_training_file():
    tool = _tool()
    names = {p.name for p in tool.heldout_files(DATA)}
    assert {f"{f}_test_{s}.jsonl" for f in ("pt", "pp", "ptm") for s in ("items", "templates")} <= names
    assert {p.name for p in tool.train_files(DATA)} >= {"mix_train.jsonl", "qwen_mix_train.jsonl"}
    assert tool.check(DATA) == 900


def test_overlap_check_fails_on_overlapping_data(tmp_path):
    from adasr.jsonl import write_jsonl

    tool = _tool()
    test = read_jsonl(DATA / "pt_test_templates.jsonl", limit=3)
    write_jsonl(test, tmp_path / "x_test_templates.jsonl")
    write_jsonl(read_jsonl(DATA / "qwen_mix_train.jsonl", limit=5), tmp_path / "q_train.jsonl")
    assert tool.check(tmp_path) == 3
    write_jsonl(read_jsonl(DATA / "qwen_mix_train.jsonl", limit=5) + [test[1]], tmp_path / "q_train.jsonl")
    with pytest.raises(DataError, match="1 held-out question"):
        tool.check(tmp_path)


def test_the_committed_files_rebuild_exactly(tmp_path):
    subprocess.run([sys.executable, str(TOOL), "--out", str(tmp_path)], check=True, capture_output=True)
    for p in sorted(tmp_path.glob("*.jsonl")):
        assert p.read_bytes() == (DATA / p.name).read_bytes(), p.name
    mix = read_jsonl(DATA / "qwen_mix_train.jsonl")
    assert len(mix) == 1200 and {r["task"] for r in mix} == set(GENERATED)
    assert 150 < sum(bool(context_turns(r)) for r in mix) < 400  # corrections
    wide, revise = read_jsonl(DATA / "qwen_mix_wide_train.jsonl"), read_jsonl(DATA / "qwen_mix_revise_train.jsonl")
    assert [r["question"] for r in revise] == [r["question"] for r in wide]  # the wide mix's items
    premature = [k < r["evidence_chunk"] for r in revise for k in context_turns(r)]
    assert len(premature) > 300 and all(premature)  # every correction is of a premature answer
    checks = read_jsonl(DATA / "qwen_mix_revise_checks_train.jsonl")  # the same, checking on after the answer
    assert [r["thoughts"][: r["evidence_chunk"] + 1] for r in checks] == [r["thoughts"][: r["evidence_chunk"] + 1]
                                                                          for r in revise]
    assert sum(bool(t) for r in checks for t in r["thoughts"][r["evidence_chunk"] + 1:]) > 1000
    confirm = read_jsonl(DATA / "qwen_mix_revise_confirm_train.jsonl")  # held checks confirm the answer
    assert [context_turns(r) for r in confirm] == [context_turns(r) for r in revise]
    assert sum(is_response(t) for r in confirm for t in r["thoughts"][r["evidence_chunk"] + 1:]) > 500
    for task, name in (("proactive_threshold", "pt"), ("proactive_perception", "pp"), ("proactive_temporal", "ptm")):
        assert all(i % 4 == 3 for r in read_jsonl(DATA / f"{name}_test_templates.jsonl") for _, i in _used(task, r["chunks"]))
        assert not any(i % 4 == 3 for r in read_jsonl(DATA / f"{name}_test_items.jsonl") for _, i in _used(task, r["chunks"]))
