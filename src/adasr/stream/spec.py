"""From an input to a :class:`~adasr.stream.base.ScheduledStream`: :func:`make_stream` (chunk a
text, give each chunk its arrival time) and :class:`StreamSpec` (chunker, words/s or
characters/s, token cap), the one description of how an input becomes a stream that
``adasr run``, ``adasr eval`` and RL rollouts share, so one item gets the same chunks and
arrival times on every path.

Imports :mod:`adasr.stream.base`, ``chunkers`` and ``schedules``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from adasr.defaults import DEFAULT_CHUNKER, DEFAULT_MAX_CHUNK_TOKENS, DEFAULT_TOKENS_PER_CHUNK, DEFAULT_WPS
from adasr.errors import InputError
from adasr.stream.base import Chunk, ScheduledStream
from adasr.stream.chunkers import CHUNKERS, _check_count, cap_chunk_tokens, chunk_text
from adasr.stream.schedules import (
    _finite,
    characters_per_second_schedule,
    explicit_schedule,
    words_per_second_schedule,
)


def make_stream(
    text_or_chunks: str | Sequence[str],
    *,
    chunker: str = DEFAULT_CHUNKER,
    wps: float = DEFAULT_WPS,
    timestamps: Sequence[float] | None = None,
    tokenizer=None,
    max_chunk_tokens: int | None = None,
    tokens_per_chunk: int = DEFAULT_TOKENS_PER_CHUNK,
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
        max_chunk_tokens: split chunks longer than this many tokens (default: no cap;
            :class:`StreamSpec` applies :data:`~adasr.defaults.DEFAULT_MAX_CHUNK_TOKENS`).
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
