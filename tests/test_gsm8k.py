"""GSM8K items: loading (malformed lines reported by line number, streaming datasets graded by
their task), reference extraction and answer checking."""

from __future__ import annotations

import json
import threading

import pytest

from adasr.errors import DataError
from adasr.tasks.gsm8k import extract_reference, is_correct, load_gsm8k
from adasr.tasks.registry import task_for


# ---------------------------------------------------------------------------------------------
# loader
# ---------------------------------------------------------------------------------------------


def _line(q: str, a: str) -> str:
    return json.dumps({"question": q, "answer": a})


def test_loader_skips_malformed_lines_and_reports_line_numbers(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [
        _line("How many? one", "1+1=2\n#### 2"),
        '{"question": "broken json", "answer": ',
        json.dumps({"question": "no answer key"}),
        _line("no hashes", "the answer is 3"),
        _line("Big number?", "so 1,200 dollars\n#### 1,200"),
        "",
        _line("Last one", "#### -7"),
    ]
    data = ("\n".join(lines) + "\n").encode() + b'{"question": "bad \xff utf8", "answer": "#### 1"}\n'
    path.write_bytes(data)
    errors: list[DataError] = []
    items = load_gsm8k(path, on_error=errors.append)
    assert [it.reference for it in items] == ["2", "1200", "-7"]
    assert [it.id for it in items] == ["gsm8k-train-1", "gsm8k-train-5", "gsm8k-train-7"]
    assert [it.line for it in items] == [1, 5, 7]
    assert all(isinstance(e, DataError) for e in errors)
    assert [str(e).split(": ")[0] for e in errors] == [f"{path}:{n}" for n in (2, 3, 4, 8)]
    assert "JSON" in str(errors[0]) and "'answer'" in str(errors[1]) and "####" in str(errors[2])
    assert "UTF-8" in str(errors[3])


def test_loader_default_warns_limit_and_ids(tmp_path):
    path = tmp_path / "dev.jsonl"
    rows = [json.dumps({"id": "a", "question": "q1", "answer": "#### 1"}), "not json"]
    rows += [_line(f"q{i}", f"#### {i}") for i in range(2, 6)]
    path.write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match=r"dev\.jsonl:2"):
        items = load_gsm8k(path)
    assert len(items) == 5 and items[0].id == "a" and items[1].id == "gsm8k-dev-3"
    assert len(load_gsm8k(path, limit=2, on_error=lambda e: None)) == 2


def test_loader_missing_file_and_no_valid_items(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_gsm8k(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("garbage\n{}\n")
    with pytest.raises(DataError, match="no valid GSM8K items"):
        load_gsm8k(bad, on_error=lambda e: None)


def test_extract_reference():
    assert extract_reference("work\n#### 1,234") == "1234"
    assert extract_reference("a #### 5 #### 6") == "6"
    with pytest.raises(DataError):
        extract_reference("no final answer")


# ---------------------------------------------------------------------------------------------
# answer checking
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("72", "72", True),
        ("72.0", "72", True),
        ("$1,200", "1200", True),
        ("\\$1,200", "1200", True),
        ("1/2", "0.5", True),
        ("\\frac{1}{2}", "0.5", True),
        ("0.5", "1/2", True),
        ("18 dollars", "18", True),
        ("50\\%", "50", True),
        ("\\boxed{72}", "72", True),
        ("\\text{72 apples}", "72", True),
        ("-3", "-3", True),
        ("73", "72", False),
        ("3", "-3", False),
        ("0.49", "0.5", False),
        ("seventy-two", "72", False),
        ("", "72", False),
        (None, "72", False),
        ("2+3", "5", True),  # math_verify fallback
        ("\\sqrt{4}", "2", True),
        ("\\sqrt{5}", "2", False),
    ],
)
def test_is_correct(prediction, reference, expected):
    assert is_correct(prediction, reference) is expected


def test_is_correct_from_worker_thread_and_garbage():
    out: list = []

    def work():
        out.append((is_correct("\\sqrt{4}", "2"), is_correct("2+3", "5"), is_correct("\\frac{", "1")))

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert out == [(True, True, False)]
    assert is_correct("}{" * 600, "1") is False
    assert is_correct(object(), "1") is False  # never raises


def test_streaming_dataset_records_load_and_grade(tmp_path):
    """`adasr data build` output evaluates directly: chunks as given, graded by the task scorer."""
    from adasr.jsonl import write_jsonl
    from adasr.tasks.registry import build_dataset

    path = tmp_path / "chain.jsonl"
    write_jsonl(build_dataset("chain_sum", size=5, seed=3), path)
    items = load_gsm8k(path)
    assert len(items) == 5 and all(it.task == "chain_sum" and it.chunks for it in items)
    it = items[0]
    task = task_for(it)
    assert task.name == "chain_sum"
    assert task.grade(it.reference, it.reference) and task.grade(f"\\boxed{{{it.reference}}}", it.reference)
    assert not task.grade(str(int(it.reference) + 1), it.reference)
