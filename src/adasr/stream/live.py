"""Live sources: chunks arrive in real time — :class:`LiveSource` (pushed from any thread),
:func:`stdin_source`, :func:`async_source` — and :func:`file_text` (a UTF-8 text file read
whole, for ``adasr run --file``).

Imports :mod:`adasr.stream.base`.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO

from adasr.errors import InputError
from adasr.stream.base import Chunk


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
