"""Arrival schedules: one arrival time (seconds since the stream started) per chunk — spoken
(:func:`words_per_second_schedule`), typed (:func:`characters_per_second_schedule`) or given
(:func:`explicit_schedule`).

Imports nothing of :mod:`adasr.stream`.
"""

from __future__ import annotations

import math
from typing import Sequence

from adasr.defaults import DEFAULT_WPS
from adasr.errors import InputError


def _finite(name: str, value) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(f):
        raise InputError(f"{name} must be finite, got {value!r}")
    return f


def words_per_second_schedule(
    chunks: Sequence[str], wps: float = DEFAULT_WPS, start_s: float = 0.0
) -> list[float]:
    """Arrival times for speech-like input at ``wps`` words per second.

    Chunk k arrives when its last word has been spoken:
    ``start_s + (words in chunks 0..k) / wps`` seconds. At 2.5 words/s a first chunk of 5
    words arrives at 2.0 s.

    Args:
        chunks: chunk texts (words are whitespace-separated; every chunk counts >= 1 word).
        wps: words per second, > 0.
        start_s: time the first word starts, seconds, >= 0.

    Raises:
        InputError: if ``wps`` is not a positive finite number or ``start_s`` is negative.
    """
    return _cumulative_schedule([max(1, len(c.split())) for c in chunks], "wps (words per second)", wps, start_s)


def _cumulative_schedule(sizes: Sequence[int], name: str, rate, start_s) -> list[float]:
    """``start_s + (sizes[0] + ... + sizes[k]) / rate`` for each k: chunk k arrives once its last unit
    (word, character) is produced at ``rate`` units per second.

    Raises:
        InputError: if ``rate`` (called ``name`` in the message) is not a positive finite number or
            ``start_s`` is negative.
    """
    r = _finite(name, rate)
    if r <= 0:
        raise InputError(f"{name} must be > 0, got {rate!r}")
    t0 = _finite("start_s", start_s)
    if t0 < 0:
        raise InputError(f"start_s must be >= 0, got {start_s!r}")
    out, done = [], 0
    for size in sizes:
        done += size
        out.append(t0 + done / r)
    return out


def characters_per_second_schedule(
    chunks: Sequence[str], cps: float, start_s: float = 0.0
) -> list[float]:
    """Arrival times for typed input at ``cps`` characters per second (LiveMind's setting: a user
    typing at 240 characters/minute is ``cps=4``, latency measured from the last character).

    Chunk k arrives when its last character has been typed:
    ``start_s + (characters in chunks 0..k, one space typed between consecutive chunks) / cps``
    seconds. At 4 characters/s a first chunk of 20 characters arrives at 5.0 s.

    Args:
        chunks: chunk texts (every chunk counts >= 1 character).
        cps: characters per second, > 0.
        start_s: time the first character is typed, seconds, >= 0.

    Raises:
        InputError: if ``cps`` is not a positive finite number or ``start_s`` is negative.
    """
    sizes = [max(1, len(c)) + (1 if k else 0) for k, c in enumerate(chunks)]
    return _cumulative_schedule(sizes, "cps (characters per second)", cps, start_s)


def explicit_schedule(chunks: Sequence[str], timestamps: Sequence[float]) -> list[float]:
    """Validate explicit arrival times (seconds since the stream started), one per chunk.

    Returns:
        The timestamps as floats.

    Raises:
        InputError: if the lengths differ, or a timestamp is not a finite number, is negative,
            or is smaller than the one before it.
    """
    ts = list(timestamps)
    if len(ts) != len(chunks):
        raise InputError(f"got {len(ts)} timestamps for {len(chunks)} chunks: give one per chunk")
    out: list[float] = []
    for i, t in enumerate(ts):
        f = _finite(f"timestamp {i}", t)
        if f < 0:
            raise InputError(f"timestamp {i} is negative ({t!r}): arrival times are >= 0 s")
        if out and f < out[-1]:
            raise InputError(
                f"timestamps must not decrease: timestamp {i} ({f}s) < timestamp {i - 1} "
                f"({out[-1]}s)"
            )
        out.append(f)
    return out
