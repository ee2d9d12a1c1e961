"""Metrics aggregation (adasr.metrics): the record fields, summaries and the per-mode tables."""

from __future__ import annotations

import json

import pytest

from adasr.metrics import RECORD_FIELDS, rich_table, summarize, summary_table


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------


def _rec(i, correct, lat, mode="adaptive", **kw):
    base = {f: 0 for f in RECORD_FIELDS}
    base.update(
        id=f"r{i}", mode=mode, correct=correct, prediction="1", reference="1", format_ok=True,
        stream_tokens=10 * i, deep_tokens=20, post_input_tokens=20, post_input_ttft_s=0.1,
        post_input_latency_s=lat, max_backlog_s=0.5 * i, wall_s=2.0,
    )
    base.update(kw)
    return base


def test_record_fields_order():
    assert RECORD_FIELDS[:3] == ("id", "mode", "input_tokens")
    assert RECORD_FIELDS[-12:] == ("correct", "prediction", "reference", "format_ok",
                                   "answer_s", "answer_chunk", "first_answer_chunk", "first_answer_s",
                                   "first_prediction", "n_revisions", "evidence_chunk", "evidence_s")
    assert len(RECORD_FIELDS) == 28 and len(set(RECORD_FIELDS)) == 28


def test_summarize_numbers():
    recs = [
        _rec(1, True, 1.0),
        _rec(2, False, 2.0),
        _rec(3, True, 3.0, format_ok=False),
        _rec(4, None, 4.0, reference=None, post_input_ttft_s=None),  # no reference: not graded
    ]
    s = summarize(recs)
    assert s["count"] == 4 and s["mode"] == "adaptive"
    assert s["n_graded"] == 3 and s["accuracy"] == pytest.approx(2 / 3)
    assert s["format_rate"] == pytest.approx(0.75)
    assert s["mean_stream_tokens"] == pytest.approx(25.0)
    assert s["mean_post_input_latency_s"] == pytest.approx(2.5)
    assert s["mean_post_input_ttft_s"] == pytest.approx(0.1)  # None skipped
    assert s["mean_max_backlog_s"] == pytest.approx(1.25)
    assert s["p50_post_input_latency_s"] == pytest.approx(2.5)
    assert s["p90_post_input_latency_s"] == pytest.approx(3.7)
    assert s["total_wall_s"] == pytest.approx(8.0)
    assert s["problems_per_hour"] == pytest.approx(4 / 8.0 * 3600)
    assert summarize(recs, elapsed_s=2.0)["problems_per_hour"] == pytest.approx(7200)
    assert all(f"mean_{f}" in s for f in ("input_tokens", "overrun_tokens", "eoi_s", "n_chunks"))
    json.dumps(s)
    empty = summarize([])
    assert empty["count"] == 0 and empty["accuracy"] is None and empty["problems_per_hour"] is None


def test_tables_one_column_per_mode():
    sums = {"batch": summarize([_rec(1, True, 5.0, mode="batch")]),
            "adaptive": summarize([_rec(1, False, 1.0)])}
    md = summary_table(sums)
    lines = md.strip().splitlines()
    assert lines[0] == "| metric | batch | adaptive |"
    assert all(line.count("|") == 4 for line in lines)
    assert any(line.startswith("| accuracy | 100.0% (1/1) | 0.0% (0/1) |") for line in lines)
    for label in ("post-input latency p50", "post-input TTFT", "max backlog", "problems/hour",
                  "stream tokens", "deep tokens", "post-input tokens", "format rate"):
        assert label in md
    table = rich_table(sums)
    assert [c.header for c in table.columns] == ["metric", "batch", "adaptive"]
    assert table.row_count == len(lines) - 2
