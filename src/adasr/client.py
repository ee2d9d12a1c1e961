"""A client of ``adasr serve``: stream chunks from any iterator into a live session.

:class:`AsyncClient` (asyncio) and :class:`Client` (blocking; runs the async client in a thread)
open ``WS /v1/sessions``, send each chunk of an iterator as it is produced, then ``end``, and
yield the server's events (docs/SERVING.md) until the episode's ``record``::

    from adasr.client import Client, paced_chunks

    client = Client("http://127.0.0.1:8000")
    for ev in client.session(paced_chunks("Natalia sold 48 clips. Then half as many. How many?", wps=2.5)):
        if ev["type"] == "token":
            print(ev["text"], end="", flush=True)
    # or: record = client.solve(chunks)["record"]

A sync iterator is read in a worker thread (it may block, e.g. on stdin); an async one on the loop.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from typing import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

from adasr.defaults import DEFAULT_CHUNKER, DEFAULT_WPS
from adasr.errors import AdasrError, InputError
from adasr.stream import chunk_text, characters_per_second_schedule, words_per_second_schedule

__all__ = ["AsyncClient", "Client", "ServerError", "paced_chunks"]

Chunks = Iterable[str] | AsyncIterable[str]
_END = object()


class ServerError(AdasrError):
    """The server refused or ended a session with an error (``code``: the error event's code,
    or ``"closed"``; ``close_code``: the WebSocket close code when known), or cannot be reached."""

    def __init__(self, message: str, code: str = "closed", close_code: int | None = None):
        super().__init__(message)
        self.code, self.close_code = code, close_code


def sessions_url(url: str) -> str:
    """The WebSocket URL of ``/v1/sessions`` on the server at ``url`` (http(s):// or ws(s)://).

    Raises:
        InputError: a URL that is not http, https, ws or wss.
    """
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise InputError(f"not a server URL: {url!r} (use http://HOST:PORT)")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/sessions"):
        path += "/v1/sessions"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def paced_chunks(text: str, *, wps: float = DEFAULT_WPS, chunker: str = DEFAULT_CHUNKER,
                 cps: float | None = None) -> Iterator[str]:
    """The chunks of ``text`` (``sentence`` or ``word`` chunker), each yielded when it would
    arrive at ``wps`` words per second, or, with ``cps``, as typed at ``cps`` characters per
    second (the iterator sleeps in between).

    Raises:
        InputError: a bad ``wps``, ``cps`` or chunker, or a blank text.
    """
    chunks = chunk_text(text, chunker)
    if not chunks:
        raise InputError("the input is empty: give some text to stream")
    times = words_per_second_schedule(chunks, wps) if cps is None else characters_per_second_schedule(chunks, cps)
    t0 = time.perf_counter()
    for chunk, t in zip(chunks, times):
        delay = t0 + t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield chunk


class AsyncClient:
    """Async client of one ``adasr serve`` server.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer KEY`` when set.
        open_timeout_s: seconds to wait for the connection.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 open_timeout_s: float = 10.0):
        self.url, self.api_key, self.open_timeout_s = sessions_url(url), api_key, open_timeout_s

    async def session(self, chunks: Chunks, *, settings: dict | None = None) -> AsyncIterator[dict]:
        """Stream ``chunks`` (each item one chunk, sent as it is produced; ``end`` when the
        iterator ends) and yield the server's events; the last one is ``record``.

        Args:
            chunks: a sync or async iterable of strings.
            settings: per-session settings (``mode``, ``thought_budget``, ``max_deep_tokens``,
                ``seed``), sent as the first frame.

        Raises:
            ServerError: the server refused the session, ended it with an error, or closed it
                before the record (also when it cannot be reached).
            InputError: the chunk iterator failed or yielded something other than text.
        """
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        try:
            ws = await connect(self.url, additional_headers=headers, open_timeout=self.open_timeout_s,
                               max_size=None)
        except (OSError, InvalidHandshake, asyncio.TimeoutError) as e:
            raise ServerError(f"cannot connect to {self.url}: {e}") from None
        feed_error: list[BaseException] = []
        async with ws:
            if settings:
                await ws.send(json.dumps({"type": "settings", **settings}))
            feeder = asyncio.create_task(self._feed(ws, chunks, feed_error))
            try:
                async for msg in ws:
                    ev = json.loads(msg)
                    if ev.get("type") == "error" and ev.get("fatal", True):
                        raise ServerError(f"the server ended the session: {ev.get('code')}: {ev.get('message')}",
                                          ev.get("code", "error"))
                    yield ev
                    if ev.get("type") == "record":
                        return
            except ConnectionClosed:
                pass
            finally:
                feeder.cancel()
            if feed_error:
                raise feed_error[0]
            close = ws.close_code
            raise ServerError(f"the server closed the session before its record (close code {close})",
                              close_code=close)

    @staticmethod
    async def _feed(ws, chunks: Chunks, errors: list[BaseException]) -> None:
        try:
            if hasattr(chunks, "__aiter__"):
                async for text in chunks:
                    await _send_chunk(ws, text)
            else:
                it = iter(chunks)
                while (text := await asyncio.to_thread(next, it, _END)) is not _END:
                    await _send_chunk(ws, text)
            await ws.send(json.dumps({"type": "end"}))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - reported by session() once the connection closes
            errors.append(e if isinstance(e, AdasrError) else InputError(f"the input failed: {type(e).__name__}: {e}"))
            await ws.close()

    async def solve(self, chunks: Chunks, *, settings: dict | None = None,
                    on_event: Callable[[dict], None] | None = None) -> dict:
        """Run one session (see :meth:`session`); returns its ``record`` event (``record``,
        ``thoughts``, ``deep``, ``read_then_think``); ``on_event`` sees every event."""
        async for ev in self.session(chunks, settings=settings):
            if on_event is not None:
                on_event(ev)
            if ev["type"] == "record":
                return ev
        raise ServerError("the session ended without a record")  # pragma: no cover - session() raises first


async def _send_chunk(ws, text) -> None:
    if not isinstance(text, str):
        raise InputError(f"a chunk must be text, got {type(text).__name__}")
    await ws.send(json.dumps({"type": "chunk", "text": text}, ensure_ascii=False))


class Client:
    """Blocking client: :class:`AsyncClient` run in a background thread (same arguments)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 open_timeout_s: float = 10.0):
        self._async = AsyncClient(url, api_key=api_key, open_timeout_s=open_timeout_s)

    def session(self, chunks: Chunks, *, settings: dict | None = None) -> Iterator[dict]:
        """Like :meth:`AsyncClient.session`, as a blocking iterator of events (same errors)."""
        out: queue.Queue = queue.Queue()

        async def main() -> None:
            try:
                async for ev in self._async.session(chunks, settings=settings):
                    out.put(("event", ev))
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                out.put(("error", e))
                return
            out.put(("done", None))

        threading.Thread(target=asyncio.run, args=(main(),), name="adasr-client", daemon=True).start()
        while True:
            kind, value = out.get()
            if kind == "event":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def solve(self, chunks: Chunks, *, settings: dict | None = None,
              on_event: Callable[[dict], None] | None = None) -> dict:
        """Like :meth:`AsyncClient.solve`, blocking."""
        for ev in self.session(chunks, settings=settings):
            if on_event is not None:
                on_event(ev)
            if ev["type"] == "record":
                return ev
        raise ServerError("the session ended without a record")  # pragma: no cover

    def check(self, timeout_s: float = 5.0) -> dict:
        """Check that a server answers at the URL (``GET /health``), so that a wrong URL or a
        server that is not running fails at once, before a session (or a live view) starts.

        Args:
            timeout_s: seconds to wait for the answer.

        Returns:
            The server's health JSON (``{}`` when it answered with an HTTP error other than 404,
            e.g. one that needs a key: the session reports it).

        Raises:
            ServerError: nothing answers there (refused, unknown host, timeout), or what answers
                has no ``/health`` (not an ``adasr serve`` server); one line.
        """
        import urllib.error
        import urllib.request

        parts = urlsplit(self._async.url)
        path = parts.path[: -len("/v1/sessions")] if parts.path.endswith("/v1/sessions") else parts.path
        base = urlunsplit(({"ws": "http", "wss": "https"}[parts.scheme], parts.netloc, path, "", ""))
        try:
            with urllib.request.urlopen(base + "/health", timeout=timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise ServerError(f"no adasr server at {base} (GET /health: HTTP 404): check --server", "unreachable")
            return {}
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            why = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
            raise ServerError(f"cannot reach the server at {base}: {why}: start it with `adasr serve` "
                              "or check the URL", "unreachable") from None
        try:
            return json.loads(body)
        except ValueError:
            return {}
