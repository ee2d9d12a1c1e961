"""The CLI as a user meets it: real subprocesses, a tiny local model, clear one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ADASR = [sys.executable, "-m", "adasr.cli"]


def adasr(*args, stdin: bytes | None = None, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(ADASR + list(args), input=stdin, capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_clean_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    assert needle in err, err
    assert err.strip().startswith("error:"), err


def test_run_json_on_text(tiny_dir):
    proc = adasr("run", "Natalia sold 48 clips. Then half as many. How many in total?", "--model", tiny_dir,
                 "--clock", "virtual", "--max-deep-tokens", "8", "--budget", "4", "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["record"]["n_chunks"] == 3
    assert {e["type"] for e in out["events"]} >= {"arrive", "ingest", "eoi", "answer"}


def test_run_with_a_pinned_decode_rate(tiny_dir):
    args = ("run", "Natalia sold 48 clips. Then half as many. How many in total?", "--model", tiny_dir, "--clock",
            "virtual", "--max-deep-tokens", "4", "--budget", "8", "--json", "--mode", "adaptive")
    runs = [adasr(*args, "--decode-rate", "0.01") for _ in range(2)]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr.decode()
    for out in (json.loads(p.stdout) for p in runs):  # 0.01 tokens/s: no slack fits a token, every chunk skips
        assert out["record"]["stream_tokens"] == 0 and out["record"]["skipped_chunks"] == out["record"]["n_chunks"]
    assert_clean_error(adasr(*args, "--decode-rate", "0"), "decode_rate must be > 0")


def test_run_on_the_pinned_clock(tiny_dir):
    """`adasr run --clock virtual --step-s S`: every step costs S seconds whatever the machine does
    (the typing point of `make demo`); the option needs the virtual clock and an input known in advance."""
    text = "Natalia sold 48 clips. Then half as many. How many in total?"
    args = ("run", text, "--model", tiny_dir, "--max-deep-tokens", "6", "--mode", "batch", "--json", "--cps", "4",
            "--decode-rate", "7")
    proc = adasr(*args, "--clock", "virtual", "--step-s", "0.5")
    assert proc.returncode == 0, proc.stderr.decode()
    rec = json.loads(proc.stdout)["record"]
    assert rec["eoi_s"] == pytest.approx(len(text) / 4)  # typed at 4 characters/s
    steps = rec["post_input_latency_s"] / 0.5  # whole steps of 0.5 s after end of input
    assert steps == pytest.approx(round(steps)) and 1 <= round(steps) <= rec["deep_tokens"] + 2, rec
    assert_clean_error(adasr(*args, "--step-s", "0.5"), "--step-s needs --clock virtual")  # the default: real
    assert_clean_error(adasr(*args, "--clock", "virtual", "--step-s", "0"), "a positive number of seconds")


def test_run_in_bfloat16_and_unknown_dtype(tiny_dir):
    proc = adasr("run", "Natalia sold 48 clips. How many?", "--model", tiny_dir, "--dtype", "bfloat16",
                 "--clock", "virtual", "--max-deep-tokens", "6", "--budget", "4", "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["record"]["deep_tokens"] > 0
    assert_clean_error(adasr("run", "hi there.", "--model", tiny_dir, "--dtype", "int8"), "unknown dtype 'int8'")


def test_run_stdin_live_stream(tiny_dir):
    proc = adasr("run", "-", "--model", tiny_dir, "--max-deep-tokens", "6", "--budget", "4", "--json",
                 stdin=b"Natalia sold 48 clips.\n\nThen half as many.\n")
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["record"]["n_chunks"] == 2


def test_empty_input(tiny_dir):
    assert_clean_error(adasr("run", "   ", "--model", tiny_dir), "empty")
    assert_clean_error(adasr("run", "-", "--model", tiny_dir, stdin=b""), "empty")


def test_huge_single_sentence(tiny_dir):
    text = "word " * 20_000  # 100,000 characters, no sentence boundary
    proc = adasr("run", text, "--model", tiny_dir, "--clock", "virtual")
    assert_clean_error(proc, "context window")


def test_invalid_utf8_on_stdin(tiny_dir):
    proc = adasr("run", "-", "--model", tiny_dir, "--json", stdin=b"fine line\n\xff\xfe broken\n")
    assert_clean_error(proc, "UTF-8")


def test_nonexistent_model():
    proc = adasr("run", "hello there.", "--model", "no-such-org/no-such-model-xyz",
                 env={"HF_HUB_OFFLINE": "1"})
    assert_clean_error(proc, "no-such-org/no-such-model-xyz")
    assert len(proc.stderr.decode().strip().splitlines()) == 1


def test_unknown_device_and_revision_of_a_local_dir(tiny_dir):
    assert_clean_error(adasr("run", "hi there.", "--model", tiny_dir, "--device", "tpu"), "unknown device 'tpu'")
    assert_clean_error(adasr("run", "hi there.", "--model", tiny_dir, "--revision", "v2"), "hub ids only")


def test_unknown_mode(tiny_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "#### 2"}) + "\n")
    assert_clean_error(adasr("eval", "--data", str(data), "--model", tiny_dir, "--mode", "telepathy"), "unknown mode")


def test_eval_malformed_line_and_resume_after_ctrl_c(tiny_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    lines = [json.dumps({"question": f"Tom has {i} apples. He eats one. How many are left?", "answer": f"#### {i - 1}"})
             for i in range(2, 40)]
    lines.insert(3, "{not json")
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    cmd = ADASR + ["eval", "--data", str(data), "--model", tiny_dir, "--out", str(out), "--mode", "interleaved",
                   "--max-deep-tokens", "48", "--budget", "16",
                   "--clock", "real", "--wps", "25"]  # real clock: ~0.4 s per problem, time to press Ctrl-C
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = out / "interleaved" / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (results.exists() and len(results.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "d.jsonl:4" in err  # the malformed line is reported with its number
    kept = [json.loads(x) for x in results.read_text().splitlines()]
    assert 2 <= len(kept) < 38
    # rerun: resumes, keeps the first records, finishes the rest
    proc2 = subprocess.run(cmd, capture_output=True, timeout=300)
    assert proc2.returncode == 0, proc2.stderr.decode()
    final = [json.loads(x) for x in results.read_text().splitlines()]
    assert len(final) == 38
    assert final[: len(kept)] == kept
    summary = json.loads((out / "interleaved" / "summary.json").read_text())
    assert summary["count"] == 38


def test_eval_records_config_and_refuses_another(tiny_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "Tom has 3 apples. He eats one. How many?", "answer": "#### 2"}) + "\n")
    args = ["eval", "--data", str(data), "--model", tiny_dir, "--out", str(tmp_path / "out"), "--mode", "batch",
            "--max-deep-tokens", "4"]
    proc = adasr(*args)
    assert proc.returncode == 0, proc.stderr.decode()
    cfg = json.loads((tmp_path / "out" / "batch" / "config.json").read_text())
    assert cfg["model"] == str(Path(tiny_dir).resolve()) and cfg["max_deep_tokens"] == 4 and cfg["device"] == "cpu"
    assert cfg["data"] == str(data.resolve()) and cfg["dtype"] == "float32" and cfg["budget"] == 64
    assert_clean_error(adasr(*args, "--budget", "8"), "budget 64 -> 8")
    assert adasr(*args).returncode == 0  # same settings: resumes (nothing left to do)
    # --dtype auto is recorded as what it resolved to: float32 here resumes, bfloat16 would be another run
    from adasr.models import native_bfloat16

    auto = adasr(*args, "--dtype", "auto")
    if native_bfloat16("cpu"):
        assert_clean_error(auto, 'dtype "float32" -> "bfloat16"')
    else:
        assert auto.returncode == 0, auto.stderr.decode()


def test_eval_rescale_from_moves_a_pinned_batch_run(tiny_dir, tmp_path):
    """``adasr eval --rescale-from``: a pinned-clock read-then-think run written at another point
    without the model (the tokens copied, latencies x the step ratio); misuse is a clean error."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "Tom has 3 apples. He eats one. How many?", "answer": "#### 2"}) + "\n")
    src = ["eval", "--data", str(data), "--model", tiny_dir, "--mode", "batch", "--max-deep-tokens", "4"]
    assert adasr(*src, "--out", str(tmp_path / "a"), "--step-s", "0.1").returncode == 0
    moved = ["eval", "--data", str(data), "--mode", "batch", "--rescale-from", str(tmp_path / "a"),
             "--cps", "4", "--chunker", "clause", "--step-s", "0.05", "--out", str(tmp_path / "b")]
    proc = adasr(*moved)
    assert proc.returncode == 0, proc.stderr.decode()
    a = json.loads((tmp_path / "a" / "batch" / "results.jsonl").read_text())
    b = json.loads((tmp_path / "b" / "batch" / "results.jsonl").read_text())
    assert b["deep_tokens"] == a["deep_tokens"] and b["post_input_latency_s"] == pytest.approx(a["post_input_latency_s"] / 2)
    assert b["eoi_s"] != a["eoi_s"]  # typed at 4 characters/s, not spoken at 2.5 words/s
    assert json.loads((tmp_path / "b" / "batch" / "config.json").read_text())["rescale_factor"] == 0.5
    assert_clean_error(adasr(*moved[:-2], "--out", str(tmp_path / "c"), "--mode", "adaptive"), "--mode batch")
    assert adasr(*src, "--out", str(tmp_path / "m")).returncode == 0  # measured clock: no step count
    assert_clean_error(adasr(*moved[:3], "--mode", "batch", "--rescale-from", str(tmp_path / "m"), "--step-s", "0.05",
                             "--out", str(tmp_path / "d")), "pinned virtual clock")


def test_eval_protocol_override_is_recorded_and_checked(tiny_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "Tom has 3 apples. He eats one. How many?", "answer": "#### 2"}) + "\n")
    args = ["eval", "--data", str(data), "--model", tiny_dir, "--out", str(tmp_path / "out"), "--mode", "adaptive",
            "--max-deep-tokens", "4", "--budget", "4", "--decode-rate", "7", "--step-s", "0.1"]
    proc = adasr(*args, "--protocol", "v2")
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads((tmp_path / "out" / "adaptive" / "config.json").read_text())["protocol"] == "v2"
    assert_clean_error(adasr(*args), 'protocol "v2" -> "v3-prefix"')  # the default differs: no mixing
    assert_clean_error(adasr(*args, "--protocol", "v9"), "unknown protocol 'v9'")


def test_eval_logit_bias_is_recorded_checked_and_refused_when_not_one_token(tiny_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "Tom has 3 apples. He eats one. How many?", "answer": "#### 2"}) + "\n")
    args = ["eval", "--data", str(data), "--model", tiny_dir, "--out", str(tmp_path / "out"), "--mode", "batch",
            "--max-deep-tokens", "4"]
    proc = adasr(*args, "--logit-bias", "a=-1.5")
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads((tmp_path / "out" / "batch" / "config.json").read_text())["logit_bias"] == {"a": -1.5}
    assert_clean_error(adasr(*args), "logit_bias")  # resuming with other settings is refused
    assert_clean_error(adasr(*args, "--logit-bias", "a b c d=1"), "a bias applies to one token")
    assert_clean_error(adasr(*args, "--logit-bias", "a"), "--logit-bias takes TEXT=BIAS")
    assert_clean_error(adasr("run", "Add 5.", "--server", "http://127.0.0.1:9", "--logit-bias", "a=1"),
                       "--logit-bias and --revision-logit-bias are in-process engine settings")
    assert_clean_error(adasr("serve", "--model", tiny_dir, "--port", "1", "--logit-bias", "a=x"),
                       "--logit-bias takes TEXT=BIAS")  # before binding or loading


def test_verbose_sets_up_logging():
    import logging

    from adasr.cli.common import setup_logging

    root, ours = logging.getLogger(), logging.getLogger("adasr")
    saved = (root.level, ours.level, list(root.handlers))
    try:
        setup_logging(0)
        assert ours.getEffectiveLevel() == logging.WARNING and root.level == logging.WARNING
        setup_logging(1)
        assert ours.getEffectiveLevel() == logging.INFO and root.level == logging.WARNING
        assert sum(getattr(h, "_adasr", False) for h in root.handlers) == 1  # replaced, not stacked
    finally:
        root.handlers[:] = saved[2]
        root.setLevel(saved[0])
        ours.setLevel(saved[1])
    proc = adasr("-v", "models", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout), proc.stderr.decode()


def test_models_json_lists_bundled():
    proc = adasr("models", "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    names = {m["name"] for m in json.loads(proc.stdout)}
    assert {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"} <= names


def test_data_build_with_knobs_and_bad_knob(tmp_path):
    out = tmp_path / "cs.jsonl"
    proc = adasr("data", "build", "--task", "chain_sum", "--size", "6", "--knob", "min_terms=3", "--knob", "max_terms=3",
                 "--knob", "digits=1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 6 and all(len(r["chunks"]) == 4 for r in recs)  # 3 terms + the question
    assert_clean_error(adasr("data", "build", "--task", "chain_sum", "--knob", "digits", "--out", str(out)), "KEY=VALUE")


def test_data_distill_end_to_end_and_errors(tiny_dir, tmp_path):
    """`adasr data distill` on a tiny local model: samples appended, episodes and report written,
    held-out questions excluded; bad settings and a mixed rerun end with one-line errors."""
    src = tmp_path / "p.jsonl"
    held = tmp_path / "held.jsonl"
    rows = [{"question": f"Ann has {i} apples. How many apples?", "answer": f"#### {i}"} for i in range(3)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held.write_text(json.dumps(rows[2]) + "\n")
    out = tmp_path / "d"
    proc = adasr("data", "distill", "--model", tiny_dir, "--source", str(src), "--out", str(out), "--samples", "2",
                 "--max-tokens", "16", "--dtype", "float32", "--exclude", str(held))
    assert proc.returncode == 0, proc.stderr.decode()
    assert "dropped 1 problem" in proc.stderr.decode()
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(s["id"] for s in samples) == ["gsm8k-p-1#0", "gsm8k-p-1#1", "gsm8k-p-2#0", "gsm8k-p-2#1"]
    assert json.loads((out / "report.json").read_text())["samples"] == 4
    assert (out / "episodes.jsonl").exists()
    assert_clean_error(adasr("data", "distill", "--model", tiny_dir, "--source", str(src), "--out", str(out),
                             "--max-tokens", "16", "--dtype", "float32", "--temperature", "0.9"), "other settings")
    assert_clean_error(adasr("data", "distill", "--source", str(src), "--out", str(out), "--samples", "0"),
                       "--samples must be >= 1")
    # --convert-only rewrites the episodes from the samples with another style, sampling nothing
    before = (out / "samples.jsonl").read_bytes()
    proc = adasr("data", "distill", "--model", tiny_dir, "--source", str(src), "--out", str(out), "--convert-only",
                 "--notes", "steps", "--tokens-per-word", "0", "--deep-style", "verbatim", "--dtype", "float32")
    assert proc.returncode == 0, proc.stderr.decode()
    assert (out / "samples.jsonl").read_bytes() == before
    report = json.loads((out / "report.json").read_text())
    assert (report["notes"], report["tokens_per_word"], report["deep_style"], report["samples"]) == ("steps", None, "verbatim", 4)
    # --episodes NAME: another conversion beside the first, with its own report; episodes.jsonl untouched
    first = (out / "episodes.jsonl").read_bytes()
    proc = adasr("data", "distill", "--model", tiny_dir, "--source", str(src), "--out", str(out), "--convert-only",
                 "--episodes", "episodes_terse.jsonl", "--dtype", "float32")
    assert proc.returncode == 0, proc.stderr.decode()
    assert (out / "episodes.jsonl").read_bytes() == first and (out / "episodes_terse.jsonl").exists()
    assert json.loads((out / "episodes_terse.report.json").read_text())["deep_style"] == "terse"
    assert json.loads((out / "report.json").read_text())["deep_style"] == "verbatim"
    assert_clean_error(adasr("data", "distill", "--source", str(src), "--out", str(out), "--convert-only",
                             "--episodes", "../x.jsonl"), "(--episodes) takes a file name ending in .jsonl")
    assert_clean_error(adasr("data", "distill", "--source", str(src), "--out", str(tmp_path / "none"), "--convert-only"),
                       "no samples in")
    assert_clean_error(adasr("data", "distill", "--source", str(src), "--out", str(out), "--notes", "short"),
                       "need --notes in")
    # repeated --tokens-per-word: episodes at mixed operating points, each point's share reported
    proc = adasr("data", "distill", "--model", tiny_dir, "--source", str(src), "--out", str(out), "--convert-only",
                 "--tokens-per-word", "2.8", "--tokens-per-word", "20", "--episodes", "mixed.jsonl", "--dtype", "float32")
    assert proc.returncode == 0, proc.stderr.decode()
    mixed = json.loads((out / "mixed.report.json").read_text())
    assert mixed["tokens_per_word"] == [2.8, 20.0] and set(mixed["by_point"]) <= {"2.8", "20"}
    assert_clean_error(adasr("data", "distill", "--source", str(src), "--out", str(out), "--convert-only",
                             "--tokens-per-word", "0", "--tokens-per-word", "2.8"), "cannot be mixed")
    # --chunker clause: the episodes and the aligner's bound with a final question clause on its own
    proc = adasr("data", "distill", "--model", tiny_dir, "--source", str(src), "--out", str(out), "--convert-only",
                 "--chunker", "clause", "--episodes", "clause.jsonl", "--dtype", "float32")
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads((out / "clause.report.json").read_text())["chunker"] == "clause"
    assert json.loads((out / "alignment_clause.json").read_text())["chunker"] == "clause"
    assert_clean_error(adasr("data", "distill", "--source", str(src), "--out", str(out), "--convert-only",
                             "--chunker", "word"), "--chunker for episodes: sentence or clause")
    # --goal-steps after-question: the plan and the answer's step wait for the question
    proc = adasr("data", "distill", "--model", tiny_dir, "--source", str(src), "--out", str(out), "--convert-only",
                 "--chunker", "clause", "--goal-steps", "after-question", "--episodes", "goal.jsonl",
                 "--dtype", "float32")
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads((out / "goal.report.json").read_text())["goal_steps"] == "after-question"
    assert json.loads((out / "alignment_clause_after-question.json").read_text())["goal_steps"] == "after-question"
    assert_clean_error(adasr("data", "distill", "--source", str(src), "--out", str(out), "--convert-only",
                             "--goal-steps", "later"), "--goal-steps takes anticipate or after-question")


# ---------------------------------------------------------------------------------- one way to stream


def _long_chunk_item() -> dict:
    """An item with pre-split chunks, one of them longer than the default 128-token chunk cap,
    and explicit arrival times."""
    long = " ".join(f"Natalia sold {i} clips to her friends in April." for i in range(40))
    return {"id": "paths-0", "question": "ignored when chunks are given", "answer": "#### 72",
            "chunks": ["Natalia sold 48 clips in April.", long, "How many clips did she sell?"],
            "timestamps": [1.0, 2.5, 9.0]}


def test_run_eval_and_rl_rollouts_stream_an_item_alike(tiny_dir, tmp_path, tiny_tokenizer):
    """adasr run --gsm8k, adasr eval and RL rollouts build the same chunks and arrival times
    for one item: its pre-split chunks, its timestamps, the same token cap."""
    from types import SimpleNamespace

    from adasr.evaluation import evaluate
    from adasr.stream import StreamSpec
    from adasr.tasks.gsm8k import load_gsm8k
    from adasr.train.config import RLConfig
    from adasr.train.rl import StreamGRPOTrainer

    rec = _long_chunk_item()
    data = tmp_path / "item.jsonl"
    data.write_text(json.dumps(rec) + "\n")

    # 1. adasr run --gsm8k: the arrive events of the episode
    proc = adasr("run", "--gsm8k", str(data), "--model", tiny_dir, "--clock", "virtual", "--json",
                 "--budget", "2", "--max-deep-tokens", "2")
    assert proc.returncode == 0, proc.stderr.decode()
    run_chunks = [(e["text"], e["t"]) for e in json.loads(proc.stdout)["events"] if e["type"] == "arrive"]

    # 2. adasr eval: the streams the evaluation loop hands the engine
    class Capture:
        tokenizer = tiny_tokenizer

        def run(self, inputs, **kw):
            for inp in inputs:
                streams.append(inp.source.chunks)
                yield SimpleNamespace(id=inp.id, record={"prediction": None, "id": inp.id}, thoughts=[], deep="")

    streams: list = []
    evaluate(lambda mode: Capture(), load_gsm8k(data), modes=["adaptive"], out_dir=tmp_path / "eval", progress=False)
    eval_chunks = [(c.text, c.arrival_s) for c in streams[0]]

    # 3. RL rollouts: the episode inputs of a batch of dataset rows
    trainer = SimpleNamespace(stream_spec=StreamSpec(wps=RLConfig(task="chain_sum").wps),
                              processing_class=tiny_tokenizer, _rollout_seed=lambda i: i)
    row = {"chunks": rec["chunks"], "timestamps": rec["timestamps"], "answer": "72"}
    rl_chunks = [(c.text, c.arrival_s) for c in StreamGRPOTrainer.rollout_inputs(trainer, [row])[0].source.chunks]

    assert run_chunks == eval_chunks == rl_chunks
    assert len(run_chunks) > 3  # the long chunk was cut by the shared token cap ...
    assert [t for _, t in run_chunks] == [1.0] + [2.5] * (len(run_chunks) - 2) + [9.0]  # ... its pieces arrive with it
    assert run_chunks[0][0] == rec["chunks"][0]  # pre-split chunks are streamed as given


def test_eval_budget_sweep_and_its_frontier(tiny_dir, tmp_path):
    """adasr eval --budget 2,4 runs each budget into its own directory with its own config.json,
    prints one table, and adasr plot frontier reads the sweep's parent directory."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"Tom has {i} apples. He eats one. How many are left?",
                                        "answer": f"#### {i - 1}"}) + "\n" for i in range(2, 4)))
    out = tmp_path / "sweep"
    args = ["eval", "--data", str(data), "--model", tiny_dir, "--out", str(out), "--mode", "interleaved",
            "--mode", "batch", "--max-deep-tokens", "3", "--decode-rate", "20"]
    proc = adasr(*args, "--budget", "2,4")
    assert proc.returncode == 0, proc.stderr.decode()
    for budget in (2, 4):
        for mode in ("interleaved", "batch"):
            d = out / f"budget-{budget}" / mode
            cfg = json.loads((d / "config.json").read_text())
            assert (cfg["budget"], cfg["mode"], cfg["wps"], cfg["max_chunk_tokens"]) == (budget, mode, 2.5, 128)
            assert len((d / "results.jsonl").read_text().splitlines()) == 2
    table = "".join(proc.stdout.decode().split())  # one table; narrow columns fold their names
    assert all(f"budget-{b}/{m}"[:12] in table for b in (2, 4) for m in ("interleaved", "batch"))
    summary = (out / "summary.md").read_text()
    assert all(f"| budget-{b}/{m} " in summary.splitlines()[2] + " " for b in (2, 4) for m in ("interleaved", "batch"))
    # a rerun with another setting is refused before any budget runs
    assert_clean_error(adasr(*args, "--budget", "2,4", "--wps", "3"), "wps 2.5 -> 3.0")
    assert_clean_error(adasr(*args, "--budget", "2,x"), "--budget takes positive integers")
    # the frontier over the parent directory: one point per (budget, mode)
    png = tmp_path / "frontier.png"
    proc = adasr("plot", "frontier", str(out), "--out", str(png))
    assert proc.returncode == 0, proc.stderr.decode()
    assert png.stat().st_size > 0

    from adasr.plots import load_eval_dirs

    labels = [s.label for s in load_eval_dirs([out])]
    assert labels == ["sweep/budget-2/batch", "sweep/budget-2/interleaved", "sweep/budget-4/batch",
                      "sweep/budget-4/interleaved"]


def test_usage_errors_are_short_messages_not_tracebacks():
    """Unknown options and bad values: click's usage message and exit code 2 (typer >= 0.22 raises
    its own copy of click's exceptions, which once escaped as a traceback)."""
    for args, needle in ((("run", "x", "--no-such-flag"), "No such option: --no-such-flag"),
                         (("eval", "--limit", "abc"), "Invalid value for '--limit'")):
        proc = adasr(*args)
        assert proc.returncode == 2, proc.stderr
        err = proc.stderr.decode()
        assert needle in err and "Traceback" not in err and "╭" not in err, err
        assert len(err.strip().splitlines()) <= 4


def test_skip_backlog_is_for_adaptive_mode_only(tiny_dir, tmp_path):
    """``--skip-backlog``: a one-line error, before any model load, for a mode it does not apply to
    or a negative number of seconds."""
    data = tmp_path / "x.jsonl"
    data.write_text('{"question": "1 + 1?", "answer": "#### 2"}\n')
    assert_clean_error(adasr("run", "Add 5.", "--model", tiny_dir, "--mode", "batch", "--skip-backlog", "1"),
                       "adaptive only")
    assert_clean_error(adasr("eval", "--data", str(data), "--model", tiny_dir, "--mode", "interleaved",
                             "--skip-backlog", "1", "--out", str(tmp_path / "o")), "adaptive only")
    assert_clean_error(adasr("run", "Add 5.", "--model", tiny_dir, "--skip-backlog", "-1"), ">= 0")
