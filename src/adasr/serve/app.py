"""The FastAPI app of ``adasr serve``: live sessions over WebSocket, whole texts over SSE, a page.

Routes (the protocol: docs/SERVING.md):

* ``WS /v1/sessions`` — one live episode per connection: the client sends ``settings`` (optional,
  first), ``chunk`` and ``end`` frames; the server streams the engine's events back and ends
  with the episode ``record`` (or an ``error``) and a close code.
* ``POST /v1/solve`` — a whole text streamed at an arrival rate (words/s) by the server; the same
  events as server-sent events.
* ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text), ``GET /`` (the page).

Every session runs in one shared :class:`~adasr.serve.worker.EngineWorker` (one engine thread,
continuous batching); handlers only await queues, never the engine.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
import torch

from adasr.engine import StreamingEngine
from adasr.errors import AdasrError
from adasr.serve.wire import (CLOSE_FULL, CLOSE_IDLE, CLOSE_INTERNAL, CLOSE_NORMAL,
                              CLOSE_UNAUTHORIZED, MAX_CHUNK_CHARS, MAX_FRAME_BYTES, MAX_INPUT_CHARS, ChunkFrame,
                              EndFrame, FrameError, SessionSettings, SettingsFrame, SolveRequest, error_event,
                              parse_frame)
from adasr.serve.worker import EngineStopped, EngineWorker, SessionHandle
from adasr.stream import characters_per_second_schedule, chunk_text, words_per_second_schedule

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def _dumps(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False)


class _QuietInvalidUtf8(logging.Filter):
    """Drops the ERROR records (with tracebacks) that uvicorn's WebSocket protocol causes for a
    client's text frame that is not UTF-8, and logs one INFO line instead. uvicorn closes such a
    connection with 1007 itself, before the app sees the frame: a bad input, not a server error.
    Two records: uvicorn's own ``Invalid UTF-8 sequence received from client.``, and asyncio's
    ``Fatal error: protocol.data_received() call failed.`` when the client's close frame came in
    the same read (uvicorn's 1007 then fails on the closing connection)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        if message.startswith("Invalid UTF-8"):
            pass
        elif message.startswith("Fatal error: protocol.data_received() call failed") and record.exc_info:
            exc = record.exc_info[1]
            if not isinstance(getattr(exc, "__context__", None), UnicodeDecodeError):
                return True
        else:
            return True
        log.info("a client sent a WebSocket text frame that is not UTF-8: closed with 1007")
        return False


_QUIET_INVALID_UTF8 = _QuietInvalidUtf8()


class _Session:
    """One WebSocket session's input side: frames in, slot and engine session bookkeeping. The
    session takes its slot at its first ``settings`` or ``chunk`` frame, not at connect."""

    def __init__(self, ws: WebSocket, worker: EngineWorker, info: dict):
        self.ws, self.worker, self.info = ws, worker, info
        self.handle: SessionHandle | None = None
        self.sender: asyncio.Task | None = None
        self.reserved = False  # holds a slot of the worker
        self.ended = False
        self.chunks = 0
        self.chars = 0

    def open(self, settings: SessionSettings | None) -> None:
        if not self.worker.try_reserve():
            n = self.worker.max_sessions
            raise FrameError("server_full", f"all {n} sessions are in use; try again later", CLOSE_FULL)
        self.reserved = True
        try:
            self.handle = self.worker.open(settings)
        except AdasrError as e:
            raise FrameError("invalid_settings", str(e)) from None
        except EngineStopped as e:
            raise FrameError("engine_error", str(e), CLOSE_INTERNAL) from None
        self.handle.events.put_nowait({"type": "session", "id": self.handle.id, **self.info})
        self.sender = asyncio.create_task(self._send_events())

    def release(self) -> None:
        """Give the slot back (if the session took one)."""
        if self.reserved:
            self.reserved = False
            self.worker.release()

    async def _send_events(self) -> int:
        """Forward the engine's events; returns the close code once the episode ended."""
        while True:
            ev = await self.handle.events.get()
            await self.ws.send_text(_dumps(ev))
            if ev["type"] == "record":
                return CLOSE_NORMAL
            if ev["type"] == "error" and ev.get("fatal", True):
                return CLOSE_INTERNAL

    def on_frame(self, frame) -> dict | None:
        """Apply one frame; returns a non-fatal error event to send, if any.

        Raises:
            FrameError: a fatal protocol error (the session ends with it).
        """
        if isinstance(frame, SettingsFrame):
            if self.handle is not None:
                raise FrameError("invalid_frame", "settings may only be the first frame of a session")
            self.open(SessionSettings(**frame.model_dump(exclude={"type"})))
            return None
        if self.ended:
            return error_event("after_end", f"a {frame.type} frame after end of input is ignored", fatal=False)
        if isinstance(frame, EndFrame) and not self.chunks:
            raise FrameError("empty_input", "end of input before any text: send a chunk first")
        if self.handle is None:
            self.open(None)
        if isinstance(frame, ChunkFrame):
            self.chars += len(frame.text)
            if self.chars > MAX_INPUT_CHARS:
                raise FrameError("input_too_long", f"the input is over {MAX_INPUT_CHARS:,} characters")
            if self.handle.source.push(frame.text) is not None:
                self.chunks += 1
            return None
        assert isinstance(frame, EndFrame)
        self.handle.source.close()
        self.ended = True
        return None

    async def run(self, idle_timeout_s: float, handshake_timeout_s: float) -> None:
        """Read frames until the episode ends, the client leaves, a frame is refused or a timeout
        (``handshake_timeout_s`` for the first frame, ``idle_timeout_s`` until end of input)."""
        ws = self.ws
        while True:
            recv = asyncio.ensure_future(ws.receive())
            waiting = {recv} if self.sender is None else {recv, self.sender}
            first = self.handle is None
            timeout = None if self.ended else handshake_timeout_s if first else idle_timeout_s
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if self.sender is not None and self.sender in done:
                recv.cancel()
                code = self.sender.result()
                await ws.close(code)
                return
            if not done:
                recv.cancel()
                message = (f"no first frame for {timeout:g} s after connecting: send settings or a chunk" if first
                           else f"no frame for {timeout:g} s before end of input")
                await self.fail(FrameError("idle_timeout", message, CLOSE_IDLE))
                return
            msg = recv.result()
            if msg["type"] == "websocket.disconnect":
                self.abort()
                return
            data = msg.get("text") if msg.get("text") is not None else msg.get("bytes") or b""
            try:
                notice = self.on_frame(parse_frame(data))
            except FrameError as e:
                await self.fail(e)
                return
            if notice is not None:
                await ws.send_text(_dumps(notice))

    async def fail(self, e: FrameError) -> None:
        """End the session with an error event and close code ``e.close``."""
        self.abort()
        await self.ws.send_text(_dumps(error_event(e.code, str(e))))
        await self.ws.close(e.close, e.code)

    def abort(self) -> None:
        """Stop forwarding events and drop the engine session (its row is freed at the next step)."""
        if self.sender is not None:
            self.sender.cancel()
        if self.handle is not None and not self.handle.closed:
            self.worker.abort(self.handle)


def create_app(engine: StreamingEngine, *, model_name: str, api_key: str | None = None, max_sessions: int = 8,
               idle_timeout_s: float = 60.0, handshake_timeout_s: float = 10.0) -> FastAPI:
    """The server app over a loaded engine (its worker thread runs while the app is up).

    Args:
        engine: the engine every session shares (its config gives the default mode, budgets and
            sampling; sessions may change mode, budgets and seed).
        model_name: the model's name in ``/v1/models`` and ``session`` events.
        api_key: when set, ``/v1/*`` need it (``Authorization: Bearer KEY``, ``X-API-Key`` or
            ``?api_key=``).
        max_sessions: the most live sessions (WebSocket and SSE together); more are refused. A
            WebSocket session takes its slot at its first ``settings`` or ``chunk`` frame.
        idle_timeout_s: a WebSocket session with no frame for this long before its end of input
            is closed (seconds).
        handshake_timeout_s: a WebSocket connection that sends no first frame for this long is
            closed (seconds; it holds no slot meanwhile).
    """
    for name in ("uvicorn.error", "asyncio"):
        logging.getLogger(name).addFilter(_QUIET_INVALID_UTF8)  # (once per process: a no-op after)
    worker = EngineWorker(engine, max_sessions=max_sessions)
    mode = engine.policy.name
    info = {"model": model_name, "mode": mode, "limits": {
        "max_frame_bytes": MAX_FRAME_BYTES, "max_chunk_chars": MAX_CHUNK_CHARS, "max_input_chars": MAX_INPUT_CHARS,
        "max_deep_tokens": engine.config.max_deep_tokens, "idle_timeout_s": idle_timeout_s}}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        worker.start()
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(title="adasr serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.worker = worker
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler echoes each error's input, and a JSON-escaped lone surrogate there
        # cannot be encoded (a 500); this one leaves inputs out and writes ASCII JSON
        detail = [{k: e.get(k) for k in ("type", "loc", "msg")} for e in exc.errors()]
        first = detail[0] if detail else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"][1:]) or "body"
        body = {"error": "invalid_request", "message": " ".join(f"{where}: {first['msg']}".split()), "detail": detail}
        return Response(json.dumps(body, default=str), status_code=422, media_type="application/json")

    def authorized(headers, query) -> bool:
        if api_key is None:
            return True
        auth = headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else headers.get("x-api-key") or query.get("api_key")
        return given is not None and hmac.compare_digest(given.encode(), api_key.encode())

    @app.websocket("/v1/sessions")
    async def sessions(ws: WebSocket) -> None:
        await ws.accept()
        if not authorized(ws.headers, ws.query_params):
            await ws.send_text(_dumps(error_event("unauthorized", "a wrong or missing API key")))
            await ws.close(CLOSE_UNAUTHORIZED, "unauthorized")
            return
        session = _Session(ws, worker, info)  # the slot is taken at the first frame (server_full then)
        try:
            await session.run(idle_timeout_s, handshake_timeout_s)
        except Exception:  # noqa: BLE001 - the client vanished mid-send, or a bug: this session only
            log.debug("session ended abnormally", exc_info=True)
            session.abort()
        finally:
            session.release()

    @app.post("/v1/solve")
    async def solve(req: SolveRequest, request: Request) -> Response:
        if not authorized(request.headers, request.query_params):
            return JSONResponse({"error": "unauthorized", "message": "a wrong or missing API key"}, 401)
        if not req.text.strip():
            return JSONResponse({"error": "empty_input", "message": "the text is blank"}, 422)
        try:
            chunks = chunk_text(req.text, req.chunker)
            times = (words_per_second_schedule(chunks, req.wps) if req.cps is None
                     else characters_per_second_schedule(chunks, req.cps))
        except AdasrError as e:
            return JSONResponse({"error": "invalid_input", "message": str(e)}, 422)
        if not chunks:
            return JSONResponse({"error": "empty_input", "message": "the text is blank"}, 422)
        if not worker.try_reserve():
            return JSONResponse({"error": "server_full", "message": f"all {max_sessions} sessions are in use"}, 429)
        try:
            handle = worker.open(req.settings())
        except AdasrError as e:
            worker.release()
            return JSONResponse({"error": "invalid_settings", "message": str(e)}, 422)
        except EngineStopped as e:
            worker.release()
            return JSONResponse({"error": "engine_error", "message": str(e)}, 503)

        async def feed() -> None:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for text, t in zip(chunks, times):
                await asyncio.sleep(max(0.0, t0 + t - loop.time()))
                handle.source.push(text)
            handle.source.close()

        async def events():
            feeder = asyncio.create_task(feed())
            done = False
            try:
                yield _sse({"type": "session", "id": handle.id, **info})
                while not done:
                    ev = await handle.events.get()
                    done = ev["type"] in ("record", "error")
                    yield _sse(ev)
            finally:
                feeder.cancel()
                if not done:
                    worker.abort(handle)
                worker.release()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        if not authorized(request.headers, request.query_params):
            return JSONResponse({"error": "unauthorized", "message": "a wrong or missing API key"}, 401)
        return JSONResponse({"object": "list", "data": [{"id": model_name, "object": "model", "mode": mode,
                                                          "revisions": engine.policy.revisions,
                                                          "protocol": engine.config.protocol,
                                                          "max_sessions": max_sessions}]})

    @app.get("/health")
    async def health() -> JSONResponse:
        alive = worker.alive  # a dead engine thread: 503, so that a load balancer or supervisor acts
        return JSONResponse({"status": "ok" if alive else "dead", "max_sessions": max_sessions,
                             "torch_threads": torch.get_num_threads(), **worker.stats()}, 200 if alive else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(worker.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def _sse(ev: dict) -> str:
    return f"event: {ev['type']}\ndata: {_dumps(ev)}\n\n"
