"""The scheduler: which sessions hold a row of the batch, what each feeds this step, and time.

Rows. Sessions wait in a queue until a row is free (at most ``batch_size`` rows). At the start of
a step the rows of sessions that ended (finished or aborted) in an earlier step are freed: a
queued session takes a freed row in place (its old positions stay masked), rows nobody takes are
dropped from the batch, and further queued sessions get new rows while there is room
(:meth:`Scheduler.update_rows`, applied to the KV cache by the runner).

Feeds. :meth:`Scheduler.plan` asks every running session what to feed at its clock time and
returns the step as a :class:`SchedulerOutput` (the shape of vLLM's ``SchedulerOutput``: each
row's feed, and the rows whose cache starts over first), which the model runner executes. If
none must run (all wait for input), no forward runs: the clock jumps to the next arrival (a
shared virtual clock), each waiting session's own clock jumps (per-stream clocks), the real
clock sleeps, or a live source is waited on.

Clocks (:mod:`adasr.stream`). With a shared clock (``"virtual"`` or ``"real"``) all sessions
live on one timeline: the virtual clock is charged each step's measured duration — the batched
duration, as a server serving N live streams would see — and jumps to the next arrival when
every session waits, so a session that waits for its next chunk sits steps out while others
think. With ``"per-stream"`` clocks each session has its own virtual clock, charged the measured
duration of every batched step it takes part in and jumped to its next arrival as soon as it
waits: a server at full load, whose N rows always have work because it serves more streams than
rows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from adasr.errors import ConfigError, InputError
from adasr.session import Feed, Plan, Session
from adasr.stream import PER_STREAM, RealClock, VirtualClock, make_clock


@dataclass
class RowChanges:
    """How the rows of the batch change at the start of a step (in this order).

    Attributes:
        refilled: rows a new session took over (the old session's positions are masked).
        keep: the rows kept, in order, when some were dropped; ``None`` when none was.
        added: rows appended at the end for newly admitted sessions.
    """

    refilled: list[int]
    keep: list[int] | None
    added: int

    def __bool__(self) -> bool:
        return bool(self.refilled) or self.keep is not None or self.added > 0


@dataclass
class SchedulerOutput:
    """One planned step: what each running session feeds (executed by the model runner,
    :class:`adasr.runner.ModelRunner`).

    Attributes:
        sessions: the running sessions, in row order.
        feeds: per row, the tokens it feeds (``[]``: nothing this step).
        restart_rows: rows whose KV cache starts over before their feed (a fresh deep-stage
            context, ``Protocol.fresh_deep``: the feed opens a new context at position 0).
    """

    sessions: list[Session]
    feeds: list[Feed]
    restart_rows: list[int]


class Scheduler:
    """Plans engine steps over sessions (see the module docstring).

    Args:
        clock: ``"virtual"`` | ``"real"`` | a clock object (shared by all sessions), or
            ``"per-stream"`` (a virtual clock per session).

    Attributes:
        queue: ``(session, start_s)`` waiting for a row, in arrival order.
        running: the sessions holding rows, in row order.
    """

    def __init__(self, clock: str | VirtualClock | RealClock = "virtual"):
        self.per_stream = clock == PER_STREAM
        self.clock = make_clock("virtual" if self.per_stream else clock) if isinstance(clock, str) else clock
        self.queue: deque[tuple[Session, float | None]] = deque()
        self.running: list[Session] = []

    def add(self, session: Session, start_s: float | None = None) -> None:
        """Queue ``session``; its stream starts when it gets a row, or at clock time ``start_s``.

        Raises:
            ConfigError: ``start_s`` with per-stream clocks (each starts at 0 on admission).
        """
        if start_s is not None and self.per_stream:
            raise ConfigError("a start time needs a shared clock (per-stream clocks start at 0)")
        self.queue.append((session, start_s))

    def drop_queued(self, session: Session) -> bool:
        """Remove a session that has no row yet; False if it was not queued."""
        for item in self.queue:
            if item[0] is session:
                self.queue.remove(item)
                return True
        return False

    def _admit(self) -> Session:
        s, start = self.queue.popleft()
        if self.per_stream:
            s.start(0.0, VirtualClock())
        else:
            s.start(self.clock.now() if start is None else start, self.clock)
        return s

    def update_rows(self, batch_size: int, refill: bool = True) -> tuple[RowChanges, list[Session]]:
        """Free the rows of ended sessions (queued sessions take them over when ``refill``),
        then admit queued sessions into new rows up to ``batch_size``.

        Returns:
            the row changes for the runner, and the sessions whose rows were freed.
        """
        changes, freed = RowChanges([], None, 0), []
        keep = []
        for i, s in enumerate(self.running):
            if not s.status.ended:
                keep.append(i)
                continue
            freed.append(s)
            if refill and self.queue:
                self.running[i] = self._admit()
                changes.refilled.append(i)
                keep.append(i)
        if len(keep) < len(self.running):
            self.running = [self.running[i] for i in keep]
            changes.keep = keep
        while refill and self.queue and len(self.running) < batch_size:
            self.running.append(self._admit())
            changes.added += 1
        return changes, freed

    # -- one step ----------------------------------------------------------------------------
    def plan(self, rate: float, busy: frozenset[str] = frozenset()) -> SchedulerOutput | None:
        """This step: each running session's feed and the rows that start over; ``None`` if all
        wait for input (then the clocks have moved on to the next arrival and no forward runs) or
        a session ended while planned (it is retired next).

        Args:
            rate: the engine's decode rate, tokens/s of one row (adaptive budgets).
            busy: ids of sessions whose tokens a backend is still generating (vLLM: a turn in
                flight); they are not asked, feed nothing new and count as running.

        Raises:
            InputError: a live source on a virtual clock (nothing would ever arrive).
        """
        plans = [Plan([], True) if s.id in busy else self._plan(s, rate) for s in self.running]
        if not any(p.must_run for p in plans):
            for s, p in zip(self.running, plans):
                s.defer(p.feed)
            # a session that ended while planned (a proactive response cut by the last arrival) is
            # retired before anyone waits: there may be no arrival left to wait for
            if not any(s.status.ended for s in self.running):
                self._wait()
            return None
        return SchedulerOutput(list(self.running), [p.feed for p in plans],
                               [i for i, p in enumerate(plans) if p.restart])

    def _plan(self, s: Session, rate: float) -> Plan:
        """``s.plan`` at its clock time; a per-stream session that waits jumps to its next arrival
        (one that ended while planned does not: planned again, it would ingest that arrival)."""
        plan = s.plan(s.clock.now(), rate)
        while self.per_stream and not plan.must_run and not s.status.ended:
            wake = s.next_wake()
            if wake is None or wake <= s.clock.now():
                break
            s.defer(plan.feed)
            s.clock.wait_until(wake)
            plan = s.plan(s.clock.now(), rate)
        return plan

    def charge(self, feeds: list, dt: float) -> None:
        """Charge a step that took ``dt`` seconds: the shared clock, or (per-stream) the clock of
        each session that took part (a non-empty feed, or a true value, per running session)."""
        if not self.per_stream:
            self.clock.advance(dt)
            return
        for s, feed in zip(self.running, feeds):
            if feed:
                s.clock.advance(dt)

    def _wait(self) -> None:
        sessions = self.running
        wakes = [w for w in (s.next_wake() for s in sessions) if w is not None]
        if wakes and self.per_stream:  # float rounding left a session just short of its arrival
            for s in sessions:
                wake = s.next_wake()
                if wake is not None:
                    s.clock.wait_until(wake + 1e-9)
            return
        if wakes:
            self.clock.wait_until(min(wakes))
            return
        if self.clock.virtual:
            raise InputError("a live input source needs the real clock (use --clock real)")
        for s in sessions:  # live sources: block briefly until something arrives
            s.inp.source.wait(0.05)
