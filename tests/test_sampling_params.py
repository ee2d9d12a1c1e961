"""SamplingParams: one validated object from the config and the wire to the runner; the runner's
cache of logits warpers is bounded; the wire's stream defaults are the CLI's."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine
from adasr.errors import ConfigError
from adasr.runner import WARPER_CACHE_SIZE, logits_warpers
from adasr.sampling import GREEDY, SamplingParams
from adasr.serve.wire import SessionSettings, SolveRequest
from adasr.stream import Chunk, ScheduledStream


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(temperature=float("nan")), dict(temperature=float("inf")),
                                 dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1), dict(top_k=2.5), dict(top_k=True)])
def test_out_of_range_settings_are_refused(bad):
    with pytest.raises(ConfigError, match="sampling needs"):
        SamplingParams(**bad)
    with pytest.raises(ConfigError, match="sampling needs"):
        EngineConfig(**bad).validate()


def test_sampling_params_are_frozen_hashable_and_named():
    p = SamplingParams(0.7, 0.9, 40)
    assert (p.temperature, p.top_p, p.top_k) == (0.7, 0.9, 40) and not p.greedy and GREEDY.greedy
    assert p == SamplingParams(temperature=0.7, top_p=0.9, top_k=40) and len({p, SamplingParams(0.7, 0.9, 40)}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature = 1.0  # type: ignore[misc]
    assert EngineConfig(temperature=0.7, top_p=0.9, top_k=40).sampling == p
    assert EngineConfig().sampling == GREEDY


def test_session_settings_fill_unset_sampling_from_the_servers():
    server = SamplingParams(0.5, 0.8, 10)
    assert SessionSettings().sampling(server) is None  # the session samples as the server does
    assert SessionSettings(top_k=3).sampling(server) == SamplingParams(0.5, 0.8, 3)
    assert SessionSettings(temperature=0, top_p=1.0).sampling(server) == SamplingParams(0, 1.0, 10)


def test_add_session_takes_sampling_params_only(tiny_model, tiny_tokenizer):
    eng = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy="batch", max_deep_tokens=4, decode_rate=50.0))
    src = ScheduledStream([Chunk(0, "Add 5.", 0.5)])
    with pytest.raises(ConfigError, match="SamplingParams"):
        eng.add_session(EpisodeInput("a", src), sampling=(1.0, 1.0, 0))  # type: ignore[arg-type]
    sid = eng.add_session(EpisodeInput("a", src), sampling=SamplingParams(1.0, 0.9, 5))
    assert eng.session(sid).sampling == SamplingParams(1.0, 0.9, 5)


def test_the_warper_cache_is_bounded(tiny_model, tiny_tokenizer):
    """A server whose clients send ever new sampling settings keeps at most WARPER_CACHE_SIZE of
    them; sampling with a setting that was evicted gives the same tokens (warpers hold no state)."""
    assert WARPER_CACHE_SIZE == 64 and logits_warpers.cache_info().maxsize == WARPER_CACHE_SIZE
    runner = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(decode_rate=50.0)).runner
    logits = torch.randn(2, len(tiny_tokenizer))

    def sample(params: SamplingParams) -> list[int]:
        gens = [torch.Generator().manual_seed(i) for i in range(2)]
        return runner.sample(logits, gens, [params, params])

    first = SamplingParams(1.0, 0.95, 7)
    before = sample(first)
    for k in range(1, 3 * WARPER_CACHE_SIZE):
        sample(SamplingParams(1.0, 1.0, k))
        assert logits_warpers.cache_info().currsize <= WARPER_CACHE_SIZE
    assert logits_warpers.cache_info().currsize == WARPER_CACHE_SIZE
    assert sample(first) == before


def test_the_wire_defaults_are_the_clis():
    from adasr.defaults import DEFAULT_CHUNKER, DEFAULT_WPS

    body = SolveRequest(text="Add 5.")
    assert body.wps == DEFAULT_WPS and body.chunker == DEFAULT_CHUNKER
