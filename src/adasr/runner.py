"""The model runner: the forward passes over the batch's rows of one persistent KV cache.

The runner knows token ids and rows, not sessions. Each row of the batch holds one session's
keys/values; every step feeds each row its new tokens only (the prefix lives in the cache), so
ingesting a chunk costs its own length, not the prefix's.

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

Design source: the KV-cache engine that injects tokens the model did not generate follows
karpathy/nanochat ``engine.py``.
"""

from __future__ import annotations

import time

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from adasr.kvcache import GrowableLayer, StreamingCache, cache_keyword


class ModelRunner:
    """Forward passes, the KV cache rows, the prefix cache, compaction and sampling.

    Args:
        model: a Hugging Face causal LM in eval mode.
        config: the :class:`~adasr.engine.EngineConfig` (sampling, compaction, split, prefix cache).
        pad_id: token id of padded positions (masked).
        prefix_ids: the opening prefix every session starts with (the system prompt).
        stats: the engine's counters, updated in place (``split_steps``, ``compactions``,
            ``tokens_fed``, ``padded_fed``, ``prefix_hits``).

    Attributes:
        cache: the :class:`StreamingCache` of all rows (batch axis = rows).
        mask: ``(B, T)`` attention mask of the cached positions (0: padding or a freed row's).
        pos: per row, the position id of its next token.
    """

    def __init__(self, model, config, pad_id: int, prefix_ids: list[int], stats: dict):
        self.model, self.config, self.pad_id, self.stats = model, config, pad_id, stats
        self.device = next(model.parameters()).device
        self._cache_kw = cache_keyword(model)
        self.prefix_ids = list(prefix_ids)
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.warpers = self._warpers()
        self._warper_cache: dict[tuple[float, float, int], LogitsProcessorList] = {}
        self.reset()

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
    def execute(self, feeds: list[list[int]]) -> tuple[torch.Tensor | None, list[int]]:
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
    def _warpers(self, temperature: float | None = None, top_p: float | None = None,
                 top_k: int | None = None) -> LogitsProcessorList:
        """Logits warpers of the config's sampling settings, or of the ones given."""
        c = self.config
        temperature = c.temperature if temperature is None else temperature
        top_p = c.top_p if top_p is None else top_p
        top_k = c.top_k if top_k is None else top_k
        procs = LogitsProcessorList()
        if temperature > 0:
            if temperature != 1.0:
                procs.append(TemperatureLogitsWarper(temperature))
            if top_k > 0:
                procs.append(TopKLogitsWarper(top_k))
            if top_p < 1.0:
                procs.append(TopPLogitsWarper(top_p))
        return procs

    def sample(self, logits: torch.Tensor, generators: list[torch.Generator],
               sampling: list[tuple[float, float, int] | None] | None = None) -> list[int]:
        """Greedy or sampled next tokens for rows ``logits`` (R, V), one generator per row.

        ``sampling``: per row, ``(temperature, top_p, top_k)`` of its session, or ``None`` for the
        config's (a server's per-session sampling); ``None``: the config's for every row.
        """
        if sampling is not None and any(s is not None for s in sampling):
            return [self._sample_one(row, g, s) for row, g, s in zip(logits, generators, sampling)]
        if self.config.temperature == 0:
            return logits.argmax(-1).tolist()
        scores = self.warpers(None, logits.cpu())
        probs = torch.softmax(scores, dim=-1)
        return [int(torch.multinomial(p, 1, generator=g)) for p, g in zip(probs, generators)]

    def _sample_one(self, row: torch.Tensor, generator: torch.Generator,
                    sampling: tuple[float, float, int] | None) -> int:
        c = self.config
        key = sampling if sampling is not None else (c.temperature, c.top_p, c.top_k)
        if key[0] == 0:
            return int(row.argmax())
        warpers = self._warper_cache.get(key)
        if warpers is None:
            warpers = self._warper_cache[key] = self._warpers(*key)
        probs = torch.softmax(warpers(None, row[None].cpu()), dim=-1)[0]
        return int(torch.multinomial(probs, 1, generator=generator))

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
