"""Clocks (docs/DESIGN.md, "Latency model"):

* :class:`VirtualClock` — discrete-event time. Compute steps advance it by their *measured*
  durations; waiting for an arrival jumps it forward. Nothing sleeps, so an evaluation costs
  compute time only while its latencies are those a live stream would see.
* :class:`RealClock` — wall-clock time; waiting sleeps (or blocks on a live source).

Imports nothing of :mod:`adasr.stream`.
"""

from __future__ import annotations

import time

from adasr.errors import InputError


class VirtualClock:
    """Discrete-event clock: ``advance`` adds measured compute time, ``wait_until`` jumps.

    Args:
        fixed_step_s: charge this many seconds per step instead of the measured time (a clock
            model independent of the machine and its load: runs are then reproducible
            token for token; ``None``: measured).
    """

    virtual = True

    def __init__(self, fixed_step_s: float | None = None) -> None:
        self._now = 0.0
        self.fixed_step_s = fixed_step_s

    def now(self) -> float:
        """Current time in seconds since the clock started."""
        return self._now

    def advance(self, dt_s: float) -> None:
        """Charge ``dt_s`` seconds of measured compute (or ``fixed_step_s``)."""
        self._now += dt_s if self.fixed_step_s is None else self.fixed_step_s

    def wait_until(self, t_s: float) -> None:
        """Jump to ``t_s`` if it is in the future (no sleeping)."""
        self._now = max(self._now, t_s)


class RealClock:
    """Wall clock: time passes by itself; ``wait_until`` sleeps."""

    virtual = False

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._t0

    def advance(self, dt_s: float) -> None:
        return None

    def wait_until(self, t_s: float) -> None:
        delay = t_s - self.now()
        if delay > 0:
            time.sleep(delay)


PER_STREAM = "per-stream"
"""Clock name for one virtual clock per stream (:meth:`adasr.engine.StreamingEngine.run`)."""

CLOCKS = ("virtual", "real", PER_STREAM)
"""Clock names the engine accepts."""


def make_clock(kind: str) -> VirtualClock | RealClock:
    """Return a shared clock by name: ``"virtual"`` or ``"real"`` (``"per-stream"`` clocks are
    made by the engine, one per row).

    Raises:
        InputError: for any other name.
    """
    if kind == "virtual":
        return VirtualClock()
    if kind == "real":
        return RealClock()
    raise InputError(f"unknown clock {kind!r}: use one of {', '.join(CLOCKS)}")
