"""Proactive streaming data (adasr.tasks.proactive) and proactive metrics (adasr.proactive_metrics)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest


from adasr.errors import ConfigError, DataError
from adasr.jsonl import read_jsonl
from adasr.protocol import parse_answer
from adasr.proactive_metrics import episode_metrics, proactive_score, summarize_proactive
from adasr.stream import split_sentences
from adasr.tasks.gsm8k import load_gsm8k
from adasr.tasks.proactive import (
    PROACTIVE_TASKS,
    Rejected,
    build_proactive,
    build_proactive_with_report,
    gsm8k_evidence,
    make_record,
    proactive_turns,
    score,
)
from adasr.tasks.proactive import perception, temporal, threshold
from adasr.tasks.registry import PROACTIVE_FEATURES, TASKS, build_dataset, task_for
from adasr.tasks.splits import assert_disjoint, normalize_question

from conftest import GSM8K_TRAIN

needs_train = pytest.mark.usefixtures("gsm8k_train")
GENERATED = ("proactive_perception", "proactive_temporal", "proactive_threshold")


# ---------------------------------------------------------------------------------------------
# Hand-checked evidence: the family solvers on streams written by hand


def test_perception_evidence_is_the_chunk_stating_the_fact():
    chunks = [
        "Tell me the temperature reported by sensor Bravo.",
        "Sensor Alpha reports 21 degrees.",  # another sensor
        "Sensor Bravo reports 55 percent humidity.",  # near miss: sensor Bravo, but humidity
        "Sensor Bravo reports 23 degrees.",  # the fact -> evidence 3
        "Sensor Charlie reports 30 degrees.",
    ]
    assert perception.solve(chunks) == ("23", 3)
    people = ["Tell me the city where Maria works.", "Maria lives in Oslo.", "Omar works in Lima.", "Maria works in Cork."]
    assert perception.solve(people) == ("Cork", 3)  # "lives in" and Omar's "works in" do not answer it
    with pytest.raises(Rejected, match="fact never stated"):
        perception.solve(chunks[:3])


def test_temporal_evidence_rules():
    log = ["At 09:00 the lights turned on.", "At 09:10 the alarm rang.", "At 09:25 the door opened.",
           "At 09:40 the dog barked."]
    ordered = "The log lists events in time order; "
    # in time order, "before" is settled by the first of the two events to appear: the alarm
    # (chunk 2) comes before the door has been reported, so it rang first
    assert temporal.solve([ordered + "tell me whether the alarm rang before the door opened.", *log]) == ("yes", 2)
    assert temporal.solve([ordered + "tell me whether the door opened before the alarm rang.", *log]) == ("no", 2)
    # "right after the alarm rang": the next reported event, chunk 3
    assert temporal.solve([ordered + "tell me what happened right after the alarm rang.", *log]) == ("the door opened", 3)
    # interval: both times needed -> the later one, chunk 4 (09:40 - 09:00 = 40 minutes)
    assert temporal.solve([ordered + "tell me how many minutes passed from when the lights turned on to when "
                            "the dog barked.", *log]) == ("40", 4)
    # out of time order: "before" needs both events (chunks 1 and 3 -> 3); "right after" needs
    # the whole log (an unseen event could fall between) -> the last chunk
    shuffled = [log[2], log[0], log[1], log[3]]  # door 09:25, lights 09:00, alarm 09:10, dog 09:40
    unordered = "The log lists events out of time order; "
    assert temporal.solve([unordered + "tell me whether the alarm rang before the door opened.", *shuffled]) == ("yes", 3)
    assert temporal.solve([unordered + "tell me what happened right after the lights turned on.", *shuffled]) == (
        "the alarm rang", 4)
    with pytest.raises(Rejected, match="events out of order"):
        temporal.solve([ordered + "tell me whether the alarm rang before the door opened.", *shuffled])


def test_threshold_evidence_is_the_first_crossing():
    q = "The total starts at 0; tell me the running total as soon as it exceeds 20."
    # totals 9, 17, 13, 21 (> 20 at chunk 4), 29: the first crossing, not the last
    assert threshold.solve([q, "Add 9.", "Add 8.", "Subtract 4.", "Add 8.", "Add 8."]) == ("21", 4)
    # exactly 20 is not "exceeds": 12, 20, 21 -> chunk 3
    assert threshold.solve([q, "Add 12.", "Add 8.", "Add 1."]) == ("21", 3)
    with pytest.raises(Rejected, match="threshold never crossed"):
        threshold.solve([q, "Add 5.", "Add 5."])
    first = ["Tell me the first number that is divisible by 7.", "Next number: 12.", "Next number: 49.", "Next number: 14."]
    assert threshold.solve(first) == ("49", 2)
    with pytest.raises(Rejected, match="no number satisfies"):
        threshold.solve(first[:2])


def test_threshold_state_notes_hand_checked():
    q = "The total starts at 0; tell me the running total as soon as it exceeds 20."
    chunks = [q, "Add 9.", "Add 8.", "Subtract 4.", "Add 8.", "Add 8."]
    assert threshold.state_notes(chunks, 4) == ["", "0 + 9 = 9.", "9 + 8 = 17.", "17 - 4 = 13.", "13 + 8 = 21."]
    first = ["Tell me the first number that is divisible by 7.", "Next number: 12.", "Next number: 49."]
    assert threshold.state_notes(first, 2) == ["", "12 divisible by 7? no.", "49 divisible by 7? yes."]
    even = ["Tell me the first number that is an even number greater than 36.", "Next number: 61.", "Next number: 78."]
    assert threshold.state_notes(even, 2) == ["", "61 even and > 36? no.", "78 even and > 36? yes."]
    assert threshold.state_notes(["Tell me the first number that is a number ending in 8.", "Next number: 38."], 1)[1] == \
        "38 ends in 8? yes."
    # total_check: each total note ends with its comparison to the threshold; first notes are unchanged
    checked = {"total_check": True}
    assert threshold.state_notes(chunks, 4, checked) == [
        "", "0 + 9 = 9. 9 > 20? no.", "9 + 8 = 17. 17 > 20? no.", "17 - 4 = 13. 13 > 20? no.", "13 + 8 = 21. 21 > 20? yes."]
    assert threshold.state_notes(first, 2, checked) == threshold.state_notes(first, 2)
    # the record: notes before the evidence, the response turn starts with the evidence chunk's note
    rec = make_record("proactive_threshold", "x", chunks, 4, "21", threshold.state_notes(chunks, 4))
    assert rec["thoughts"] == ["", "0 + 9 = 9.", "9 + 8 = 17.", "17 - 4 = 13.", "13 + 8 = 21. \\boxed{21}"]
    assert rec["response"] == "\\boxed{21}" and proactive_turns(rec)[-1] == ("Add 8.", "13 + 8 = 21. \\boxed{21}")
    with pytest.raises(ValueError, match="3 notes for 5 turns"):
        make_record("proactive_threshold", "x", chunks, 4, "21", ["", "a", "b"])


def test_notes_knob_changes_only_the_thoughts():
    plain = build_proactive("proactive_threshold", 20, seed=3, split="test")
    noted = build_proactive("proactive_threshold", 20, seed=3, split="test", notes=True)
    for a, b in zip(plain, noted):
        assert {k: v for k, v in a.items() if k != "thoughts"} == {k: v for k, v in b.items() if k != "thoughts"}
        e = b["evidence_chunk"]
        assert a["thoughts"] == [""] * e + [a["response"]]
        assert all(t for t in b["thoughts"][1:]) and b["thoughts"][-1].endswith(b["response"])
        assert score("proactive_threshold", parse_answer(b["thoughts"][-1]), b["answer"])
    with pytest.raises(ConfigError, match="notes must be true or false"):
        build_proactive("proactive_threshold", 2, notes="yes")
    # total_check changes the total notes only, by a comparison that says yes at the evidence alone
    checked = build_proactive("proactive_threshold", 20, seed=3, split="test", notes=True, total_check=True)
    totals = 0
    for b, c in zip(noted, checked):
        assert {k: v for k, v in b.items() if k != "thoughts"} == {k: v for k, v in c.items() if k != "thoughts"}
        if " = " not in b["thoughts"][b["evidence_chunk"]]:  # a first stream
            assert b == c
            continue
        totals += 1
        for k, (t, u) in enumerate(zip(b["thoughts"], c["thoughts"])):
            if not t:
                assert u == t
                continue
            note = t.replace(f" {b['response']}", "")
            assert u.startswith(note + " ") and u.count("? yes.") == (k == b["evidence_chunk"]), (t, u)
    assert totals >= 5
    with pytest.raises(ConfigError, match="total_check must be true or false"):
        build_proactive("proactive_threshold", 2, notes=True, total_check=1)
    with pytest.raises(ConfigError, match="unknown knob"):  # a threshold knob is not a perception knob
        build_proactive("proactive_perception", 2, negative_prob=0.5)


# ---------------------------------------------------------------------------------------------
# Generated items, checked by hand (seed 7, test split)


def test_generated_items_hand_checked():
    p = build_proactive("proactive_perception", 2, 7, split="test", facts=4, scene="sensors")
    # asks Hotel's humidity; chunk 3 is Hotel's temperature (near miss), chunk 4 its humidity
    assert p[0]["chunks"] == ["Tell me the humidity reported by sensor Hotel.", "Sensor Romeo reports 17 degrees.",
                              "Sensor Mike reports 27 degrees.", "Sensor Hotel reports 16 degrees.",
                              "Sensor Hotel reports 65 percent humidity."]
    assert (p[0]["answer"], p[0]["evidence_chunk"]) == ("65", 4)
    # asks Mike's temperature, stated first (chunk 1); Mike's humidity later is a near miss
    assert (p[1]["answer"], p[1]["evidence_chunk"]) == ("17", 1)
    assert p[1]["thoughts"] == ["", "\\boxed{17}"] and p[1]["response"] == "\\boxed{17}" and p[1]["deep"] == ""

    t = build_proactive("proactive_temporal", 1, 7, split="test", events=4, kinds="before", ordered=False)[0]
    # out of order: the drill (16:51, chunk 3) vs the oven (18:00, chunk 1): both needed -> 3, yes
    assert t["chunks"] == ["The log lists events out of time order; tell me whether the drill began before the "
                           "oven beeped.", "At 18:00 the oven beeped.", "At 17:18 the gate locked.",
                           "At 16:51 the drill began.", "At 17:37 the window closed."]
    assert (t["answer"], t["evidence_chunk"]) == ("yes", 3)

    th = build_proactive("proactive_threshold", 1, 7, split="test", kind="total", steps=5)[0]
    # totals 9, 16 (not > 16), 10, 20 -> crosses at chunk 4 with 20
    assert th["chunks"] == ["The total starts at 0; tell me the running total as soon as it exceeds 16.",
                            "Add 9.", "Add 7.", "Subtract 6.", "Add 10.", "Add 8."]
    assert (th["answer"], th["evidence_chunk"]) == ("20", 4)
    assert th["thoughts"] == ["", "", "", "", "\\boxed{20}"]


@pytest.mark.parametrize("task", GENERATED)
def test_generated_records_are_consistent(task):
    recs = build_proactive(task, 200, 3)
    for r in recs:
        n, e = len(r["chunks"]), r["evidence_chunk"]
        assert 1 <= e < n  # the question (chunk 0) never answers itself
        assert r["question"] == " ".join(r["chunks"]) and split_sentences(r["question"]) == r["chunks"]  # one sentence a chunk
        assert r["thoughts"] == [""] * e + [r["response"]] and r["response"] == f"\\boxed{{{r['answer']}}}"
        assert score(task, r["response"], r["answer"])
        turns = proactive_turns(r)
        assert len(turns) == e + 1 and turns[-1] == (r["chunks"][e], r["response"])
        assert all(t == "" for _, t in turns[:-1])
    # evidence positions vary (not always the last chunk)
    assert len({r["evidence_chunk"] for r in recs}) > 3
    assert any(r["evidence_chunk"] < len(r["chunks"]) - 1 for r in recs)


def test_position_knob():
    late = build_proactive("proactive_perception", 100, 0, facts=6, position="late")
    assert {r["evidence_chunk"] for r in late} <= {5, 6}  # facts 4..6 of 6 are chunks 5..6 (last third: slots 4, 5)
    last = build_proactive("proactive_perception", 50, 0, facts=5, position="last", near_miss=False)
    assert all(r["evidence_chunk"] == 5 == len(r["chunks"]) - 1 for r in last)
    early = build_proactive("proactive_perception", 50, 0, facts=6, position="early")
    assert {r["evidence_chunk"] for r in early} <= {1, 2}


# ---------------------------------------------------------------------------------------------
# Determinism, rejections, splits


@pytest.mark.parametrize("task", GENERATED)
def test_deterministic_with_a_seed(task):
    a = build_proactive(task, 50, 11)
    assert a == build_proactive(task, 50, 11)
    assert a != build_proactive(task, 50, 12)
    assert build_proactive(task, 20, 11) == a[:20]  # a split is a stable sequence


def test_rejections_are_counted():
    recs, rep = build_proactive_with_report("proactive_threshold", 40, 0, kind="first", steps=2)
    assert rep.built == len(recs) == 40
    assert rep.drawn == rep.built + rep.n_rejected and rep.rejected["no number satisfies the condition"] > 0
    assert "rejected" in rep.message() and "no number satisfies the condition" in rep.message()
    recs, rep = build_proactive_with_report("proactive_threshold", 30, 0, kind="total", steps=2, max_term=9,
                                            min_threshold=15, max_threshold=17)
    # two terms of at most 9 exceed 15..17 only with 9+8, 9+9, 8+9 (and no subtraction)
    assert rep.rejected["threshold never crossed"] > rep.built
    assert all(int(r["answer"]) > 15 and r["evidence_chunk"] == 2 for r in recs)
    # nothing can cross: the registry raises with the counts
    with pytest.raises(DataError, match=r"threshold never crossed: \d+"):
        build_dataset("proactive_threshold", size=3, kind="total", steps=1, max_term=5)


@pytest.mark.parametrize("task", GENERATED)
def test_train_test_disjoint(task):
    train = build_proactive(task, 300, 0, split="train")
    test = build_proactive(task, 300, 0, split="test")
    assert_disjoint([r["question"] for r in train], [r["question"] for r in test])
    assert not {r["id"] for r in train} & {r["id"] for r in test}


def test_train_skips_test_questions_in_a_small_item_space():
    # one fact, sensors only: few distinct questions, so train and test draws collide
    knobs = dict(facts=1, scene="sensors", near_miss=False)
    train, rep = build_proactive_with_report("proactive_perception", 300, 0, split="train", heldout_size=300, **knobs)
    test = build_proactive("proactive_perception", 300, 0, split="test", **knobs)
    assert rep.rejected.get("question in the test split", 0) > 0
    assert_disjoint([r["question"] for r in train], [r["question"] for r in test])
    assert len({normalize_question(r["question"]) for r in train}) == len(train)  # no duplicates


@needs_train
def test_gsm8k_train_test_disjoint():
    train, rep = build_proactive_with_report("proactive_gsm8k", 60, 0, source=GSM8K_TRAIN)
    test = build_proactive("proactive_gsm8k", 60, 0, source=GSM8K_TRAIN, split="test")
    assert rep.built == 60 and len(test) == 60
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    src = read_jsonl(GSM8K_TRAIN)
    n = len(src)
    assert all(int(r["id"].rsplit("-", 1)[1]) < n - 400 for r in train)
    assert all(int(r["id"].rsplit("-", 1)[1]) >= n - 400 for r in test)
    # the original problems do not overlap (their reordered streams carry distractors)
    originals = lambda recs: [src[int(r["id"].rsplit("-", 1)[1])]["question"] for r in recs]  # noqa: E731
    assert_disjoint(originals(train), originals(test))


# ---------------------------------------------------------------------------------------------
# GSM8K (train.jsonl, line = index + 1), checked by hand against the alignment rules


@needs_train
def test_gsm8k_evidence_hand_checked():
    src = read_jsonl(GSM8K_TRAIN)
    # 3 (Julie): question first, then "120-page book" (1), "12 pages ... twice" (2). 12*2 needs
    # chunk 2; 120-36 needs 120 (chunk 1) but follows 12+24 (chunk 2); 84/2 is "half", said in
    # the question: the last step is at chunk 2 = the last fact
    order, e, final = gsm8k_evidence(src[3]["question"], src[3]["answer"])
    assert order[0].startswith("If she wants to read half") and len(order) == 3
    assert (e, final) == (2, "42")
    # 4875 (Tony): 72*7 needs 72 (chunk 1) and 7 (days per week: "week" in the question, "day"
    # in chunk 1); 504/84 has 84 in the question. Chunk 2 (the reusable bottle) has no number
    # and no word of the solution: the answer is settled after chunk 1, before the last fact
    order, e, final = gsm8k_evidence(src[4875]["question"], src[4875]["answer"])
    assert order == ["If he buys an 84-ounce water bottle, how many times will he fill it each week?",
                     "Tony drinks 72 ounces of water per day.",
                     "He decides that to stop wasting plastic, he will buy a reusable metal bottle."]
    assert (e, final) == (1, "6")
    # 19 (Tim): 200+200 reads one 200 as the result of 40*5, so the alignment would stop at
    # chunk 2, but the weekend ride of 200 miles is in chunk 3: ambiguous -> rejected
    with pytest.raises(Rejected, match="a later sentence mentions an operand"):
        gsm8k_evidence(src[19]["question"], src[19]["answer"])
    # 72 (Nancy): "1/2 * 1/2 = 1/4" is computed in a line without annotation -> rejected
    with pytest.raises(Rejected, match="arithmetic without annotation"):
        gsm8k_evidence(src[72]["question"], src[72]["answer"])
    # 8: the solution uses a quantity the text never states
    with pytest.raises(Rejected, match="operands never known"):
        gsm8k_evidence(src[8]["question"], src[8]["answer"])


@needs_train
def test_gsm8k_records_with_distractors():
    recs, rep = build_proactive_with_report("proactive_gsm8k", 30, 0, source=GSM8K_TRAIN, distractors=2)
    src = read_jsonl(GSM8K_TRAIN)
    assert rep.built == 30 and rep.drawn == 30 + rep.n_rejected
    for r in recs:
        i = int(r["id"].rsplit("-", 1)[1])
        order, e, final = gsm8k_evidence(src[i]["question"], src[i]["answer"])
        assert r["chunks"][: len(order)] == order and len(r["chunks"]) == len(order) + 2
        assert r["evidence_chunk"] == e and r["answer"] == final
        assert not set(r["chunks"][len(order):]) & set(split_sentences(src[i]["question"]))
    first = recs[0]  # problem 0 (Natalia): question, the one fact (evidence 1), then 2 distractors
    assert first["chunks"][:2] == ["How many clips did Natalia sell altogether in April and May?",
                                   "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                                   "clips in May."]
    assert first["evidence_chunk"] == 1 and first["answer"] == "72"
    mixed = build_proactive("proactive_gsm8k", 30, 0, source=GSM8K_TRAIN, interleave=True)
    for r, plain in zip(mixed, recs):
        assert r["id"] == plain["id"] and r["chunks"][0] == plain["chunks"][0]
        assert r["chunks"][r["evidence_chunk"]] == plain["chunks"][plain["evidence_chunk"]]
    assert any(r["evidence_chunk"] != p["evidence_chunk"] for r, p in zip(mixed, recs))


# ---------------------------------------------------------------------------------------------
# Registry and CLI


def test_registry_returns_the_extra_columns():
    assert set(PROACTIVE_TASKS) <= set(TASKS)
    ds = build_dataset("proactive_temporal", size=12, seed=1, split="test", kinds="interval,before")
    assert len(ds) == 12 and ds.features == PROACTIVE_FEATURES
    assert {"evidence_chunk", "response"} <= set(ds.column_names)
    with pytest.raises(ConfigError, match="unknown knob"):
        build_dataset("proactive_perception", size=3, digits=2)
    with pytest.raises(ConfigError, match="split must be one of"):
        build_dataset("proactive_perception", size=3, split="dev")
    with pytest.raises(ConfigError, match="needs source"):
        build_dataset("proactive_gsm8k", size=3)


def test_episodes_task_reads_proactive_records(tmp_path):
    """Task ``episodes`` trains on a user's own proactive records (e.g. several families mixed)."""
    recs = build_proactive("proactive_threshold", 3, notes=True) + build_proactive("proactive_perception", 2)
    f = tmp_path / "mix.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    ds = build_dataset("episodes", source=f)
    assert ds.features == PROACTIVE_FEATURES and ds["evidence_chunk"] == [r["evidence_chunk"] for r in recs]
    assert ds["thoughts"] == [r["thoughts"] for r in recs]
    bad = dict(recs[0], thoughts=recs[0]["thoughts"][:-1])
    f.write_text(json.dumps(recs[1]) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match="record 2 has evidence_chunk .* proactive record has evidence_chunk \\+ 1"):
        build_dataset("episodes", source=f)
    f.write_text(json.dumps(recs[1]) + "\n" + json.dumps({k: v for k, v in recs[0].items() if k != "response"}) + "\n")
    with pytest.raises(DataError, match="record 2 is not a proactive record .*missing response"):
        build_dataset("episodes", source=f)


def _adasr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adasr.cli", *args], capture_output=True, timeout=120,
                          env=dict(os.environ))


def test_cli_data_build_proactive(tmp_path):
    out = tmp_path / "x.jsonl"
    proc = _adasr("data", "build", "--task", "proactive_perception", "--size", "200", "--out", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 200 and all(0 <= r["evidence_chunk"] < len(r["chunks"]) for r in recs)
    assert "proactive_perception (train): built 200 of 200" in proc.stdout.decode()
    # the built file is an `adasr eval` input: chunks, task and evidence load, answers grade
    items = load_gsm8k(out)
    assert items[0].evidence_chunk == recs[0]["evidence_chunk"] and items[0].chunks == recs[0]["chunks"]
    task = task_for(items[0])
    assert task.grade(recs[0]["response"], items[0].reference) and not task.grade("\\boxed{-1}", items[0].reference)
    test_out = tmp_path / "t.jsonl"
    proc = _adasr("data", "build", "--task", "proactive_threshold", "--size", "10", "--knob", "split=test",
                  "--knob", "kind=first", "--out", str(test_out))
    assert proc.returncode == 0, proc.stderr.decode()
    assert "rejected" in proc.stdout.decode()
    proc = _adasr("data", "build", "--task", "proactive_threshold", "--knob", "kind=sometimes", "--out", str(test_out))
    err = proc.stderr.decode()
    assert proc.returncode != 0 and "Traceback" not in err and "kind must be one of" in err


# ---------------------------------------------------------------------------------------------
# `adasr eval` input: GSM8K-format streams with evidence_chunk


def test_gsm8k_format_loader_with_evidence(tmp_path):
    good = {"question": "Tom has 3 apples. He buys 5 more. How many now?", "answer": "3+5=8\n#### 8",
            "chunks": ["How many apples will Tom have?", "Tom has 3 apples.", "He buys 5 more.", "It rains."],
            "evidence_chunk": 2}
    lines = [
        good,
        {**good, "id": "no-evidence", "evidence_chunk": None},
        {**good, "id": "too-far", "evidence_chunk": 4},
        {**good, "id": "negative", "evidence_chunk": -1},
        {**good, "id": "string", "evidence_chunk": "2"},
        {**good, "id": "bool", "evidence_chunk": True},
        {"question": good["question"], "answer": good["answer"], "id": "no-chunks", "evidence_chunk": 0},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    errors = []
    items = load_gsm8k(path, on_error=errors.append)
    assert [(it.id, it.evidence_chunk, it.reference) for it in items] == [
        ("gsm8k-mine-1", 2, "8"), ("no-evidence", None, "8")]
    assert items[0].chunks == good["chunks"] and task_for(items[0]).grade("\\boxed{8}", items[0].reference)
    msgs = [str(e) for e in errors]
    assert [m.split(":")[1] for m in msgs] == ["3", "4", "5", "6", "7"]  # each error names its line
    assert all("evidence_chunk" in m for m in msgs)
    assert "0..3" in msgs[0] and "needs 'chunks'" in msgs[-1]


def test_score_text_and_numbers():
    assert score("proactive_temporal", "\\boxed{Yes.}", "yes") and not score("proactive_temporal", "\\boxed{no}", "yes")
    assert score("proactive_temporal", "\\boxed{The door opened}", "the door opened")
    assert score("proactive_temporal", "door opened", "the door opened")
    assert not score("proactive_temporal", "\\boxed{the alarm rang}", "the door opened")
    assert score("proactive_perception", "\\boxed{oslo}", "Oslo")
    assert score("proactive_threshold", "\\boxed{21.0}", "21") and not score("proactive_threshold", None, "21")
    assert score("proactive_gsm8k", "The answer is \\boxed{$1,200}", "1200")


# ---------------------------------------------------------------------------------------------
# Proactive metrics, hand-computed


def test_episode_metrics_hand_computed():
    arrivals = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    # evidence 2 (arrives at 4.0 s), answered after chunk 3 at 6.5 s: 1 chunk, 2.5 s late ->
    # within the window (1): timely, score 1
    m = episode_metrics({"evidence_chunk": 2, "answer_chunk": 3, "correct": True, "chunk_arrivals_s": arrivals,
                         "answer_s": 6.5})
    assert m == {"response_delay_chunks": 1, "response_delay_s": 2.5, "premature": False, "timely": True,
                 "proactive_score": 1.0}
    # answered after chunk 5: delay 3 = window + 2 = one half-life (2) -> 0.5
    m = episode_metrics({"evidence_chunk": 2, "answer_chunk": 5, "correct": True, "chunk_arrivals_s": arrivals,
                         "answer_s": 10.25})
    assert m["response_delay_chunks"] == 3 and m["response_delay_s"] == 6.25
    assert not m["timely"] and m["proactive_score"] == 0.5
    # answered after the end of input (answer_chunk None): counts as chunk 6 (one past the last)
    # -> delay 4 -> 0.5 ** (3 / 2)
    m = episode_metrics({"evidence_chunk": 2, "answer_chunk": None, "correct": True, "chunk_arrivals_s": arrivals,
                         "answer_s": 12.0})
    assert m["response_delay_chunks"] == 4 and m["response_delay_s"] == 8.0
    assert math.isclose(m["proactive_score"], 0.5 ** 1.5)
    # before the evidence: premature, 0 even when right; wrong: 0
    m = episode_metrics({"evidence_chunk": 2, "answer_chunk": 1, "correct": True, "chunk_arrivals_s": arrivals,
                         "answer_s": 3.0})
    assert m["premature"] and m["response_delay_chunks"] == -1 and m["response_delay_s"] == -1.0
    assert m["proactive_score"] == 0.0 and not m["timely"]
    m = episode_metrics({"evidence_chunk": 2, "answer_chunk": 2, "correct": False, "chunk_arrivals_s": arrivals,
                         "answer_s": 4.5})
    assert m["proactive_score"] == 0.0 and not m["timely"] and not m["premature"]
    # parameters: window 0 makes a 1-chunk delay late; half-life 1 -> 0.5 ** 1
    assert proactive_score(True, 1, window=0, half_life=1.0) == 0.5
    assert proactive_score(True, 0, window=0) == 1.0
    with pytest.raises(ValueError, match="answer_chunk"):
        episode_metrics({"evidence_chunk": 2, "answer_chunk": 6, "chunk_arrivals_s": arrivals})
    with pytest.raises(ValueError, match="evidence_chunk"):
        episode_metrics({"evidence_chunk": 6, "chunk_arrivals_s": arrivals})
    with pytest.raises(ValueError, match="half_life"):
        proactive_score(True, 3, half_life=0)


def test_summarize_proactive_hand_computed():
    arr = [0.0, 1.0, 2.0, 3.0]
    recs = [
        # delay 0 chunks, 0.5 s: timely, score 1
        {"evidence_chunk": 1, "answer_chunk": 1, "correct": True, "chunk_arrivals_s": arr, "answer_s": 1.5},
        # delay 2, 2.0 s: late (window 1), score 0.5 ** (1 / 2)
        {"evidence_chunk": 1, "answer_chunk": 3, "correct": True, "chunk_arrivals_s": arr, "answer_s": 3.0},
        # premature (answer_chunk 0 < 1), right by luck: score 0, excluded from the delays
        {"evidence_chunk": 1, "answer_chunk": 0, "correct": True, "chunk_arrivals_s": arr, "answer_s": 0.5},
        # after the end of input: delay 4 - 2 = 2 chunks, 4.0 - 2.0 = 2.0 s; wrong: score 0
        {"evidence_chunk": 2, "answer_chunk": None, "correct": False, "chunk_arrivals_s": arr, "answer_s": 4.0},
        # no evidence: left out
        {"answer_chunk": 2, "correct": True, "chunk_arrivals_s": arr, "answer_s": 2.5},
    ]
    s = summarize_proactive(recs)
    assert s["count"] == 4 and s["n_without_evidence"] == 1
    assert s["accuracy"] == 0.75 and s["timely_correct_rate"] == 0.25 and s["late_correct_rate"] == 0.25
    assert s["premature_rate"] == 0.25 and s["answered_before_eoi_rate"] == 0.75
    assert math.isclose(s["mean_proactive_score"], (1 + 0.5 ** 0.5) / 4)
    # delays of the 3 non-premature episodes: chunks [0, 2, 2], seconds [0.5, 2.0, 2.0]
    assert s["p50_response_delay_chunks"] == 2.0 and math.isclose(s["p95_response_delay_chunks"], 2.0)
    assert s["p50_response_delay_s"] == 2.0 and s["p95_response_delay_s"] == 2.0
    # window 2 makes the second one timely
    assert summarize_proactive(recs, window=2)["timely_correct_rate"] == 0.5
    empty = summarize_proactive([])
    assert empty["count"] == 0 and empty["accuracy"] is None and empty["p50_response_delay_s"] is None
