"""The task interface: the registry returns each item's task, and every task loads, grades and
builds episodes through the same protocol."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from adasr.errors import ConfigError, DataError
from adasr.tasks.base import Item, Task
from adasr.tasks.gsm8k import load_gsm8k
from adasr.tasks.proactive import PROACTIVE_TASKS
from adasr.tasks.procedural import PROCEDURAL_TASKS
from adasr.tasks.registry import TASKS, get_task, task_for


def test_every_task_name_has_one_task():
    for name in ("gsm8k", *PROCEDURAL_TASKS, *PROACTIVE_TASKS):
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
    assert set(TASKS) == {"episodes", "gsm8k", *PROCEDURAL_TASKS, *PROACTIVE_TASKS}
    with pytest.raises(ConfigError, match=r"unknown task 'nope': valid tasks are gsm8k, chain_sum"):
        get_task("nope")
    with pytest.raises(ConfigError, match="unknown task 'episodes'"):  # a source of episodes, not a grader
        get_task("episodes")


@pytest.mark.parametrize("task, prediction, reference, expected", [
    ("gsm8k", "\\boxed{1,000}", "1000", True),
    ("gsm8k", "72.0", "72", True),
    ("gsm8k", "71", "72", False),
    ("gsm8k", None, "72", False),
    ("chain_sum", "The result is 16. \\boxed{16}", "16", True),
    ("chain_sum", "\\boxed{15}", "16", False),
    ("chain_sum", None, "16", False),
    ("leg_counting", "\\boxed{14}", "14", True),
    ("proactive_perception", "\\boxed{The Paris.}", "paris", True),
    ("proactive_threshold", "\\boxed{31}", "31.0", True),
    ("proactive_threshold", "\\boxed{30}", "31", False),
])
def test_registry_grades_by_task(task, prediction, reference, expected):
    assert get_task(task).grade(prediction, reference) is expected


def test_task_for_an_item_or_a_record():
    item = Item(id="a", question="Start with 2. Add 3. What is the result?", reference="5", task="chain_sum")
    assert task_for(item).name == "chain_sum" and task_for(item).grade("\\boxed{5}", item.reference)
    assert task_for({"task": "gsm8k", "answer": "5"}).name == "gsm8k"
    assert task_for({"answer": "5"}).name == "gsm8k"  # rows without a task are GSM8K
    with pytest.raises(ConfigError, match="unknown task 'poetry'"):
        task_for(Item(id="b", question="q", reference="r", task="poetry"))


def test_tasks_load_items_that_their_own_grader_accepts(tmp_path):
    data = tmp_path / "g.jsonl"
    data.write_text(json.dumps({"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=7\n#### 7"}) + "\n")
    (g,) = get_task("gsm8k").load(data)
    assert (g.task, g.reference, g.chunks, g.line) == ("gsm8k", "7", None, 1)
    with pytest.raises(ConfigError, match="needs source"):
        get_task("gsm8k").load()

    items = get_task("chain_sum").load(limit=3, seed=4, terms=3)
    assert len(items) == 3 and all(isinstance(it, Item) and it.task == "chain_sum" and it.chunks for it in items)
    assert all(task_for(it).grade(f"\\boxed{{{it.reference}}}", it.reference) for it in items)
    assert get_task("chain_sum").load(limit=3, seed=4, terms=3) == items  # same seed, same items
    with pytest.raises(ConfigError, match="takes no source"):
        get_task("chain_sum").load(data)

    (p,) = get_task("proactive_threshold").load(limit=1, seed=0, split="test")
    assert p.evidence_chunk is not None and 0 <= p.evidence_chunk < len(p.chunks)
    assert task_for(p).grade(p.reference, p.reference)


def test_episodes_of_a_task_are_the_shared_schema():
    (ep,) = get_task("letter_counting").episodes(size=1, seed=2)
    assert {"id", "task", "question", "chunks", "thoughts", "deep", "answer"} <= set(ep)
    assert len(ep["thoughts"]) == len(ep["chunks"]) - 1
    assert get_task("letter_counting").grade(ep["deep"], ep["answer"])  # the target deep stage grades right


def test_items_with_timestamps_load_and_bad_ones_are_reported(tmp_path):
    good = {"question": "q", "answer": "#### 3", "chunks": ["One.", "Two."], "timestamps": [0.5, 2]}
    bad = [{**good, "id": "x1", "timestamps": [2, 1]}, {**good, "id": "x2", "timestamps": [1]},
           {"question": "q", "answer": "#### 3", "id": "x3", "timestamps": [1.0]}]
    data = tmp_path / "t.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [good, *bad]) + "\n")
    errors: list[DataError] = []
    (item,) = load_gsm8k(data, on_error=errors.append)
    assert item.timestamps == [0.5, 2.0]
    assert len(errors) == 3 and "non-decreasing" in str(errors[0]) and "needs 'chunks'" in str(errors[2])


def test_evaluation_grades_each_item_by_its_task_and_refuses_unknown_tasks(tmp_path, tiny_tokenizer):
    from adasr.evaluation import evaluate

    items = [Item(id="g", question="What is 2 + 2?", reference="4"),
             Item(id="c", question="Start with 2. Add 3. What is the result?", reference="5", task="chain_sum",
                  chunks=["Start with 2.", "Add 3.", "What is the result?"])]
    answers = {"g": "4.0", "c": "\\boxed{5}"}

    class Engine:
        tokenizer = tiny_tokenizer

        def run(self, inputs, **kw):
            for inp in inputs:
                yield SimpleNamespace(id=inp.id, record={"id": inp.id, "prediction": answers[inp.id]}, thoughts=[], deep="")

    sums = evaluate(lambda mode: Engine(), items, modes=["batch"], out_dir=tmp_path / "a", progress=False)
    assert sums["batch"]["n_correct"] == 2
    bad = [*items, Item(id="p", question="q", reference="r", task="poetry")]

    def must_not_run(mode):
        raise AssertionError("an unknown task must fail before any engine is built")

    with pytest.raises(ConfigError, match="unknown task 'poetry'"):
        evaluate(must_not_run, bad, modes=["batch"], out_dir=tmp_path / "b", progress=False)


def test_rl_rewards_grade_through_the_row_task():
    from adasr.train.rl import StreamGRPOTrainer

    trainer = SimpleNamespace(scorer=None, cfg=SimpleNamespace(task="gsm8k"))
    grade = StreamGRPOTrainer.grade
    assert grade(trainer, {"answer": "72"}, "\\boxed{72.0}")  # no task column: the config's task
    assert grade(trainer, {"answer": "paris", "task": "proactive_perception"}, "\\boxed{Paris}")
    assert not grade(trainer, {"answer": "19", "task": "chain_sum"}, "\\boxed{18}")
    trainer.scorer = lambda prediction, reference, task: task == "chain_sum"  # a custom checker still works
    assert grade(trainer, {"answer": "19", "task": "chain_sum"}, None)
