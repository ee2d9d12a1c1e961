"""benchmarks/compare_evals.py: paired comparisons of eval runs, on accuracy or (proactive) timely-correct."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_helpers import load_script


def _script():
    return load_script("benchmarks/compare_evals.py")


def _write(path: Path, outcomes: list[tuple[bool, bool, bool]]) -> Path:
    """A results.jsonl of proactive records: (correct, timely, premature) per stream."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"s{i}", "correct": c, "timely": t, "premature": p, "post_input_latency_s": 1.0 + i,
             "stream_tokens": 4, "deep_tokens": 0, "format_ok": True} for i, (c, t, p) in enumerate(outcomes)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mcnemar_exact_two_sided():
    mod = _script()
    assert mod.mcnemar_exact(0, 0) == 1.0
    assert mod.mcnemar_exact(0, 5) == 2 / 32  # all five discordant pairs one way
    assert mod.mcnemar_exact(3, 3) == 1.0


def test_timely_metric_pairs_on_timely_not_on_correct(tmp_path, capsys):
    # both runs are right on every stream, but "late" answers on s0-s2 only (not timely), and s3 premature
    a = _write(tmp_path / "a" / "results.jsonl", [(True, True, False)] * 4)
    b = _write(tmp_path / "b.jsonl", [(True, False, False)] * 3 + [(True, False, True)])
    mod = _script()
    mod.main(["--row", f"A={a.parent}", "--row", f"B={b}"])  # a directory and a JSONL file
    out = capsys.readouterr().out
    assert "| B | 4/4 = 100.0%" in out and "0 / 0 (p = 1.00)" in out  # accuracy: no difference
    mod.main(["--row", f"A={a.parent}", "--row", f"B={b}", "--metric", "timely"])
    out = capsys.readouterr().out
    assert "timely-correct [95% CI] | premature |" in out
    assert "| A | 4/4 = 100.0%" in out and "| B | 0/4 = 0.0%" in out
    assert "| B | 0/4 = 0.0% [0.0, 49.0] | 25% |" in out  # one of four premature
    assert "0 / 4 (p = 0.12)" in out  # only A timely on all four
    assert "only this row / only 'A' premature (McNemar p) |" in out
    assert out.rstrip().endswith("| 0 / 4 (p = 0.12) | 1 / 0 (p = 1.00) |")  # B alone premature on s3


def test_rows_pool_several_files_by_position(tmp_path, capsys):
    # two "families" whose ids collide ("s0", "s1"): pooled with "+" they are four streams, not two
    a1 = _write(tmp_path / "a1.jsonl", [(True, True, False)] * 2)
    a2 = _write(tmp_path / "a2.jsonl", [(True, True, False)] * 2)
    b1 = _write(tmp_path / "b1.jsonl", [(True, True, False)] * 2)
    b2 = _write(tmp_path / "b2.jsonl", [(False, False, True)] * 2)
    mod = _script()
    mod.main(["--row", f"A={a1}+{a2}", "--row", f"B={b1}+{b2}", "--metric", "timely"])
    out = capsys.readouterr().out
    assert out.startswith("N = 4 problems")
    assert "| B | 2/4 = 50.0%" in out and "| 0 / 2 (p = 0.50) | 2 / 0 (p = 0.50) |" in out
    assert set(mod.read_rows(Path(f"{a1}+{a2}"))) == {"0:s0", "0:s1", "1:s0", "1:s1"}
    plus = _write(tmp_path / "run+1" / "results.jsonl", [(True, True, False)] * 3)  # a real "+" in a name
    assert set(mod.read_rows(plus.parent)) == {"s0", "s1", "s2"}
    with pytest.raises(SystemExit, match="missing.jsonl does not exist"):
        mod.main(["--row", f"A={a1}+{tmp_path / 'missing.jsonl'}"])
