"""`make demo`'s table: runs of one problem (`adasr run --json` outputs) and their post-input latencies side by side.

    adasr run --gsm8k D --index 6 --model M --mode adaptive --clock virtual ... --json > stream.json
    adasr run --gsm8k D --index 6 --model B --mode batch --clock virtual ... --json > batch.json
    python tools/demo_table.py "streamer, adaptive=stream.json" "base, read-then-think=batch.json"

Each argument is ``LABEL=FILE``: one ``adasr run --json`` object (``record``, ``thoughts``,
``deep``, ``events``). Printed: the problem as its chunks arrived with the notes (streaming
thoughts; "(skipped)": the model chose not to think there) each run wrote under them, then one
column per run: the answer, whether it is correct, thought and deep-stage tokens, tokens
generated after end of input, the post-input latency (seconds on the run's clock: with a pinned
clock, ``--step-s`` per step, a *simulated* rate) and its ratio to the last run's (the baseline).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_run(spec: str) -> tuple[str, dict]:
    """``LABEL=FILE`` -> ``(label, the run's JSON object)``.

    Raises:
        SystemExit: a malformed argument, or a file that is not one ``adasr run --json`` object.
    """
    label, sep, file = spec.rpartition("=")
    if not sep or not label or not file:
        raise SystemExit(f"error: a run is LABEL=FILE, got {spec!r}")
    try:
        run = json.loads(Path(file).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {file}: not an `adasr run --json` output ({e})") from None
    if not isinstance(run, dict) or not isinstance(run.get("record"), dict):
        raise SystemExit(f"error: {file}: no record (an `adasr run --json` output has one)")
    return label, run


def _answer(record: dict) -> str:
    prediction = record.get("prediction")
    verdict = {True: " (correct)", False: " (wrong)"}.get(record.get("correct"), "")
    return ("no \\boxed{} answer" if prediction is None else str(prediction)) + verdict


def _seconds(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def table(runs: list[tuple[str, dict]]) -> str:
    """The side-by-side table of ``runs`` (``(label, run)`` pairs; the last one is the baseline)."""
    base = runs[-1][1]["record"].get("post_input_latency_s")
    rows = [
        ("", [label for label, _ in runs]),
        ("answer", [_answer(r["record"]) for _, r in runs]),
        ("streaming-thought tokens (a skip: 1)", [str(r["record"]["stream_tokens"]) for _, r in runs]),
        ("deep-stage tokens", [str(r["record"]["deep_tokens"]) for _, r in runs]),
        ("tokens after end of input", [str(r["record"]["post_input_tokens"]) for _, r in runs]),
        ("post-input latency (s)", [_seconds(r["record"].get("post_input_latency_s")) for _, r in runs]),
        ("vs " + runs[-1][0], [f"{r['record']['post_input_latency_s'] / base:.2f}x"
                               if base and r["record"].get("post_input_latency_s") is not None else "-"
                               for _, r in runs]),
    ]
    first = max(len(name) for name, _ in rows)
    widths = [max(len(cells[i]) for _, cells in rows) for i in range(len(runs))]
    return "\n".join((name.ljust(first) + "  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths))).rstrip()
                     for name, cells in rows)


def notes(runs: list[tuple[str, dict]]) -> str:
    """The problem as its chunks arrived (the first run's ``arrive`` events), with each run's note
    (streaming thought) after each chunk; runs with no thought turn there (batch mode, or the last
    chunk) are left out."""
    chunks = [e["text"] for e in runs[0][1].get("events", []) if e.get("type") == "arrive"]
    lines = []
    for i, chunk in enumerate(chunks):
        lines.append(f"[{i + 1}] {chunk}")
        for label, run in runs:
            thoughts = run.get("thoughts") or []
            note = thoughts[i] if i < len(thoughts) else None
            if note is not None:  # (None: no thought turn, as in batch mode)
                lines.append(f"      {label}: " + (" ".join(note.split()) or "(skipped)"))
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=FILE", help="an `adasr run --json` output; the last: baseline")
    args = ap.parse_args(argv)
    runs = [read_run(spec) for spec in args.runs]
    text = notes(runs)
    if text:
        print(text + "\n")
    print(table(runs))


if __name__ == "__main__":
    main()
