"""Input streams: chunks, arrival schedules, clocks and sources.

A *stream* is a sequence of :class:`Chunk` objects, each with an arrival time ``arrival_s``
(seconds since the stream started). The engine consumes any object implementing
:class:`ArrivalSource`: it asks which chunks have arrived by a given time, when the next one is
due, and whether the stream is closed (end of input, EOI).

One job per module; ``spec`` and ``live`` import the ones they build on, the others import
nothing of this package:

* ``base``: :class:`Chunk`, :class:`ArrivalSource`, :class:`ScheduledStream`;
* ``clocks``: :class:`VirtualClock` (discrete-event time: nothing sleeps) and :class:`RealClock`
  (wall-clock time), :func:`make_clock` (docs/DESIGN.md, "Latency model");
* ``chunkers``: a text into chunk texts (:func:`split_sentences`, :func:`split_clauses`, :func:`split_words`,
  :func:`split_tokens`, :func:`cap_chunk_tokens`, :func:`chunk_text`);
* ``schedules``: each chunk's arrival time (:func:`words_per_second_schedule`,
  :func:`characters_per_second_schedule`, :func:`explicit_schedule`);
* ``spec``: :func:`make_stream` (both of the above) and :class:`StreamSpec` (chunker, words/s,
  token cap), the one description of how an input becomes a stream that ``adasr run``,
  ``adasr eval`` and RL rollouts share, so one item gets the same chunks and arrival times on
  every path;
* ``live``: live input — :class:`LiveSource` (pushed from any thread), :func:`stdin_source`,
  :func:`async_source`; :func:`file_text` reads a text file.

Import the names below from ``adasr.stream``.
"""

from adasr.defaults import DEFAULT_WPS  # re-exported: the default arrival rate (words/s)
from adasr.stream.base import ArrivalSource, Chunk, ScheduledStream
from adasr.stream.chunkers import (
    CHUNKERS,
    cap_chunk_tokens,
    chunk_text,
    split_clauses,
    split_sentences,
    split_tokens,
    split_words,
)
from adasr.stream.clocks import CLOCKS, PER_STREAM, RealClock, VirtualClock, make_clock
from adasr.stream.live import LiveSource, async_source, file_text, stdin_source
from adasr.stream.schedules import (
    characters_per_second_schedule,
    explicit_schedule,
    words_per_second_schedule,
)
from adasr.stream.spec import StreamSpec, make_stream

__all__ = [
    "CHUNKERS",
    "CLOCKS",
    "DEFAULT_WPS",
    "PER_STREAM",
    "ArrivalSource",
    "Chunk",
    "LiveSource",
    "RealClock",
    "ScheduledStream",
    "StreamSpec",
    "VirtualClock",
    "async_source",
    "cap_chunk_tokens",
    "characters_per_second_schedule",
    "chunk_text",
    "explicit_schedule",
    "file_text",
    "make_clock",
    "make_stream",
    "split_clauses",
    "split_sentences",
    "split_tokens",
    "split_words",
    "stdin_source",
    "words_per_second_schedule",
]
