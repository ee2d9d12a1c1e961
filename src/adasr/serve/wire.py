"""The wire protocol of ``adasr serve``: client frames, server events, limits and close codes.

Client frames are JSON objects, validated with pydantic (unknown fields are refused): an
optional first :class:`SettingsFrame`, then :class:`ChunkFrame` s as input arrives and one
:class:`EndFrame` at end of input. Server events are the engine's typed events
(:mod:`adasr.events`) as JSON objects (:func:`event_to_wire`), plus ``skip``, ``record`` and
``error`` (docs/SERVING.md lists every event and field).
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from adasr.defaults import DEFAULT_CHUNKER, DEFAULT_WPS
from adasr.events import Answer, Arrive, DeepStart, Eoi, Event, Ingest, Response, Thought, Token
from adasr.policy import MODES
from adasr.protocol import Stage
from adasr.sampling import SamplingParams

MAX_FRAME_BYTES = 64 * 1024
"""Largest client frame the server reads, bytes (a bigger one closes the session with 1009)."""
MAX_CHUNK_CHARS = 8_000
"""Largest chunk text, characters."""
MAX_INPUT_CHARS = 64_000
"""Largest whole input of a session (all chunks, or a ``/v1/solve`` text), characters."""
MAX_THOUGHT_BUDGET = 512
"""Largest per-session thought budget, tokens."""
MAX_SEED = 2**63 - 1
"""Largest per-session seed (seeds are 0 .. ``MAX_SEED``; the server refuses others with ``invalid_settings``)."""
MIN_TEMPERATURE = 0.01
"""Smallest non-zero sampling temperature (a smaller one overflows the scaled logits)."""

# close codes (RFC 6455 ones where they fit, 4xxx: application codes, docs/SERVING.md)
CLOSE_NORMAL = 1000
CLOSE_INVALID_UTF8 = 1007
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_BAD_FRAME = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_IDLE = 4408
CLOSE_FULL = 4429

STAGE_NAMES = {Stage.INPUT: "input", Stage.STREAM: "stream", Stage.DEEP: "deep"}


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _temperature(t: float) -> float:
    if 0 < t < MIN_TEMPERATURE:
        raise ValueError(f"temperature must be 0 (greedy) or {MIN_TEMPERATURE:g} .. 5")
    return t


class SessionSettings(_Frame):
    """Per-session settings (all optional; the server's defaults otherwise).

    Attributes:
        mode: ``batch`` | ``interleaved`` | ``adaptive`` (:data:`adasr.policy.MODES`).
        thought_budget: the most tokens per streaming thought (0 .. :data:`MAX_THOUGHT_BUDGET`).
        revisions: ``proactive`` mode: times a committed answer may be revised (0 .. 8; 0: the
            first response ends the session).
        max_deep_tokens: deep-stage cap, tokens (1 .. the server's cap).
        temperature: 0 (greedy) or :data:`MIN_TEMPERATURE` .. 5; top_p: (0, 1]; top_k: >= 0
            (0 = off) — the sampling of this session (unset ones: the server's).
        seed: sampling seed of this episode (used when temperature > 0); the server takes
            0 .. :data:`MAX_SEED` (checked when the session opens: ``invalid_settings``).
    """

    mode: Literal[MODES] | None = None  # type: ignore[valid-type]
    thought_budget: Annotated[int, Field(ge=0, le=MAX_THOUGHT_BUDGET)] | None = None
    revisions: Annotated[int, Field(ge=0, le=8)] | None = None
    max_deep_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=5), AfterValidator(_temperature)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    seed: int | None = None

    def sampling(self, default: SamplingParams) -> SamplingParams | None:
        """The session's :class:`~adasr.sampling.SamplingParams`: ``default`` (the server's) with
        the ones set here; ``None`` if none is set (the session samples as the server does)."""
        given = {k: getattr(self, k) for k in ("temperature", "top_p", "top_k") if getattr(self, k) is not None}
        return replace(default, **given) if given else None


class SettingsFrame(SessionSettings):
    """``{"type": "settings", ...}``: only as the first frame."""

    type: Literal["settings"]


class ChunkFrame(_Frame):
    """``{"type": "chunk", "text": ...}``: one chunk of input, arriving now (blank text is ignored)."""

    type: Literal["chunk"]
    text: Annotated[str, Field(max_length=MAX_CHUNK_CHARS)]


class EndFrame(_Frame):
    """``{"type": "end"}``: end of input; the deep stage starts."""

    type: Literal["end"]


Frame = Annotated[Union[SettingsFrame, ChunkFrame, EndFrame], Field(discriminator="type")]
_FRAME = TypeAdapter(Frame)


class SolveRequest(SessionSettings):
    """Body of ``POST /v1/solve``: a whole ``text`` streamed at ``wps`` words per second (or, with
    ``cps``, as typed at ``cps`` characters per second), split by ``chunker`` (``sentence`` |
    ``clause`` | ``word``), plus the session settings. ``wps`` and ``chunker`` default to the CLI's
    (:data:`adasr.defaults.DEFAULT_WPS`, :data:`adasr.defaults.DEFAULT_CHUNKER`)."""

    text: Annotated[str, Field(min_length=1, max_length=MAX_INPUT_CHARS)]
    wps: Annotated[float, Field(gt=0, le=1000)] = DEFAULT_WPS
    cps: Annotated[float, Field(gt=0, le=10000)] | None = None
    chunker: Literal["sentence", "clause", "word"] = DEFAULT_CHUNKER

    def settings(self) -> SessionSettings:
        """The session settings part of the request."""
        return SessionSettings(**self.model_dump(include=set(SessionSettings.model_fields)))


class FrameError(Exception):
    """A client frame the server refuses: ``code`` (an error event's code), ``close`` (the
    WebSocket close code) and a one-line message."""

    def __init__(self, code: str, message: str, close: int = CLOSE_BAD_FRAME):
        super().__init__(message)
        self.code, self.close = code, close


def parse_frame(data: str | bytes) -> SettingsFrame | ChunkFrame | EndFrame:
    """Decode and validate one client frame (text, or binary UTF-8 JSON).

    Raises:
        FrameError: ``too_big`` (over :data:`MAX_FRAME_BYTES`), ``invalid_utf8`` (also a text
            frame with a lone surrogate, which no UTF-8 encodes), ``invalid_json`` (also JSON
            nested too deeply to parse), ``unknown_type`` or ``invalid_frame`` (a field
            missing, of the wrong type, out of range or unknown).
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise FrameError("too_big", f"the frame is {size:,} bytes; the limit is {MAX_FRAME_BYTES:,}", CLOSE_TOO_BIG)
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FrameError("invalid_utf8", f"the frame is not valid UTF-8 (byte 0x{data[e.start]:02x} at "
                                             f"offset {e.start})", CLOSE_INVALID_UTF8) from None
    else:
        try:
            data.encode("utf-8")
        except UnicodeEncodeError as e:  # a server that hands undecodable text frames on as surrogates
            raise FrameError("invalid_utf8", f"the frame is not valid UTF-8 (a lone surrogate at character "
                                             f"{e.start})", CLOSE_INVALID_UTF8) from None
    try:
        obj = json.loads(data)
    except RecursionError:
        raise FrameError("invalid_json", "the frame is not JSON this server reads: it is nested too deeply") from None
    except ValueError as e:
        raise FrameError("invalid_json", f"the frame is not JSON: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise FrameError("invalid_frame", 'a frame is a JSON object with a "type" string')
    if obj["type"] not in ("settings", "chunk", "end"):
        raise FrameError("unknown_type", f"unknown frame type {obj['type']!r}: use settings, chunk or end")
    try:
        return _FRAME.validate_python(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"][1:]) or "frame"
        raise FrameError("invalid_frame", f"invalid {obj['type']} frame: {where}: {first['msg']}") from None


def error_event(code: str, message: str, *, fatal: bool = True) -> dict:
    """``{"type": "error", "code", "message", "fatal"}`` (``fatal``: the session ends with it)."""
    return {"type": "error", "code": code, "message": message, "fatal": fatal}


def event_to_wire(ev: Event) -> dict:
    """An engine event as the JSON object sent to clients: :meth:`Event.as_dict` with stages
    named (``"stream"`` | ``"deep"``), ``token`` events with their ``text``, and ``thought``
    events with ``skipped`` (the model ended the turn without a word)."""
    out = ev.as_dict()
    if isinstance(ev, Token):
        out["stage"], out["text"] = STAGE_NAMES[ev.stage], ev.text
    elif isinstance(ev, Thought):
        out["skipped"], out["forced"] = not ev.text.strip(), False
    return out


def read_then_think_estimate(stream_tokens_before_eoi: int, decode_tokens: int, decode_s: float,
                             post_input_latency_s: float | None) -> dict:
    """The ``read_then_think`` object of a ``record`` event: an **estimate**, not a measurement, of
    the post-input latency the same session would have had reading the whole input first.

    A model that reads, then thinks writes its reasoning after end of input; this session wrote
    ``stream_tokens_before_eoi`` of its reasoning tokens while the input was still arriving. At
    the session's measured decode rate ``R = decode_tokens / decode_s`` they would have taken
    ``stream_tokens_before_eoi / R`` seconds more after end of input::

        estimated_post_input_latency_s = post_input_latency_s + stream_tokens_before_eoi / R

    It assumes read-then-think would write the same reasoning, at the same rate; a model that
    reads first may write more or fewer tokens (``adasr eval --mode batch`` measures it).

    Args:
        stream_tokens_before_eoi: streaming-thought tokens generated before end of input (those
            of ``token`` events with ``stage: stream``; end-of-turn tokens are not counted).
        decode_tokens: tokens the session generated in its own decode steps (steps that fed it
            only its last sampled token: no chunk, no end-of-input turn).
        decode_s: wall-clock seconds of those engine steps (a step is shared with the other
            sessions in the batch: this is the rate the session saw).
        post_input_latency_s: the measured post-input latency (``record.post_input_latency_s``).

    Returns:
        ``{"stream_tokens_before_eoi", "decode_tokens", "decode_s", "decode_tokens_per_s",
        "estimated_post_input_latency_s"}`` (docs/SERVING.md). The rate is ``None`` when the
        session had no decode step; the estimate is ``None`` without a post-input latency or
        when tokens were written before end of input but there is no rate, and equals the
        measured latency when nothing was written before end of input.
    """
    rate = decode_tokens / decode_s if decode_tokens > 0 and decode_s > 0 else None
    if post_input_latency_s is None or (stream_tokens_before_eoi and rate is None):
        estimate = None
    else:
        estimate = post_input_latency_s + (stream_tokens_before_eoi / rate if stream_tokens_before_eoi else 0.0)
    return {"stream_tokens_before_eoi": stream_tokens_before_eoi, "decode_tokens": decode_tokens,
            "decode_s": decode_s, "decode_tokens_per_s": rate, "estimated_post_input_latency_s": estimate}


_EVENTS = {cls.type: cls for cls in (Arrive, Ingest, Token, Thought, Response, Eoi, DeepStart, Answer)}


def event_from_wire(obj: dict) -> Event | None:
    """The typed engine event of a wire event (``None`` for the server's own kinds: ``skip``,
    ``record``, ``error``, ``session``); the inverse of :func:`event_to_wire`."""
    cls = _EVENTS.get(obj.get("type"))
    if cls is None:
        return None
    kwargs = {f.name: obj.get(f.name) for f in fields(cls)}
    if cls is Token:
        kwargs["stage"] = {v: k for k, v in STAGE_NAMES.items()}[obj["stage"]]
        kwargs["text"] = obj.get("text", "")
    return cls(**kwargs)
