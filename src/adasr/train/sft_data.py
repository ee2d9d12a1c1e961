"""SFT's data: dataset rows rendered by the streaming protocol with their training labels,
measured once, and collated into batches.

One row (``chunks``, ``thoughts`` with ``""`` = skip, ``deep``; a proactive record also
``evidence_chunk``, ``answer``) takes one way through this module:

1. :func:`row_episode` — the row as an :class:`~adasr.protocol.Episode` in a layout
   (``streaming``, its read-then-think twin ``batch``, or ``proactive``);
2. :func:`render_row` — its turns read first (which are responses, which are context:
   :func:`context_turns`), then the episode rendered once by
   :meth:`~adasr.protocol.StreamingFormat.render` (the renderer the engine uses at inference),
   then the labels placed on the rendered tokens;
3. :func:`prepare_episodes` — every row of a training set rendered and measured: rows longer than
   ``max_seq_len`` dropped, the decision classes counted
   (:func:`adasr.train.cb_stream.decision_counts`);
4. :class:`StreamingCollator` — a batch of rows as right-padded ``(B, T)`` tensors for
   :class:`adasr.train.sft.StreamSFTTrainer`.

What is masked: every token the model did not generate (system prompt, chunks, role headers,
the end-of-input turn, the newline after ``<|im_end|>``; a correction episode's wrong answer:
stage 0) gets the label :data:`IGNORE`; decision tokens (the first token of each
streaming-thought turn: skip = end-of-turn id, think = anything else, respond = the turn commits
an answer) are flagged for the CB-Stream weights (docs/TRAINING.md, docs/DESIGN.md "Rewards,
HRPO and CB-Stream").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch

from adasr.errors import DataError
from adasr.protocol import (
    STAGE_INPUT,
    STAGE_STREAM,
    Episode,
    Rendered,
    StreamingFormat,
    is_response,
    parse_answer,
    same_answer,
)
from adasr.train.cb_stream import CLASS_NAMES, decision_counts

logger = logging.getLogger(__name__)

IGNORE = -100
"""The label of a token that is not trained (transformers' ignore index)."""


def row_episode(row: dict, layout: str = "streaming") -> Episode:
    """The :class:`Episode` of a dataset row (chunks, thoughts with ``""`` = skip, deep).

    ``layout="streaming"`` keeps each thought after its chunk. ``layout="batch"`` is the
    read-then-think twin of the same episode: one user turn holding every chunk, then the
    non-empty thoughts, in order, followed by the deep stage, as one assistant turn. The
    reasoning text is identical; only *when* it is written changes (the fair baseline for
    post-input latency, docs/DESIGN.md "Modes"). ``layout="proactive"`` is the proactive layout
    of a proactive record (:mod:`adasr.tasks.proactive`, ``evidence_chunk`` = e): chunks ``0..e``
    with their turns (silent, ..., silent, the ``\\boxed{answer}`` response) and no end-of-input
    turn nor deep stage; a record continued past its answer (build knob ``continuation``:
    :func:`adasr.tasks.proactive.base.continue_record`) renders its chunks up to its last turn.

    Raises:
        ProtocolError: for an unknown layout (from :class:`Episode` rendering).
        DataError: ``layout="proactive"`` on a row without a valid ``evidence_chunk``.
    """
    if layout == "proactive":
        e = row.get("evidence_chunk")
        thoughts = list(row["thoughts"])
        if not isinstance(e, int) or not 0 <= e < len(row["chunks"]) or not e + 1 <= len(thoughts) <= len(row["chunks"]):
            raise DataError(f"episode {row.get('id')!r} is not a proactive record (evidence_chunk {e!r}, "
                            f"{len(thoughts)} thoughts): build it with a proactive_* task")
        return Episode(chunks=list(row["chunks"])[: len(thoughts)], thoughts=thoughts, deep=None, end_of_input=False)
    if layout == "batch":
        steps = [t.strip() for t in row["thoughts"] if t and t.strip()]
        deep = " ".join(steps + [row["deep"]])
        return Episode(chunks=list(row["chunks"]), thoughts=[None] * len(row["chunks"]), deep=deep, layout="batch")
    return Episode(chunks=list(row["chunks"]), thoughts=list(row["thoughts"]), deep=row["deep"], layout=layout)


def context_turns(row: dict, layout: str = "proactive") -> list[int]:
    """Indices of the turns of a record that are context, not targets. :func:`render_row` gives
    their tokens no label and counts no decision for them.

    - ``layout="proactive"``: response turns whose committed answer is not the record's
      ``answer`` (the wrong first answer of a correction episode,
      :func:`adasr.tasks.proactive.base.continue_record`), so a model learns to correct a wrong
      answer without learning to write one.
    - ``layout="streaming"``: the record's ``forced_skips`` (skips the engine forces under a
      backlog, ``--skip-backlog``; ``chain_sum``'s build knob ``skip_forced``), so a model learns
      to fold a forced skip's operations into its next thought without learning to skip by
      itself (RESULTS.md section 25).
    - ``layout="batch"``: none (its skips are not rendered).

    Raises:
        DataError: a ``forced_skips`` entry that is not the index of an empty thought.
    """
    if layout == "batch":
        return []
    if layout == "streaming":
        forced = list(row.get("forced_skips") or [])
        thoughts = row["thoughts"]
        bad = [k for k in forced if not isinstance(k, int) or not 0 <= k < len(thoughts) or thoughts[k]]
        if bad:
            raise DataError(f"episode {row.get('id')!r}: forced_skips {bad} are not indices of skipped (empty) thoughts")
        return sorted(set(forced))
    answer = str(row["answer"])
    return [k for k, t in enumerate(row["thoughts"])
            if t and is_response(t) and not same_answer(parse_answer(t), answer)]


def render_row(fmt: StreamingFormat, row: dict, layout: str = "streaming") -> tuple[Rendered, list[bool]]:
    """A row rendered in ``layout`` (:func:`row_episode`) with its training labels.

    The row's turns are read first: which are responses (their text holds a non-empty
    ``\\boxed{}``: :func:`adasr.protocol.is_response`) and which are context
    (:func:`context_turns`: in the proactive layout the wrong first answer of a correction
    episode, in the streaming layout the skips the engine forced). Then the episode is rendered
    once and the labels are placed on its decision tokens, one per rendered turn, in order: a response turn's decision token is marked in the response mask; a context
    turn's tokens get stage 0 (no label) and no decision token.

    Returns:
        ``(rendered, respond)``: the :class:`Rendered` episode (its ``stage`` and ``decision``
        labels with context turns untrained) and ``respond``, length T: True at the decision
        token of each trained response turn.

    Raises:
        DataError / ProtocolError: as :func:`row_episode`.
    """
    episode = row_episode(row, layout)
    context = context_turns(row, layout)
    responds = [isinstance(t, str) and is_response(t) for t in row["thoughts"] if t is not None]
    r = fmt.render(episode)
    starts = [p for p, d in enumerate(r.decision) if d]  # one per rendered turn (none in batch layout)
    respond = [False] * len(r.input_ids)
    for p, responds_k in zip(starts, responds):
        respond[p] = responds_k
    for k in context:  # proactive and streaming layouts render every turn: turn k starts at starts[k]
        p = starts[k]
        r.decision[p] = respond[p] = False
        while p < len(r.stage) and r.stage[p] == STAGE_STREAM:
            r.stage[p] = STAGE_INPUT
            p += 1
    return r, respond


@dataclass
class EpisodeStats:
    """What :func:`prepare_episodes` measured on a training set.

    Attributes:
        kept: episodes kept (at most ``max_seq_len`` tokens).
        dropped: episodes dropped for being longer.
        class_counts: decision-token counts ``{"skip": n, "think": n, "respond": n}`` over the
            kept episodes (:func:`adasr.train.cb_stream.decision_counts`).
        max_len / mean_len: rendered lengths (tokens) of the kept episodes.
    """

    kept: int
    dropped: int
    class_counts: dict
    max_len: int
    mean_len: float


def prepare_episodes(ds, fmt: StreamingFormat, max_seq_len: int, layout: str = "streaming"):
    """Render every row once (in ``layout``, see :func:`render_row`): drop rows longer than
    ``max_seq_len`` and count decision classes (none in batch layout).

    Returns:
        ``(dataset, EpisodeStats)``.

    Raises:
        DataError: a row cannot be rendered, or no row fits in ``max_seq_len``.
    """
    keep: list[int] = []
    counts = dict.fromkeys(CLASS_NAMES, 0)
    lengths: list[int] = []
    for i, row in enumerate(ds):
        try:
            r, respond = render_row(fmt, row, layout)
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - a malformed record names itself
            raise DataError(f"episode {row.get('id', i)!r} cannot be rendered: {err}") from None
        if len(r.input_ids) > max_seq_len:
            continue
        keep.append(i)
        lengths.append(len(r.input_ids))
        for name, n in decision_counts(r, respond, fmt.end_of_turn_id).items():
            counts[name] += n
    if not keep:
        raise DataError(f"no training episode fits in max_seq_len={max_seq_len} tokens: raise max_seq_len")
    stats = EpisodeStats(len(keep), len(ds) - len(keep), counts, max(lengths), sum(lengths) / len(lengths))
    if stats.dropped:
        logger.warning("dropped %d of %d episodes longer than max_seq_len=%d", stats.dropped, len(ds), max_seq_len)
    return (ds if stats.dropped == 0 else ds.select(keep)), stats


class StreamingCollator:
    """Render dataset rows with the streaming protocol and pad them into a batch.

    Each row is rendered in ``layout`` by :func:`render_row` (``streaming``, ``batch`` for its
    read-then-think twin, or ``proactive``, where the context turns of a correction episode are
    not trained) with ``fmt``, the run's :class:`StreamingFormat`; sequences longer than
    ``max_seq_len`` are cut at the right. ``tokenizer`` gives the padding id (default: the
    end-of-turn id).

    Returns (from ``__call__``) a dict of ``(B, T)`` tensors, right-padded:
        ``input_ids``; ``attention_mask`` (1 on real tokens); ``labels`` (the id where the model
        generated the token, stage > 0, else :data:`IGNORE`); ``decision_mask`` (bool, the
        skip-vs-think decision tokens); ``respond_mask`` (bool, the decision tokens of response
        turns); ``stage`` (0 input, 1 streaming thought, 2 deep stage; 0 on padding).
    """

    def __init__(self, tokenizer, fmt: StreamingFormat, max_seq_len: int | None = None, layout: str = "streaming"):
        self.fmt = fmt
        self.max_seq_len = max_seq_len
        self.layout = layout
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else fmt.end_of_turn_id

    def _render(self, row: dict) -> tuple[Rendered, list[bool]]:
        r, respond = render_row(self.fmt, row, self.layout)
        if self.max_seq_len is not None and len(r.input_ids) > self.max_seq_len:
            n = self.max_seq_len
            r, respond = Rendered(r.input_ids[:n], r.stage[:n], r.decision[:n]), respond[:n]
        return r, respond

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        pairs = [self._render(row) for row in rows]
        T = max(len(r.input_ids) for r, _ in pairs)
        B = len(pairs)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        att = torch.zeros((B, T), dtype=torch.long)
        stage = torch.zeros((B, T), dtype=torch.long)
        dec = torch.zeros((B, T), dtype=torch.bool)
        respond = torch.zeros((B, T), dtype=torch.bool)
        for b, (r, resp) in enumerate(pairs):
            n = len(r.input_ids)
            ids[b, :n] = torch.tensor(r.input_ids, dtype=torch.long)
            att[b, :n] = 1
            stage[b, :n] = torch.tensor(r.stage, dtype=torch.long)
            dec[b, :n] = torch.tensor(r.decision, dtype=torch.bool)
            respond[b, :n] = torch.tensor(resp, dtype=torch.bool)
        labels = torch.where(stage > STAGE_INPUT, ids, torch.full_like(ids, IGNORE))
        return {"input_ids": ids, "attention_mask": att, "labels": labels, "decision_mask": dec,
                "respond_mask": respond, "stage": stage}


__all__ = ["IGNORE", "row_episode", "context_turns", "render_row", "EpisodeStats", "prepare_episodes",
           "StreamingCollator"]
