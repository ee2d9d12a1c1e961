"""How sure a proactive model was of the checks that committed its answers (RESULTS.md §42).

Teacher-forces each stream of a finished ``adasr eval --mode proactive`` run (its
``transcripts.jsonl``: the turns the model wrote) in the proactive layout, and reads, at every
check word the model wrote (" yes" / " no"), ``p(yes) / (p(yes) + p(no))`` from the model's
next-token distribution. Prints, for the check that committed each first answer, the median and
the count below each threshold tau, split by the record's verdict (premature, timely, other):
the figures behind the commit threshold (``--logit-bias " yes=ln((1 - tau) / tau)"``,
docs/DESIGN.md). With ``--revisions`` (a run made with ``--revisions N``) it prints the same for
the check that committed each episode's last revision, split by what the revision did (wrong ->
right, right -> wrong, wrong -> wrong): the figures behind a revision threshold
(``--revision-logit-bias``, RESULTS §52).

    python benchmarks/proactive_check_confidence.py --model qwen2.5-coder-0.5b-proactive \\
        --data data/proactive/pt_test_templates.jsonl --run runs/pq/wide_pt_test_templates_rev0/proactive
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from adasr.jsonl import read_jsonl
from adasr.models import load_model
from adasr.protocol import STAGE_STREAM, StreamingFormat, is_response, mode_protocol
from adasr.train.sft_data import row_episode


def check_probs(lm, fmt, chunks: list[str], thoughts: list[str], yes: int, no: int) -> list[tuple[bool, float]]:
    """``(wrote_yes, p(yes) / (p(yes) + p(no)))`` at each check word of ``thoughts`` (one forward)."""
    r = fmt.render(row_episode({"chunks": chunks, "thoughts": thoughts, "evidence_chunk": len(thoughts) - 1},
                               "proactive"))
    with torch.inference_mode():
        probs = lm.model(torch.tensor([r.input_ids])).logits[0].float().softmax(-1)
    out = []
    for p in range(1, len(r.input_ids)):
        if r.stage[p] == STAGE_STREAM and r.input_ids[p] in (yes, no):
            py, pn = probs[p - 1, yes].item(), probs[p - 1, no].item()
            out.append((r.input_ids[p] == yes, py / (py + pn)))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, required=True, help="the evaluated data file (its chunks)")
    ap.add_argument("--run", type=Path, required=True, help="the eval's proactive/ folder (results + transcripts)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--revisions", action="store_true", help="also the checks that committed revisions")
    args = ap.parse_args(argv)
    lm = load_model(args.model, dtype=getattr(torch, args.dtype))
    fmt = StreamingFormat(lm.tokenizer, mode_protocol("proactive", lm.protocol))
    yes, no = (lm.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" yes", " no"))
    chunks = {r["id"]: r["chunks"] for r in read_jsonl(args.data)}
    records = {r["id"]: r for r in read_jsonl(args.run / "results.jsonl")}
    groups: dict[str, list[float]] = {"premature": [], "timely": [], "other": []}
    revised: dict[str, list[float]] = {"wrong -> right": [], "right -> wrong": [], "wrong -> wrong": []}
    for t in list(read_jsonl(args.run / "transcripts.jsonl"))[: args.limit]:
        turns = [x or "" for x in t["thoughts"]]
        first = next((k for k, x in enumerate(turns) if is_response(x)), None)
        if first is None:
            continue
        rec = records[t["id"]]

        def last_yes(upto: int) -> float | None:
            """p(yes) of the last check written "yes" in turns 0..upto (the one that committed)."""
            said_yes = [p for wrote_yes, p in check_probs(lm, fmt, chunks[t["id"]], turns[: upto + 1], yes, no)
                        if wrote_yes]
            return said_yes[-1] if said_yes else None

        if (p := last_yes(first)) is not None:
            groups["premature" if rec.get("premature") else "timely" if rec.get("timely") else "other"].append(p)
        if args.revisions and rec.get("n_revisions"):  # the check of the turn that revised the answer last
            before, after = ("right" if rec.get(k) else "wrong" for k in ("first_correct", "correct"))
            if f"{before} -> {after}" in revised and (p := last_yes(rec["answer_chunk"])) is not None:
                revised[f"{before} -> {after}"].append(p)
    print_table("first answer's check", groups, (0.6, 0.7, 0.8, 0.9))
    if args.revisions:
        print()
        print_table("revision's check", revised, (0.7, 0.8, 0.9, 0.95, 0.99))


def print_table(what: str, groups: dict[str, list[float]], taus: tuple[float, ...]) -> None:
    """One markdown row per group: n, median p(yes), and how many fall below each tau."""
    print(f"| {what} | n | median p(yes) | " + " | ".join(f"below {t}" for t in taus) + " |")
    print("|---|---|---|" + "---|" * len(taus))
    for name, ps in groups.items():
        med = f"{statistics.median(ps):.2f}" if ps else "-"
        print(f"| {name} | {len(ps)} | {med} | " + " | ".join(str(sum(p < t for p in ps)) for t in taus) + " |")


if __name__ == "__main__":
    main()
