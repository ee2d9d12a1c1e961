"""The engine's growable KV cache: same logits as transformers' DynamicCache, in-place appends,
and row slices that write back exactly their new positions."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from adasr.kvcache import GrowableLayer, StreamingCache, cache_keyword


def _decode(model, cache, steps: int = 70, batch: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 300, (batch, 9), generator=g)
    out, logits = model(input_ids=ids, **{cache_keyword(model): cache}, use_cache=True), []
    for _ in range(steps):  # past the first capacity (64): the buffer must grow and keep its content
        tok = out.logits[:, -1:].argmax(-1)
        out = model(input_ids=tok, **{cache_keyword(model): cache}, use_cache=True)
        logits.append(out.logits[:, -1])
    return logits


def test_streaming_cache_matches_dynamic_cache(tiny_model):
    with torch.inference_mode():
        ref, got = _decode(tiny_model, DynamicCache()), _decode(tiny_model, StreamingCache())
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ref, got))


def test_appends_are_in_place_until_capacity():
    layer = GrowableLayer()
    layer.update(torch.ones(2, 1, 5, 4), torch.ones(2, 1, 5, 4))
    storage = layer.keys.untyped_storage().data_ptr()
    for i in range(59):  # 5 + 59 = 64 positions: one buffer
        layer.update(torch.full((2, 1, 1, 4), float(i)), torch.zeros(2, 1, 1, 4))
    assert layer.keys.shape == (2, 1, 64, 4) and layer.get_seq_length() == 64
    assert layer.keys.untyped_storage().data_ptr() == storage
    layer.update(torch.zeros(2, 1, 1, 4), torch.zeros(2, 1, 1, 4))  # the 65th position grows it
    assert layer.keys.untyped_storage().data_ptr() != storage
    assert layer.keys[0, 0, 63, 0] == 58 and layer.keys.shape[2] == 65


@pytest.mark.parametrize("idx", [[1, 2], [0, 2]], ids=["contiguous-views", "scattered-copies"])
def test_row_slices_write_back_their_new_positions(idx):
    layer = GrowableLayer()
    k = torch.randn(3, 2, 6, 4)
    layer.update(k, k.clone())
    sub = layer.rows(idx, 2)
    new = torch.randn(len(idx), 2, 2, 4)
    sub.update(new, new.clone())
    layer.merge_rows(sub, idx)
    assert layer.keys.shape == (3, 2, 8, 4)
    assert torch.equal(layer.keys[:, :, :6], k)  # old positions untouched
    assert torch.equal(layer.keys[idx, :, 6:], new)
    idle = [i for i in range(3) if i not in idx]
    assert torch.count_nonzero(layer.keys[idle, :, 6:]) == 0  # idle rows: zeros, masked by the engine
    assert torch.equal(layer.values[idx, :, 6:], new)


def test_assignment_replaces_the_buffer():
    layer = GrowableLayer()
    layer.update(torch.ones(3, 1, 4, 2), torch.ones(3, 1, 4, 2))
    layer.batch_select_indices(torch.tensor([0, 2]))
    layer.update(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2))
    assert layer.keys.shape == (2, 1, 5, 2) and layer.keys[:, :, :4].eq(1).all()
