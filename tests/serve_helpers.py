"""Shared by the serving tests: the chunks of a session, a small engine on the tiny model,
polling, and a free loopback port."""

from __future__ import annotations

import socket
import time

from adasr.engine import EngineConfig, StreamingEngine

TEXT = ["Natalia sold clips to 48 friends.", "Then she sold half as many.", "How many clips?"]


def make_engine(model, tok, **kw) -> StreamingEngine:
    """A :class:`StreamingEngine` on ``model``: ``kw`` are :class:`EngineConfig` fields; by default
    interleaved, 6-token thoughts, a 10-token deep stage, protocol v1, decode rate pinned at 50/s."""
    kw.setdefault("policy", "interleaved")
    kw.setdefault("thought_budget", 6)
    kw.setdefault("max_deep_tokens", 10)
    kw.setdefault("protocol", "v1")  # free-running thoughts: a thought runs to its budget
    kw.setdefault("decode_rate", 50.0)
    return StreamingEngine(model, tok, EngineConfig(**kw))


def wait_for(pred, timeout_s: float = 10.0):
    """Poll ``pred()`` every 20 ms until it is truthy and return its value; ``AssertionError`` after
    ``timeout_s`` seconds."""
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
