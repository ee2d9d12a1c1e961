"""`make demo`'s table (tools/demo_table.py) on the recorded output of its two `adasr run --json`
runs: held-out GSM8K problem 6 typed at 4 characters/s on the pinned clock (7 tokens/s, 0.14 s a
step) into the shipped GSM8K streamer (adaptive) and the base model reading then thinking."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "demo_table.py"
CHUNKS = ["Eric sorted 150 colored pencils into 5 containers for his art class.",
          "Before class, another teacher brought him 30 more pencils.",
          "How many can he evenly distribute between the five containers now?"]
ARRIVE = [{"type": "arrive", "t": t, "chunk": i, "text": c, "id": "run"}
          for i, (t, c) in enumerate(zip([17.0, 31.75, 48.5], CHUNKS))]


def recorded(mode: str, stream: int, deep: int, latency: float, thoughts: list) -> dict:
    """The parts of an `adasr run --json` output the table reads, as the demo recorded them."""
    record = {"id": "run", "mode": mode, "stream_tokens": stream, "deep_tokens": deep, "post_input_tokens": deep,
              "post_input_latency_s": latency, "eoi_s": 48.5, "prediction": "36", "reference": "36", "correct": True}
    return {"record": record, "thoughts": thoughts, "deep": "... \\(\\boxed{36}\\).", "events": ARRIVE}


STREAM = recorded("adaptive", 2, 130, 18.200000000000074, ["", "", None])
BATCH = recorded("batch", 0, 197, 27.580000000000112, [])


def table(tmp_path, *runs: tuple[str, dict]) -> subprocess.CompletedProcess:
    args = []
    for i, (label, run) in enumerate(runs):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps(run))
        args.append(f"{label}={path}")
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60)


def test_the_demo_table_puts_both_post_input_latencies_side_by_side(tmp_path):
    proc = table(tmp_path, ("streamer, adaptive", STREAM), ("base, read-then-think", BATCH))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:5] == [f"[1] {CHUNKS[0]}", "      streamer, adaptive: (skipped)",
                         f"[2] {CHUNKS[1]}", "      streamer, adaptive: (skipped)", f"[3] {CHUNKS[2]}"]
    rows = {line[:38].strip(): line[38:].split() for line in lines[lines.index("") + 1:]}
    assert rows[""] == ["streamer,", "adaptive", "base,", "read-then-think"]
    assert rows["answer"] == ["36", "(correct)", "36", "(correct)"]
    assert rows["streaming-thought tokens (a skip: 1)"] == ["2", "0"]
    assert rows["tokens after end of input"] == ["130", "197"]
    assert rows["post-input latency (s)"] == ["18.2", "27.6"]
    assert rows["vs base, read-then-think"] == ["0.66x", "1.00x"]


def test_notes_and_unanswered_runs(tmp_path):
    noted = {**STREAM, "thoughts": ["150 / 5 = 30 a container", "", None],
             "record": {**STREAM["record"], "prediction": None, "correct": False, "post_input_latency_s": None}}
    proc = table(tmp_path, ("a", noted), ("b", BATCH))
    assert proc.returncode == 0, proc.stderr
    assert "      a: 150 / 5 = 30 a container" in proc.stdout.splitlines()
    rows = {line.split("  ")[0]: line for line in proc.stdout.splitlines()}
    assert "no \\boxed{} answer (wrong)" in rows["answer"]
    assert rows["post-input latency (s)"].split()[-2:] == ["-", "27.6"]


def test_bad_arguments_are_one_line_errors(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    for arg, needle in (("nolabel", "LABEL=FILE"), (f"a={tmp_path / 'missing.json'}", "not an `adasr run --json`"),
                        (f"a={tmp_path / 'x.json'}", "no record")):
        proc = subprocess.run([sys.executable, str(TOOL), arg], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
