"""Streaming-episode data building: streamified GSM8K, procedural (reasoning-gym) streams, registry."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from adasr.errors import ConfigError, DataError
from adasr.jsonl import read_jsonl, write_jsonl
from adasr.tasks.procedural import PROCEDURAL_TASKS, build_procedural, build_procedural_with_report, score
from adasr.tasks.registry import TASKS, build_dataset
from adasr.tasks.streamify import StreamifyReport, streamify_gsm8k, streamify_problem
from adasr.tasks.text import canonical_answer, known_numbers

from conftest import GSM8K_TRAIN
needs_train = pytest.mark.usefixtures("gsm8k_train")  # fails loudly if the shared data is missing

# ---------------------------------------------------------------------------------------------
# Hand-checked alignments. Records copied verbatim from GSM8K train.jsonl (line = index + 1).
# Each expected placement was verified by hand against the rules in adasr.tasks.align.

HAND_CHECKED = {
    # 0: 48/2 needs 48 and 2 ("half"), both in chunk 0; 48+24 needs 48 and the result 24 ->
    # chunk 0 ("altogether" first appears in the last chunk, the question: no anchor).
    0: dict(
        question="Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?",
        answer="Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
        thoughts=["Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May."],
        deep="The answer is \\boxed{72}.",
        final="72",
    ),
    # 1: 12/60 has 12 and 60 (implied by "hour") after chunk 0, but its text is about "minute",
    # first said in chunk 1 (word anchor) -> chunk 1; 0.2*50 needs 50 (chunk 1).
    1: dict(
        question="Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
        answer="Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
        thoughts=["", "Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned 0.2 x 50 = $10."],
        deep="The answer is \\boxed{10}.",
        final="10",
    ),
    # 2: 100/2 -> 2 is "half" (chunk 1; "twice" in chunk 2 matches the step's words less);
    # 15*2 needs 15 (chunk 2); 100-50-30-15 -> chunk 2.
    2: dict(
        question="Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. How much more money does Betty need to buy the wallet?",
        answer="In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\nBetty's grandparents gave her 15 * 2 = $<<15*2=30>>30.\nThis means, Betty needs 100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more.\n#### 5",
        thoughts=[
            "",
            "In the beginning, Betty has only 100 / 2 = $50.",
            "Betty's grandparents gave her 15 * 2 = $30. This means, Betty needs 100 - 50 - 30 - 15 = $5 more.",
        ],
        deep="The answer is \\boxed{5}.",
        final="5",
    ),
    # 3: 12*2 ("twice") chunk 1, 12+24 and 120-36 follow in chunk 1; 84/2 says "half", first
    # said in the last chunk (number-word anchor) -> deep stage.
    3: dict(
        question="Julie is reading a 120-page book. Yesterday, she was able to read 12 pages and today, she read twice as many pages as yesterday. If she wants to read half of the remaining pages tomorrow, how many pages should she read?",
        answer="Maila read 12 x 2 = <<12*2=24>>24 pages today.\nSo she was able to read a total of 12 + 24 = <<12+24=36>>36 pages since yesterday.\nThere are 120 - 36 = <<120-36=84>>84 pages left to be read.\nSince she wants to read half of the remaining pages tomorrow, then she should read 84/2 = <<84/2=42>>42 pages.\n#### 42",
        thoughts=[
            "",
            "Maila read 12 x 2 = 24 pages today. So she was able to read a total of 12 + 24 = 36 pages since yesterday. There are 120 - 36 = 84 pages left to be read.",
        ],
        deep="Since she wants to read half of the remaining pages tomorrow, then she should read 84/2 = 42 pages.\nThe answer is \\boxed{42}.",
        final="42",
    ),
    # 4: 3*2 and 6*2 after chunk 0; 12*52 needs 52 = weeks per year, and "year" only comes in
    # the last chunk -> deep. Steps without a final period get one.
    4: dict(
        question="James writes a 3-page letter to 2 different friends twice a week.  How many pages does he write a year?",
        answer="He writes each friend 3*2=<<3*2=6>>6 pages a week\nSo he writes 6*2=<<6*2=12>>12 pages every week\nThat means he writes 12*52=<<12*52=624>>624 pages a year\n#### 624",
        thoughts=["He writes each friend 3*2=6 pages a week. So he writes 6*2=12 pages every week."],
        deep="That means he writes 12*52=624 pages a year.\nThe answer is \\boxed{624}.",
        final="624",
    ),
    # 7: 2*3 needs "triple" (chunk 2); 6+2 is the "another 2 pounds" of chunk 3 (mention
    # disambiguation: "next", "added", "another" match chunk 3); 8*2 is "double" (chunk 4).
    7: dict(
        question="Ken created a care package to send to his brother, who was away at boarding school.  Ken placed a box on a scale, and then he poured into the box enough jelly beans to bring the weight to 2 pounds.  Then, he added enough brownies to cause the weight to triple.  Next, he added another 2 pounds of jelly beans.  And finally, he added enough gummy worms to double the weight once again.  What was the final weight of the box of goodies, in pounds?",
        answer="To the initial 2 pounds of jelly beans, he added enough brownies to cause the weight to triple, bringing the weight to 2*3=<<2*3=6>>6 pounds.\nNext, he added another 2 pounds of jelly beans, bringing the weight to 6+2=<<6+2=8>>8 pounds.\nAnd finally, he added enough gummy worms to double the weight once again, to a final weight of 8*2=<<8*2=16>>16 pounds.\n#### 16",
        thoughts=[
            "",
            "",
            "To the initial 2 pounds of jelly beans, he added enough brownies to cause the weight to triple, bringing the weight to 2*3=6 pounds.",
            "Next, he added another 2 pounds of jelly beans, bringing the weight to 6+2=8 pounds.",
            "And finally, he added enough gummy worms to double the weight once again, to a final weight of 8*2=16 pounds.",
        ],
        deep="The answer is \\boxed{16}.",
        final="16",
    ),
    # 11: 95+15 -> "$15" is said in chunk 4 (mowing) and chunk 5 (change); neither matches the
    # step's words, so the later one wins (conservative) -> chunk 5; 3*5 follows (monotone);
    # 4*15 needs 4 lawns (last chunk) -> deep, and so do the steps after it.
    11: dict(
        question="Tobias is buying a new pair of shoes that costs $95. He has been saving up his money each month for the past three months. He gets a $5 allowance a month. He also mows lawns and shovels driveways. He charges $15 to mow a lawn and $7 to shovel. After buying the shoes, he has $15 in change. If he mows 4 lawns, how many driveways did he shovel?",
        answer="He saved up $110 total because 95 + 15 = <<95+15=110>>110\nHe saved $15 from his allowance because 3 x 5 = <<3*5=15>>15\nHe earned $60 mowing lawns because 4 x 15 = <<4*15=60>>60\nHe earned $35 shoveling driveways because 110 - 60 - 15 = <<110-60-15=35>>35\nHe shoveled 5 driveways because 35 / 7 = <<35/7=5>>5\n#### 5",
        thoughts=[
            "", "", "", "", "",
            "He saved up $110 total because 95 + 15 = 110. He saved $15 from his allowance because 3 x 5 = 15.",
        ],
        deep="He earned $60 mowing lawns because 4 x 15 = 60.\nHe earned $35 shoveling driveways because 110 - 60 - 15 = 35.\nHe shoveled 5 driveways because 35 / 7 = 5.\nThe answer is \\boxed{5}.",
        final="5",
    ),
    # 516: 20*2 ("two times", chunk 1); 40*3 -> 3 is said in chunk 0 ("three different
    # subjects") and chunk 2 ("three times more"); "geography" picks chunk 2; 20+40+120 follows.
    516: dict(
        question="Max was doing homework in three different subjects. It took him 20 minutes to finish tasks from biology and two times more time to finish history. Geography took him the most time, three times more than history. How much time did Max spend on doing his homework?",
        answer="Max finished history in 20 * 2 = <<20*2=40>>40 minutes.\nFinishing geography took the most time, which is 40 * 3 = <<40*3=120>>120 minutes.\nIn total, for all three subjects, Max needed 20 + 40 + 120 = <<20+40+120=180>>180 minutes.\n#### 180",
        thoughts=[
            "",
            "Max finished history in 20 * 2 = 40 minutes.",
            "Finishing geography took the most time, which is 40 * 3 = 120 minutes. In total, for all three subjects, Max needed 20 + 40 + 120 = 180 minutes.",
        ],
        deep="The answer is \\boxed{180}.",
        final="180",
    ),
    # 3690: 10+2 -> "10" is Kim's age, said in the last chunk ("ten times" in chunk 0 is another
    # 10, but the last chunk matches the step's words strictly better) -> everything is deep.
    3690: dict(
        question="Sandy's monthly phone bill expense is equal to ten times her age now. In two years, Sandy will be three times as old as Kim. If Kim is currently 10 years old, calculate Sandy's monthly phone bill expense.",
        answer="If Kim is currently 10 years old, she will be 10+2 =<<10+2=12>>12 years old in two years.\nIn two years, Sandy will be three times as old as Kim, meaning Sandy will be 3*12 = <<3*12=36>>36 years old.\nCurrently, Sandy is 36-2 = <<36-2=34>>34 years old.\nIf Sandy's monthly phone bill expense is equal to ten times her age now, she pays 10*34 =$<<10*34=340>>340 in phone bill expense\n#### 340",
        thoughts=["", ""],
        deep="If Kim is currently 10 years old, she will be 10+2 =12 years old in two years.\nIn two years, Sandy will be three times as old as Kim, meaning Sandy will be 3*12 = 36 years old.\nCurrently, Sandy is 36-2 = 34 years old.\nIf Sandy's monthly phone bill expense is equal to ten times her age now, she pays 10*34 =$340 in phone bill expense.\nThe answer is \\boxed{340}.",
        final="340",
    ),
}


@pytest.mark.parametrize("idx", sorted(HAND_CHECKED))
def test_gsm8k_step_alignment_hand_checked(idx):
    case = HAND_CHECKED[idx]
    p = streamify_problem(case["question"], case["answer"], id=f"gsm8k-{idx}")
    rec = p.record
    assert rec["thoughts"] == case["thoughts"]
    assert rec["deep"] == case["deep"]
    assert rec["answer"] == case["final"]
    assert len(rec["chunks"]) == len(rec["thoughts"]) + 1
    assert rec["question"] == case["question"].strip()
    assert p.clean, p.issues


@needs_train
def test_hand_checked_records_match_the_train_file():
    lines = GSM8K_TRAIN.read_text(encoding="utf-8").splitlines()
    for idx, case in HAND_CHECKED.items():
        rec = json.loads(lines[idx])
        assert (rec["question"], rec["answer"]) == (case["question"], case["answer"]), idx


def test_known_numbers_normalization_and_number_words():
    got = known_numbers("She paid $1,200.00 for 25% of a dozen items, half of 3/4, twenty-five twice.")
    for v in (1200, 25, 0.25, 12, 2, 0.5, 3, 4, 0.75, 20, 5, 25):
        assert round(float(v), 6) in got, v
    assert canonical_answer(" 1,000 ") == "1000"
    assert canonical_answer("72.0") == "72"


def test_unannotated_step_goes_to_deep_and_blocks_later_steps():
    q = "Ann has 3 apples. Bob has 4 apples. How many apples do they have?"
    a = "Let x be the total.\nThey have 3+4=<<3+4=7>>7 apples.\n#### 7"
    p = streamify_problem(q, a)
    assert p.record["thoughts"] == ["", ""]
    assert p.record["deep"] == "Let x be the total.\nThey have 3+4=7 apples.\nThe answer is \\boxed{7}."
    assert not p.clean and "step without annotation" in p.issues


def test_parse_failures_are_excluded_with_reasons():
    good = {
        "question": "Ann has 3 apples. Bob gives her 4 more. How many apples does Ann have?",
        "answer": "Ann has 3+4=<<3+4=7>>7 apples.\n#### 7",
    }
    bad = [
        {"question": "Q?", "answer": "no marker here"},
        {"question": "Q?", "answer": "x <<3+4>> y\n#### 7"},
        {"question": "   ", "answer": "3+4=<<3+4=7>>7\n#### 7"},
        {"question": "Q?", "answer": "#### 7"},
        {"question": "Q?", "answer": "3+4=<<3+4=7>>7\n####  "},
    ]
    out, rep = streamify_gsm8k([good, *bad])
    assert isinstance(rep, StreamifyReport)
    assert rep.total == 6 and rep.converted == 1 and rep.clean == 1
    assert rep.excluded == {
        "no #### marker": 1,
        "malformed annotation": 1,
        "empty question": 1,
        "no solution steps": 1,
        "empty final answer": 1,
    }
    assert [r["id"] for r in out] == ["gsm8k-0"]
    assert out[0]["thoughts"] == ["", "Ann has 3+4=7 apples."]  # 4 arrives with chunk 1


@needs_train
def test_report_on_first_200_train_problems():
    records = read_jsonl(GSM8K_TRAIN, limit=200)
    out, rep = streamify_gsm8k(records)
    assert rep.total == 200
    assert rep.converted_fraction > 0.95
    assert rep.clean_fraction > 0.6
    assert 0.3 < rep.skip_rate < 0.9
    assert 0.3 < rep.mean_stream_steps_fraction < 0.8
    assert rep.with_thought > 0.5
    assert len(out) == rep.converted
    for r in out:
        assert set(r) == {"id", "task", "question", "chunks", "thoughts", "deep", "answer", "note_targets"}
        # the per-note reward's targets: results the notes compute, never a number the question gives
        assert all(t not in known_numbers(r["question"]) for t in r["note_targets"])
        assert len(r["thoughts"]) == len(r["chunks"]) - 1
        assert r["deep"].endswith(f"\\boxed{{{r['answer']}}}.")
        assert "<<" not in " ".join(r["thoughts"]) + r["deep"]
        assert "," not in r["answer"]
    clean_out, clean_rep = streamify_gsm8k(records, clean_only=True)
    assert len(clean_out) == clean_rep.clean == rep.clean


# ---------------------------------------------------------------------------------------------
# procedural


def _recompute(task: str, rec: dict) -> str:
    """An independent reading of the rendered facts."""
    chunks = rec["chunks"]
    if task == "chain_sum":
        v = int(re.fullmatch(r"Start with (-?\d+)\.", chunks[0]).group(1))
        for c in chunks[1:-1]:
            op, n = re.fullmatch(r"(Add|Subtract) (-?\d+)\.", c).groups()
            v = v + int(n) if op == "Add" else v - int(n)
        return str(v)
    if task == "letter_counting":
        letter = re.search(r'"(.)"', chunks[0]).group(1)
        return str(sum(c.lower().count(letter) for c in chunks[1:-1]))
    if task == "leg_counting":
        from reasoning_gym.arithmetic.leg_counting import ANIMALS

        plural = {"sheep": "sheep", "deer": "deer", "shrimp": "shrimp", "starfish": "starfish",
                  "jellyfish": "jellyfish", "woodlice": "woodlouse"}
        total = 0
        for c in chunks[1:-1]:
            n, name = re.fullmatch(r"(\d+) (.+)\.", c).groups()
            legs = ANIMALS.get(name)
            if legs is None:
                name = plural.get(name) or next(a for a in ANIMALS if name.startswith(a) or
                                                 name == a[:-1] + "ies")
                legs = ANIMALS[name]
            total += int(n) * legs
        return str(total)
    raise AssertionError(task)


@pytest.mark.parametrize("task", PROCEDURAL_TASKS)
def test_procedural_families_produce_verified_answers(task):
    recs, rep = build_procedural_with_report(task, size=25, seed=7)
    assert len(recs) == rep.built == 25 and rep.mismatched == 0 and not rep.errors
    for r in recs:
        assert r["task"] == task
        assert len(r["thoughts"]) == len(r["chunks"]) - 1
        assert r["question"] == " ".join(r["chunks"])
        assert r["deep"].endswith(f"\\boxed{{{r['answer']}}}")
        assert _recompute(task, r) == r["answer"]
        assert score(task, r["deep"], r["answer"])  # reasoning-gym's own scorer, via \boxed{}
        assert not score(task, str(int(r["answer"]) + 1), r["answer"])
    assert any(t == "" for r in recs for t in r["thoughts"])  # skips exist
    assert any(t for r in recs for t in r["thoughts"])
    assert build_procedural(task, 25, 7) == recs  # deterministic
    assert build_procedural(task, 25, 8) != recs


def test_chain_sum_running_value_and_knobs():
    recs = build_procedural("chain_sum", 10, 0, terms=4, digits=1)
    for r in recs:
        assert len(r["chunks"]) == 5  # start + 3 operations + question
        assert r["chunks"][-1] == "What is the result?"
        assert r["thoughts"][0] == ""
        values = [int(re.search(r"= (-?\d+)\.$", t).group(1)) for t in r["thoughts"][1:]]
        assert str(values[-1]) == r["answer"]
        assert r["deep"] == f"The result is {r['answer']}. \\boxed{{{r['answer']}}}"
        assert all(len(re.sub(r"\D", "", c)) <= 1 for c in r["chunks"][:-1])
    words = build_procedural("letter_counting", 5, 0, words=6, words_per_chunk=3)
    assert all(len(r["chunks"]) == 4 for r in words)
    # final: boxed -> the same episodes with a bare \boxed{N} deep stage
    boxed = build_procedural("chain_sum", 10, 0, terms=4, digits=1, final="boxed")
    assert [(b["question"], b["thoughts"]) for b in boxed] == [(r["question"], r["thoughts"]) for r in recs]
    assert all(b["deep"] == f"\\boxed{{{b['answer']}}}" for b in boxed)
    with pytest.raises(ConfigError, match="final must be 'sentence' or 'boxed'"):
        build_procedural("chain_sum", 2, 0, final="short")


def test_chain_sum_skip_prob_folds_skipped_operations():
    plain = build_procedural("chain_sum", 40, 0, terms=4, digits=1, final="boxed")
    assert build_procedural("chain_sum", 40, 0, terms=4, digits=1, final="boxed", skip_prob=0.0) == plain
    fold = build_procedural("chain_sum", 40, 0, terms=4, digits=1, final="boxed", skip_prob=0.5)
    assert fold == build_procedural("chain_sum", 40, 0, terms=4, digits=1, final="boxed", skip_prob=0.5)
    assert [(f["question"], f["answer"]) for f in fold] == [(p["question"], p["answer"]) for p in plain]
    skipped = sum(t == "" for f in fold for t in f["thoughts"][1:])
    assert 0.3 * 3 * 40 < skipped < 0.7 * 3 * 40
    for f in fold:
        # replaying the thoughts and the deep stage from the facts reproduces the answer, and a
        # thought (or the deep stage) folds exactly the operations skipped since the last one
        ops = [c.replace("Add ", "+ ").replace("Subtract ", "- ").rstrip(".") for c in f["chunks"][1:-1]]
        value, folded = int(f["chunks"][0].split()[-1].rstrip(".")), []
        for op, t in zip(ops, f["thoughts"][1:]):
            folded.append(op)
            if t:
                new = eval(f"{value} {' '.join(folded)}")
                assert t == f"{value} {' '.join(folded)} = {new}.", t
                value, folded = new, []
        tail = f"{value} {' '.join(folded)} = {f['answer']}. " if folded else ""
        assert f["deep"] == tail + f"\\boxed{{{f['answer']}}}"
    with pytest.raises(ConfigError, match="skip_prob must be a number in"):
        build_procedural("chain_sum", 2, 0, skip_prob=1.5)


def test_chain_sum_forced_skips_are_context_not_targets(tiny_tokenizer, tmp_path):
    """skip_forced: the knob's skips are listed as the engine's and rendered untrained, so SFT
    teaches folding after a forced skip but never the skip itself; the plain fold records train
    every skip (the measured failure of RESULTS.md section 25: a model that skips by itself)."""
    import datasets

    from adasr.protocol import STAGE_INPUT, StreamingFormat
    from adasr.train.sft_data import context_turns, prepare_episodes, render_row

    knobs = dict(terms=4, digits=1, final="boxed", skip_prob=0.5)
    fold = build_procedural("chain_sum", 40, 0, **knobs)
    forced = build_procedural("chain_sum", 40, 0, skip_forced=True, **knobs)
    assert [{k: v for k, v in f.items() if k != "forced_skips"} for f in forced] == fold
    assert all(f["forced_skips"] == [k for k, t in enumerate(f["thoughts"]) if k > 0 and t == ""] for f in forced)
    assert sum(map(len, (f["forced_skips"] for f in forced))) > 20
    fmt = StreamingFormat(tiny_tokenizer)
    row = next(f for f in forced if f["forced_skips"] and any(f["thoughts"]))  # a forced skip and a written thought
    r_fold, _ = render_row(fmt, {k: v for k, v in row.items() if k != "forced_skips"})
    r, _ = render_row(fmt, row)
    assert r.input_ids == r_fold.input_ids  # the same tokens: only the labels differ
    assert sum(r_fold.decision) - sum(r.decision) == len(row["forced_skips"])
    untrained = [p for p, (a, b) in enumerate(zip(r_fold.stage, r.stage)) if a != b]
    assert untrained and all(r.stage[p] == STAGE_INPUT for p in untrained)
    assert [r.input_ids[p] for p in untrained] == [fmt.end_of_turn_id] * len(row["forced_skips"])  # each skip's one token
    _, stats_fold = prepare_episodes(datasets.Dataset.from_list(fold), fmt, 4096, "streaming")
    ds = build_dataset("chain_sum", size=40, seed=0, skip_forced=True, **knobs)  # the dataset SFT trains on
    assert ds["forced_skips"] == [f["forced_skips"] for f in forced]
    write_jsonl(forced, tmp_path / "forced.jsonl")  # and a built file read back as task episodes
    assert build_dataset("episodes", source=str(tmp_path / "forced.jsonl"))["forced_skips"] == ds["forced_skips"]
    _, stats = prepare_episodes(ds, fmt, 4096, "streaming")
    n_forced = sum(map(len, (f["forced_skips"] for f in forced)))
    assert stats_fold.class_counts["skip"] - stats.class_counts["skip"] == n_forced
    assert stats_fold.class_counts["think"] == stats.class_counts["think"]
    assert context_turns(row, "batch") == []
    written = next(k for k, t in enumerate(row["thoughts"]) if t)
    for bad in ([99], [written]):  # out of range; a thought the model writes
        with pytest.raises(DataError, match="forced_skips"):
            context_turns({**row, "forced_skips": bad}, "streaming")


def test_chain_sum_value_thoughts_write_the_running_value_alone():
    knobs = dict(terms=4, digits=1, final="boxed")
    step = build_procedural("chain_sum", 30, 0, **knobs)
    value = build_procedural("chain_sum", 30, 0, thought="value", **knobs)
    for a, b in zip(step, value):
        assert b["chunks"] == a["chunks"] and b["deep"] == a["deep"] and b["answer"] == a["answer"]
        assert b["thoughts"] == [t.rsplit("= ", 1)[1] if t else "" for t in a["thoughts"]]
    fold = build_procedural("chain_sum", 30, 0, thought="value", skip_prob=0.5, **knobs)
    assert all(re.fullmatch(r"(-?\d+\. )?\\boxed\{-?\d+\}", f["deep"]) for f in fold)
    with pytest.raises(ConfigError, match="thought must be"):
        build_procedural("chain_sum", 2, 0, thought="terse")


def test_procedural_config_errors():
    with pytest.raises(ConfigError, match="chain_sum"):
        build_procedural("no_such_task", 5, 0)
    with pytest.raises(ConfigError, match="size"):
        build_procedural("chain_sum", 0, 0)
    with pytest.raises(ConfigError, match="valid knobs"):
        build_procedural("chain_sum", 5, 0, bogus=1)
    with pytest.raises(ConfigError):
        build_procedural("chain_sum", 5, 0, min_terms=5, max_terms=2)
    with pytest.raises(ConfigError):
        score("no_such_task", "1", "1")


def test_gsm8k_is_graded_by_its_task_not_the_procedural_scorer():
    from adasr.tasks.registry import get_task

    gsm8k = get_task("gsm8k")
    assert gsm8k.grade("The answer is \\boxed{1,000}.", "1000")
    assert gsm8k.grade("72.0", "72")
    assert not gsm8k.grade("71", "72")
    assert not gsm8k.grade(None, "72")
    with pytest.raises(ConfigError, match="unknown procedural task 'gsm8k'"):  # one GSM8K checker, not two
        score("gsm8k", "72", "72")


# ---------------------------------------------------------------------------------------------
# registry


def test_build_dataset_unknown_task_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        build_dataset("nope")
    for name in TASKS:
        assert name in str(e.value)
    with pytest.raises(ConfigError, match="size"):
        build_dataset("chain_sum", size=0)
    with pytest.raises(ConfigError, match="source"):
        build_dataset("gsm8k")


def test_build_dataset_empty_result_is_data_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?", "answer": "no marker"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="no valid GSM8K problems"):
        build_dataset("gsm8k", source=bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError):
        build_dataset("gsm8k", source=empty)
    with pytest.raises(DataError, match="not found"):
        build_dataset("gsm8k", source=tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match="broken.jsonl:1"):
        build_dataset("gsm8k", source=broken)
    # only unclean problems and clean_only -> nothing left
    unclean = tmp_path / "unclean.jsonl"
    unclean.write_text(json.dumps({"question": "Q?", "answer": "Let x be 3.\n#### 3"}) + "\n", encoding="utf-8")
    assert len(build_dataset("gsm8k", source=unclean)) == 1
    with pytest.raises(DataError):
        build_dataset("gsm8k", source=unclean, clean_only=True)


def test_build_dataset_schema_and_write_jsonl(tmp_path):
    src = tmp_path / "mini.jsonl"
    src.write_text(
        "".join(json.dumps({"question": c["question"], "answer": c["answer"]}) + "\n" for c in HAND_CHECKED.values()),
        encoding="utf-8",
    )
    ds = build_dataset("gsm8k", source=src, size=3)
    assert len(ds) == 3
    assert ds.column_names == ["id", "task", "question", "chunks", "thoughts", "deep", "answer", "note_targets"]
    assert ds[0]["thoughts"] == HAND_CHECKED[0]["thoughts"]
    proc = build_dataset("leg_counting", size=4, seed=1)  # the shared schema (GSM8K adds its note targets)
    assert len(proc) == 4 and proc.features == ds.remove_columns("note_targets").features
    out = tmp_path / "sub" / "out.jsonl"
    assert write_jsonl(ds, out) == 3
    back = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert back == ds.to_list()


def test_note_targets_are_the_early_steps_results_the_question_does_not_give():
    p = streamify_problem(
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
    assert p.record["note_targets"] == [24.0, 72.0]  # both placed after the first chunk (72 anticipated)
    q = streamify_problem("Tom has 3 apples. He buys 3 more. Then he eats 3. How many are left?",
                          "3+3 = <<3+3=6>>6\n6-3 = <<6-3=3>>3\n#### 3")
    assert all(s.chunk is not None for s in q.steps) and q.record["note_targets"] == [6.0]  # 6 - 3 = 3: given
