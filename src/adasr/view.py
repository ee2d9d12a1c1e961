"""Live terminal view of one streaming episode (rich), fed by typed engine events
(:mod:`adasr.events`; their text comes decoded, the view never sees a tokenizer).

Shows chunks as they arrive (dim until ingested), the streaming thought after each chunk, the
deep stage as it is generated, the answer, and a metrics footer once the episode ends.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from adasr.events import Answer, Arrive, Eoi, Event, Ingest, Response, Thought, Token
from adasr.protocol import Stage


class LiveView:
    """Consume engine events (``on_event``) and redraw a rich ``Live`` display.

    Args:
        console: a rich console (default: stdout).
    """

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.chunks: dict[int, str] = {}
        self.ingested: set[int] = set()
        self.thoughts: dict[int, str] = {}  # text so far of the thought being generated
        self.thought_done: dict[int, str] = {}
        self.current_chunk: int | None = None
        self.deep = ""
        self.answer: str | None = None
        self.revisions = 0  # proactive: times the committed answer was revised
        self.eoi_t: float | None = None
        self.now = 0.0
        self.live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False)

    def __enter__(self) -> "LiveView":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.update(self._render())
        self.live.__exit__(*exc)

    def on_event(self, ev: Event) -> None:
        """Update the state from one engine event and refresh."""
        self.now = max(self.now, ev.t)
        if isinstance(ev, Arrive):
            self.chunks[ev.chunk] = ev.text
        elif isinstance(ev, Ingest):
            self.ingested.add(ev.chunk)
            self.current_chunk = ev.chunk
        elif isinstance(ev, Token):
            if ev.stage == Stage.DEEP:
                self.deep += ev.text
            elif self.current_chunk is not None:
                self.thoughts[self.current_chunk] = self.thoughts.get(self.current_chunk, "") + ev.text
        elif isinstance(ev, Thought):
            self.thought_done[ev.chunk] = ev.text
        elif isinstance(ev, Eoi):
            self.eoi_t = ev.t
        elif isinstance(ev, Response):  # a proactive answer, committed before the end of input
            self.answer, self.revisions = ev.prediction, ev.revision
        elif isinstance(ev, Answer):
            self.answer = ev.prediction
        self.live.update(self._render())

    def _render(self) -> Group:
        body = Text()
        for k in sorted(self.chunks):
            style = "bold" if k in self.ingested else "dim"
            body.append(f"[{k + 1}] ", style="cyan").append(self.chunks[k] + "\n", style=style)
            thought = self.thought_done.get(k)
            if thought is None and k in self.thoughts:
                thought = self.thoughts[k] + "…"
            if thought is not None:
                body.append("    💭 " + (thought.strip() or "(skip)") + "\n", style="green" if thought.strip() else "dim green")
        parts = [Panel(body, title=f"input stream  t={self.now:.1f}s", border_style="cyan")]
        if self.eoi_t is not None and (self.deep or self.answer is None):
            parts.append(Panel(Text(self.deep, style="yellow"), title="deep stage (after end of input)", border_style="yellow"))
        if self.answer is not None:
            revised = f"  (revised {self.revisions}x)" if self.revisions else ""
            parts.append(Text(f"answer: {self.answer}{revised}", style="bold magenta"))
        return Group(*parts)


def metrics_table(record: dict) -> Table:
    """A two-column rich table of an episode record (docs/DESIGN.md field names)."""
    table = Table(title="episode metrics", show_header=False, box=None)
    for key, value in record.items():
        if isinstance(value, float):
            value = f"{value:.3f}"
        table.add_row(key, str(value))
    return table
