"""Input streams: chunks, arrival schedules, clocks and sources.

A *stream* is a sequence of :class:`Chunk` objects, each with an arrival time ``arrival_s``
(seconds since the stream started). The engine consumes any object implementing
:class:`ArrivalSource`: it asks which chunks have arrived by a given time, when the next one is
due, and whether the stream is closed (end of input, EOI).

Two clocks (docs/DESIGN.md, "Latency model"):

* :class:`VirtualClock` — discrete-event time. Compute steps advance it by their *measured*
  durations; waiting for an arrival jumps it forward. Nothing sleeps, so an evaluation costs
  compute time only while its latencies are those a live stream would see.
* :class:`RealClock` — wall-clock time; waiting sleeps (or blocks on a live source).

Building streams: chunkers (:func:`split_sentences`, :func:`split_words`, :func:`split_tokens`,
:func:`cap_chunk_tokens`, :func:`chunk_text`) turn a text into chunk texts; arrival schedules
(:func:`words_per_second_schedule`, :func:`explicit_schedule`) give each chunk its arrival time;
:func:`make_stream` does both. :class:`StreamSpec` (chunker, words/s, token cap) is the one
description of how an input becomes a stream that ``adasr run``, ``adasr eval`` and RL rollouts
share, so one item gets the same chunks and arrival times on every path. Live input: :class:`LiveSource` (pushed from any thread),
:func:`stdin_source`, :func:`async_source`; :func:`file_text` reads a text file.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, Sequence

from adasr.defaults import DEFAULT_CHUNKER, DEFAULT_MAX_CHUNK_TOKENS, DEFAULT_TOKENS_PER_CHUNK, DEFAULT_WPS
from adasr.errors import InputError


@dataclass(frozen=True)
class Chunk:
    """One arriving piece of input.

    Attributes:
        index: position of the chunk in its stream (0-based).
        text: the chunk's text, stripped of surrounding whitespace.
        arrival_s: arrival time in seconds since the stream started.
    """

    index: int
    text: str
    arrival_s: float


class ArrivalSource(Protocol):
    """What the engine needs from a stream. Times are seconds since the stream started."""

    def poll(self, now_s: float) -> list[Chunk]:
        """Chunks that have arrived by ``now_s`` and were not returned before, in order."""

    def next_arrival_s(self) -> float | None:
        """Arrival time of the next not-yet-returned chunk, or ``None`` if unknown (live source)
        or if no chunk remains."""

    def closed(self, now_s: float) -> bool:
        """True once every chunk has been returned and the stream has ended (EOI reached)."""

    def eoi_s(self) -> float | None:
        """Time of end of input, once known (the moment the stream closed), else ``None``."""

    def wait(self, timeout_s: float) -> None:
        """Block up to ``timeout_s`` seconds for new input (live sources); no-op otherwise."""


class ScheduledStream:
    """A finite stream whose chunks arrive at known times; EOI is the last arrival.

    Args:
        chunks: the chunks, with non-decreasing ``arrival_s``.

    Raises:
        InputError: if ``chunks`` is empty or arrival times decrease.
    """

    def __init__(self, chunks: Sequence[Chunk]):
        if not chunks:
            raise InputError("the input is empty: give at least one non-blank chunk of text")
        for a, b in zip(chunks, chunks[1:]):
            if b.arrival_s < a.arrival_s:
                raise InputError(
                    f"arrival times must not decrease (chunk {b.index} at {b.arrival_s}s "
                    f"after chunk {a.index} at {a.arrival_s}s)"
                )
        self.chunks = list(chunks)
        self._next = 0

    def poll(self, now_s: float) -> list[Chunk]:
        out = []
        while self._next < len(self.chunks) and self.chunks[self._next].arrival_s <= now_s:
            out.append(self.chunks[self._next])
            self._next += 1
        return out

    def next_arrival_s(self) -> float | None:
        return self.chunks[self._next].arrival_s if self._next < len(self.chunks) else None

    def closed(self, now_s: float) -> bool:
        return self._next >= len(self.chunks) and now_s >= self.chunks[-1].arrival_s

    def eoi_s(self) -> float | None:
        return self.chunks[-1].arrival_s

    def wait(self, timeout_s: float) -> None:
        return None


class VirtualClock:
    """Discrete-event clock: ``advance`` adds measured compute time, ``wait_until`` jumps.

    Args:
        fixed_step_s: charge this many seconds per step instead of the measured time (a clock
            model independent of the machine and its load: runs are then reproducible
            token for token; ``None``: measured).
    """

    virtual = True

    def __init__(self, fixed_step_s: float | None = None) -> None:
        self._now = 0.0
        self.fixed_step_s = fixed_step_s

    def now(self) -> float:
        """Current time in seconds since the clock started."""
        return self._now

    def advance(self, dt_s: float) -> None:
        """Charge ``dt_s`` seconds of measured compute (or ``fixed_step_s``)."""
        self._now += dt_s if self.fixed_step_s is None else self.fixed_step_s

    def wait_until(self, t_s: float) -> None:
        """Jump to ``t_s`` if it is in the future (no sleeping)."""
        self._now = max(self._now, t_s)


class RealClock:
    """Wall clock: time passes by itself; ``wait_until`` sleeps."""

    virtual = False

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._t0

    def advance(self, dt_s: float) -> None:
        return None

    def wait_until(self, t_s: float) -> None:
        delay = t_s - self.now()
        if delay > 0:
            time.sleep(delay)


PER_STREAM = "per-stream"
"""Clock name for one virtual clock per stream (:meth:`adasr.engine.StreamingEngine.run`)."""

CLOCKS = ("virtual", "real", PER_STREAM)
"""Clock names the engine accepts."""


def make_clock(kind: str) -> VirtualClock | RealClock:
    """Return a shared clock by name: ``"virtual"`` or ``"real"`` (``"per-stream"`` clocks are
    made by the engine, one per row).

    Raises:
        InputError: for any other name.
    """
    if kind == "virtual":
        return VirtualClock()
    if kind == "real":
        return RealClock()
    raise InputError(f"unknown clock {kind!r}: use one of {', '.join(CLOCKS)}")


# ---------------------------------------------------------------------------------------------
# Chunkers: pure functions from text to a list of stripped, non-empty chunk texts.
# ---------------------------------------------------------------------------------------------

CHUNKERS = ("sentence", "word", "token")
"""Names accepted by :func:`chunk_text` (and ``--chunker`` on the command line)."""

# Abbreviations after which a period does not end a sentence (compared lower-case, without the
# final period). Titles are followed by a capitalised name, so capitalisation cannot decide.
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "ft", "rev", "gen",
        "capt", "col", "lt", "sgt", "gov", "sen", "rep", "hon", "pres", "messrs",
        "e.g", "i.e", "cf", "vs", "viz", "approx", "fig", "figs", "eq", "eqs", "sec", "ch",
        "vol", "pp", "al", "inc", "ltd", "co", "corp", "dept", "univ", "est", "ca",
        "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    }
)
# Abbreviations that often *end* a sentence: they end one when the next word is capitalised.
_SOFT_ABBREVIATIONS = frozenset({"etc", "a.m", "p.m"})

# Terminal punctuation (".", "?", "!", "…", runs like "?!" or "..."), optional closing quotes or
# brackets, then whitespace or the end of the line. "3.50" and "$1,200.50" never match: no
# whitespace follows their period.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u2019\u201d)\]]*(?=\s|$)")
_NEXT_CHAR = re.compile(r"\s*[\"'\u2018\u201c(\[]*(\S?)")


def _ends_sentence(line: str, match: re.Match) -> bool:
    """Whether the terminal punctuation ``match`` in ``line`` really ends a sentence."""
    punct = match.group(0).rstrip("\"'\u2019\u201d)]")
    if punct != ".":  # "?", "!", "...", "?!": always a boundary
        return True
    # The word the punctuation ends (a bounded look-back keeps long texts linear).
    before = line[max(0, match.start() - 32) : match.start()]
    word = "" if not before or before[-1].isspace() else before.split()[-1]
    word = word.lstrip("\"'\u2018\u201c([").lower()
    nxt = _NEXT_CHAR.match(line, match.end()).group(1)
    if nxt and nxt.islower():  # "etc. and so on", "approx. five"
        return False
    if word in _ABBREVIATIONS:
        return False
    if word in _SOFT_ABBREVIATIONS:
        return True  # the next word is capitalised (checked above) or the line ends
    if len(word) == 1 and word.isalpha():  # an initial: "J. K. Rowling"
        return False
    if re.fullmatch(r"(?:[a-z]\.)+[a-z]", word):  # dotted acronyms: "U.S.A.", "Ph.D"
        return False
    return True


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences (the default chunker).

    Boundaries are line breaks and terminal punctuation (``.``, ``?``, ``!``, ``…``, possibly
    repeated and followed by closing quotes or brackets) followed by whitespace. Periods inside
    numbers (``$3.50``, ``$1,200.50``), after common abbreviations (``Mr.``, ``Dr.``, ``e.g.``,
    ``i.e.``, ``vs.``), after initials (``J. K.``) or followed by a lower-case word are not
    boundaries. A final fragment without punctuation is kept.

    Args:
        text: any text.

    Returns:
        The sentences, stripped and non-empty, in order (empty list for blank text).
    """
    out: list[str] = []
    for line in text.splitlines():
        start = 0
        for m in _SENTENCE_END.finditer(line):
            if _ends_sentence(line, m):
                piece = line[start : m.end()].strip()
                if piece:
                    out.append(piece)
                start = m.end()
        tail = line[start:].strip()
        if tail:
            out.append(tail)
    return out


def split_words(text: str, words_per_chunk: int = 1) -> list[str]:
    """Split ``text`` into chunks of ``words_per_chunk`` whitespace-separated words.

    The last chunk may hold fewer words. Runs of whitespace inside a chunk become one space.

    Raises:
        InputError: if ``words_per_chunk`` is smaller than 1.
    """
    if int(words_per_chunk) != words_per_chunk or words_per_chunk < 1:
        raise InputError(f"words_per_chunk must be a positive integer, got {words_per_chunk!r}")
    words = text.split()
    n = int(words_per_chunk)
    return [" ".join(words[i : i + n]) for i in range(0, len(words), n)]


def _encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
    """Token ids of ``text`` (no special tokens) and, when the tokenizer provides them, the
    character span of each token in ``text`` (``None`` otherwise)."""
    if hasattr(tokenizer, "backend_tokenizer") or callable(getattr(tokenizer, "__call__", None)):
        try:  # HF fast tokenizer: offsets map tokens back to the original characters
            enc = tokenizer(
                text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
            return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        except (NotImplementedError, TypeError, ValueError, KeyError):
            pass
    enc = tokenizer.encode(text, add_special_tokens=False)
    if hasattr(enc, "ids") and hasattr(enc, "offsets"):  # a raw `tokenizers.Tokenizer`
        return list(enc.ids), [tuple(o) for o in enc.offsets]
    return list(enc), None


def _token_pieces(tokenizer, text: str, ids, offsets, n: int) -> list[str]:
    """Cut ``text`` into pieces of ``n`` tokens each (given its ``ids`` and ``offsets``),
    stripped; empty pieces are dropped."""
    if offsets is None:  # slow tokenizer: decode each span of ids
        pieces = [tokenizer.decode(ids[i : i + n]) for i in range(0, len(ids), n)]
    else:
        # Cut at the first character of every n-th token; everything between two cuts
        # (whitespace included) belongs to one piece, so the pieces reproduce the text.
        cuts = [0]
        for i in range(n, len(ids), n):
            cuts.append(max(cuts[-1], offsets[i][0]))
        cuts.append(len(text))
        pieces = [text[a:b] for a, b in zip(cuts, cuts[1:])]
    return [p.strip() for p in pieces if p.strip()]


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def split_tokens(text: str, tokenizer, tokens_per_chunk: int) -> list[str]:
    """Split ``text`` into chunks of ``tokens_per_chunk`` tokens of ``tokenizer``.

    The text is tokenized once (without special tokens). With a fast (Rust-backed) tokenizer
    the chunks are slices of the original text cut at token starts, so joining them with spaces
    reproduces the text up to whitespace; with a slow tokenizer each span of token ids is
    decoded. The last chunk may be shorter.

    Args:
        text: the text.
        tokenizer: a Hugging Face tokenizer (or a ``tokenizers.Tokenizer``).
        tokens_per_chunk: tokens per chunk, >= 1.

    Raises:
        InputError: if ``tokens_per_chunk`` is not a positive integer.
    """
    n = _check_count("tokens_per_chunk", tokens_per_chunk)
    if not text.strip():
        return []
    ids, offsets = _encode(tokenizer, text)
    return _token_pieces(tokenizer, text, ids, offsets, n)


def _n_tokens(tokenizer, text: str) -> int:
    return len(_encode(tokenizer, text)[0])


def _cap_one(text: str, tokenizer, max_tokens: int, depth: int = 0) -> list[str]:
    ids, offsets = _encode(tokenizer, text)
    if len(ids) <= max_tokens:
        return [text]
    out: list[str] = []
    for piece in _token_pieces(tokenizer, text, ids, offsets, max_tokens):
        # A stripped piece can tokenize into more tokens than its span had (e.g. a word that
        # loses its leading space); cut it again. Depth-bounded: single characters that are
        # several byte tokens cannot be cut further.
        if depth < 4 and len(piece) < len(text) and _n_tokens(tokenizer, piece) > max_tokens:
            out.extend(_cap_one(piece, tokenizer, max_tokens, depth + 1))
        else:
            out.append(piece)
    return out


def cap_chunk_tokens(chunks: Sequence[str], tokenizer, max_tokens: int) -> list[str]:
    """Split every chunk longer than ``max_tokens`` tokens into pieces of at most
    ``max_tokens`` tokens; shorter chunks are kept as they are.

    Each chunk is tokenized once (plus one check of each cut piece), so even a 100,000-character
    chunk is split in a fraction of a second. Pieces are cut at token starts (see
    :func:`split_tokens`) and stripped.

    Args:
        chunks: chunk texts.
        tokenizer: a Hugging Face tokenizer (or a ``tokenizers.Tokenizer``).
        max_tokens: the most tokens a chunk may hold, >= 1.

    Raises:
        InputError: if ``max_tokens`` is not a positive integer.
    """
    n = _check_count("max_tokens", max_tokens)
    out: list[str] = []
    for chunk in chunks:
        chunk = chunk.strip()
        if chunk:
            out.extend(_cap_one(chunk, tokenizer, n))
    return out


def chunk_text(
    text: str,
    chunker: str = "sentence",
    *,
    tokenizer=None,
    tokens_per_chunk: int = 16,
    max_chunk_tokens: int | None = None,
) -> list[str]:
    """Split ``text`` into chunks with the named chunker.

    Args:
        text: the whole input text.
        chunker: ``"sentence"`` (default, :func:`split_sentences`), ``"word"`` (one word per
            chunk, :func:`split_words`) or ``"token"`` (``tokens_per_chunk`` tokens per chunk,
            :func:`split_tokens`; needs ``tokenizer``).
        tokenizer: the model's tokenizer; required by ``"token"`` and ``max_chunk_tokens``.
        tokens_per_chunk: tokens per chunk for the ``"token"`` chunker.
        max_chunk_tokens: if given, chunks longer than this many tokens are split further
            (:func:`cap_chunk_tokens`).

    Returns:
        The chunk texts (stripped, non-empty), at least one.

    Raises:
        InputError: for an unknown chunker, a missing tokenizer, or an empty (blank) text.
    """
    if chunker not in CHUNKERS:
        raise InputError(f"unknown chunker {chunker!r}: use one of {', '.join(CHUNKERS)}")
    if not isinstance(text, str) or not text.strip():
        raise InputError("the input is empty: give at least one non-blank chunk of text")
    if tokenizer is None and (chunker == "token" or max_chunk_tokens is not None):
        what = "the 'token' chunker" if chunker == "token" else "max_chunk_tokens"
        raise InputError(f"{what} needs a tokenizer")
    if chunker == "sentence":
        chunks = split_sentences(text)
    elif chunker == "word":
        chunks = split_words(text)
    else:
        chunks = split_tokens(text, tokenizer, tokens_per_chunk)
    if max_chunk_tokens is not None:
        chunks = cap_chunk_tokens(chunks, tokenizer, max_chunk_tokens)
    if not chunks:  # e.g. a tokenizer that maps the text to nothing
        raise InputError("the input is empty: give at least one non-blank chunk of text")
    return chunks


# ---------------------------------------------------------------------------------------------
# Arrival schedules: one arrival time (seconds since the stream started) per chunk.
# ---------------------------------------------------------------------------------------------


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


def make_stream(
    text_or_chunks: str | Sequence[str],
    *,
    chunker: str = "sentence",
    wps: float = DEFAULT_WPS,
    timestamps: Sequence[float] | None = None,
    tokenizer=None,
    max_chunk_tokens: int | None = None,
    tokens_per_chunk: int = 16,
    cps: float | None = None,
) -> ScheduledStream:
    """Build a :class:`ScheduledStream` from a text or from ready-made chunks.

    Args:
        text_or_chunks: a text (split with ``chunker``, see :func:`chunk_text`) or a sequence
            of chunk texts (used as given; blank ones are dropped together with their
            timestamp).
        chunker: chunker name for a text.
        wps: arrival rate in words per second when ``timestamps`` is not given.
        timestamps: explicit arrival times in seconds, one per chunk (per chunk *before*
            ``max_chunk_tokens`` splitting: the pieces of a split chunk all arrive with it).
        tokenizer: needed by the ``"token"`` chunker and by ``max_chunk_tokens``.
        max_chunk_tokens: split chunks longer than this many tokens.
        tokens_per_chunk: tokens per chunk for the ``"token"`` chunker.
        cps: when given (and no ``timestamps``), chunks arrive as typed at ``cps`` characters per
            second (:func:`characters_per_second_schedule`) instead of at ``wps``.

    Raises:
        InputError: empty input, unknown chunker, bad ``wps``, ``cps`` or timestamps, non-text chunks.
    """
    if isinstance(text_or_chunks, str):
        chunks = chunk_text(text_or_chunks, chunker, tokenizer=tokenizer,
                            tokens_per_chunk=tokens_per_chunk)
        times = None if timestamps is None else explicit_schedule(chunks, timestamps)
    else:
        raw = list(text_or_chunks)
        for i, c in enumerate(raw):
            if not isinstance(c, str):
                raise InputError(f"chunk {i} is not text: {type(c).__name__}")
        times = None if timestamps is None else explicit_schedule(raw, timestamps)
        keep = [i for i, c in enumerate(raw) if c.strip()]
        chunks = [raw[i].strip() for i in keep]
        times = None if times is None else [times[i] for i in keep]
        if not chunks:
            raise InputError("the input is empty: give at least one non-blank chunk of text")
    if max_chunk_tokens is not None:
        if tokenizer is None:
            raise InputError("max_chunk_tokens needs a tokenizer")
        pieces = [cap_chunk_tokens([c], tokenizer, max_chunk_tokens) for c in chunks]
        if times is not None:
            times = [t for t, ps in zip(times, pieces) for _ in ps]
        chunks = [p for ps in pieces for p in ps]
    if times is None:
        times = words_per_second_schedule(chunks, wps) if cps is None else characters_per_second_schedule(chunks, cps)
    return ScheduledStream([Chunk(i, c, t) for i, (c, t) in enumerate(zip(chunks, times))])


@dataclass(frozen=True)
class StreamSpec:
    """How an input becomes a :class:`ScheduledStream`: the one recipe that ``adasr run``,
    ``adasr eval`` and RL rollouts share (defaults in :mod:`adasr.defaults`).

    A text is split with ``chunker``; pre-split chunks (an item's ``chunks``) are used as given.
    Chunks longer than ``max_chunk_tokens`` tokens are split further. Chunks arrive at explicit
    timestamps when the input has them (one per chunk, in seconds), else at ``wps`` words per
    second (:func:`words_per_second_schedule`), or, when ``cps`` is set, as typed at ``cps``
    characters per second (:func:`characters_per_second_schedule`).

    Attributes:
        chunker: ``"sentence"``, ``"word"`` or ``"token"`` (:data:`CHUNKERS`).
        wps: arrival rate, words per second, > 0 (speech).
        cps: arrival rate, characters per second, > 0 (typing; ``None``: ``wps`` applies).
        max_chunk_tokens: token cap of a chunk (``None``: no cap); needs the model's tokenizer.
        tokens_per_chunk: tokens per chunk of the ``"token"`` chunker.

    Raises:
        InputError: an unknown chunker, a ``wps`` that is not a positive finite number, or a
            cap / ``tokens_per_chunk`` that is not a positive integer.
    """

    chunker: str = DEFAULT_CHUNKER
    wps: float = DEFAULT_WPS
    max_chunk_tokens: int | None = DEFAULT_MAX_CHUNK_TOKENS
    tokens_per_chunk: int = DEFAULT_TOKENS_PER_CHUNK
    cps: float | None = None

    def __post_init__(self) -> None:
        if self.chunker not in CHUNKERS:
            raise InputError(f"unknown chunker {self.chunker!r}: use one of {', '.join(CHUNKERS)}")
        rate = _finite("wps (words per second)", self.wps)
        if rate <= 0:
            raise InputError(f"wps (words per second) must be > 0, got {self.wps!r}")
        object.__setattr__(self, "wps", rate)
        if self.cps is not None:
            cps = _finite("cps (characters per second)", self.cps)
            if cps <= 0:
                raise InputError(f"cps (characters per second) must be > 0, got {self.cps!r}")
            object.__setattr__(self, "cps", cps)
        if self.max_chunk_tokens is not None:
            _check_count("max_chunk_tokens", self.max_chunk_tokens)
        _check_count("tokens_per_chunk", self.tokens_per_chunk)

    def stream(self, text_or_chunks: str | Sequence[str], *, tokenizer=None,
               timestamps: Sequence[float] | None = None) -> ScheduledStream:
        """The stream of a text or of ready-made chunks (see :func:`make_stream`).

        Args:
            text_or_chunks: a text (chunked with :attr:`chunker`) or a list of chunk texts.
            tokenizer: the model's tokenizer (needed by the token cap and the token chunker).
            timestamps: arrival times in seconds, one per chunk (default: :attr:`wps`).

        Raises:
            InputError: empty input, bad timestamps, non-text chunks, a cap without a tokenizer.
        """
        return make_stream(text_or_chunks, chunker=self.chunker, wps=self.wps, timestamps=timestamps,
                           tokenizer=tokenizer, max_chunk_tokens=self.max_chunk_tokens,
                           tokens_per_chunk=self.tokens_per_chunk, cps=self.cps)

    def for_item(self, item, *, tokenizer=None) -> ScheduledStream:
        """The stream of a dataset item (:class:`adasr.tasks.base.Item`, or any object with
        ``question`` and optional ``chunks`` / ``timestamps``): its chunks when it has them,
        else its question chunked; its timestamps when it has them, else :attr:`wps`."""
        chunks = getattr(item, "chunks", None)
        return self.stream(list(chunks) if chunks else item.question, tokenizer=tokenizer,
                           timestamps=getattr(item, "timestamps", None))

    def as_config(self) -> dict:
        """The spec as flat ``config.json`` keys: ``chunker``, ``wps``, ``max_chunk_tokens``,
        ``tokens_per_chunk``, and ``cps`` when set (left out otherwise, so that directories written
        before ``cps`` existed still resume)."""
        out = {"chunker": self.chunker, "wps": self.wps, "max_chunk_tokens": self.max_chunk_tokens,
               "tokens_per_chunk": self.tokens_per_chunk}
        if self.cps is not None:
            out["cps"] = self.cps
        return out


# ---------------------------------------------------------------------------------------------
# Live sources: chunks arrive in real time (another thread, stdin, an async iterator).
# ---------------------------------------------------------------------------------------------


class LiveSource:
    """A thread-safe, queue-backed :class:`ArrivalSource` fed while the engine runs.

    Producers call :meth:`push` (one call = one chunk, arriving now) and :meth:`close` (end of
    input); the engine, typically in another thread and with a :class:`RealClock`, calls
    :meth:`poll`, :meth:`closed` and :meth:`wait`. Arrival times are seconds since the source was
    started (:attr:`t0`, a ``time.perf_counter()`` value taken at construction or by
    :meth:`start`), measured when a chunk is received.

    A producer that fails (undecodable stdin, an exception in an async iterator) records an
    :class:`InputError` with :meth:`fail`; it is raised from the next :meth:`poll` in the
    consumer's thread, so producer threads never print tracebacks.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: deque[Chunk] = deque()
        self._count = 0
        self._closed_at: float | None = None
        self._error: InputError | None = None
        self.t0 = time.perf_counter()

    def start(self) -> None:
        """Restart the time origin now (e.g. when the engine's clock starts).

        Raises:
            InputError: if chunks were already pushed.
        """
        with self._cond:
            if self._count:
                raise InputError("cannot restart a LiveSource after chunks were pushed")
            self.t0 = time.perf_counter()

    def now_s(self) -> float:
        """Seconds since the source was started."""
        return time.perf_counter() - self.t0

    def push(self, text: str) -> Chunk | None:
        """Add one chunk, arriving now. Blank text is ignored (returns ``None``).

        Returns:
            The queued :class:`Chunk`, or ``None`` for blank text.

        Raises:
            InputError: if ``text`` is not a string or the source is already closed.
        """
        if not isinstance(text, str):
            raise InputError(f"a pushed chunk must be text, got {type(text).__name__}")
        text = text.strip()
        if not text:
            return None
        with self._cond:
            if self._closed_at is not None:
                raise InputError("cannot push to a closed LiveSource (input already ended)")
            chunk = Chunk(self._count, text, self.now_s())
            self._count += 1
            self._pending.append(chunk)
            self._cond.notify_all()
            return chunk

    def close(self) -> None:
        """Mark end of input now (``eoi_s`` = now). Idempotent."""
        with self._cond:
            if self._closed_at is None:
                self._closed_at = self.now_s()
            self._cond.notify_all()

    def fail(self, error: InputError | str) -> None:
        """Record a producer failure, raised from the next :meth:`poll`; the first one wins."""
        with self._cond:
            if self._error is None:
                self._error = error if isinstance(error, InputError) else InputError(str(error))
            self._cond.notify_all()

    @property
    def error(self) -> InputError | None:
        """The recorded producer failure, if any."""
        return self._error

    def poll(self, now_s: float) -> list[Chunk]:
        """Every chunk pushed and not yet returned, in order (``now_s`` is not used: a live
        chunk is returned as soon as it is received).

        Raises:
            InputError: the failure recorded by a producer (see :meth:`fail`), on every call
                once recorded.
        """
        with self._cond:
            if self._error is not None:
                raise self._error
            out = list(self._pending)
            self._pending.clear()
            return out

    def next_arrival_s(self) -> float | None:
        """Arrival time of the oldest received but not yet returned chunk; ``None`` when none is
        waiting (the next arrival of a live source is unknown, and none follows EOI)."""
        with self._cond:
            return self._pending[0].arrival_s if self._pending else None

    def closed(self, now_s: float) -> bool:
        """True once :meth:`close` was called and every chunk was returned (False while a
        producer failure waits to be raised by :meth:`poll`)."""
        with self._cond:
            return self._closed_at is not None and not self._pending and self._error is None

    def eoi_s(self) -> float | None:
        """Seconds from the start to :meth:`close`, or ``None`` while open."""
        return self._closed_at

    def wait(self, timeout_s: float) -> None:
        """Block until a chunk is waiting, the source is closed, a failure is recorded, or
        ``timeout_s`` seconds have passed."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._pending or self._closed_at is not None or self._error is not None,
                timeout=max(0.0, timeout_s),
            )


def stdin_source(stream: BinaryIO | None = None) -> LiveSource:
    """A :class:`LiveSource` fed line by line from standard input (or any binary stream).

    A daemon thread reads lines as they are written; each non-blank line (decoded as strict
    UTF-8) is one chunk arriving when it was read, and end of file closes the source. A line
    that is not valid UTF-8 (or a read error) records an :class:`InputError` ("stdin line N is
    not valid UTF-8 ...") that is raised from the next :meth:`LiveSource.poll`.

    Args:
        stream: a binary stream with ``readline`` (default ``sys.stdin.buffer``, looked up at
            call time). A text stream also works (its lines are taken as decoded).
    """
    if stream is None:
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        if stream is None:
            raise InputError("there is no standard input to read from")
    source = LiveSource()

    def reader() -> None:
        lineno = 0
        try:
            for raw in iter(stream.readline, b"" if not isinstance(stream, io.TextIOBase) else ""):
                lineno += 1
                if isinstance(raw, bytes):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        source.fail(
                            f"stdin line {lineno} is not valid UTF-8 (byte "
                            f"0x{raw[e.start]:02x} at column {e.start + 1}): "
                            "send UTF-8 text"
                        )
                        return
                else:
                    line = raw
                if lineno == 1:
                    line = line.lstrip("\ufeff")
                source.push(line)
        except Exception as e:  # noqa: BLE001 - reported in the consumer's thread
            source.fail(f"reading stdin failed at line {lineno + 1}: {type(e).__name__}: {e}")
            return
        source.close()

    thread = threading.Thread(target=reader, name="adasr-stdin", daemon=True)
    source._thread = thread  # type: ignore[attr-defined]
    thread.start()
    return source


def file_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file (a leading byte-order mark is dropped).

    Raises:
        InputError: if the file does not exist, is a directory, cannot be read, or is not valid
            UTF-8 (the message names the line and column of the first bad byte).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"input file not found: {p}")
    if p.is_dir():
        raise InputError(f"input path is a directory, not a text file: {p}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read input file {p}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(
            f"input file {p} is not valid UTF-8: line {line}, column {col} (byte "
            f"0x{data[e.start]:02x}); convert it to UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def async_source(aiter, loop: asyncio.AbstractEventLoop | None = None) -> LiveSource:
    """A :class:`LiveSource` fed from an async iterator of strings.

    A task on the event loop pushes each item (one item = one chunk, arriving when it is
    produced; blank items are ignored) and closes the source when the iterator ends. An
    exception raised by the iterator (or a non-string item, or cancellation) is recorded and
    raised as :class:`InputError` from the next :meth:`LiveSource.poll`.

    The engine is blocking, so run it in a worker thread while the loop keeps producing::

        async def main():
            source = async_source(transcribe(microphone()))  # any async iterator of str
            results = await asyncio.to_thread(
                lambda: list(engine.run([EpisodeInput("live", source)], clock=RealClock()))
            )

    Args:
        aiter: an async iterable (or async iterator) of strings.
        loop: the event loop to run on; default the running loop. A loop running in another
            thread is fed with ``asyncio.run_coroutine_threadsafe``.

    Raises:
        InputError: if ``aiter`` is not async-iterable, or no loop is given and none is running.
    """
    if not hasattr(aiter, "__aiter__"):
        raise InputError(
            f"async_source needs an async iterable of strings, got {type(aiter).__name__}"
        )
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None:
        if running is None:
            raise InputError(
                "async_source needs a running event loop: call it inside a coroutine or pass loop="
            )
        loop = running
    source = LiveSource()

    async def pump() -> None:
        try:
            async for item in aiter:
                if not isinstance(item, str):
                    source.fail(f"the async input yielded {type(item).__name__}, not text")
                    return
                source.push(item)
        except asyncio.CancelledError:
            source.fail("the async input was cancelled before the end of input")
            raise
        except Exception as e:  # noqa: BLE001 - reported in the consumer's thread
            source.fail(f"the async input failed: {type(e).__name__}: {e}")
            return
        source.close()

    if loop is running:
        source._task = loop.create_task(pump())  # type: ignore[attr-defined] # keep a reference
    else:
        source._task = asyncio.run_coroutine_threadsafe(pump(), loop)  # type: ignore[attr-defined]
    return source
