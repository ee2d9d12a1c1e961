"""`adasr plot`: figures from fake evaluation directories and a fake `adasr run --json` episode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adasr.errors import ConfigError, DataError, InputError
from adasr.metrics import summarize, wilson_interval
from adasr.plots import load_eval_dirs, load_run_json, plot_frontier, plot_latency_cdf, plot_timeline

ADASR = [sys.executable, "-m", "adasr.cli"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _record(i: int, mode: str, correct: bool, latency: float | None) -> dict:
    return {"id": f"q{i}", "mode": mode, "input_tokens": 40, "stream_tokens": 10, "deep_tokens": 20,
            "post_input_tokens": 20, "skipped_chunks": 1, "n_chunks": 3, "overrun_tokens": 0,
            "pre_reasoning_wait_tokens": 30, "post_input_ttft_s": 0.1, "post_input_latency_s": latency,
            "max_backlog_s": 0.0, "eoi_s": 4.0, "wall_s": 0.5, "correct": correct,
            "prediction": "1", "reference": "1" if correct else "2", "format_ok": True}


def make_eval_dir(root: Path, modes: dict[str, tuple[int, int, float]]) -> Path:
    """``root/<mode>/results.jsonl`` + ``summary.json`` for {mode: (n, n_correct, base latency)}."""
    for mode, (n, k, lat) in modes.items():
        d = root / mode
        d.mkdir(parents=True)
        recs = [_record(i, mode, i < k, lat + 0.1 * i) for i in range(n)]
        (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (d / "summary.json").write_text(json.dumps(summarize(recs)))
    return root


def make_run_json(path: Path) -> Path:
    events = [
        {"type": "arrive", "t": 2.0, "chunk": 0, "text": "Tom has 3 apples."},
        {"type": "ingest", "t": 2.0, "chunk": 0},
        {"type": "thought", "t": 2.4, "chunk": 0, "text": "3 apples.", "tokens": 5},
        {"type": "arrive", "t": 3.6, "chunk": 1, "text": "He buys 5 more."},
        {"type": "ingest", "t": 3.7, "chunk": 1},
        {"type": "thought", "t": 3.75, "chunk": 1, "text": "", "tokens": 1},
        {"type": "arrive", "t": 6.0, "chunk": 2, "text": "How many apples does he have now?"},
        {"type": "ingest", "t": 6.0, "chunk": 2},
        {"type": "eoi", "t": 6.0},
        {"type": "deep_start", "t": 6.0},
        {"type": "answer", "t": 6.9, "prediction": "8", "text": "3 + 5 = 8. \\boxed{8}", "early": False},
    ]
    for ev in events:
        ev["id"] = "run"
    record = _record(0, "adaptive", True, 0.9) | {"id": "run", "reference": "8", "prediction": "8"}
    path.write_text(json.dumps({"record": record, "thoughts": ["3 apples.", "", None],
                                "deep": "3 + 5 = 8. \\boxed{8}", "events": events}))
    return path


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG_MAGIC


def adasr(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(ADASR + list(args), input=stdin, capture_output=True, timeout=120, env=dict(os.environ))


def assert_clean_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    assert err.strip().startswith("error:"), err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in " ".join(err.split()), err


@pytest.fixture
def evals(tmp_path) -> tuple[Path, Path]:
    a = make_eval_dir(tmp_path / "qwen", {"batch": (50, 17, 60.0), "adaptive": (50, 2, 7.0)})
    b = make_eval_dir(tmp_path / "trained", {"adaptive": (20, 15, 0.8)})
    return a, b


# -- Wilson interval -----------------------------------------------------------------------------


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(17, 50)
    assert lo == pytest.approx(0.2244, abs=5e-4) and hi == pytest.approx(0.4785, abs=5e-4)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=5e-4))
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=5e-4), 1.0)
    lo90, hi90 = wilson_interval(17, 50, z=1.645)
    assert lo < lo90 < 0.34 < hi90 < hi
    for bad in ((1, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def test_summarize_reports_accuracy_ci95():
    recs = [_record(i, "batch", i < 17, 1.0) for i in range(50)]
    s = summarize(recs)
    assert s["accuracy"] == pytest.approx(0.34)
    assert s["accuracy_ci95"] == pytest.approx([0.2244, 0.4785], abs=5e-4)
    assert summarize([])["accuracy_ci95"] is None


# -- functions -----------------------------------------------------------------------------------


def test_load_eval_dirs_labels_and_order(evals, tmp_path):
    a, b = evals
    series = load_eval_dirs([a, b])
    assert [s.label for s in series] == ["qwen/batch", "qwen/adaptive", "trained/adaptive"]
    assert series[0].summary["n_correct"] == 17 and len(series[0].latencies()) == 50
    # a <mode> directory on its own, and two directories with the same name
    twin = make_eval_dir(tmp_path / "other" / "qwen", {"batch": (3, 1, 2.0)})
    assert [s.label for s in load_eval_dirs([a / "adaptive", b])] == ["qwen/adaptive", "trained/adaptive"]
    labels = [s.label for s in load_eval_dirs([a, twin])]
    assert labels == [f"{a}/batch", f"{a}/adaptive", f"{twin}/batch"]


def test_truncated_last_line_is_skipped(evals):
    a, _ = evals
    res = a / "batch" / "results.jsonl"
    res.write_text(res.read_text() + '{"id": "q99", "mode": "ba')  # a write cut short by a kill
    assert len(load_eval_dirs([a])[0].records) == 50


def test_plot_frontier_and_cdf(evals, tmp_path):
    a, b = evals
    out = plot_frontier([a, b], tmp_path / "pics" / "frontier.png")
    assert_png(out)
    assert_png(plot_latency_cdf([a, b], tmp_path / "cdf.png"))
    svg = plot_frontier([b], tmp_path / "f.svg")
    assert svg.read_text().lstrip().startswith("<?xml")


def test_the_clock_is_named_beside_the_figures(evals, tmp_path):
    """A pinned clock is a simulated rate: the plots name it (one axis note when every series shares
    it, else beside each label); a measured clock names its device."""
    from adasr.plots import _clock_labels, clock_text

    a, b = evals
    assert clock_text(a / "batch") == "clock not recorded"
    (a / "batch" / "config.json").write_text(json.dumps({"clock": "virtual", "step_s": 0.14, "decode_rate": 7.0}))
    (a / "adaptive" / "config.json").write_text(json.dumps({"clock": "virtual", "step_s": 0.14, "decode_rate": 7}))
    (b / "adaptive" / "config.json").write_text(json.dumps({"clock": "real", "device": "cuda"}))
    assert clock_text(a / "batch") == "simulated pinned clock, 0.14 s a step, 7 tokens/s"
    assert clock_text(b / "adaptive") == "real clock, measured on cuda"
    labels, note = _clock_labels(load_eval_dirs([a]))
    assert note == "\nsimulated pinned clock, 0.14 s a step, 7 tokens/s" and labels == ["qwen/batch", "qwen/adaptive"]
    labels, note = _clock_labels(load_eval_dirs([a, b]))
    assert note == "" and labels[-1] == "trained/adaptive [real clock, measured on cuda]"
    assert_png(plot_frontier([a, b], tmp_path / "f.png"))
    assert_png(plot_latency_cdf([a, b], tmp_path / "c.png"))


def test_plot_frontier_without_references(tmp_path):
    d = tmp_path / "ungraded" / "adaptive"
    d.mkdir(parents=True)
    recs = [_record(i, "adaptive", False, 1.0) | {"reference": None, "correct": None} for i in range(3)]
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(DataError, match="no point"):
        plot_frontier([d.parent], tmp_path / "f.png")
    assert_png(plot_latency_cdf([d.parent], tmp_path / "cdf.png"))  # latencies need no reference


def test_plot_timeline(tmp_path):
    run = make_run_json(tmp_path / "run.json")
    assert_png(plot_timeline(run, tmp_path / "timeline.png"))
    assert_png(plot_timeline(load_run_json(run), tmp_path / "timeline2.png"))


def test_function_errors(evals, tmp_path):
    a, _ = evals
    with pytest.raises(InputError, match="no such evaluation directory"):
        load_eval_dirs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no results"):
        load_eval_dirs([tmp_path / "empty"])
    res = a / "adaptive" / "results.jsonl"
    res.write_text("{not json\n" + res.read_text())
    with pytest.raises(DataError, match="results.jsonl:1: malformed JSON"):
        load_eval_dirs([a])
    with pytest.raises(ConfigError, match="image format"):
        plot_latency_cdf([a / "batch"], tmp_path / "plot.txt")
    (tmp_path / "bad.json").write_text('{"record": {}, "events": [{"type": "arrive"}]}')
    with pytest.raises(DataError, match="event 0 is malformed"):
        load_run_json(tmp_path / "bad.json")


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_plots(evals, tmp_path):
    a, b = evals
    for kind in ("frontier", "cdf"):
        out = tmp_path / f"{kind}.png"
        proc = adasr("plot", kind, str(a), str(b), "--out", str(out))
        assert proc.returncode == 0, proc.stderr.decode()
        assert "wrote" in proc.stdout.decode()
        assert_png(out)
    run = make_run_json(tmp_path / "run.json")
    proc = adasr("plot", "timeline", str(run), "--out", str(tmp_path / "t.png"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert_png(tmp_path / "t.png")
    proc = adasr("plot", "timeline", "-", "--out", str(tmp_path / "stdin.png"), stdin=run.read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    assert_png(tmp_path / "stdin.png")


def test_cli_plot_errors(evals, tmp_path):
    a, _ = evals
    png = str(tmp_path / "x.png")
    assert_clean_error(adasr("plot", "frontier", str(tmp_path / "nope"), "--out", png),
                       "no such evaluation directory")
    (tmp_path / "empty").mkdir()
    assert_clean_error(adasr("plot", "cdf", str(tmp_path / "empty"), "--out", png), "holds no results")
    (tmp_path / "broken.json").write_text('{"record": {}, "events": [')
    assert_clean_error(adasr("plot", "timeline", str(tmp_path / "broken.json"), "--out", png), "is not valid JSON")
    assert_clean_error(adasr("plot", "timeline", str(tmp_path / "none.json"), "--out", png), "no such file")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert_clean_error(adasr("plot", "frontier", str(a), "--out", str(blocker / "f.png")), "cannot write")
    assert not (tmp_path / "x.png").exists()
