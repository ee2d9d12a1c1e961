"""What a stream is: :class:`Chunk` (one arriving piece of input), :class:`ArrivalSource` (what
the engine asks of a stream) and :class:`ScheduledStream` (chunks at known arrival times).

Imports nothing of :mod:`adasr.stream`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

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
