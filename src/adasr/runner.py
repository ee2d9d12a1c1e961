"""The model-runner role: the :class:`ModelRunner` interface and the in-process :class:`TorchModelRunner`.

A model runner turns each engine step's feeds (:class:`~adasr.scheduler.SchedulerOutput`) into the
next tokens of the generating sessions (:class:`RunnerOutput`), and holds their keys/values. The
engine (:class:`adasr.engine.StreamingEngine`, one class) keeps everything else: sessions,
scheduler, policies, clocks, events and records. A backend is a model runner (the shape of
vLLM's model runner under its engine core): :class:`TorchModelRunner` (this process's PyTorch
forward) or :class:`adasr.vllm_backend.VllmModelRunner` (vLLM's streaming-input engine).

:class:`TorchModelRunner` knows token ids and rows, not sessions (it reads a step's sessions for
their status, sampling settings and generators, and changes none). Each row of the batch holds
one session's keys/values; every step feeds each row its new tokens only (the prefix lives in the
cache), so ingesting a chunk costs its own length, not the prefix's.

* Rows are right-padded within a step; padded positions are masked out of every later step (2-D
  attention mask with holes) and each row keeps its own position ids. A row taken over by a new
  session keeps its old positions, masked; dropped rows leave the batch; the cache is compacted
  (padding gathered out) when most of it is padding.
* Rows with nothing to feed sit the step out: the forward runs on the active rows' slice of the
  cache (views when the rows are contiguous), whose new positions are then taken back.
* Split steps: when some rows feed a multi-token chunk while others feed one decoded token, the
  step runs two forwards (``EngineConfig.split_min_waste``).
* Prefix cache: a row whose session opens (position 0) with the system prompt gets that
  prompt's keys/values, computed once (``EngineConfig.prefix_cache``; as in vLLM's automatic
  prefix caching). Tokens and positions are unchanged; only the compute is saved.
* Sampling: greedy, or each row's :class:`~adasr.sampling.SamplingParams` through the logits
  warpers of :func:`logits_warpers` (an LRU cache of :data:`WARPER_CACHE_SIZE` settings) and the
  session's own seeded generator; top-p draws look for the nucleus among the most likely tokens
  first (:func:`draw_tokens`).

Design source: the KV-cache engine that injects tokens the model did not generate follows
karpathy/nanochat ``engine.py``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    SequenceBiasLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from adasr.kvcache import GrowableLayer, StreamingCache, cache_keyword
from adasr.sampling import SamplingParams

if TYPE_CHECKING:  # pragma: no cover
    from adasr.scheduler import RowChanges, SchedulerOutput
    from adasr.session import Session

__all__ = ["ModelRunner", "NUCLEUS_CANDIDATES", "RunnerFactory", "RunnerOutput", "RunnerSpec", "TorchModelRunner",
           "WARPER_CACHE_SIZE", "draw_tokens", "logits_warpers", "nucleus"]


@dataclass(frozen=True)
class RunnerSpec:
    """What an engine tells the model runner it builds (:data:`RunnerFactory`).

    Attributes:
        config: the engine's :class:`~adasr.engine.EngineConfig` (its ``sampling``, compaction,
            split steps, prefix cache; not imported here: the engine sits above the runner).
        prefix_ids: the opening prefix of the engine's sessions (its system prompt; the prefix cache).
        pad_id: the token id of padded positions (masked).
        stats: the engine's counters, updated in place by the runner (``split_steps``,
            ``compactions``, ``tokens_fed``, ``padded_fed``, ``prefix_hits``).
    """

    config: Any
    prefix_ids: tuple[int, ...]
    pad_id: int
    stats: dict


@dataclass
class RunnerOutput:
    """What one step gave each row (:meth:`ModelRunner.sample_tokens`; lists in row order).

    Attributes:
        tokens: the tokens generated for the row's session this step, in order (``[]``: none).
        prefed: how many of them (the first ones) the runner has already fed itself (vLLM goes on
            generating an input, each sampled token fed, until the input ends); the engine
            records them as fed. The others are fed by a later step (the session's next feed).
        took_part: whether the row took part in the step (its per-stream clock is charged).
        deferred: whether the row's feed was left unsent: the engine puts it back
            (:meth:`~adasr.session.Session.defer`; vLLM sends an idle session's leftover turn
            closers with its next input instead of alone).
        decode_tokens: for a pure decode step, the tokens generated per generating row (the
            engine's measured decode rate is a moving average of ``decode_tokens`` per second);
            ``None`` for a step that ingested input.
    """

    tokens: list[list[int]]
    prefed: list[int]
    took_part: list[bool]
    deferred: list[bool]
    decode_tokens: float | None = None


class ModelRunner(ABC):
    """The model-runner role: a step's feeds in, the generating sessions' next tokens out (see the
    module docstring). Implemented by :class:`TorchModelRunner` and
    :class:`adasr.vllm_backend.VllmModelRunner`; built by the engine from a :class:`RunnerSpec`
    (:data:`RunnerFactory`).

    Each engine step: the scheduler plans the sessions the runner is not :meth:`busy` with; the
    engine times :meth:`execute_model` (the forward, or vLLM's next outputs), then takes the
    tokens from :meth:`sample_tokens` and hands them to the sessions. A runner reads a step's
    sessions (status, turn, sampling settings, generator) and changes none: the engine records
    feeds and hands out tokens.
    """

    def busy(self) -> frozenset[str]:
        """Ids of sessions whose tokens the runner is still generating (vLLM: an input in flight):
        the scheduler neither asks nor feeds them. The default: none."""
        return frozenset()

    @abstractmethod
    def execute_model(self, out: "SchedulerOutput") -> None:
        """Run one step: restart ``out.restart_rows``, feed each row its feed (the engine times
        this call and charges it to the clocks)."""

    @abstractmethod
    def sample_tokens(self, out: "SchedulerOutput") -> RunnerOutput:
        """The step's tokens for the sessions that generate (after :meth:`execute_model`)."""

    @abstractmethod
    def apply_rows(self, changes: "RowChanges", freed: list["Session"]) -> None:
        """The scheduler's row changes at the start of a step (and the sessions whose rows were
        freed), applied to the KV cache."""

    def start_run(self) -> None:
        """Called by :meth:`adasr.engine.StreamingEngine.run` on an idle engine. The default: nothing."""

    @abstractmethod
    def measure_decode_rate(self, prompt_ids: list[int]) -> float:
        """Single-row greedy decode speed (tokens/s) after ``prompt_ids``."""

    @property
    @abstractmethod
    def kv_rows(self) -> int:
        """KV-cache rows (or requests) held now: one per admitted session until it is freed."""

    @abstractmethod
    def kv_bytes(self) -> int | None:
        """Bytes of the keys/values held (``None`` where the backend preallocates its own memory)."""

    @abstractmethod
    def derive(self, spec: RunnerSpec) -> "ModelRunner":
        """A runner of the same backend on the same resources (the model's weights, vLLM's runtime,
        not owned) for another engine (:meth:`adasr.engine.StreamingEngine.derive`)."""

    def close(self) -> None:
        """Release the backend's resources. The default: nothing."""


RunnerFactory = Callable[[RunnerSpec], ModelRunner]
"""Builds an engine's model runner (``StreamingEngine(runner=...)``): ``functools.partial(TorchModelRunner,
model)``, ``ModelRunner.derive`` of another engine's runner, ..."""

WARPER_CACHE_SIZE = 64
"""Sampling settings whose logits warpers are kept (:func:`logits_warpers`): a server's sessions
may send any number of distinct settings."""


@lru_cache(maxsize=WARPER_CACHE_SIZE)
def logits_warpers(params: SamplingParams, with_top_p: bool = True, vocab_size: int | None = None) -> LogitsProcessorList:
    """The logits processors of ``params``, kept for the last :data:`WARPER_CACHE_SIZE` settings
    used (an LRU cache; the processors hold no per-sequence state): the logit bias first
    (transformers' ``SequenceBiasLogitsProcessor``, one-token sequences), then temperature, top-k
    and top-p (none for greedy decoding: the argmax follows). ``with_top_p=False`` leaves top-p
    out (for :func:`draw_tokens`, which applies it). ``vocab_size`` (V of the logits) is part of
    the cache key only: the bias processor sizes its bias vector to the first logits it sees, so
    models with other vocabularies in one process get processors of their own."""
    procs = LogitsProcessorList()
    if params.logit_bias:
        procs.append(SequenceBiasLogitsProcessor({(tok,): bias for tok, bias in params.logit_bias}))
    if params.temperature > 0:
        if params.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k > 0:
            procs.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0 and with_top_p:
            procs.append(TopPLogitsWarper(params.top_p))
    return procs


NUCLEUS_CANDIDATES = 64
"""Most likely tokens in which :func:`draw_tokens` looks for a row's nucleus first; a row whose
nucleus is wider goes through the whole vocabulary."""


def nucleus(scores: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-p nucleus of each row of ``scores`` among its :data:`NUCLEUS_CANDIDATES` most likely tokens.

    Args:
        scores: (R, V) float logits after bias, temperature and top-k (``-inf``: removed).
        top_p: nucleus mass, 0 < top_p <= 1 (Holtzman et al. 2020, "The Curious Case of Neural Text
            Degeneration", Sec. 3.1).

    Returns:
        ``(ids, probs, covered)``: ``ids`` (R, K) the candidates, most likely first; ``probs``
        (R, K) their probabilities over the whole vocabulary where in the nucleus, else 0; and
        ``covered`` (R,) bool, whether the nucleus lies within the candidates (their mass reaches
        ``top_p``). A candidate is kept when the mass ranked above it is below ``top_p``: the rule
        of transformers' ``TopPLogitsWarper`` (which removes a token when the mass ranked at or
        below it is at most ``1 - top_p``), so on covered rows the kept set and its probabilities
        are the warper's. The most likely token is always kept (the warper's
        ``min_tokens_to_keep=1``), also for a ``top_p`` too small for the scores' dtype.
    """
    k = min(NUCLEUS_CANDIDATES, scores.shape[-1])
    vals, ids = scores.topk(k, dim=-1)
    probs = torch.exp(vals - torch.logsumexp(scores, dim=-1, keepdim=True))
    above = probs.cumsum(-1) - probs
    keep = above < top_p
    keep[..., 0] = True
    covered = probs.sum(-1) >= top_p
    return ids, torch.where(keep, probs, torch.zeros_like(probs)), covered


def draw_tokens(scores: torch.Tensor, generators: list[torch.Generator], top_p: float = 1.0) -> list[int]:
    """One sampled token per row of ``scores`` (R, V; logits after bias, temperature and top-k),
    from its top-p nucleus (:func:`nucleus`), with the row's own generator.

    The distribution is that of transformers' ``TopPLogitsWarper`` and a softmax over the whole
    vocabulary (``top_p == 1``: exactly that path). A top-p draw looks in the
    :data:`NUCLEUS_CANDIDATES` most likely tokens only, unless a row's nucleus is wider (then the
    warper): at 152k-token vocabularies the whole-vocabulary sort and draw took half of a batch-32
    decode step on this project's CPU (benchmarks/RESULTS.md §44). The draws are not those of the
    whole-vocabulary path for the same generator state; their distribution is.
    """
    if top_p >= 1.0:
        probs = torch.softmax(scores, dim=-1)
        return [int(torch.multinomial(p, 1, generator=g)) for p, g in zip(probs, generators)]
    ids, probs, covered = nucleus(scores, top_p)
    out = []
    for r, g in enumerate(generators):
        if covered[r]:
            out.append(int(ids[r, torch.multinomial(probs[r], 1, generator=g)]))
        else:
            wide = torch.softmax(TopPLogitsWarper(top_p)(None, scores[r:r + 1]), dim=-1)[0]
            out.append(int(torch.multinomial(wide, 1, generator=g)))
    return out


class TorchModelRunner(ModelRunner):
    """Forward passes, the KV cache rows, the prefix cache, compaction and sampling, in this
    process (see the module docstring).

    Args:
        model: a Hugging Face causal LM in eval mode.
        spec: :class:`RunnerSpec` (config, opening prefix, pad id, the engine's counters).

    Attributes:
        cache: the :class:`StreamingCache` of all rows (batch axis = rows).
        mask: ``(B, T)`` attention mask of the cached positions (0: padding or a freed row's).
        pos: per row, the position id of its next token.
        sampling: the config's :class:`~adasr.sampling.SamplingParams` (of sessions without their own).
    """

    def __init__(self, model, spec: RunnerSpec):
        self.model, self.config, self.pad_id, self.stats = model, spec.config, spec.pad_id, spec.stats
        self.device = next(model.parameters()).device
        self._cache_kw = cache_keyword(model)
        self.prefix_ids = list(spec.prefix_ids)
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.sampling = spec.config.sampling
        self._step: tuple[torch.Tensor | None, list[int]] | None = None  # (logits, run) of the step executed
        self._compact_due = False
        self.reset()

    def derive(self, spec: RunnerSpec) -> "TorchModelRunner":
        """A runner of its own (rows, prefix cache) on the same model."""
        return TorchModelRunner(self.model, spec)

    # -- rows --------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return len(self.pos)

    def reset(self) -> None:
        """Drop every row: a fresh, empty cache."""
        self.cache = StreamingCache()
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self.pos: list[int] = []

    def reset_prefix_cache(self) -> None:
        """Forget the prefix keys/values (call after the weights change)."""
        self._prefix_kv = None

    def start_run(self) -> None:
        """The prefix cache is computed anew on first use (the weights may have changed)."""
        self.reset_prefix_cache()

    @property
    def kv_rows(self) -> int:
        """Rows of the cache (:attr:`batch_size`)."""
        return self.batch_size

    def kv_bytes(self) -> int:
        """Bytes of the keys/values the cache holds (0 with no rows)."""
        total = 0
        for layer in self.cache.layers:
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if t is not None:
                    total += t.numel() * t.element_size()
        return total

    def apply_rows(self, changes, freed) -> None:
        """The row changes (:meth:`apply`), then compaction when due (after rows changed or a step ran)."""
        with torch.inference_mode():
            if changes:
                self.apply(changes)
            if (changes or self._compact_due) and self.batch_size:
                self.maybe_compact()
        self._compact_due = False

    def apply(self, changes) -> None:
        """Apply the scheduler's :class:`~adasr.scheduler.RowChanges`: rows taken over by a new
        session (old positions masked, position ids from 0), dropped rows, new rows."""
        self.restart_rows(changes.refilled)
        if changes.keep is not None:
            if not changes.keep:
                self.reset()
            else:
                self.cache.batch_select_indices(torch.tensor(changes.keep, device=self.device))
                self.mask = self.mask[changes.keep]
                self.pos = [self.pos[i] for i in changes.keep]
        if changes.added:
            self.add_rows(changes.added)

    def restart_rows(self, rows: list[int]) -> None:
        """Start rows over: their cached positions are masked (the next compaction drops them)
        and their position ids restart from 0 (a new session, or a fresh deep-stage context)."""
        for i in rows:
            self.mask[i] = 0
            self.pos[i] = 0

    def add_rows(self, n: int) -> None:
        """Append ``n`` empty rows (all their cached positions masked)."""
        for layer in self.cache.layers:
            if layer.is_initialized:
                for name in ("keys", "values"):
                    t = getattr(layer, name)
                    setattr(layer, name, torch.cat([t, t.new_zeros((n, *t.shape[1:]))]))
        self.mask = torch.cat([self.mask, self.mask.new_zeros((n, self.mask.shape[1]))])
        self.pos += [0] * n

    # -- one step ----------------------------------------------------------------------------
    @torch.inference_mode()
    def execute_model(self, out) -> None:
        """Restart ``out.restart_rows`` (fresh deep-stage contexts), then feed every row
        (:meth:`run_feeds`); the logits wait for :meth:`sample_tokens`."""
        if out.restart_rows:
            self.restart_rows(out.restart_rows)
        self._step = self.run_feeds([[tok for tok, _ in feed] for feed in out.feeds])
        self._compact_due = True

    @torch.inference_mode()
    def sample_tokens(self, out) -> RunnerOutput:
        """One token for each generating session whose row ran (:meth:`sample`). Every feed was
        fed; a step is a pure decode step when every row that ran fed one token."""
        (logits, run), self._step = self._step, None
        sessions = out.sessions
        tokens: list[list[int]] = [[] for _ in sessions]
        gen = [i for i, s in enumerate(sessions) if s.generating and run[i]]
        if gen:
            sampled = self.sample(logits[gen], [sessions[i].generator for i in gen], [sessions[i].sampling for i in gen])
            for i, tok in zip(gen, sampled):
                tokens[i] = [tok]
        decode = logits is not None and all(n == 1 for n in run if n)
        return RunnerOutput(tokens, [0] * len(sessions), [bool(f) for f in out.feeds], [False] * len(sessions),
                            1.0 if decode else None)

    def run_feeds(self, feeds: list[list[int]]) -> tuple[torch.Tensor | None, list[int]]:
        """Feed each row its tokens (one step: the prefix cache, then one forward or a split pair).

        Returns:
            ``(logits, run)``: the logits at each row's last fed token ``(B, V)`` (``None`` when
            every feed was served from the prefix cache), and per row the number of tokens the
            model ran (prefix-cache hits excluded).
        """
        run = self._open_from_prefix_cache(feeds)
        if not any(run):
            return None, [0] * len(run)
        split = self._split(run)
        if split is None:
            logits = self._forward(run)
        else:  # multi-token feeds first, then the one-token rows (see split_min_waste)
            logits = self._forward(split[0])
            decoded = self._forward(split[1])
            one = [i for i, f in enumerate(split[1]) if f]
            logits[one] = decoded[one]
            self.stats["split_steps"] += 1
        return logits, [len(f) for f in run]

    def _forward(self, feeds: list[list[int]]) -> torch.Tensor:
        """One batched forward. Returns the last-real-token logits (B, V)."""
        B, L = len(feeds), max(len(f) for f in feeds)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        new_mask = torch.zeros((B, L), dtype=torch.long)
        pos = torch.zeros((B, L), dtype=torch.long)
        last = torch.zeros(B, dtype=torch.long)
        for i, feed in enumerate(feeds):
            n, p0 = len(feed), self.pos[i]
            if n:
                ids[i, :n] = torch.tensor(feed)
                new_mask[i, :n] = 1
            pos[i] = torch.arange(p0, p0 + L)
            last[i] = max(n - 1, 0)
            self.pos[i] += n
        self.stats["tokens_fed"] += sum(len(f) for f in feeds)
        self.mask = mask = torch.cat([self.mask, new_mask.to(self.device)], dim=1)
        active = [i for i, f in enumerate(feeds) if f]
        sliced = len(active) < B and self._can_slice()
        self.stats["padded_fed"] += (len(active) if sliced else B) * L  # positions the model ran
        if not sliced:
            return self._model_logits(ids, mask, pos, last, self.cache)
        # Rows with nothing to feed sit this step out: the forward runs on the active rows' slice of
        # the cache (views when the rows are contiguous), whose new positions are then taken back;
        # the idle rows get zeros there, masked out.
        cache, full = self.cache, self.cache.layers
        cache.layers = [layer.rows(active, L) for layer in full]
        sub = self._model_logits(ids[active], mask[active], pos[active], last[active], cache)
        for layer, part in zip(full, cache.layers):
            layer.merge_rows(part, active)
        cache.layers = full
        logits = sub.new_zeros((B, sub.shape[-1]))
        logits[active] = sub
        return logits

    def _open_from_prefix_cache(self, feeds: list[list[int]]) -> list[list[int]]:
        """Serve rows whose session opens this step from the prefix cache (``config.prefix_cache``).

        Their prefix keys/values (computed once, batch 1, positions ``0..P-1``) are appended to
        the cache (P new positions: the row's prefix, masked zeros for other rows), and the
        prefix is removed from their feed. Returns the feeds left for the forward.
        """
        if not self.config.prefix_cache:
            return feeds
        P = len(self.prefix_ids)
        hit = [i for i, f in enumerate(feeds) if self.pos[i] == 0 and len(f) >= P and f[:P] == self.prefix_ids]
        if not hit:
            return feeds
        if self._prefix_kv is None:
            ids = torch.tensor([self.prefix_ids], device=self.device)
            own = StreamingCache()
            self.model(input_ids=ids, **{self._cache_kw: own}, use_cache=True, logits_to_keep=1)
            self._prefix_kv = [(layer.keys.clone(), layer.values.clone()) for layer in own.layers]
        B = len(feeds)
        idx = torch.tensor(hit, device=self.device)
        for layer_idx, (k, v) in enumerate(self._prefix_kv):
            new_k, new_v = k.new_zeros((B, *k.shape[1:])), v.new_zeros((B, *v.shape[1:]))
            new_k[idx], new_v[idx] = k, v
            self.cache.update(new_k, new_v, layer_idx)
        new_mask = torch.zeros((B, P), dtype=torch.long, device=self.device)
        new_mask[idx] = 1
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        for i in hit:
            self.pos[i] += P
        self.stats["prefix_hits"] += len(hit)
        return [f[P:] if i in hit else f for i, f in enumerate(feeds)]

    def _split(self, feeds: list[list[int]]):
        """``(multi-token feeds, one-token feeds)`` when a step is worth splitting, else None."""
        if self.config.split_min_waste is None:
            return None
        L = max(len(f) for f in feeds)
        n_one = sum(len(f) == 1 for f in feeds)
        if L < 2 or n_one == 0 or n_one * (L - 1) < self.config.split_min_waste or not self._can_slice():
            return None
        return [f if len(f) > 1 else [] for f in feeds], [f if len(f) == 1 else [] for f in feeds]

    def _can_slice(self) -> bool:
        """Row slicing needs the engine's full-attention layers (:class:`GrowableLayer`), initialised."""
        layers = self.cache.layers
        return bool(layers) and all(type(layer) is GrowableLayer and layer.is_initialized for layer in layers)

    def _model_logits(self, ids, mask, pos, last, cache) -> torch.Tensor:
        """Forward ``ids`` (R, L) and return the logits at each row's last real token (R, V)."""
        R, L = ids.shape
        keep_idx = torch.unique(last)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask,
            position_ids=pos.to(self.device),
            **{self._cache_kw: cache},
            use_cache=True,
            logits_to_keep=keep_idx.to(self.device) if L > 1 else 1,
        )
        logits = out.logits  # (R, K, V)
        if L > 1:
            col = torch.searchsorted(keep_idx, last)
            logits = logits[torch.arange(R), col.to(logits.device)]
        else:
            logits = logits[:, -1]
        return logits.float()

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, logits: torch.Tensor, generators: list[torch.Generator],
               sampling: list[SamplingParams | None] | None = None) -> list[int]:
        """Greedy or sampled next tokens for rows ``logits`` (R, V), one generator per row.

        ``sampling``: per row, its session's :class:`~adasr.sampling.SamplingParams`, or ``None``
        for the config's (:attr:`sampling`; a server's per-session sampling); ``None``: the
        config's for every row (one batched warp).
        """
        if sampling is not None and any(s is not None for s in sampling):
            return [self._sample_one(row, g, s or self.sampling) for row, g, s in zip(logits, generators, sampling)]
        if self.sampling.greedy and not self.sampling.logit_bias:
            return logits.argmax(-1).tolist()
        scores = logits_warpers(self.sampling, False, logits.shape[-1])(None, logits.cpu())
        if self.sampling.greedy:
            return scores.argmax(-1).tolist()
        return draw_tokens(scores, generators, self.sampling.top_p)

    @staticmethod
    def _sample_one(row: torch.Tensor, generator: torch.Generator, params: SamplingParams) -> int:
        if params.greedy and not params.logit_bias:
            return int(row.argmax())
        scores = logits_warpers(params, False, row.shape[-1])(None, row[None].cpu())
        if params.greedy:
            return int(scores[0].argmax())
        return draw_tokens(scores, [generator], params.top_p)[0]

    # -- housekeeping ------------------------------------------------------------------------
    def maybe_compact(self) -> None:
        """Gather padding out of the cache when it dominates."""
        mask = self.mask
        B, T = mask.shape
        if B == 0 or T < self.config.compact_min_len or mask.sum().item() >= self.config.compact_ratio * B * T:
            return
        counts = mask.sum(1)
        width = int(counts.max().item())
        # left-aligned padding in the compacted cache: order of valid positions is preserved
        idx = torch.zeros((B, width), dtype=torch.long, device=mask.device)
        new_mask = torch.zeros((B, width), dtype=torch.long, device=mask.device)
        for b in range(B):
            valid = mask[b].nonzero().squeeze(1)
            n = valid.numel()
            if n:
                idx[b, width - n:] = valid
                idx[b, : width - n] = valid[0]
                new_mask[b, width - n:] = 1
        for layer in self.cache.layers:
            k = layer.keys
            gi = idx[:, None, :, None].expand(B, k.shape[1], width, k.shape[3])
            layer.keys = torch.gather(k, 2, gi)
            layer.values = torch.gather(layer.values, 2, gi)
        self.stats["compactions"] += 1
        self.mask = new_mask

    def measure_decode_rate(self, prompt_ids: list[int], steps: int = 4) -> float:
        """Single-row greedy decode speed (tokens/s) after ``prompt_ids``, in a cache of its own."""
        ids = torch.tensor([prompt_ids], device=self.device)
        cache = StreamingCache()
        with torch.inference_mode():
            out = self.model(input_ids=ids, **{self._cache_kw: cache}, use_cache=True, logits_to_keep=1)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            t0 = time.perf_counter()
            for _ in range(steps):
                tok = self.model(input_ids=tok, **{self._cache_kw: cache}, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
        return steps / max(time.perf_counter() - t0, 1e-6)
