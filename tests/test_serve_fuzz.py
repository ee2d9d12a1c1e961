"""Property-based fuzzing of `adasr serve`'s WebSocket and SSE protocols (Hypothesis), against a
real uvicorn server on a tiny random model.

Random frames (valid, half-valid and garbage; text, binary, invalid UTF-8, lone surrogates, deep
nesting, oversized), in random orders, from one to three concurrent connections that read to the
end, read a few events, or drop the socket; random `/v1/solve` bodies read to the end or dropped.
The properties: the server stays up (`/health` ok, its engine thread alive), every session that
is read to the end ends with a close code (a fatal `error` event, when there is one, is its last
event), nothing is logged at ERROR, no engine failure reaches a session, and `/health` returns to
zero sessions, engine sessions and KV rows after each example. Bounded: a few dozen examples,
well under a minute on two busy cores.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from adasr.client import sessions_url
from adasr.serve import create_app
from adasr.serve.wire import MAX_FRAME_BYTES

from serve_helpers import free_port, make_engine, wait_for

MAX_SESSIONS = 2
CLOSE_CODES = {1000, 1007, 1009, 4400, 4408, 4429}  # 1011 (engine_error) would be a bug here
ERROR_CODES = {"invalid_json", "invalid_utf8", "too_big", "unknown_type", "invalid_frame", "invalid_settings",
               "empty_input", "input_too_long", "idle_timeout", "after_end", "server_full"}
READ_LIMIT_S = 20.0  # a session read to its end must end by then (sessions here last well under a second)


def FUZZ_SETTINGS(max_examples: int) -> settings:  # noqa: N802 - used as a decorator
    """Bounded runs, no deadline (busy machines), no example database on disk; in CI (``CI=true``)
    the same examples every run, elsewhere new ones each run."""
    return settings(max_examples=max_examples, deadline=None, database=None,
                    derandomize=os.environ.get("CI") == "true",
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class _Errors(logging.Handler):
    """Collects records at ERROR and above (tracebacks a bad input must never cause)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server(tiny_model, tiny_tokenizer):
    """A uvicorn server over a small-budget engine, with short timeouts: (base url, app, errors)."""
    port = free_port()
    engine = make_engine(tiny_model, tiny_tokenizer, thought_budget=3, max_deep_tokens=4)
    app = create_app(engine, model_name="tiny", max_sessions=MAX_SESSIONS, idle_timeout_s=0.4,
                     handshake_timeout_s=0.4)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info",
                                           ws_max_size=MAX_FRAME_BYTES))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    errors = _Errors()
    watched = [logging.getLogger(name) for name in ("uvicorn.error", "adasr", "asyncio")]
    for logger in watched:
        logger.addHandler(errors)
    try:
        yield f"http://127.0.0.1:{port}", app, errors
    finally:
        for logger in watched:
            logger.removeHandler(errors)
        server.should_exit = True
        thread.join(10)


# -- frames -------------------------------------------------------------------------------------
WORDS = st.sampled_from(["Add", "5.", "Subtract", "3.", "What", "is", "it?", "Natalia", "48", "clips.", "half",
                         "\u00e9t\u00e9", "\u4e2d\u6587", "\U0001f600", "\u200b", "\x00", "\\", '"', "\n"])
TEXTS = st.one_of(st.lists(WORDS, max_size=8).map(" ".join), st.text(max_size=40))
INTS = st.one_of(st.integers(-3, 12), st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63), 10**30, 513, 10_000]))
FLOATS = st.one_of(st.floats(0, 2), st.sampled_from([0.0, 1e-300, -1.0, 5.0, 6.0, float("nan"), float("inf")]))
SETTINGS = st.fixed_dictionaries({}, optional={
    "mode": st.sampled_from(["batch", "interleaved", "adaptive", "proactive", "fast", ""]),
    "thought_budget": INTS, "revisions": INTS, "max_deep_tokens": INTS, "temperature": FLOATS,
    "top_p": FLOATS, "top_k": INTS, "seed": INTS, "model": st.just("/tmp/evil"),
})
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
                    max_leaves=8)


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)  # NaN/Infinity stay (Python's json writes and reads them)


FRAMES = st.one_of(
    st.builds(lambda s: ("text", _dumps({"type": "settings", **s})), SETTINGS),
    st.builds(lambda t: ("text", _dumps({"type": "chunk", "text": t})), TEXTS),
    st.builds(lambda t: ("bytes", _dumps({"type": "chunk", "text": t}).encode("utf-8", "surrogatepass")), TEXTS),
    st.just(("text", '{"type": "end"}')),
    st.builds(lambda o: ("text", _dumps(o)), JSON),
    st.builds(lambda t: ("text", _dumps({"type": t})), st.text(max_size=6)),
    st.builds(lambda b: ("bytes", b), st.binary(max_size=40)),
    st.builds(lambda b: ("rawtext", b), st.binary(max_size=40)),  # a text frame of any bytes (mostly not UTF-8)
    st.just(("rawtext", b'{"type": "chunk", "text": "caf\xe9"}')),
    st.just(("text", '{"type": "chunk", "text": "a\\ud800b"}')),  # a JSON-escaped lone surrogate
    st.builds(lambda n: ("text", "[" * n), st.integers(1, 60_000)),  # deep nesting
    st.just(("text", _dumps({"type": "chunk", "text": "x" * (MAX_FRAME_BYTES + 1)}))),  # over the frame limit
    st.just(("text", _dumps({"type": "chunk", "text": "y " * 4_000}))),  # a full-size chunk
)
ENDINGS = st.one_of(st.just(("read", 0)), st.tuples(st.just("some"), st.integers(0, 4)), st.just(("drop", 0)))
SCRIPT = st.tuples(st.lists(FRAMES, max_size=6), ENDINGS)


def _closes_connection(frame: tuple) -> bool:
    """Whether the server closes the connection at the protocol level on this frame (1009: over
    the frame limit; 1007: a text frame that is not UTF-8)."""
    kind, data = frame
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_FRAME_BYTES:
        return True
    if kind == "rawtext":
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return True
    return False


def _run_script(base: str, frames: list, ending: tuple[str, int]) -> None:
    """One connection: send the frames (stopping when the server has closed), then end as told;
    read to the end, every event is a JSON object and a fatal error is the last one."""
    how, n = ending
    with connect(sessions_url(base), max_size=None, open_timeout=10, close_timeout=2) as ws:
        try:
            for kind, data in frames:
                if kind == "rawtext":
                    ws.send(data, text=True)
                else:
                    ws.send(data)
        except ConnectionClosed:
            pass
        if how == "drop":
            ws.close_socket()  # vanish without a close frame
            return
        events = []
        deadline = time.monotonic() + READ_LIMIT_S
        try:
            while how == "read" or len(events) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"the session did not end in {READ_LIMIT_S:g} s: {events[-3:]}"
                try:
                    msg = ws.recv(timeout=left)
                except TimeoutError:
                    continue
                assert isinstance(msg, str)
                ev = json.loads(msg)
                assert isinstance(ev, dict) and isinstance(ev.get("type"), str)
                assert not events or events[-1]["type"] != "error" or not events[-1]["fatal"], events[-2:]
                if ev["type"] == "error":
                    assert ev["code"] in ERROR_CODES and ev["message"] and "\n" not in ev["message"], ev
                events.append(ev)
        except ConnectionClosed:
            rcvd = ws.close_code
            # after a frame the server closes on at the protocol level (over the limit: 1009; a text
            # frame of invalid UTF-8: 1007) it closes the TCP connection; frames the client still had
            # in flight then reset it, and a reset may discard the unread close frame (TCP, not the
            # server): 1006 is accepted after such a frame and nowhere else
            assert rcvd in CLOSE_CODES | ({1006} if any(map(_closes_connection, frames)) else set()), \
                (rcvd, events[-3:])
            if rcvd == 1000 and events:
                assert events[-1]["type"] in ("record", "error"), events[-3:]
            return
        if how == "some":
            ws.close()


def _settled(base: str, app) -> None:
    """The server is up and back at its baseline: no open session, engine session or KV row."""
    def idle() -> bool:
        health = httpx.get(base + "/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        s = health.json()
        return s["sessions"] == 0 and s["engine_sessions"] == 0 and s["rows"] == 0

    wait_for(idle, timeout_s=15)
    assert app.state.worker.alive


@FUZZ_SETTINGS(max_examples=30)
@given(scripts=st.lists(SCRIPT, min_size=1, max_size=3))
def _check_ws(server, scripts) -> None:
    base, app, errors = server
    with ThreadPoolExecutor(len(scripts)) as pool:
        for f in [pool.submit(_run_script, base, frames, ending) for frames, ending in scripts]:
            f.result()
    _settled(base, app)
    assert not errors.records, [r.getMessage() for r in errors.records]


def test_websocket_protocol_fuzz(server):
    _check_ws(server)


# -- /v1/solve ----------------------------------------------------------------------------------
BODIES = st.one_of(
    st.builds(lambda t, w, s: _dumps({"text": t, "wps": w, **s}).encode("utf-8", "surrogatepass"),
              TEXTS, st.one_of(st.floats(200, 1000), st.sampled_from([0, -1, 1e9, float("nan")])), SETTINGS),
    st.builds(lambda o: _dumps(o).encode(), JSON),
    st.binary(max_size=40),
    st.builds(lambda n: b"[" * n, st.integers(1, 60_000)),
    st.just(b'{"text": "Add \\ud800 5."}'),
    st.just(b'{"text": "   "}'),
)


@FUZZ_SETTINGS(max_examples=25)
@given(bodies=st.lists(st.tuples(BODIES, st.one_of(st.none(), st.integers(0, 3))), min_size=1, max_size=3))
def _check_sse(server, bodies) -> None:
    base, app, errors = server

    def post(body: bytes, stop_after: int | None) -> None:
        with httpx.stream("POST", base + "/v1/solve", content=body, timeout=READ_LIMIT_S,
                          headers={"content-type": "application/json"}) as resp:
            assert resp.status_code in (200, 400, 422, 429), (resp.status_code, resp.read())
            if resp.status_code != 200:
                err = json.loads(resp.read())
                assert isinstance(err, dict)
                return
            events = []
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if stop_after is not None and len(events) > stop_after:
                        return  # the client goes away mid-stream
            assert events[0]["type"] == "session" and events[-1]["type"] in ("record", "error"), events[-3:]
            assert events[-1]["type"] == "record", events[-1]  # an engine failure would be a bug

    with ThreadPoolExecutor(len(bodies)) as pool:
        for f in [pool.submit(post, body, stop) for body, stop in bodies]:
            f.result()
    _settled(base, app)
    assert not errors.records, [r.getMessage() for r in errors.records]


def test_sse_solve_fuzz(server):
    _check_sse(server)
