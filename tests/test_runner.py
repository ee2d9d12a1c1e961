"""The model runner (adasr.runner) on a tiny random model: cache compaction, split steps, batch
occupancy and the prefix cache keep the tokens of plain runs."""

from __future__ import annotations

import pytest
import torch

from adasr.engine import EpisodeInput, run_episode
from adasr.errors import ConfigError
from adasr.kvcache import cache_keyword
from adasr.stream import VirtualClock

from engine_helpers import engine, stream


def test_cache_compaction_keeps_results(tiny_model, tiny_tokenizer):
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved", compact_min_len=16, compact_ratio=0.9)
    single = {r.id: r.token_ids for r in (run_episode(eng, EpisodeInput(f"e{i}", stream(3 + i))) for i in range(3))}
    eng.stats["compactions"] = 0
    batched = list(eng.run([EpisodeInput(f"e{i}", stream(3 + i)) for i in range(3)], batch_size=3))
    assert eng.stats["compactions"] > 0
    assert all(r.token_ids == single[r.id] for r in batched)


def test_split_steps_keep_results(tiny_model, tiny_tokenizer):
    """A step mixing chunk ingests with decoded tokens runs as two forwards (no padding of the
    decode rows to the chunk's length); the tokens are those of an unsplit run."""
    inputs = lambda: [EpisodeInput(f"e{i}", stream(3 + i % 2, gap=0.3 + 0.25 * i, off=i)) for i in range(4)]  # noqa: E731
    plain = engine(tiny_model, tiny_tokenizer, policy="interleaved", split_min_waste=None)
    ref = {r.id: r.token_ids for r in plain.run(inputs(), batch_size=4, clock="per-stream")}
    assert plain.stats["split_steps"] == 0
    split = engine(tiny_model, tiny_tokenizer, policy="interleaved", split_min_waste=1)
    out = {r.id: r.token_ids for r in split.run(inputs(), batch_size=4, clock="per-stream")}
    assert split.stats["split_steps"] > 0 and split.stats["padded_fed"] < plain.stats["padded_fed"]
    assert out == ref
    with pytest.raises(ConfigError, match="split_min_waste"):
        engine(tiny_model, tiny_tokenizer, split_min_waste=0)


def test_stats_count_batch_occupancy(tiny_model, tiny_tokenizer):
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved")
    list(eng.run([EpisodeInput("one", stream(3))]))
    assert eng.stats["row_steps"] == eng.stats["steps"] > 0
    eng.stats.update(steps=0, row_steps=0)
    list(eng.run([EpisodeInput(f"e{i}", stream(3, off=i)) for i in range(3)], batch_size=3))
    assert eng.stats["steps"] < eng.stats["row_steps"] <= 3 * eng.stats["steps"]


@pytest.mark.parametrize("mode", ["batch", "adaptive"])
def test_prefix_cache_opens_sessions_without_prefill_and_keeps_results(tiny_model, tiny_tokenizer, mode):
    # a pinned decode rate and a fixed cost per step: budgets, yields and which rows share a step
    # do not depend on how loaded the machine is (sampled tokens would differ otherwise)
    inputs = lambda: [EpisodeInput(f"e{i}", stream(2 + i % 3, gap=5.0, off=i)) for i in range(5)]  # noqa: E731
    runs = {}
    for cached in (False, True):
        eng = engine(tiny_model, tiny_tokenizer, policy=mode, prefix_cache=cached, temperature=1.0, seed=3,
                     decode_rate=50.0)
        clock = VirtualClock(fixed_step_s=0.01)
        runs[cached] = (eng.stats, {r.id: r for r in eng.run(inputs(), batch_size=3, clock=clock)})
    (off_stats, off), (on_stats, on) = runs[False], runs[True]
    assert on_stats["prefix_hits"] == 5 and off_stats["prefix_hits"] == 0
    P = len(engine(tiny_model, tiny_tokenizer, policy=mode).format.prefix_ids("batch" if mode == "batch" else "streaming"))
    assert off_stats["tokens_fed"] - on_stats["tokens_fed"] == 5 * P
    for i, r in on.items():
        assert r.token_ids == off[i].token_ids and r.thoughts == off[i].thoughts and r.deep == off[i].deep


def test_prefix_cache_injects_exact_prefix_keys_values(tiny_model, tiny_tokenizer):
    eng = engine(tiny_model, tiny_tokenizer, policy="adaptive")
    prefix, chunk = eng.format.prefix_ids("streaming"), eng.format.chunk_ids("Add 5.", "streaming", first=True)
    P, C = len(prefix), len(chunk)
    runner = eng.runner
    runner.add_rows(3)
    runner.pos[1] = 7  # mid-episode: not served from the prefix cache
    opening = prefix + chunk
    with torch.inference_mode():
        run = runner._open_from_prefix_cache([opening, [5], opening])
        mask, cache = runner.mask, runner.cache
        assert run == [opening[P:], [5], opening[P:]] and runner.pos == [P, 7, P]
        assert mask.tolist() == [[1] * P, [0] * P, [1] * P]
        cache.batch_select_indices(torch.tensor([0, 2]))  # the chunk on top of the injected prefix ...
        attn = torch.cat([mask[[0, 2]], torch.ones(2, C, dtype=torch.long)], 1)
        out = tiny_model(input_ids=torch.tensor([chunk] * 2), attention_mask=attn,
                         position_ids=torch.arange(P, P + C).expand(2, C), **{cache_keyword(tiny_model): cache}, use_cache=True)
        ref = tiny_model(input_ids=torch.tensor([prefix + chunk])).logits[0, P:]  # ... = one plain prefill
    assert torch.allclose(out.logits[0], ref, atol=1e-5) and torch.allclose(out.logits[1], ref, atol=1e-5)
