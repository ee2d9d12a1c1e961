"""Episode records and their aggregation.

One **record** per episode: an :class:`EpisodeRecord` (built from a finished engine session by
:meth:`EpisodeRecord.from_session`), stored as a flat, JSON-serializable dict
(:meth:`EpisodeRecord.as_dict`) whose keys are :data:`RECORD_FIELDS` (names are an interface,
see docs/DESIGN.md "Metrics"). Token counts are tokens of the model's tokenizer; times (except
``wall_s``) are seconds on the clock the episode ran under (the *virtual* clock in evaluation:
measured compute plus jumps to chunk arrivals, so latencies are those a live stream would see;
the *real* clock in demos and serving). Times are measured from the start of the stream unless
stated otherwise.

==============================  ============================================================
field                           meaning (unit)
==============================  ============================================================
``id``                          episode / item id (str)
``mode``                        ``batch`` | ``interleaved`` | ``adaptive`` | ``proactive`` (str)
``input_tokens``                tokens ingested that the model did not generate: system
                                prompt, chunks, role headers, end-of-input marker (tokens)
``stream_tokens``               streaming-thought tokens generated before EOI, including the
                                end-of-turn token of each thought (tokens)
``deep_tokens``                 deep-stage tokens, including the final answer (tokens)
``post_input_tokens``           tokens generated after EOI (tokens); ``deep_tokens`` plus any
                                streaming thought still being finished when the input ended
``skipped_chunks``              chunks not followed by a non-empty streaming thought (count):
                                skips, forced skips, and chunks with no thought turn (the last
                                chunk of a stream that closed with it; every chunk in batch mode)
``n_chunks``                    chunks ingested (count): all of the input stream's, unless a
                                proactive answer ended the episode before end of input
``overrun_tokens``              streaming-thought tokens beyond the arrival-slack budget
                                ``slack_s * decode_rate`` of their thought (tokens)
``pre_reasoning_wait_tokens``   input tokens ingested before the first generated reasoning
                                token (tokens)
``post_input_ttft_s``           end of input (EOI) -> first deep-stage token (s)
``post_input_latency_s``        EOI -> final answer complete; **the headline latency** (s)
``max_backlog_s``               longest wait of any chunk from its arrival to the start of its
                                ingestion (s)
``eoi_s``                       time of EOI, the last chunk's arrival (s since stream start)
``wall_s``                      real (wall-clock) time from the episode's admission to its
                                final answer, whatever the clock (s); batched episodes overlap
``finish_reason``               why the episode ended (:class:`adasr.session.FinishReason`):
                                ``stopped`` (the model ended its deep stage), ``length_capped``
                                (the deep stage reached ``max_deep_tokens``), ``answered_early``
                                (a proactive response committed the answer before EOI) (str)
``correct``                     the prediction verifies against the reference (bool; ``None``
                                until graded or when there is no reference)
``prediction``                  the final answer, the content of the last ``\\boxed{}`` (str
                                or ``None``)
``reference``                   the reference answer (str or ``None``)
``format_ok``                   the protocol is well formed with exactly one boxed answer: the
                                model ended the turn holding it itself (not ``length_capped``,
                                nor a response cut by its budget or an arrival) (bool)
``answer_s``                    time the final answer was complete (s since stream start)
``answer_chunk``                proactive mode: index of the chunk after which a streaming
                                thought committed the final answer (``None``: answered after EOI)
``first_answer_chunk``          proactive mode: the chunk after which the first response came
                                (equal to ``answer_chunk`` unless the answer was revised)
``first_answer_s``              time the first response was complete (s since stream start)
``first_prediction``            the first response's answer (str or ``None``)
``n_revisions``                 times the committed answer was revised (count; 0 unless the
                                policy allows revisions, docs/DESIGN.md "Revisions")
``evidence_chunk``              proactive streams: index of the earliest chunk after which the
                                answer is determined (from the item; ``None``: not given)
``evidence_s``                  arrival time of the evidence chunk (s since stream start)
``first_correct``               set by :func:`grade_record` when the answer was revised: the
                                first response's answer verifies (bool)
==============================  ============================================================

:func:`grade_record` is the one place a record's ``correct`` is set (``adasr run``, the
evaluation loop, RL rollouts and self-distillation all grade through it).

Records of streams with an evidence chunk also get, once graded, the fields of
:func:`adasr.proactive_metrics.episode_metrics` (``response_delay_chunks``,
``response_delay_s``, ``premature``, ``timely``, ``proactive_score``).

:func:`summarize` aggregates records of one mode; :func:`summary_table` and :func:`rich_table`
lay several summaries side by side, one column per mode.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from adasr.protocol import Stage, find_boxed

if TYPE_CHECKING:  # pragma: no cover
    from adasr.session import Session

__all__ = ["EpisodeRecord", "RECORD_FIELDS", "NUMERIC_FIELDS", "grade_record", "percentile", "wilson_interval",
           "summarize", "summary_table", "rich_table"]


@dataclass
class EpisodeRecord:
    """The metrics of one episode (fields, units and meanings: the module docstring)."""

    id: str
    mode: str
    input_tokens: int
    stream_tokens: int
    deep_tokens: int
    post_input_tokens: int
    skipped_chunks: int
    n_chunks: int
    overrun_tokens: int
    pre_reasoning_wait_tokens: int
    post_input_ttft_s: float | None
    post_input_latency_s: float | None
    max_backlog_s: float
    eoi_s: float
    wall_s: float
    finish_reason: str | None = None
    correct: bool | None = None
    prediction: str | None = None
    reference: str | None = None
    format_ok: bool = False
    answer_s: float | None = None
    answer_chunk: int | None = None
    first_answer_chunk: int | None = None
    first_answer_s: float | None = None
    first_prediction: str | None = None
    n_revisions: int = 0
    evidence_chunk: int | None = None
    evidence_s: float | None = None

    @classmethod
    def from_session(cls, session: "Session") -> "EpisodeRecord":
        """The record of a finished engine session (:class:`adasr.session.Session`); ``wall_s``
        runs until now, ``correct`` is left ``None`` for the task's checker to fill."""
        s = session
        stage = s.token_stage
        eoi = s.eoi_at if s.eoi_at is not None else 0.0
        boxed = find_boxed(s.answer_text)
        return cls(
            id=s.id,
            mode=s.policy.name,
            input_tokens=sum(1 for x in stage if x == Stage.INPUT),
            stream_tokens=sum(1 for x in stage if x == Stage.STREAM),
            deep_tokens=sum(1 for x in stage if x == Stage.DEEP),
            post_input_tokens=s.post_input_tokens,
            skipped_chunks=len(s.chunks) - sum(1 for th in s.thoughts if th),
            n_chunks=len(s.chunks),
            overrun_tokens=s.overrun,
            pre_reasoning_wait_tokens=s.first_gen_at_input or 0,
            post_input_ttft_s=(s.first_deep_t - eoi) if s.first_deep_t is not None else None,
            post_input_latency_s=(s.done_t - eoi) if s.done_t is not None else None,
            max_backlog_s=max(s.backlogs, default=0.0),
            eoi_s=eoi,
            wall_s=time.perf_counter() - s.wall0,
            finish_reason=s.finish_reason.value if s.finish_reason is not None else None,
            prediction=boxed[-1] if boxed else None,
            reference=s.inp.reference,
            format_ok=s.answer_complete and len(boxed) == 1,
            answer_s=s.done_t,
            answer_chunk=s.answer_chunk,
            first_answer_chunk=s.responses[0].chunk if s.responses else None,
            first_answer_s=s.responses[0].t if s.responses else None,
            first_prediction=s.responses[0].prediction if s.responses else None,
            n_revisions=max(0, len(s.responses) - 1),
            evidence_chunk=s.inp.evidence_chunk,
            evidence_s=next((c.arrival_s for c in s.chunks if c.index == s.inp.evidence_chunk), None),
        )

    def as_dict(self) -> dict:
        """The record as a flat dict, keys in :data:`RECORD_FIELDS` order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(EpisodeRecord))
"""The fields of an episode record, in order (see the module docstring for units)."""

NUMERIC_FIELDS: tuple[str, ...] = tuple(
    f
    for f in RECORD_FIELDS
    if f not in ("id", "mode", "finish_reason", "correct", "prediction", "reference", "format_ok", "answer_chunk", "evidence_chunk",
                 "evidence_s", "answer_s", "first_answer_chunk", "first_answer_s", "first_prediction", "n_revisions")
)
"""Record fields that are numbers (tokens or seconds); :func:`summarize` reports their means."""


def grade_record(record: dict, grade: Callable[[str | None, str], bool], reference: str, *,
                 need_format: bool = False) -> dict:
    """Grade one episode record in place: the one rule for what ``correct`` means.

    Sets ``reference``; ``correct`` = ``grade(prediction, reference)`` (and, with
    ``need_format``, the record's ``format_ok``: a distilled sample counts only when well formed);
    and, when the episode revised its committed answer (``n_revisions`` > 0), ``first_correct`` =
    ``grade(first_prediction, reference)``.

    Args:
        record: a flat record with ``prediction`` (an :meth:`EpisodeRecord.as_dict`, or a
            distilled sample's record).
        grade: the checker, ``grade(prediction, reference) -> bool``: a task's
            :meth:`~adasr.tasks.base.Task.grade` or a custom scorer.
        reference: the reference answer.
        need_format: also require ``record["format_ok"]``.

    Returns:
        ``record``.
    """
    record["reference"] = reference
    if need_format and not record["format_ok"]:
        record["correct"] = False
    else:
        record["correct"] = grade(record.get("prediction"), reference)
    if record.get("n_revisions"):  # the first response's answer, graded too
        record["first_correct"] = grade(record.get("first_prediction"), reference)
    return record


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _has_reference(rec: Mapping) -> bool:
    ref = rec.get("reference")
    return ref is not None and str(ref).strip() != ""


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default), ``q`` in [0, 100]."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (default: 95%, ``z = 1.96``).

    ``(p + z²/2n ± z * sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = k / n`` (Wilson,
    JASA 1927). Unlike the normal ("Wald") interval it stays inside [0, 1] and is not empty at
    ``k = 0`` or ``k = n``, which matters for the small evaluation sets of this project.

    Returns:
        ``(lo, hi)``, both in [0, 1].

    Raises:
        ValueError: ``n < 1``, ``k`` outside ``[0, n]``, or ``z <= 0``.
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need n >= 1 and 0 <= k <= n, got k={k}, n={n}")
    if not z > 0:
        raise ValueError(f"z must be > 0, got {z}")
    p = k / n
    z2 = z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, center - half), min(1.0, center + half)


def summarize(records: Iterable[Mapping], *, elapsed_s: float | None = None) -> dict:
    """Aggregate episode records (normally of one mode).

    Returns a JSON-serializable dict with:

    * ``count``: number of records; ``mode``: their mode when they all share one;
    * ``accuracy``: fraction correct over records with a reference (an ungraded record with a
      reference counts as wrong), ``n_graded`` that denominator, ``n_correct``; ``None`` if no
      record has a reference; ``accuracy_ci95``: its 95% Wilson interval ``[lo, hi]``
      (:func:`wilson_interval`), ``None`` when ``accuracy`` is;
    * ``format_rate``: mean of ``format_ok`` over records where it is set;
    * ``mean_<field>`` for every numeric field (:data:`NUMERIC_FIELDS`, plus any other numeric
      key the records carry), over the records where it is a finite number;
    * ``p50_post_input_latency_s``, ``p90_post_input_latency_s``;
    * ``total_wall_s``: sum of ``wall_s``;
    * ``elapsed_s`` and ``problems_per_hour``: throughput ``count / elapsed_s * 3600`` where
      ``elapsed_s`` is the real time the run took (pass it: the evaluation loop does). Without
      it the throughput falls back to ``count / total_wall_s``, which is exact only for serial
      runs (``batch_size=1``): batched episodes overlap, so their ``wall_s`` sum overcounts.

    Missing values are ``None``.
    """
    recs = [r for r in records]
    out: dict = {"count": len(recs)}
    modes = {r.get("mode") for r in recs}
    out["mode"] = modes.pop() if len(modes) == 1 else None

    graded = [r for r in recs if _has_reference(r)]
    n_correct = sum(1 for r in graded if r.get("correct") is True)
    out["n_graded"] = len(graded)
    out["n_correct"] = n_correct
    out["accuracy"] = n_correct / len(graded) if graded else None
    out["accuracy_ci95"] = list(wilson_interval(n_correct, len(graded))) if graded else None
    fmt = [bool(r["format_ok"]) for r in recs if r.get("format_ok") is not None]
    out["format_rate"] = sum(fmt) / len(fmt) if fmt else None

    extra = sorted({k for r in recs for k, v in r.items() if _is_number(v)} - set(RECORD_FIELDS))
    for field in (*NUMERIC_FIELDS, *extra):
        vals = [float(r[field]) for r in recs if _is_number(r.get(field))]
        out[f"mean_{field}"] = sum(vals) / len(vals) if vals else None

    lat = [
        float(r["post_input_latency_s"]) for r in recs if _is_number(r.get("post_input_latency_s"))
    ]
    out["p50_post_input_latency_s"] = percentile(lat, 50)
    out["p90_post_input_latency_s"] = percentile(lat, 90)

    walls = [float(r["wall_s"]) for r in recs if _is_number(r.get("wall_s"))]
    out["total_wall_s"] = sum(walls) if walls else None
    out["elapsed_s"] = float(elapsed_s) if elapsed_s is not None else None
    basis = elapsed_s if elapsed_s is not None else out["total_wall_s"]
    out["problems_per_hour"] = len(recs) / basis * 3600.0 if recs and basis and basis > 0 else None
    return out


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _fmt_num(x, spec: str, suffix: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{suffix}"


def _fmt_rate(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _fmt_accuracy(s: Mapping) -> str:
    acc = s.get("accuracy")
    if acc is None:
        return "–"
    return f"{100 * acc:.1f}% ({s.get('n_correct', '?')}/{s.get('n_graded', '?')})"


# (row label, formatter of one summary)
_ROWS: tuple[tuple[str, object], ...] = (
    ("problems", lambda s: str(s.get("count", "–"))),
    ("accuracy", _fmt_accuracy),
    ("format rate", lambda s: _fmt_rate(s.get("format_rate"))),
    ("stream tokens (mean)", lambda s: _fmt_num(s.get("mean_stream_tokens"), ".1f")),
    ("deep tokens (mean)", lambda s: _fmt_num(s.get("mean_deep_tokens"), ".1f")),
    ("post-input tokens (mean)", lambda s: _fmt_num(s.get("mean_post_input_tokens"), ".1f")),
    ("post-input TTFT (mean)", lambda s: _fmt_num(s.get("mean_post_input_ttft_s"), ".2f", " s")),
    ("post-input latency p50", lambda s: _fmt_num(s.get("p50_post_input_latency_s"), ".2f", " s")),
    ("post-input latency mean",
     lambda s: _fmt_num(s.get("mean_post_input_latency_s"), ".2f", " s")),
    ("max backlog (mean)", lambda s: _fmt_num(s.get("mean_max_backlog_s"), ".2f", " s")),
    ("problems/hour", lambda s: _fmt_num(s.get("problems_per_hour"), ",.0f")),
)


def _table_cells(summaries: Mapping[str, Mapping]) -> tuple[list[str], list[list[str]]]:
    header = ["metric", *summaries.keys()]
    rows = [[label, *(fmt(s) for s in summaries.values())] for label, fmt in _ROWS]
    return header, rows


def summary_table(summaries: Mapping[str, Mapping]) -> str:
    """A markdown table with one column per mode (key of ``summaries``) and one row per metric:
    problems, accuracy, format rate, mean stream/deep/post-input tokens, mean post-input TTFT,
    post-input latency p50 and mean, mean max backlog, problems/hour."""
    header, rows = _table_cells(summaries)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def rich_table(summaries: Mapping[str, Mapping], *, title: str | None = None):
    """The same content as :func:`summary_table`, as a :class:`rich.table.Table`."""
    from rich.table import Table

    header, rows = _table_cells(summaries)
    table = Table(title=title)
    table.add_column(header[0], style="bold")
    for name in header[1:]:
        table.add_column(name, justify="right", overflow="fold")  # long names (a budget sweep's) wrap, never cut
    for cells in rows:
        table.add_row(*cells)
    return table
