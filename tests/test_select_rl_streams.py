"""tools/select_rl_streams.py: which pool streams a GRPO group can learn from (issue 24 §2)."""

from __future__ import annotations

import json

import pytest

from adasr.errors import DataError

from script_helpers import load_script



def _tool():
    return load_script("tools/select_rl_streams.py")


def _rec(i, timely=True, correct=True, premature=False, answered=True):
    return {"id": f"proactive_threshold-train-0-{i}", "timely": timely, "correct": correct, "premature": premature,
            "first_prediction": "1" if answered else None}


POOL = [{"id": f"proactive_threshold-train-0-{i}", "task": "proactive_threshold", "question": f"q{i}"}
        for i in range(5)]


def test_keeps_disagreeing_and_failing_streams_in_pool_order():
    greedy = [_rec(0), _rec(1), _rec(2, correct=False), _rec(3, premature=True, timely=False), _rec(4)]
    sampled = [_rec(4, timely=False, answered=False), _rec(3, premature=True, timely=False), _rec(2, correct=False),
               _rec(1), _rec(0, correct=False)]
    kept, evaluated, counts = _tool().select(POOL, [greedy, sampled])
    assert [r["question"] for r in kept] == ["q0", "q2", "q3", "q4"]  # q1: right in both runs
    assert evaluated == POOL
    assert counts == {"evaluated": 5, "disagree": 2, "fail": 4, "kept": 4}


def test_only_streams_every_run_evaluated():
    kept, evaluated, counts = _tool().select(POOL, [[_rec(0, correct=False), _rec(1)], [_rec(0, correct=False)]])
    assert [r["question"] for r in kept] == ["q0"] and evaluated == POOL[:1] and counts["evaluated"] == 1


def test_errors():
    tool = _tool()
    with pytest.raises(DataError, match="not a stream of the pool"):
        tool.select(POOL, [[{"id": "other-1"}]])
    with pytest.raises(DataError, match="share no stream"):
        tool.select(POOL, [[_rec(0)], [_rec(1)]])


def test_cli_writes_the_kept_streams(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in POOL))
    for name, recs in (("a", [_rec(0), _rec(1, correct=False)]), ("b", [_rec(0), _rec(1)])):
        (tmp_path / name / "proactive").mkdir(parents=True)
        (tmp_path / name / "proactive" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "kept.jsonl"
    assert _tool().main(["--pool", str(pool), "--run", str(tmp_path / "a"), "--run", str(tmp_path / "b"),
                         "--out", str(out)]) == 0
    assert [json.loads(line)["question"] for line in out.read_text().splitlines()] == ["q1"]
    assert "kept 1 (proactive_threshold 1/2)" in capsys.readouterr().out
    assert _tool().main(["--pool", str(pool), "--run", str(tmp_path / "missing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no such evaluation directory") and len(err.splitlines()) == 1
    (tmp_path / "c" / "batch").mkdir(parents=True)
    (tmp_path / "c" / "batch" / "results.jsonl").write_text(json.dumps(_rec(0)) + "\n")
    assert _tool().main(["--pool", str(pool), "--run", str(tmp_path / "c"), "--out", str(out)]) == 2
    assert "holds no proactive results" in capsys.readouterr().err
