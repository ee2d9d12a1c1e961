"""Shared by the engine's tests: a few chunk texts, scheduled streams of them, a small engine
on the tiny model, and the tiny model steered to write a script."""

from __future__ import annotations

import torch

from adasr.engine import EngineConfig, StreamingEngine
from adasr.stream import Chunk, ScheduledStream

TEXTS = ["Natalia sold clips to 48 friends.", "Then she sold half as many.", "How many clips?", "Add 5.", "Subtract 3."]


def stream(n: int, gap: float = 0.5, off: int = 0) -> ScheduledStream:
    """``n`` chunks of :data:`TEXTS` (starting at text ``off``, cycling), chunk ``i`` arriving at
    ``gap * (i + 1)`` seconds."""
    return ScheduledStream([Chunk(i, TEXTS[(i + off) % len(TEXTS)], gap * (i + 1)) for i in range(n)])


def engine(model, tok, **kw) -> StreamingEngine:
    """A :class:`StreamingEngine` on ``model``: ``kw`` are :class:`EngineConfig` fields, with short
    thoughts (6 tokens), a short deep stage (10 tokens) and protocol v1 unless given."""
    kw.setdefault("thought_budget", 6)
    kw.setdefault("max_deep_tokens", 10)
    kw.setdefault("protocol", "v1")  # free-running thoughts (v2 ends a thought at its first line break)
    return StreamingEngine(model, tok, EngineConfig(**kw))


class Scripted(torch.nn.Module):
    """The tiny model, steered (+100) to continue ``script`` token by token: after ``start`` it
    writes ``script[0]``, after ``script[i]`` it writes ``script[i + 1]``, after the last one
    ``end``. Works at every position of a multi-token forward (it steers all positions, then
    keeps those the engine asked for)."""

    def __init__(self, model, start: int, script: list[int], end: int):
        super().__init__()
        self.inner = model
        self.next = {start: script[0], **{a: b for a, b in zip(script, script[1:])}, script[-1]: end}

    def forward(self, input_ids, logits_to_keep=0, **kw):
        out = self.inner(input_ids=input_ids, logits_to_keep=0, **kw)
        target = torch.tensor([[self.next.get(int(t), -1) for t in row] for row in input_ids])
        b, pos = (target >= 0).nonzero(as_tuple=True)
        out.logits[b, pos, target[b, pos]] += 100.0
        if isinstance(logits_to_keep, torch.Tensor):
            out.logits = out.logits[:, logits_to_keep]
        elif logits_to_keep:
            out.logits = out.logits[:, -logits_to_keep:]
        return out


class Steered(torch.nn.Module):
    """The tiny model, steered to write ``x \\n x \\n ...``: +100 on the newline token after ``x``
    and on ``x`` after anything else."""

    def __init__(self, model, x: int, newline: int):
        super().__init__()
        self.inner, self.x, self.nl = model, x, newline

    def forward(self, input_ids, **kw):
        out = self.inner(input_ids=input_ids, **kw)
        after_x = (input_ids[:, -1] == self.x) if input_ids.shape[1] == 1 else torch.zeros(len(input_ids), dtype=torch.bool)
        out.logits[:, -1, self.nl] += 100.0 * after_x
        out.logits[:, -1, self.x] += 100.0 * ~after_x
        return out
