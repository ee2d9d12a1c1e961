"""SamplingParams: one validated object from the config and the wire to the runner; the runner's
cache of logits warpers is bounded; the wire's stream defaults are the CLI's; the logit bias
(``--logit-bias``) moves greedy and sampled choices; top-p draws have the warper's distribution."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import TopPLogitsWarper

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine
from adasr.errors import ConfigError
from adasr.runner import NUCLEUS_CANDIDATES, WARPER_CACHE_SIZE, draw_tokens, logits_warpers, nucleus
from adasr.sampling import GREEDY, SamplingParams, parse_logit_bias, resolve_logit_bias
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


def test_logit_bias_is_validated_sorted_and_part_of_the_settings():
    p = SamplingParams(logit_bias={7: -1.5, 3: 2})
    assert p.logit_bias == ((3, 2.0), (7, -1.5)) and p.greedy and hash(p) == hash(SamplingParams(logit_bias=((7, -1.5), (3, 2))))
    assert p != GREEDY and EngineConfig(logit_bias={7: -1.5, 3: 2.0}).sampling == p
    for bad in ({-1: 1.0}, {True: 1.0}, {2: float("nan")}, {2: float("inf")}, {2: "1"}, ((1, 2.0), (1, 3.0)), ((1,),)):
        with pytest.raises(ConfigError, match="logit_bias"):
            SamplingParams(logit_bias=bad)


def test_parse_logit_bias_keeps_the_texts_spaces_and_refuses_bad_values():
    assert parse_logit_bias([" yes=-0.85", "a=b=2"]) == {" yes": -0.85, "a=b": 2.0}
    for bad in (["yes"], ["=1"], [" yes=x"], [" yes=nan"], [" yes=1", " yes=2"]):
        with pytest.raises(ConfigError, match="--logit-bias"):
            parse_logit_bias(bad)


def test_resolve_logit_bias_needs_one_token(tiny_tokenizer):
    text = tiny_tokenizer.decode([tiny_tokenizer.encode("a", add_special_tokens=False)[0]])
    ((tok, bias),) = resolve_logit_bias(tiny_tokenizer, {text: -2.0})
    assert tiny_tokenizer.decode([tok]) == text and bias == -2.0
    with pytest.raises(ConfigError, match="a bias applies to one token"):
        resolve_logit_bias(tiny_tokenizer, {"a b c d": 1.0})


def test_a_logit_bias_moves_greedy_and_sampled_choices(tiny_model, tiny_tokenizer):
    """Greedy decoding takes the argmax of the biased logits, batched or per session; a bias of
    -inf-like size removes a token from sampling; with two tokens left, the greedy choice between
    them is a probability threshold (the commit threshold of docs/DESIGN.md)."""
    runner = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(decode_rate=50.0, logit_bias={5: -3.0})).runner
    logits = torch.full((2, len(tiny_tokenizer)), -30.0)
    logits[:, 5], logits[:, 9] = 2.0, 0.0  # p(5) / (p(5) + p(9)) = 0.88
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    assert runner.sample(logits, gens) == [9, 9]  # the config's bias: 0.88 < tau = 1 / (1 + e^-3) = 0.95
    assert runner.sample(logits, gens, [GREEDY, None]) == [5, 9]  # per-session settings, None: the config's
    tau = 0.8  # bias ln((1 - tau) / tau): 0.88 > 0.8 keeps token 5
    assert runner.sample(logits, gens, [SamplingParams(logit_bias={5: math.log((1 - tau) / tau)})] * 2) == [5, 5]
    hot = SamplingParams(temperature=1.0, logit_bias={5: -1e4})
    assert all(runner.sample(logits, [torch.Generator().manual_seed(i)], [hot]) == [9] for i in range(20))
    # the same settings on a model with a larger vocabulary (the bias processor is sized per vocabulary)
    wide = torch.full((2, len(tiny_tokenizer) + 7), -30.0)
    wide[:, 5], wide[:, -1] = 2.0, 0.0
    assert runner.sample(wide, gens) == [wide.shape[1] - 1] * 2


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.floats(0.1, 30.0), top_p=st.floats(0.05, 0.999), vocab=st.sampled_from([40, 1000]))
def test_the_nucleus_among_the_candidates_is_the_warpers(seed, scale, top_p, vocab):
    """On rows it covers, :func:`nucleus` keeps the tokens transformers' TopPLogitsWarper keeps,
    with the probabilities a softmax over the whole vocabulary gives them; it says which rows it
    does not cover (a nucleus wider than the candidates)."""
    scores = torch.randn(4, vocab, generator=torch.Generator().manual_seed(seed)) * scale
    scores[1, :] = 0.0  # flat: the nucleus is wider than the candidates for top_p > K / V
    scores[2, 3:] = -math.inf  # a top-k warper's leftovers
    want = torch.softmax(TopPLogitsWarper(top_p)(None, scores.clone()), dim=-1)
    ids, probs, covered = nucleus(scores, top_p)
    assert ids.shape == probs.shape == (4, min(NUCLEUS_CANDIDATES, vocab)) and bool(covered[2])
    assert bool(covered[1]) == (min(NUCLEUS_CANDIDATES, vocab) / vocab >= top_p)
    full = torch.zeros_like(want).scatter(1, ids, probs)
    for r in range(4):
        if covered[r]:
            # the same kept set (ties at the boundary aside, which random floats do not make)
            assert torch.equal(full[r] > 0, want[r] > 0) or r == 1
            if r != 1:
                kept = want[r] > 0
                torch.testing.assert_close(full[r][kept] / full[r].sum(), want[r][kept], rtol=1e-5, atol=1e-6)


def test_top_p_draws_follow_the_warpers_distribution():
    """Frequencies of :func:`draw_tokens` over many draws match the warper's probabilities, on a
    row the candidates cover and on a row they do not (the whole-vocabulary fallback); with
    ``top_p == 1`` the draws are a softmax's, token for token."""
    V = 500
    scores = torch.full((2, V), -15.0)
    scores[0, [7, 8, 9]] = torch.tensor([2.0, 1.5, 0.5])  # nucleus {7, 8, 9} at top_p 0.9
    scores[1] = torch.linspace(0.0, 0.01, V)  # nearly flat: ~450 tokens in the nucleus
    n = 3000
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    draws = [draw_tokens(scores, gens, 0.9) for _ in range(n)]
    want = torch.softmax(TopPLogitsWarper(0.9)(None, scores.clone()), dim=-1)
    first = torch.bincount(torch.tensor([d[0] for d in draws]), minlength=V).float() / n
    assert set(torch.nonzero(first).flatten().tolist()) <= {7, 8, 9}
    torch.testing.assert_close(first[[7, 8, 9]], want[0, [7, 8, 9]], atol=0.03, rtol=0)
    second = torch.tensor([d[1] for d in draws])
    assert bool((want[1, second] > 0).all()) and len(set(second.tolist())) > 300  # the wide nucleus, whole vocabulary
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert draw_tokens(scores, [g1, g1], 1.0) == [int(torch.multinomial(p, 1, generator=g2)) for p in torch.softmax(scores, -1)]


@pytest.mark.parametrize("top_p", [5.8e-111, 1e-45, 1e-9])
def test_a_tiny_top_p_keeps_the_most_likely_token(top_p):
    """A top_p the scores' float32 cannot hold (the server's fuzz test sent 5.8e-111) still keeps
    the most likely token, as the warper's ``min_tokens_to_keep=1`` does: the draw is greedy,
    never an empty distribution."""
    scores = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))
    ids, probs, covered = nucleus(scores, top_p)
    assert bool(covered.all()) and bool((probs[:, 0] > 0).all()) and bool((probs[:, 1:] == 0).all())
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    assert draw_tokens(scores, gens, top_p) == scores.argmax(-1).tolist()
