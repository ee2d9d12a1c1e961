"""Proactive-streaming metrics (ours): when an answer was committed, relative to the evidence.

Definitions (docs/DESIGN.md, "Proactive streaming (ours)"). Per episode, from a record with

==========================  =================================================================
field                       meaning
==========================  =================================================================
``evidence_chunk``          0-based index of the earliest chunk after which the answer is
                            determined (from the benchmark item)
``answer_chunk``            index of the chunk after which the final answer was committed (a
                            streaming-thought response), ``None`` if answered after the end of
                            input (deep stage) or not at all
``first_answer_chunk``      index of the chunk after which the *first* response came (optional;
                            differs from ``answer_chunk`` only when the answer was revised)
``correct``                 the committed answer is right (``True``; anything else is wrong)
``chunk_arrivals_s``        arrival time of each chunk, seconds (its length is the number of
                            chunks unless ``n_chunks`` is given)
``evidence_s``              arrival time of the evidence chunk, seconds (an engine record's
                            field; used instead of ``chunk_arrivals_s[evidence_chunk]``)
``answer_s``                time the answer was complete, seconds, same clock (``None``: none)
==========================  =================================================================

:func:`episode_metrics` computes

* ``response_delay_chunks = a − e`` with ``a = answer_chunk``, or ``a = n_chunks`` (one past
  the last chunk) when the answer came after the end of input;
* ``response_delay_s = answer_s − evidence_s`` (or ``− chunk_arrivals_s[e]``);
* ``premature``: ``first_answer_chunk < evidence_chunk`` (the first response came before the
  answer was determined: the user was told a guess, even if a later revision corrected it);
* ``timely``: correct, and ``0 <= response_delay_chunks <= window``;
* ``proactive_score``: 0 if wrong or premature; 1 if correct with delay ``<= window``; else
  ``0.5 ** ((delay − window) / half_life)`` (half the credit for every ``half_life`` chunks
  beyond the window). Defaults ``window = 1``, ``half_life = 2``.

With revisions (docs/DESIGN.md, "Revisions"): ``correct``, the delays and ``timely`` are those of
the final answer, ``premature`` is judged on the first response. Without a revision the two are
the same response.

:func:`summarize_proactive` aggregates them (rates over all episodes with an evidence chunk;
delay percentiles over the non-premature episodes whose delay is defined).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

from adasr.metrics import percentile

__all__ = ["PROACTIVE_FIELDS", "proactive_score", "episode_metrics", "proactive_fields", "summarize_proactive"]

PROACTIVE_FIELDS: tuple[str, ...] = (
    "response_delay_chunks",
    "response_delay_s",
    "premature",
    "timely",
    "proactive_score",
)
"""The per-episode fields :func:`episode_metrics` returns."""

DEFAULT_WINDOW = 1
DEFAULT_HALF_LIFE = 2.0


def _check_params(window: int, half_life: float) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"window must be an integer >= 0, got {window!r}")
    if not (isinstance(half_life, (int, float)) and not isinstance(half_life, bool) and half_life > 0
            and math.isfinite(half_life)):
        raise ValueError(f"half_life must be a number > 0, got {half_life!r}")


def _index(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def proactive_score(correct: bool, delay_chunks: int | None, *, window: int = DEFAULT_WINDOW,
                    half_life: float = DEFAULT_HALF_LIFE) -> float:
    """Credit of one episode: ``0`` if not ``correct`` or premature (``delay_chunks < 0``) or the
    delay is unknown; ``1`` for ``0 <= delay_chunks <= window``; otherwise
    ``0.5 ** ((delay_chunks − window) / half_life)``."""
    _check_params(window, half_life)
    if correct is not True or delay_chunks is None or delay_chunks < 0:
        return 0.0
    if delay_chunks <= window:
        return 1.0
    return 0.5 ** ((delay_chunks - window) / half_life)


def episode_metrics(rec: Mapping, *, window: int = DEFAULT_WINDOW, half_life: float = DEFAULT_HALF_LIFE) -> dict:
    """The proactive fields of one episode (module docstring): a dict with :data:`PROACTIVE_FIELDS`.

    Raises:
        ValueError: no valid ``evidence_chunk``; an ``answer_chunk`` or ``evidence_chunk``
            outside the chunks; bad ``window``/``half_life``.
    """
    _check_params(window, half_life)
    e = rec.get("evidence_chunk")
    if not _index(e) or e < 0:
        raise ValueError(f"evidence_chunk must be an integer >= 0, got {e!r}")
    arrivals = rec.get("chunk_arrivals_s")
    arrivals = list(arrivals) if arrivals is not None else None
    n = rec.get("n_chunks")
    if n is None and arrivals is not None:
        n = len(arrivals)
    a = rec.get("answer_chunk")
    if n is not None and not (_index(n) and (e < n or a is not None)):
        # (an answer before the end of input stops ingestion: n_chunks then counts the chunks
        # ingested, and a premature answer may precede the evidence chunk)
        raise ValueError(f"evidence_chunk {e} outside the {n} chunks")
    if a is not None and (not _index(a) or a < 0 or (n is not None and a >= n)):
        raise ValueError(f"answer_chunk must be None or a chunk index, got {a!r}")
    first = rec.get("first_answer_chunk")
    if first is None:
        first = a  # records without revisions (or written before the field existed)
    elif not _index(first) or first < 0 or (a is not None and first > a):
        raise ValueError(f"first_answer_chunk must be None or a chunk index <= answer_chunk, got {first!r}")
    answered_at = a if a is not None else n  # after the end of input: one past the last chunk
    delay_c = answered_at - e if answered_at is not None else None
    answer_s = rec.get("answer_s")
    evidence_s = rec.get("evidence_s")
    if evidence_s is None and arrivals is not None and e < len(arrivals):
        evidence_s = arrivals[e]
    delay_s = float(answer_s) - float(evidence_s) if answer_s is not None and evidence_s is not None else None
    premature = first is not None and first < e
    correct = rec.get("correct") is True
    timely = correct and not premature and delay_c is not None and 0 <= delay_c <= window
    return {
        "response_delay_chunks": delay_c,
        "response_delay_s": delay_s,
        "premature": premature,
        "timely": timely,
        "proactive_score": proactive_score(correct and not premature, delay_c, window=window, half_life=half_life),
    }


def proactive_fields(rec: Mapping, *, window: int = DEFAULT_WINDOW, half_life: float = DEFAULT_HALF_LIFE) -> dict:
    """:func:`episode_metrics` of a graded record with an ``evidence_chunk``; ``{}`` without one
    (a stream that is not proactive). Merge it into the record.

    Raises:
        ValueError: as :func:`episode_metrics`.
    """
    if rec.get("evidence_chunk") is None:
        return {}
    return episode_metrics(rec, window=window, half_life=half_life)


def summarize_proactive(records: Iterable[Mapping], *, window: int = DEFAULT_WINDOW,
                        half_life: float = DEFAULT_HALF_LIFE) -> dict:
    """Aggregate proactive episodes.

    Records without an ``evidence_chunk`` are counted in ``n_without_evidence`` and left out of
    everything else. Over the ``count`` others: ``accuracy`` (correct), ``timely_correct_rate``
    (correct and timely), ``late_correct_rate`` (correct, not premature, delay > window),
    ``premature_rate``, ``answered_before_eoi_rate`` (an ``answer_chunk`` was set),
    ``revised_rate`` (``n_revisions > 0``), ``first_answer_accuracy`` (the first response's
    ``first_correct`` where the records carry it, else ``correct``; ``None`` unless some record has
    ``first_correct``), ``mean_proactive_score``; over the non-premature episodes with a defined delay:
    ``p50``/``p95`` of ``response_delay_chunks`` and ``response_delay_s``. Also the ``window``
    and ``half_life`` used. Rates and means are ``None`` when ``count`` is 0.

    Raises:
        ValueError: as :func:`episode_metrics`.
    """
    recs = list(records)
    with_e = [r for r in recs if r.get("evidence_chunk") is not None]
    ms = [episode_metrics(r, window=window, half_life=half_life) for r in with_e]
    n = len(ms)

    def rate(k: int) -> float | None:
        return k / n if n else None

    correct = [r.get("correct") is True for r in with_e]
    ok = [m for m in ms if not m["premature"]]
    dc = [float(m["response_delay_chunks"]) for m in ok if m["response_delay_chunks"] is not None]
    ds = [m["response_delay_s"] for m in ok if m["response_delay_s"] is not None]
    return {
        "count": n,
        "n_without_evidence": len(recs) - n,
        "window": window,
        "half_life": half_life,
        "accuracy": rate(sum(correct)),
        "timely_correct_rate": rate(sum(m["timely"] for m in ms)),
        "late_correct_rate": rate(sum(c and not m["premature"] and not m["timely"] for c, m in zip(correct, ms))),
        "premature_rate": rate(sum(m["premature"] for m in ms)),
        "answered_before_eoi_rate": rate(sum(r.get("answer_chunk") is not None for r in with_e)),
        "revised_rate": rate(sum((r.get("n_revisions") or 0) > 0 for r in with_e)),
        "first_answer_accuracy": (rate(sum(r.get("first_correct", r.get("correct")) is True for r in with_e))
                                  if any("first_correct" in r for r in with_e) else None),
        "mean_proactive_score": sum(m["proactive_score"] for m in ms) / n if n else None,
        "p50_response_delay_chunks": percentile(dc, 50),
        "p95_response_delay_chunks": percentile(dc, 95),
        "p50_response_delay_s": percentile(ds, 50),
        "p95_response_delay_s": percentile(ds, 95),
    }
