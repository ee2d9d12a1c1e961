"""The engine's KV cache: a ``DynamicCache`` whose layers grow in place.

``transformers``' :class:`~transformers.DynamicLayer` appends a step's keys/values with
``torch.cat``, which copies the whole cache every step: at batch 8 and a few hundred cached
positions that copy is ~15% of a CPU decode step, and it grows with the prefix. The layers here
keep keys/values in a buffer with spare capacity along the sequence axis (doubled when full) and
write each step's new positions into it, so an append costs the new tokens only (amortised).
Attention reads a view of the filled part.

Everything else is ``DynamicLayer``'s: assigning ``layer.keys``/``layer.values`` (row selection,
compaction) replaces the buffer, and the next append grows it again.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

_ALIGN = 64  # capacity is a multiple of this many positions


class GrowableLayer(DynamicLayer):
    """A full-attention cache layer with in-place appends.

    ``keys``/``values`` read as tensors of shape (batch, kv_heads, seq_len, head_dim): views of
    buffers of shape (batch, kv_heads, capacity, head_dim) with ``capacity >= seq_len``.
    """

    def __init__(self):
        self._buf: dict[str, torch.Tensor | None] = {"keys": None, "values": None}
        self._len: dict[str, int] = {"keys": 0, "values": 0}
        super().__init__()

    def _get(self, name: str) -> torch.Tensor | None:
        buf = self._buf[name]
        return buf if buf is None or buf.dim() != 4 else buf[:, :, : self._len[name]]

    def _set(self, name: str, t: torch.Tensor | None) -> None:
        self._buf[name] = t
        self._len[name] = t.shape[-2] if t is not None and t.dim() == 4 else 0

    keys = property(lambda self: self._get("keys"), lambda self, t: self._set("keys", t))
    values = property(lambda self: self._get("values"), lambda self, t: self._set("values", t))

    def _reserve(self, name: str, add: int, like: torch.Tensor) -> torch.Tensor:
        """The buffer, grown (zero-filled: masked positions must hold finite numbers) to fit ``add`` more."""
        buf, n = self._buf[name], self._len[name]
        if buf is not None and buf.dim() == 4 and buf.shape[-2] >= n + add:
            return buf
        cap = max(2 * (buf.shape[-2] if buf is not None and buf.dim() == 4 else 0), n + add)
        grown = like.new_zeros((*like.shape[:2], -(-cap // _ALIGN) * _ALIGN, like.shape[3]))
        if n:
            grown[:, :, :n] = buf[:, :, :n]
        self._buf[name] = grown
        return grown

    def _append(self, name: str, new: torch.Tensor) -> None:
        n, add = self._len[name], new.shape[-2]
        self._reserve(name, add, new)[:, :, n : n + add] = new
        self._len[name] = n + add

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Append (batch, kv_heads, new_len, head_dim) keys/values; return the full views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._append("keys", key_states)
        self._append("values", value_states)
        return self.keys, self.values

    @staticmethod
    def _is_span(idx: list[int]) -> bool:
        """Whether rows ``idx`` are consecutive (then a slice of them is a view, not a copy)."""
        return idx == list(range(idx[0], idx[0] + len(idx)))

    def rows(self, idx: list[int], add: int) -> "GrowableLayer":
        """A layer over batch rows ``idx`` with room for ``add`` more positions.

        Consecutive ``idx`` give views of this layer's buffers (appends land here directly);
        otherwise the rows are copied. Either way, call :meth:`merge_rows` after the forward.
        """
        sub = GrowableLayer()
        sub.device, sub.is_initialized = self.device, True
        if hasattr(self, "dtype"):  # transformers < 5.24 keeps the dtype on the layer
            sub.dtype = self.dtype
        span = self._is_span(idx)
        picked = None if span else torch.tensor(idx, device=self.device)
        for name in ("keys", "values"):
            buf, n = self._reserve(name, add, self._buf[name]), self._len[name]
            sub._buf[name] = (buf.narrow(0, idx[0], len(idx)) if span else
                              torch.index_select(buf.narrow(2, 0, n + add), 0, picked))
            sub._len[name] = n
        return sub

    def merge_rows(self, sub: "GrowableLayer", idx: list[int]) -> None:
        """Take back the positions a forward appended to ``sub = self.rows(idx, add)``; other rows
        get zeros there (they must be masked out)."""
        span = self._is_span(idx)
        for name in ("keys", "values"):
            n, m = self._len[name], sub._len[name]
            if not span:  # sub holds copies: write its new positions back
                self._buf[name][idx, :, n:m] = sub._buf[name][:, :, n:m]
            self._len[name] = m


def cache_keyword(model: torch.nn.Module) -> str:
    """The keyword argument that passes a cache to ``model``'s forward: ``"cache"`` where its
    forward takes one (transformers >= 5.24), else ``"past_key_values"``.

    PEFT wrappers are unwrapped to read the base model's signature. Call once per model: it
    inspects the signature.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class StreamingCache(DynamicCache):
    """A :class:`~transformers.DynamicCache` made of :class:`GrowableLayer` (lazily, one per layer)."""

    def __init__(self):
        super().__init__()
        self.layer_class_to_replicate = GrowableLayer
