"""End to end on the real bundled SmolLM2-135M-Instruct (loaded once; cached after first build)."""

from __future__ import annotations

import pytest
import torch

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine, run_episode
from adasr.models import load_model
from adasr.protocol import Episode
from adasr.stream import make_stream
from adasr.tasks.gsm8k import load_gsm8k

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def problem(gsm8k_train):
    return load_gsm8k(gsm8k_train, limit=1)[0]


def test_streamed_gsm8k_episode_renders_back_from_text(smol, problem):
    eng = StreamingEngine(smol.model, smol.tokenizer, EngineConfig(policy="interleaved", thought_budget=16, max_deep_tokens=48,
                                                                   protocol="v1"))
    res = run_episode(eng, EpisodeInput(problem.id, make_stream(problem.question), reference=problem.reference))
    assert res.record["n_chunks"] == 2 and res.record["stream_tokens"] > 0
    # re-render the finished episode from its *text* (as a training set would store it)
    text_ep = Episode(chunks=res.episode.chunks, thoughts=res.thoughts, deep=res.deep, layout="streaming")
    assert eng.format.render(text_ep).input_ids == res.token_ids


def test_batch_mode_equals_model_generate(smol, problem):
    eng = StreamingEngine(smol.model, smol.tokenizer, EngineConfig(policy="batch", max_deep_tokens=40))
    res = run_episode(eng, EpisodeInput(problem.id, make_stream(problem.question)))
    prompt = eng.format.render(Episode(chunks=res.episode.chunks, layout="batch")).input_ids
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = smol.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False,
                                  eos_token_id=sorted(eng.format.stop_ids))
    generated = out[0, len(prompt):].tolist()
    if generated and generated[-1] in eng.format.stop_ids:
        generated = generated[:-1]
    assert res.episode.deep == generated


# held-out chain_sum streams (none occurs in the training data of configs/*procedural_smollm2*.yaml)
CHAIN_SUM = [
    ("Start with 7. Add 5. Subtract 3. Add 8. Subtract 6. What is the result?", "11"),
    ("Start with 9. Subtract 4. Add 2. What is the result?", "7"),
    ("Start with 3. Add 6. Add 1. Subtract 9. What is the result?", "1"),
    ("Start with 8. Subtract 2. Subtract 7. Add 4. What is the result?", "3"),
]


def test_bundled_trained_adapter_is_a_streaming_reasoner():
    """The shipped LoRA (SFT+RL on chain_sum) thinks while reading and answers held-out streams."""
    from adasr.tasks.procedural import score

    lm = load_model("smollm2-135m-chain-sum")
    assert lm.source == "adapter" and lm.protocol == "v1"  # trained before protocol versions existed
    # interleaved: a fixed thought budget, so the outcome does not depend on this machine's speed
    # (adaptive budgets follow the measured decode rate)
    eng = StreamingEngine(lm.model, lm.tokenizer, EngineConfig(policy="interleaved", thought_budget=32, max_deep_tokens=64,
                                                                protocol=lm.protocol))
    results = list(eng.run([EpisodeInput(f"c{i}", make_stream(q), reference=a) for i, (q, a) in enumerate(CHAIN_SUM)],
                           batch_size=len(CHAIN_SUM)))
    right = sum(score("chain_sum", r.record["prediction"], r.record["reference"]) for r in results)
    assert right >= 3, [(r.thoughts, r.deep) for r in results]
    assert all(r.record["format_ok"] and r.record["stream_tokens"] > 0 for r in results)
    assert all(r.record["deep_tokens"] < 32 for r in results)  # the work was done while reading
