"""The engine thread of ``adasr serve``: every live session shares one :class:`StreamingEngine`.

One worker thread owns the engine and is the only one that calls it (continuous batching over
the step API: sessions join and leave between steps while others are mid-episode, on the real
clock). The asyncio side never blocks on it: it opens sessions and aborts them through a
thread-safe command queue, pushes chunks into each session's :class:`ServerSource` (a
:class:`~adasr.stream.LiveSource` that wakes the worker), and receives each session's events on
an ``asyncio.Queue`` through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adasr.engine import EpisodeInput, StreamingEngine
from adasr.events import DeepStart, Event, Ingest, Thought, Token
from adasr.policy import make_policy
from adasr.protocol import Stage
from adasr.serve.wire import MAX_SEED, SessionSettings, error_event, event_to_wire, read_then_think_estimate
from adasr.stream import LiveSource, RealClock

log = logging.getLogger(__name__)


def one_line(e: BaseException, limit: int = 300) -> str:
    """``"Type: message"`` of an exception on one line, at most ``limit`` characters (for error events)."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class EngineStopped(RuntimeError):
    """The engine thread is not running (it was never started, was stopped, or died): no session
    can open (``/health`` answers 503 and the server needs a restart)."""


class ServerSource(LiveSource):
    """A :class:`LiveSource` whose pushes and close wake the engine thread, and whose
    :meth:`wait` waits on that shared wake-up (any session's input ends the wait of all)."""

    def __init__(self, wake: threading.Event):
        super().__init__()
        self._wake = wake

    def push(self, text: str):
        chunk = super().push(text)
        self._wake.set()
        return chunk

    def close(self) -> None:
        super().close()
        self._wake.set()

    def wait(self, timeout_s: float) -> None:
        self._wake.wait(max(0.0, timeout_s))


@dataclass
class SessionPace:
    """One live session's reasoning before end of input and its own decode rate: the inputs of
    the read-then-think estimate of its ``record`` event
    (:func:`~adasr.serve.wire.read_then_think_estimate`). Fed by the engine thread: every event
    of the session (:meth:`on_event`), then the duration of each engine step (:meth:`end_step`).

    A step counts as one of the session's *decode steps* when it generated tokens for the session
    and fed it nothing but its last sampled token: a step that ingests a chunk or the end-of-input
    turn (``ingest``, ``deep_start``) is a prefill, left out. Its wall-clock duration is the
    whole batched step's (shared with the other sessions): the rate this session saw.

    Attributes:
        stream_t: session-clock times of its streaming-thought tokens (s).
        decode_tokens: tokens generated in its decode steps.
        decode_s: wall-clock seconds of those steps.
    """

    stream_t: list[float] = field(default_factory=list)
    decode_tokens: int = 0
    decode_s: float = 0.0
    _step_tokens: int = 0
    _step_prefill: bool = False

    def on_event(self, ev: Event) -> None:
        """Count one engine event of this session (from the step now running)."""
        if isinstance(ev, Token):
            self._step_tokens += 1
            if ev.stage == Stage.STREAM:
                self.stream_t.append(ev.t)
        elif isinstance(ev, (Ingest, DeepStart)):
            self._step_prefill = True

    def end_step(self, dt_s: float) -> None:
        """The engine step just ended after ``dt_s`` wall-clock seconds (0 for a step without a
        forward); it counts as a decode step of this session when it was one."""
        if self._step_tokens and not self._step_prefill and dt_s > 0:
            self.decode_tokens += self._step_tokens
            self.decode_s += dt_s
        self._step_tokens, self._step_prefill = 0, False

    def estimate(self, record: dict) -> dict:
        """The ``read_then_think`` object for the session's finished ``record`` (its ``eoi_s``
        splits the streaming tokens; its ``post_input_latency_s`` is the measured latency)."""
        eoi = record["eoi_s"]
        before = sum(1 for t in self.stream_t if t <= eoi)
        return read_then_think_estimate(before, self.decode_tokens, self.decode_s, record["post_input_latency_s"])


@dataclass
class SessionHandle:
    """The asyncio side's view of one engine session.

    Attributes:
        id: the session id.
        source: push chunks into it (:meth:`ServerSource.push`), close it at end of input.
        events: wire events (dicts) as they happen; the last one is ``record`` or ``error``.
    """

    id: str
    source: ServerSource
    events: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    closed: bool = False
    thought_chunks: set[int] = field(default_factory=set)  # chunks whose thought event was sent
    thoughts_seen: int = 0
    pace: SessionPace = field(default_factory=SessionPace)  # engine thread only

    def post(self, obj: dict) -> None:
        """Deliver a wire event to the asyncio side (from any thread)."""
        if not self.closed:
            try:
                self.loop.call_soon_threadsafe(self.events.put_nowait, obj)
            except RuntimeError:  # the event loop is closed (the server is shutting down)
                self.closed = True


class ServerMetrics:
    """Prometheus metrics of one server (its own registry: several servers per process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions_active = Gauge("adasr_sessions_active", "live sessions (holding or waiting for a row)",
                                     registry=r)
        self.sessions = Counter("adasr_sessions", "sessions by outcome", ["outcome"], registry=r)
        self.queue_length = Gauge("adasr_queue_length", "sessions and commands waiting for the engine thread",
                                  registry=r)
        self.kv_rows = Gauge("adasr_kv_rows", "rows of the shared KV cache", registry=r)
        self.kv_bytes = Gauge("adasr_kv_bytes", "bytes of keys/values held by the shared KV cache", registry=r)
        self.tokens = Counter("adasr_generated_tokens", "tokens generated (thoughts and deep stages)", registry=r)
        self.tokens_per_s = Gauge("adasr_tokens_per_second", "generated tokens/s over the last steps "
                                  "(exponential moving average)", registry=r)
        self.step_s = Histogram("adasr_step_seconds", "duration of an engine step with a forward, seconds",
                                buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5), registry=r)


class EngineWorker:
    """Runs ``engine`` in one thread for many live sessions (see the module docstring).

    Args:
        engine: the engine (owned by the worker from :meth:`start` on: call nothing on it
            from other threads).
        max_sessions: the most sessions at once; also the engine's row limit.

    Attributes:
        metrics: :class:`ServerMetrics`.
    """

    def __init__(self, engine: StreamingEngine, *, max_sessions: int = 8):
        self.engine, self.max_sessions = engine, max_sessions
        self.metrics = ServerMetrics()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._handles: dict[str, SessionHandle] = {}  # engine thread only
        self._open = 0  # sessions opened and not yet released (asyncio side)
        self._lock = threading.Lock()
        self._stop = False
        self._dead = False  # set (under the lock) when the thread ends: no command is queued after it
        self._thread: threading.Thread | None = None
        self._tps = 0.0
        self._generated = 0
        self._last_totals: tuple[float, int] | None = None
        self._snapshot = {"rows": 0, "kv_bytes": 0, "engine_sessions": 0}

    # -- the asyncio side ------------------------------------------------------------------------
    @property
    def active(self) -> int:
        """Sessions opened and not yet released."""
        return self._open

    @property
    def alive(self) -> bool:
        """Whether the engine thread runs (False before :meth:`start`, after :meth:`stop`, or if
        something the thread cannot survive, e.g. ``SystemExit``, ended it)."""
        return self._thread is not None and self._thread.is_alive() and not self._dead

    def try_reserve(self) -> bool:
        """Take a session slot; False when :attr:`max_sessions` are open (the caller refuses)."""
        with self._lock:
            if self._open >= self.max_sessions:
                return False
            self._open += 1
            self.metrics.sessions_active.set(self._open)
            return True

    def release(self) -> None:
        """Give back a slot taken by :meth:`try_reserve`."""
        with self._lock:
            self._open -= 1
            self.metrics.sessions_active.set(self._open)

    def open(self, settings: SessionSettings | None = None, *, reference: str | None = None) -> SessionHandle:
        """Start a session (on a slot from :meth:`try_reserve`); its clock starts now. Call from
        the event loop: events arrive on the handle's queue.

        Raises:
            ConfigError: settings the engine refuses (``max_deep_tokens`` over the server's cap,
                a ``seed`` out of 0 .. :data:`~adasr.serve.wire.MAX_SEED`).
            EngineStopped: the engine thread is not running.
        """
        from adasr.errors import ConfigError

        if not self.alive:
            raise EngineStopped("the engine thread is not running: the server needs a restart")
        s = settings or SessionSettings()
        cap = self.engine.config.max_deep_tokens
        if s.max_deep_tokens is not None and s.max_deep_tokens > cap:
            raise ConfigError(f"max_deep_tokens {s.max_deep_tokens} is over this server's cap of {cap}")
        if s.seed is not None and not 0 <= s.seed <= MAX_SEED:
            raise ConfigError(f"seed must be 0 .. 2**63-1 ({MAX_SEED}); got a {'negative' if s.seed < 0 else 'larger'} "
                              f"number")
        policy = None
        if s.mode is not None or s.thought_budget is not None or s.revisions is not None:
            base = self.engine.config
            mode = s.mode or (base.policy if isinstance(base.policy, str) else self.engine.policy.name)
            policy = make_policy(mode, thought_budget=base.thought_budget if s.thought_budget is None
                                 else s.thought_budget,
                                 revisions=(base.revisions if mode == "proactive" else 0) if s.revisions is None
                                 else s.revisions)
        handle = SessionHandle(uuid.uuid4().hex[:12], ServerSource(self._wake), asyncio.Queue(),
                               asyncio.get_running_loop())
        inp = EpisodeInput(handle.id, handle.source, reference=reference, seed=s.seed)
        sampling = s.sampling(self.engine.config.sampling)
        with self._lock:  # (the thread sets _dead under it, then drains: no add is left unanswered)
            if not self.alive:
                raise EngineStopped("the engine thread is not running: the server needs a restart")
            self._command(("add", handle, inp, policy, s.max_deep_tokens, sampling))
        return handle

    def abort(self, handle: SessionHandle) -> None:
        """Drop a session (client gone, error, timeout): its rows are freed at the next step."""
        handle.closed = True
        self._command(("abort", handle))

    def _command(self, cmd) -> None:
        self._commands.put(cmd)
        self._wake.set()

    def start(self) -> None:
        """Start the engine thread (the engine's clock becomes a fresh real clock)."""
        self.engine.configure(batch_size=self.max_sessions, clock=RealClock())
        self._stop = self._dead = False
        self._thread = threading.Thread(target=self._run, name="adasr-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the engine thread (live sessions are aborted)."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- the engine thread ------------------------------------------------------------------------
    def _run(self) -> None:
        """The thread: iterations until :meth:`stop`. An exception in an iteration ends the live
        sessions with ``engine_error`` and the loop goes on (a restart in place); whatever ends
        the thread itself still ends every live session with an error event."""
        failures = 0
        try:
            while not self._stop:
                try:
                    self._iteration()
                    failures = 0
                except Exception as e:  # noqa: BLE001 - reported to every live session; the thread goes on
                    failures += 1
                    log.exception("engine thread: an iteration failed; its live sessions end, the thread goes on")
                    self._fail_all(f"the engine failed: {one_line(e)}")
                    time.sleep(min(1.0, 0.01 * 2**min(failures, 7)))  # no hot loop if it fails every time
        finally:
            with self._lock:
                self._dead = True
            last = (error_event("shutdown", "the server is shutting down") if self._stop else
                    error_event("engine_error", "the engine thread stopped: the server needs a restart"))
            while True:  # sessions opened but not yet added end too
                try:
                    cmd = self._commands.get_nowait()
                except queue.Empty:
                    break
                if cmd[0] == "add" and not cmd[1].closed:
                    self._handles[cmd[1].id] = cmd[1]
            for h in list(self._handles.values()):
                self._finish(h, last, "aborted" if self._stop else "error")
                self._engine_abort(h.id)

    def _iteration(self) -> None:
        """Run the queued commands, then one engine step if any session has work (else wait)."""
        engine = self.engine
        self._wake.clear()
        dirty = self._drain()
        if not (engine.has_work or dirty or engine.kv_rows):  # (a step frees ended rows)
            self._update_gauges()
            self._wake.wait(1.0)
            return
        steps, t = engine.stats["steps"], time.perf_counter()
        engine.step()
        dt = 0.0
        if engine.stats["steps"] > steps:
            dt = time.perf_counter() - t
            self.metrics.step_s.observe(dt)
        self._after_step(dt)

    def _drain(self) -> bool:
        """Run the queued commands; True if any did. A command that fails ends its own session
        (``engine_error``), not the thread."""
        did = False
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return did
            did = True
            h = cmd[1]
            try:
                if cmd[0] == "add":
                    _, h, inp, policy, max_deep, sampling = cmd
                    if h.closed:
                        continue
                    clock = self.engine.scheduler.clock
                    start = clock.now() - h.source.now_s()  # the source's origin on the engine's clock
                    self._handles[h.id] = h
                    self.engine.add_session(inp, start_s=start, on_event=self._forward(h), policy=policy,
                                            max_deep_tokens=max_deep, sampling=sampling)
                elif self._handles.pop(h.id, None) is not None:
                    self.metrics.sessions.labels("aborted").inc()
                    self.engine.abort(h.id)
            except Exception as e:  # noqa: BLE001 - this session only
                log.exception("engine thread: a session's %s command failed; that session ends", cmd[0])
                if self._handles.get(h.id) is h:
                    self._engine_abort(h.id)
                    self._finish(h, error_event("engine_error", f"the engine could not run this session: "
                                                                f"{one_line(e)}"), "error")

    def _engine_abort(self, session_id: str) -> None:
        """Abort an engine session if the engine still has it, whatever state it is in."""
        try:
            self.engine.abort(session_id)
        except Exception:  # noqa: BLE001 - already gone, or never added
            log.debug("engine.abort(%s) failed", session_id, exc_info=True)

    def _forward(self, h: SessionHandle):
        metrics = self.metrics

        def on_event(ev: Event) -> None:
            if isinstance(ev, Token):
                metrics.tokens.inc()
                self._generated += 1
            elif isinstance(ev, Thought):
                h.thought_chunks.add(ev.chunk)
            h.pace.on_event(ev)
            h.post(event_to_wire(ev))

        return on_event

    def _after_step(self, dt_s: float) -> None:
        """Bookkeeping after a step of ``dt_s`` wall-clock seconds (0: no forward): forced skips,
        each session's pace, finished episodes' ``record`` events, the gauges."""
        engine = self.engine
        for h in list(self._handles.values()):
            h.pace.end_step(dt_s)
            try:
                s = engine.session(h.id)
            except KeyError:
                continue
            # forced skips emit no engine event: report them
            for i in range(h.thoughts_seen, len(s.thoughts)):
                if s.thoughts[i] is not None and i not in h.thought_chunks:
                    h.post({"type": "thought", "t": s.rel(s.clock.now()), "chunk": i, "text": "", "tokens": 0,
                            "skipped": True, "forced": True, "id": h.id})
            h.thoughts_seen = len(s.thoughts)
        for result in engine.pop_results():
            h = self._handles.get(result.id)
            if h is not None:
                self._finish(h, {"type": "record", "record": result.record, "thoughts": result.thoughts,
                                 "deep": result.deep, "read_then_think": h.pace.estimate(result.record),
                                 "id": result.id}, "finished")
        self._update_gauges()

    def _update_gauges(self) -> None:
        m, engine = self.metrics, self.engine
        snap = {"rows": engine.kv_rows, "kv_bytes": engine.kv_bytes(), "engine_sessions": len(self._handles)}
        self._snapshot = snap
        m.kv_rows.set(snap["rows"])
        if snap["kv_bytes"] is not None:
            m.kv_bytes.set(snap["kv_bytes"])
        m.queue_length.set(len(engine.scheduler.queue) + self._commands.qsize())
        forward_s, generated = engine.stats["forward_s"], self._generated
        last = self._last_totals
        if last is not None and forward_s > last[0]:
            self._tps = 0.8 * self._tps + 0.2 * (generated - last[1]) / (forward_s - last[0])
            m.tokens_per_s.set(self._tps)
        self._last_totals = (forward_s, generated)

    def _finish(self, h: SessionHandle, last: dict, outcome: str) -> None:
        self._handles.pop(h.id, None)
        self.metrics.sessions.labels(outcome).inc()  # counted before the client can see its last event
        h.post(last)
        h.closed = True

    def _fail_all(self, message: str) -> None:
        """End every live session with ``engine_error`` and start the engine over (no rows)."""
        for h in list(self._handles.values()):
            self._engine_abort(h.id)
            self._finish(h, error_event("engine_error", message), "error")
        try:
            self.engine.configure(clock=RealClock())  # drop the rows and start over
        except Exception:  # noqa: BLE001 - the next iteration tries again
            log.exception("engine thread: the engine could not start over")

    def stats(self) -> dict:
        """A snapshot for tests and ``/health`` (taken by the engine thread after its last step):
        ``sessions`` (open slots), ``rows`` (KV cache rows), ``kv_bytes``, ``engine_sessions``."""
        return {"sessions": self._open, **self._snapshot}
