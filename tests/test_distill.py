"""Self-distillation: free-form solutions aligned to chunks (hand-checked), sampling resumable
and refusing mixed settings, conversion report, held-out overlap checks."""

from __future__ import annotations

import json

import pytest

from adasr.errors import ConfigError, DataError
from adasr.tasks.base import Item
from adasr.tasks.splits import assert_disjoint, drop_overlap, normalize_question
from adasr.tasks.solutions import parse_free_solution
from adasr.tasks.streamify import streamify_solution
from adasr.train.distill import DistillConfig, distill, sample_counts, write_episodes

NATALIA_Q = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
             "How many clips did Natalia sell altogether in April and May?")
# a solution Qwen2.5-Coder-0.5B-Instruct sampled (gsm8k-train-1#1), verbatim
NATALIA_SOL = (
    "To solve this problem, we need to calculate the total number of clips sold by Natalia in April and May. "
    "Here's the step-by-step reasoning:\n\n1. Calculate the number of clips sold in April.\n2. Calculate the "
    "number of clips sold in May.\n3. Add the number of clips sold in April and May to get the total number of "
    "clips sold.\n\nLet's start with the calculations:\n\n1. In April, Natalia sold 48 clips.\n2. In May, Natalia "
    "sold half as many clips as in April. Therefore, the number of clips sold in May is:\n   \\[\n   \\frac{48}{2} "
    "= 24\n   \\]\n3. The total number of clips sold in April and May is the sum of the clips sold in April and "
    "May:\n   \\[\n   48 + 24 = 72\n   \\]\n\nSo, the total number of clips sold in April and May is "
    "\\(\\boxed{72}\\)."
)
WENG_Q = ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
          "How much did she earn?")
WENG_SOL = (
    "Weng earns 12 dollars per hour.\n\nFirst convert the minutes: 50 / 60 = 0.8333 hours.\n\n"
    "Then her pay is 12 \\times 0.8333 = 10 dollars.\n\nSo she earned \\boxed{10} dollars."
)


def test_free_solution_steps_and_operands():
    steps = parse_free_solution(NATALIA_SOL)
    computing = [s for s in steps if s.annotated]
    assert [s.operands for s in computing] == [(48.0, 2.0), (48.0, 24.0)]
    assert [s.results for s in computing] == [(24.0,), (72.0,)]
    assert all(s.consistent for s in steps)
    # display math belongs to the list item above it
    assert computing[0].text.startswith("2. In May") and computing[0].text.endswith("\\]")
    assert NATALIA_SOL[steps[-1].span[0]:steps[-1].span[1]].endswith("\\(\\boxed{72}\\).")


def test_free_solution_hand_checked_placement():
    # Natalia: 48/2 and 48+24 need only chunk 0 (48, "half"): a thought after chunk 0; the
    # plan and restated facts (prose) are dropped from the thought; the boxed line is deep.
    p = streamify_solution(NATALIA_Q, NATALIA_SOL, "72")
    assert p.record["chunks"] == [NATALIA_Q.split(". ")[0] + ".", "How many clips did Natalia sell altogether in April and May?"]
    assert p.record["thoughts"] == [
        "2. In May, Natalia sold half as many clips as in April. Therefore, the number of clips sold in May is:\n"
        "   \\[\n   \\frac{48}{2} = 24\n   \\]\n"
        "3. The total number of clips sold in April and May is the sum of the clips sold in April and May:\n"
        "   \\[\n   48 + 24 = 72\n   \\]"
    ]
    assert p.record["deep"] == "So, the total number of clips sold in April and May is \\(\\boxed{72}\\)."
    assert p.clean
    # Weng: 50/60 needs 50 (chunk 1); 12 * 0.8333 uses the result: both after chunk 1
    w = streamify_solution(WENG_Q, WENG_SOL, "10")
    assert w.record["thoughts"] == ["", "First convert the minutes: 50 / 60 = 0.8333 hours.\n"
                                        "Then her pay is 12 \\times 0.8333 = 10 dollars."]
    assert w.record["deep"] == "So she earned \\boxed{10} dollars."
    # with prose kept, a thought is the exact slice of the solution
    wk = streamify_solution(WENG_Q, WENG_SOL, "10", notes="prose")
    assert wk.record["thoughts"][1] == WENG_SOL[:WENG_SOL.index("\n\nSo she")]
    one = streamify_solution(NATALIA_Q, NATALIA_SOL, "72", one_line=True).record["thoughts"][0]
    assert "\n" not in one and one.startswith("2. In May") and one.endswith("48 + 24 = 72 \\]")


# Qwen2.5-Coder-0.5B-Instruct samples (gsm8k-train-138#1, gsm8k-train-76#1), abridged: list items
# ending in a period, units in \\text{}, pound signs and intermediate values inside one chain
TOWELS_Q = ("3 families of 4 people shared a vacation rental for 7 days. Everyone uses 1 oversized beach towel a "
            "day before getting a new one. The washing machine can hold 14 oversized beach towels per load. How "
            "many loads of laundry will it take to wash all the oversized beach towels?")
TOWELS_SOL = ("1. **Calculate the total number of people:**\n   - Total number of people = \\(3 \\times 4 = 12\\).\n"
              "2. **Towels used in 7 days:**\n   - Total = \\(12 \\times 7 = 84\\).\n"
              "3. **Loads:**\n   - Loads needed = \\(\\frac{84}{14} = 6\\).\n\nThe answer is \\(\\boxed{6}\\).")
TOAST_Q = ("A slice of toast costs \u00a31, and eggs cost \u00a33 each. Dale had 2 slices of toast and 2 eggs. "
           "Andrew had 1 slice of toast and 2 eggs. How much did their breakfast cost?")
TOAST_SOL = ("- The cost of Dale's breakfast:\n  \\[\n  2 \\text{ slices} \\times \u00a31 \\text{ per slice} + 2 "
             "\\text{ eggs} \\times \u00a33 = \u00a32 + \u00a36 = \u00a38\n  \\]\n\nTherefore it cost \\boxed{15}.")


def test_free_solution_reads_periods_units_currency_and_intermediate_values():
    steps = [s for s in parse_free_solution(TOWELS_SOL) if s.annotated]
    assert [(s.operands, s.results) for s in steps] == [((3.0, 4.0), (12.0,)), ((12.0, 7.0), (84.0,)),
                                                       ((84.0, 14.0), (6.0,))]
    # 3*4 after chunk 0; 12*7 also (7 days is in chunk 0); 84/14 needs chunk 2 (14 per load)
    towels = streamify_solution(TOWELS_Q, TOWELS_SOL, "6").record
    assert [bool(t) for t in towels["thoughts"]] == [True, False, True]
    assert "3 \\times 4 = 12" in towels["thoughts"][0] and "frac{84}{14}" in towels["thoughts"][2]
    (dale,) = [s for s in parse_free_solution(TOAST_SOL) if s.annotated]
    assert dale.operands == (2.0, 1.0, 2.0, 3.0) and set(dale.results) == {2.0, 6.0, 8.0}
    toast = streamify_solution(TOAST_Q, TOAST_SOL, "15").record  # 2 eggs of Dale: chunk 1
    assert [bool(t) for t in toast["thoughts"]] == [False, True, False]


def test_terse_notes_keep_the_computations_and_what_they_count():
    from adasr.tasks.notes import terse_note

    assert terse_note("1. Lisa earned half of the $60: \\[ \\text{Lisa's earnings} = \\frac{60}{2} = 30 \\]") == \
        "Lisa's earnings = \\frac{60}{2} = 30"
    assert terse_note("- Therefore, the total cost of the ice cream is \\(10 \\times 4 = 40\\) dollars.") == \
        "The total cost of the ice cream is 10 \\times 4 = 40"
    assert terse_note("Let's start with step 1: The number of balls Ralph hit is \\(\\frac{2}{5} \\times 100 = 40\\).") \
        == "The number of balls Ralph hit is \\frac{2}{5} \\times 100 = 40"
    assert terse_note("First convert the minutes: 50 / 60 = 0.8333 hours. That is most of an hour.") == \
        "Convert the minutes: 50 / 60 = 0.8333 hours."


def test_thoughts_fitted_to_the_arrival_room_and_a_terse_deep_stage():
    from adasr.tasks.notes import ThoughtFit

    words = lambda t: len(t.split())  # noqa: E731  (a hand-countable tokenizer)
    # room after chunk k = words of chunk k+1 = 13, 11, 14: "people" (9) fits after chunk 0,
    # "12 x 7" (7 + 1) does not and waits for chunk 1; "loads" (5) after chunk 2
    fitted = streamify_solution(TOWELS_Q, TOWELS_SOL, "6", notes="terse", fit=ThoughtFit(1.0, 64, words)).record
    assert fitted["thoughts"] == ["Total number of people = 3 \\times 4 = 12", "Total = 12 \\times 7 = 84",
                                  "Loads needed = \\frac{84}{14} = 6"]
    assert fitted["deep"] == "The answer is \\(\\boxed{6}\\)."
    # half the room: nothing fits before the question, so every step moves to the deep stage
    tight = streamify_solution(TOWELS_Q, TOWELS_SOL, "6", notes="terse", fit=ThoughtFit(0.5, 64, words))
    assert tight.record["thoughts"] == ["", "", ""] and tight.record["deep"] == TOWELS_SOL
    terse = streamify_solution(TOWELS_Q, TOWELS_SOL, "6", notes="terse", fit=ThoughtFit(0.5, 64, words),
                               deep_style="terse").record
    assert terse["deep"] == ("Total number of people = 3 \\times 4 = 12\nTotal = 12 \\times 7 = 84\n"
                             "Loads needed = \\frac{84}{14} = 6\nThe answer is \\(\\boxed{6}\\).")
    with pytest.raises(ValueError, match="notes must be one of"):
        streamify_solution(TOWELS_Q, TOWELS_SOL, "6", notes="short")


def test_free_solution_without_boxed_gets_an_answer_line_and_inconsistency_is_flagged():
    p = streamify_solution("Ann has 3 apples. Bob has 4 apples. How many in all?", "3 + 4 = 8 apples.", "7")
    assert p.record["thoughts"] == ["", "3 + 4 = 8 apples."]
    assert p.record["deep"] == "The answer is \\boxed{7}."
    assert not p.clean and p.issues == ["inconsistent arithmetic"]


def test_overlap_checks(tmp_path):
    held = tmp_path / "held.jsonl"
    held.write_text(json.dumps({"question": "What is  2+2?", "answer": "#### 4"}) + "\n")
    items = [Item("a", "what is 2+2?", "4", 1), Item("b", "What is 3+3?", "6", 2)]
    kept, dropped = drop_overlap(items, [held])
    assert [it.id for it in kept] == ["b"] and dropped == 1
    assert normalize_question(" What\nis  2+2? ") == "what is 2+2?"
    with pytest.raises(DataError, match="1 held-out question"):
        assert_disjoint(["What is 2+2?"], ["what is 2+2?"])
    assert_disjoint(["What is 3+3?"], ["what is 2+2?"])


def test_distill_resumes_and_refuses_other_settings(tiny_model, tiny_tokenizer, tmp_path):
    items = [Item(f"q{i}", f"Natalia sold {i} clips. How many clips?", str(i), i) for i in range(3)]
    cfg = DistillConfig(model="tiny", samples=2, max_tokens=16, batch_size=4)
    seen: list[str] = []
    recs = distill(tiny_model, tiny_tokenizer, items[:2], tmp_path, cfg, progress=False,
                   on_record=lambda r: seen.append(r["id"]))
    assert sorted(r["id"] for r in recs) == ["q0#0", "q0#1", "q1#0", "q1#1"]
    assert all(set(r) >= {"solution", "prediction", "correct", "tokens", "reference"} for r in recs)
    # a rerun over more items samples only what is missing, with the same draws as before
    seen.clear()
    recs2 = distill(tiny_model, tiny_tokenizer, items, tmp_path, cfg, progress=False,
                    on_record=lambda r: seen.append(r["id"]))
    assert sorted(seen) == ["q2#0", "q2#1"] and len(recs2) == 6
    fresh = distill(tiny_model, tiny_tokenizer, items[:1], tmp_path / "again", cfg, progress=False)
    assert {r["id"]: r["solution"] for r in fresh} == {r["id"]: r["solution"] for r in recs2 if r["item_id"] == "q0"}
    more = distill(tiny_model, tiny_tokenizer, items[:1], tmp_path, DistillConfig(model="tiny", samples=3, max_tokens=16),
                   progress=False)  # a larger K extends the run
    assert sorted(r["id"] for r in more) == ["q0#0", "q0#1", "q0#2"]
    with pytest.raises(ConfigError, match="temperature"):
        distill(tiny_model, tiny_tokenizer, items, tmp_path, DistillConfig(model="tiny", samples=2, max_tokens=16,
                                                                          temperature=0.9), progress=False)


def test_distill_engine_factory_device_and_backend(tiny_model, tiny_tokenizer, tmp_path):
    from adasr.engine import StreamingEngine

    items = [Item(f"q{i}", f"Natalia sold {i} clips. How many clips?", str(i), i) for i in range(2)]
    built: list = []

    class Closing(StreamingEngine):
        closed = False

        def close(self):
            Closing.closed = True
            super().close()

    def factory(config):
        built.append(config)
        return Closing(tiny_model, tiny_tokenizer, config)

    cfg = DistillConfig(model="tiny", samples=1, max_tokens=16, device="cpu")
    recs = distill(tiny_model, tiny_tokenizer, items[:1], tmp_path, cfg, progress=False, engine_factory=factory)
    assert [c.policy for c in built] == ["batch"] and built[0].max_deep_tokens == 16 and Closing.closed
    # the same draws as the default engine; recorded where they ran; resumable on another device or backend
    again = distill(tiny_model, tiny_tokenizer, items[:1], tmp_path / "b", cfg, progress=False)
    assert [r["solution"] for r in again] == [r["solution"] for r in recs]
    assert json.loads((tmp_path / "config.json").read_text())["backend"] == "torch"
    more = distill(tiny_model, tiny_tokenizer, items, tmp_path, DistillConfig(model="tiny", samples=1, max_tokens=16,
                                                                              device="cuda"),
                   progress=False, engine_factory=factory)
    assert len(more) == 2
    with pytest.raises(ConfigError, match="pass an engine_factory"):
        distill(tiny_model, tiny_tokenizer, items, tmp_path / "c", DistillConfig(model="tiny", backend="vllm"),
                progress=False)
    with pytest.raises(ConfigError, match="unknown backend 'jax'"):
        DistillConfig(backend="jax").validate()


def test_write_episodes_report(tiny_tokenizer, tmp_path):
    base = {"question": NATALIA_Q, "reference": "72", "prediction": "72", "tokens": 1, "format_ok": True}
    records = [
        {**base, "id": "n#0", "item_id": "n", "solution": NATALIA_SOL, "correct": True},
        {**base, "id": "n#1", "item_id": "n", "solution": "```python\nprint(48 + 24)\n```\n\\boxed{72}", "correct": True},
        {**base, "id": "w#0", "item_id": "w", "question": WENG_Q, "reference": "10", "solution": "x", "correct": False},
    ]
    rep = write_episodes(records, tmp_path, tiny_tokenizer, notes="steps", tokens_per_word=None, deep_style="verbatim")
    assert (rep.problems, rep.problems_solved, rep.samples, rep.kept, rep.episodes) == (2, 1, 3, 2, 1)
    assert rep.excluded == {"code": 1}
    assert rep.skip_rate == 0.0 and 0.5 < rep.stream_token_share < 1.0  # both steps after the one chunk
    # the defaults: terse notes fitted to the arrival room (the question's 13 words x 2.8 tokens),
    # a terse deep stage: fewer tokens in all than the solution
    short = write_episodes(records, tmp_path, tiny_tokenizer)
    assert (short.notes, short.tokens_per_word, short.deep_style) == ("terse", 2.8, "terse")
    assert short.mean_thought_tokens <= 13 * 2.8
    assert short.mean_thought_tokens + short.mean_deep_tokens < rep.mean_thought_tokens + rep.mean_deep_tokens
    eps = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [e["id"] for e in eps] == ["n#0"] and eps[0]["answer"] == "72"
    assert json.loads((tmp_path / "report.json").read_text())["episodes"] == 1
    assert sample_counts(records).keep_rate == pytest.approx(2 / 3) and rep.keep_rate == pytest.approx(2 / 3)


def test_write_episodes_at_mixed_operating_points(tiny_tokenizer, tmp_path):
    """Several --tokens-per-word values: each episode is fitted to the point its sample id picks
    (fixed, so a rerun keeps it), and the report gives each point's episodes and share."""
    from adasr.train.distill import point_of

    base = {"question": NATALIA_Q, "reference": "72", "prediction": "72", "tokens": 1, "format_ok": True,
            "item_id": "n", "solution": NATALIA_SOL, "correct": True}
    records = [{**base, "id": f"n#{k}"} for k in range(12)]
    rep = write_episodes(records, tmp_path, tiny_tokenizer, notes="steps", tokens_per_word=[0.5, 40.0],
                         max_thought_tokens=4096, episodes_file="mixed.jsonl")
    assert rep.tokens_per_word == [0.5, 40.0] and set(rep.by_point) == {"0.5", "40"}
    assert sum(p["episodes"] for p in rep.by_point.values()) == rep.episodes == 12
    assert all(p["episodes"] for p in rep.by_point.values())  # both points drawn among 12 ids
    eps = {e["id"]: e for e in map(json.loads, (tmp_path / "mixed.jsonl").read_text().splitlines())}
    tight = [i for i in eps if point_of(i, [0.5, 40.0]) == 0.5]
    roomy = [i for i in eps if point_of(i, [0.5, 40.0]) == 40.0]
    # 13 words x 0.5 tokens leave no room for a step: all in the deep stage; 40 tokens a word: notes
    assert all(not any(eps[i]["thoughts"]) for i in tight) and all(any(eps[i]["thoughts"]) for i in roomy)
    assert rep.by_point["0.5"]["stream_token_share"] == 0 < rep.by_point["40"]["stream_token_share"]
    assert point_of("n#3", [0.5, 40.0]) == point_of("n#3", [0.5, 40.0])
    single = write_episodes(records, tmp_path, tiny_tokenizer, tokens_per_word=[2.8])
    assert single.tokens_per_word == 2.8 and single.by_point is None
    with pytest.raises(ConfigError, match="tokens per word > 0"):
        write_episodes(records, tmp_path, tiny_tokenizer, tokens_per_word=[2.8, 0.0])


def test_clause_chunks_let_a_fact_in_the_question_sentence_be_thought_early(tiny_tokenizer, tmp_path):
    """--chunker clause: the question's condition ("If she jogs for 2 hours every morning,") is its
    own chunk, so the step that needs it is a streaming thought instead of deep-stage work."""
    from adasr.train.distill import alignment_report

    q = "Mira jogs 5 miles per hour. If she jogs for 2 hours every morning, how many miles does she jog each morning?"
    sol = "Each morning she jogs \\( 5 \\times 2 = 10 \\) miles.\n\nThe answer is \\boxed{10}."
    records = [{"id": "m#0", "item_id": "m", "question": q, "reference": "10", "prediction": "10", "tokens": 1,
                "format_ok": True, "solution": sol, "correct": True}]
    by_sentence = write_episodes(records, tmp_path, tiny_tokenizer, notes="steps", tokens_per_word=None)
    by_clause = write_episodes(records, tmp_path, tiny_tokenizer, notes="steps", tokens_per_word=None,
                               chunker="clause", episodes_file="clause.jsonl")
    assert (by_sentence.chunker, by_clause.chunker) == ("sentence", "clause")
    assert by_sentence.stream_token_share == 0 < by_clause.stream_token_share
    (ep,) = map(json.loads, (tmp_path / "clause.jsonl").read_text().splitlines())
    assert ep["chunks"][1] == "If she jogs for 2 hours every morning," and "5 \\times 2 = 10" in ep["thoughts"][1]
    bound = {c: alignment_report(records, tiny_tokenizer, c) for c in ("sentence", "clause")}
    assert bound["sentence"]["placeable_share"] == 0 < bound["clause"]["placeable_share"]
    assert bound["sentence"]["unplaced"]["operand in the last chunk"] > 0 and bound["clause"]["chunker"] == "clause"
    with pytest.raises(ConfigError, match="--chunker"):
        write_episodes(records, tmp_path, tiny_tokenizer, chunker="word")


def test_episodes_task_reads_distilled_episodes_and_refuses_overlap(tiny_tokenizer, tmp_path):
    from adasr.tasks.registry import build_dataset
    from adasr.train.config import SFTConfig
    from adasr.train.common import build_splits

    rec = {"id": "n#0", "item_id": "n", "question": NATALIA_Q, "reference": "72", "prediction": "72",
           "tokens": 1, "format_ok": True, "solution": NATALIA_SOL, "correct": True}
    write_episodes([rec], tmp_path, tiny_tokenizer)
    ds = build_dataset("episodes", source=tmp_path / "episodes.jsonl")
    assert len(ds) == 1 and ds[0]["answer"] == "72" and ds[0]["thoughts"][0] == "The number of clips sold in May is: \\frac{48}{2} = 24"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "question": "q", "chunks": ["a"]}) + "\n")
    with pytest.raises(DataError, match="not a streaming episode"):
        build_dataset("episodes", source=bad)
    held = tmp_path / "held.jsonl"
    held.write_text(json.dumps({"question": NATALIA_Q, "answer": "#### 72"}) + "\n")
    cfg = SFTConfig(model="tiny", task="episodes", data_path=str(tmp_path / "episodes.jsonl"), train_size=None,
                    exclude=[str(held)])
    with pytest.raises(DataError, match="held-out question"):
        build_splits(cfg)


def test_alignment_report_places_steps_and_names_why_the_rest_stays(tiny_tokenizer):
    """The aligner's bound on the distilled samples: a step whose operands arrived before the last
    chunk is placeable; one that needs the last chunk, and the boxed answer, are not, with reasons."""
    from adasr.train.distill import alignment_report

    rec = {"correct": True, "question": "Tom has 3 apples. He buys 5 more. Then he eats 2. How many are left?",
           "solution": "He has 3 + 5 = 8 apples.\n\nThen 8 - 2 = 6.\n\nSo the answer is \\boxed{6}."}
    rep = alignment_report([rec, {**rec, "correct": False}], tiny_tokenizer)
    assert rep["samples"] == 1 and rep["reasoning_tokens"] > 0
    assert 0 < rep["placeable_share"] < 1
    assert set(rep["unplaced"]) <= {"answer", "operand in the last chunk", "after a deep-stage step",
                                    "operand not found", "no arithmetic", "parse failure"}
    assert "answer" in rep["unplaced"]
    assert abs(rep["placeable_share"] + sum(rep["unplaced"].values()) - 1) < 1e-9


def test_goal_steps_after_the_question_keep_the_plan_and_the_answer_step_for_the_deep_stage(tiny_tokenizer, tmp_path):
    """--goal-steps after-question: the opening plan (it restates what the question asks) and the
    step that computes the answer wait for the question; the deep stage opens with the plan, then
    continues from the notes. The default places them like any step."""
    from adasr.train.distill import alignment_report

    p = streamify_solution(NATALIA_Q, NATALIA_SOL, "72", notes="prose", goal_steps="after-question")
    (thought,) = p.record["thoughts"]
    assert thought.startswith("2. In May") and "\\frac{48}{2} = 24" in thought
    assert "48 + 24" not in thought and "To solve this problem" not in thought
    plan_end = NATALIA_SOL.index("1. In April, Natalia sold 48 clips.") + len("1. In April, Natalia sold 48 clips.")
    assert p.record["deep"] == (NATALIA_SOL[:plan_end] + "\n\n" + NATALIA_SOL[NATALIA_SOL.index("3. The total"):])
    assert {s.deep_reason for s in p.steps if s.chunk is None} == {"plan", "answer", "after a deep-stage step"}
    default = streamify_solution(NATALIA_Q, NATALIA_SOL, "72", notes="prose")
    assert default.record["thoughts"][0].startswith("To solve this problem") and "48 + 24 = 72" in default.record["thoughts"][0]
    assert default.record["deep"].startswith("So, the total")
    with pytest.raises(ValueError, match="goal_steps"):
        streamify_solution(NATALIA_Q, NATALIA_SOL, "72", goal_steps="later")
    rec = {"id": "n#0", "item_id": "n", "question": NATALIA_Q, "reference": "72", "prediction": "72", "tokens": 1,
           "format_ok": True, "solution": NATALIA_SOL, "correct": True}
    rep = write_episodes([rec], tmp_path, tiny_tokenizer, notes="prose", tokens_per_word=None, deep_style="verbatim",
                         goal_steps="after-question")
    assert rep.goal_steps == "after-question" and 0 < rep.stream_token_share < 0.5
    bound = alignment_report([rec], tiny_tokenizer, goal_steps="after-question")
    assert bound["goal_steps"] == "after-question" and {"plan", "answer"} <= set(bound["unplaced"])
    assert bound["placeable_share"] < alignment_report([rec], tiny_tokenizer)["placeable_share"]
    with pytest.raises(ConfigError, match="--goal-steps"):
        write_episodes([rec], tmp_path, tiny_tokenizer, goal_steps="later")
