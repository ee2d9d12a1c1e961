"""Are a GSM8K streamer's notes right? The streaming thoughts of `adasr eval` runs checked against
the reference solutions' calculator annotations, side by side.

    python benchmarks/note_quality.py --data data/gsm8k_heldout400.jsonl \
        --row "shipped adapter=runs/eval_typing/shipped-stream/adaptive" \
        --row "+ GRPO, 30 steps=runs/eval_typing/typo-grpo/adaptive"

Each row is ``LABEL=DIR`` where DIR holds an eval mode's ``results.jsonl`` and
``transcripts.jsonl``; ``--data`` is the GSM8K file the runs were evaluated on (its ``answer``
fields carry the ``<<expr=result>>`` annotations). Only problems every row has finished are
compared. Per row:

* ``notes``: share of problems with at least one arithmetic chain ``E0 = ... = En`` in their
  streaming thoughts (:func:`adasr.tasks.solutions.read_arithmetic`), and the mean number of
  results such chains compute per problem;
* ``on-reference``: share of those results that equal some result of the reference solution
  (an intermediate or the answer; GSM8K rounding accepted): a result off the reference may be a
  valid other route, so this is a lower bound on right notes;
* ``inconsistent``: share of problems whose notes hold a chain whose parts do not evaluate to its
  result (arithmetic that is wrong as written);
* ``r_note``: the per-note reward (:func:`adasr.train.rewards.note_credit`), the share of the
  reference results reachable before end of input (:func:`adasr.tasks.streamify.note_targets`)
  that the notes compute, over problems with any such target; and its mean among right and among
  wrong answers;
* accuracy of the problems whose notes hold an off-reference or inconsistent result ("suspect
  notes") against the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from adasr.jsonl import read_jsonl  # noqa: E402
from compare_evals import labelled_rows  # noqa: E402  (benchmarks/, the script's own folder)
from adasr.tasks.gsm8k import load_gsm8k  # noqa: E402
from adasr.tasks.solutions import ParseFailure, read_arithmetic  # noqa: E402
from adasr.tasks.streamify import streamify_problem  # noqa: E402
from adasr.tasks.text import numbers_close  # noqa: E402
from adasr.train.rewards import note_credit  # noqa: E402


def references(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """``{item id: (note targets, every result of the reference solution)}`` of a GSM8K file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = {}
    for item in load_gsm8k(path):
        rec = json.loads(lines[item.line - 1])
        try:
            p = streamify_problem(rec["question"], rec["answer"])
        except ParseFailure:
            continue
        out[str(item.id)] = (p.record["note_targets"], [r for s in p.steps for r in s.results])
    return out


def read_run(path: Path) -> tuple[dict[str, bool], dict[str, list]]:
    """``(correct by id, thoughts by id)`` of an eval mode directory."""
    for name in ("results.jsonl", "transcripts.jsonl"):
        if not (path / name).exists():
            raise SystemExit(f"error: {path / name} does not exist (pass an eval mode directory)")
    correct = {r["id"]: bool(r.get("correct")) for r in read_jsonl(path / "results.jsonl")}
    thoughts = {r["id"]: list(r.get("thoughts") or []) for r in read_jsonl(path / "transcripts.jsonl")}
    return correct, thoughts


def pct(num: float, den: float) -> str:
    return f"{100 * num / den:.1f}%" if den else "-"


def row_stats(ids, correct, thoughts, refs) -> list[str]:
    with_notes = n_results = on_ref = inconsistent = 0
    credits, right_c, wrong_c = [], [], []
    suspect = [0, 0]  # [right, problems] with suspect notes
    clean = [0, 0]
    for i in ids:
        targets, all_results = refs[i]
        text = "\n".join(t for t in thoughts[i] if t)
        _, results, ok = read_arithmetic(text) if text.strip() else ([], [], True)
        with_notes += bool(results)
        n_results += len(results)
        off = [r for r in results if not any(numbers_close(r, x) for x in all_results)]
        on_ref += len(results) - len(off)
        inconsistent += not ok
        bucket = suspect if (off or not ok) else clean
        bucket[0] += correct[i]
        bucket[1] += 1
        if targets:
            c = note_credit(thoughts[i], targets)
            credits.append(c)
            (right_c if correct[i] else wrong_c).append(c)
    mean = lambda xs: f"{sum(xs) / len(xs):.3f}" if xs else "-"  # noqa: E731
    return [
        str(len(ids)), pct(with_notes, len(ids)), f"{n_results / len(ids):.2f}", pct(on_ref, n_results),
        pct(inconsistent, len(ids)), f"{mean(credits)} (n={len(credits)})", f"{mean(right_c)} / {mean(wrong_c)}",
        f"{pct(suspect[0], suspect[1])} of {suspect[1]} / {pct(clean[0], clean[1])} of {clean[1]}",
    ]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the GSM8K file the runs were evaluated on")
    ap.add_argument("--row", action="append", required=True, help="LABEL=EVAL_MODE_DIR (repeat)")
    args = ap.parse_args(argv)
    refs = references(Path(args.data))
    runs = labelled_rows(args.row, read_run)
    ids = sorted(set(refs).intersection(*(set(c) & set(t) for c, t in runs.values())))
    if not ids:
        raise SystemExit("error: no problem is in --data and finished by every row")
    head = ["row", "problems", "with computing notes", "note results / problem", "on-reference", "inconsistent",
            "r_note (problems with targets)", "r_note: right / wrong answers",
            "accuracy: suspect notes / the rest"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, (correct, thoughts) in runs.items():
        print("| " + " | ".join([label, *row_stats(ids, correct, thoughts, refs)]) + " |")


if __name__ == "__main__":
    main()
