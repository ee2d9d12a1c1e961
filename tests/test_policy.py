"""Thought-budget policies (adasr.policy): slack budgets, complete steps, and the adaptive and
proactive policies driving the engine on a tiny random model (steered to write a script)."""

from __future__ import annotations

import json

import pytest

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine, run_episode
from adasr.policy import AdaptivePolicy, PolicyContext
from adasr.stream import VirtualClock

from engine_helpers import TEXTS, Scripted, stream


def test_adaptive_budget_follows_slack():
    ctx = PolicyContext(0, now_s=1.0, next_arrival_s=3.0, pending_chunks=0, decode_tokens_per_s=10.0)
    assert AdaptivePolicy(thought_budget=64).budget_for(ctx) == 20
    assert AdaptivePolicy(thought_budget=8).budget_for(ctx) == 8
    # a backlog (chunks waiting) shortens the thought to one step (a 1-token budget, held to the
    # step's end), it does not force a skip; a zero thought budget does
    burst = PolicyContext(0, now_s=1.0, next_arrival_s=None, pending_chunks=2, decode_tokens_per_s=10.0)
    assert AdaptivePolicy(thought_budget=64).budget_for(burst) == 1
    assert AdaptivePolicy(thought_budget=0).budget_for(ctx) == 0


def test_a_live_source_estimates_its_slack_from_the_arrivals_seen():
    """No known next arrival: the last arrival plus the mean gap between arrivals (not a fixed 32)."""
    live = PolicyContext(2, now_s=2.0, next_arrival_s=None, pending_chunks=0, decode_tokens_per_s=10.0,
                         arrivals_s=(1.0, 1.5, 2.0))
    assert live.expected_next_arrival_s == pytest.approx(2.5) and live.slack_s == pytest.approx(0.5)
    assert AdaptivePolicy(thought_budget=64).budget_for(live) == 5
    first = PolicyContext(0, now_s=3.0, next_arrival_s=None, pending_chunks=0, decode_tokens_per_s=10.0,
                          arrivals_s=(3.0,))
    assert first.slack_s == pytest.approx(3.0)  # one arrival: as long again as it took to arrive
    assert PolicyContext(0, 1.0, None, 0, 10.0).slack_budget() is None  # nothing known


def test_step_complete():
    from adasr.policy import step_complete

    assert not step_complete(" ") and not step_complete("\n") and step_complete("") and step_complete("7 + 5 = 12.") and step_complete("so 12.\n") and step_complete("x = 3. ")
    assert step_complete('He said "yes."') and step_complete("Is it 4?")
    assert not step_complete("7 + 5 = ") and not step_complete("7 + 5 = 12") and not step_complete("The total")


def test_an_adaptive_thought_is_not_cut_in_the_middle_of_a_step(tiny_model, tiny_tokenizer):
    """Slower, never wrong: a thought runs on to the end of its step past its slack budget and past
    the next chunk's arrival (which waits in a backlog); before, "7 + 5 = " was cut off."""
    fmt = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy="adaptive")).format
    script = tiny_tokenizer.encode("ab=c.")
    assert len(script) >= 3 and len(set(script)) == len(script)
    model = Scripted(tiny_model, fmt.assistant_header[-1], script, fmt.end_of_turn_id)

    def thoughts(decode_rate, step_s, budget=32):
        eng = StreamingEngine(model, tiny_tokenizer, EngineConfig(policy="adaptive", thought_budget=budget,
                                                                  decode_rate=decode_rate, max_deep_tokens=2))
        res = next(eng.run([EpisodeInput("a", stream(3, gap=1.0))], clock=VirtualClock(fixed_step_s=step_s)))
        return [t for t in res.thoughts if t], res.record

    # 1 s of slack at 2 tokens/s: a 2-token budget; the step needs more
    done, _ = thoughts(2.0, 0.01)
    assert done and all(t == "ab=c." for t in done)
    # every step costs 0.4 s: the next chunk arrives mid-thought and waits (a backlog), the step ends
    done, rec = thoughts(100.0, 0.4)
    assert done and all(t == "ab=c." for t in done) and rec["max_backlog_s"] > 0
    # the overrun is bounded by the thought budget
    done, _ = thoughts(2.0, 0.01, budget=2)
    assert all(len(tiny_tokenizer.encode(t)) <= 2 for t in done)


def test_proactive_hook_ends_episode_before_eoi(tiny_model, tiny_tokenizer):
    """A policy may commit an answer in a streaming thought (proactive mode) without engine changes."""
    from adasr.policy import InterleavedPolicy

    class AnswerAtOnce(InterleavedPolicy):
        name = "proactive-toy"

        def commits_answer(self, thought: str) -> bool:
            return True

    eng = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy=AnswerAtOnce(thought_budget=4), max_deep_tokens=8,
                                                                       protocol="v1"))
    res = run_episode(eng, EpisodeInput("p", stream(4, gap=1.0)))
    assert res.record["n_chunks"] == 1 and res.record["deep_tokens"] == 0
    assert res.record["post_input_latency_s"] < 0  # answered before the input ended (EOI at 4 s)
    assert any(e["type"] == "answer" and e["early"] for e in res.events)


def test_proactive_mode_responds_in_a_streaming_thought(tiny_model, tiny_tokenizer, tmp_path):
    """``--mode proactive``: a one-line thought holding ``\\boxed{}`` commits the answer and ends
    the episode at that chunk; the record and the evaluation summary carry the proactive fields."""
    from adasr.evaluation import evaluate
    from adasr.policy import ProactivePolicy, make_policy
    from adasr.tasks.base import Item

    fmt = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy="proactive")).format
    assert fmt.protocol.name == "proactive-v1" and fmt.protocol.one_line_thoughts
    assert isinstance(make_policy("proactive"), ProactivePolicy)
    assert ProactivePolicy().commits_answer("so \\boxed{7}") and not ProactivePolicy().commits_answer("\\boxed{ }")
    model = Scripted(tiny_model, fmt.assistant_header[-1], tiny_tokenizer.encode("\\boxed{7}"),
                      tiny_tokenizer.encode("\n")[0])
    eng = StreamingEngine(model, tiny_tokenizer, EngineConfig(policy="proactive", thought_budget=12, decode_rate=100.0))
    # a fixed cost per step: on a loaded machine measured steps would let chunk 1 cut the response short
    res = next(eng.run([EpisodeInput("p", stream(4, gap=1.0), reference="7", evidence_chunk=0)],
                       clock=VirtualClock(fixed_step_s=0.01)))
    rec = res.record
    assert rec["prediction"] == "7" and rec["answer_chunk"] == 0 and rec["deep_tokens"] == 0
    assert rec["evidence_chunk"] == 0 and rec["evidence_s"] == 1.0 and rec["answer_s"] > 1.0
    assert any(e["type"] == "answer" and e["early"] for e in res.events)
    items = [Item(f"i{k}", "x", "7", k + 1, chunks=list(TEXTS[:4]), evidence_chunk=k) for k in (0, 2)]
    summary = evaluate(lambda mode: StreamingEngine(model, tiny_tokenizer, EngineConfig(
        policy=mode, thought_budget=12, decode_rate=100.0)), items, modes=["proactive"], out_dir=tmp_path,
        progress=False, step_s=0.01)["proactive"]
    recs = {r["id"]: r for r in map(json.loads, (tmp_path / "proactive" / "results.jsonl").read_text().splitlines())}
    assert recs["i0"]["timely"] and recs["i0"]["response_delay_chunks"] == 0 and recs["i0"]["proactive_score"] == 1.0
    assert recs["i2"]["premature"] and recs["i2"]["proactive_score"] == 0.0 and not recs["i2"]["timely"]
    assert summary["proactive"]["premature_rate"] == 0.5 and summary["proactive"]["timely_correct_rate"] == 0.5


def test_a_proactive_turn_is_held_to_its_end_on_a_slow_machine(tiny_model, tiny_tokenizer, monkeypatch):
    """Slower, never wrong in proactive mode: a turn (a note, then maybe the response) runs past
    the slack budget up to the thought budget and does not yield to the next chunk, and a chunk
    that waits behind another still gets its turn (RESULTS.md section 32: on a busy CPU the
    evidence chunk's check was skipped and nothing was answered)."""
    fmt = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy="proactive")).format
    script = tiny_tokenizer.encode("x \\boxed{7}")
    assert len(script) > 3
    model = Scripted(tiny_model, fmt.assistant_header[-1], script, tiny_tokenizer.encode("\n")[0])
    # slack: 1 s to the next chunk at 3 tokens/s = a 3-token budget; the response needs more
    eng = StreamingEngine(model, tiny_tokenizer, EngineConfig(policy="proactive", thought_budget=32, decode_rate=3.0))
    res = next(eng.run([EpisodeInput("p", stream(4, gap=1.0), reference="7")], clock=VirtualClock(fixed_step_s=0.01)))
    assert res.record["prediction"] == "7" and res.record["answer_chunk"] == 0
    # the next chunk arrives after 3 steps (0.3 s each): the response goes on past the arrival
    eng = StreamingEngine(model, tiny_tokenizer, EngineConfig(policy="proactive", thought_budget=32, decode_rate=100.0))
    res = next(eng.run([EpisodeInput("p", stream(4, gap=1.0), reference="7")], clock=VirtualClock(fixed_step_s=0.3)))
    assert res.record["prediction"] == "7" and res.record["answer_chunk"] == 0
    # a note is held to its end too, past the 3-token slack budget, after every chunk but the last
    # (end of input: the deep stage); the backlog this makes (a note takes 2-3 s at 0.3 s a step,
    # chunks come every 1 s) delays the turns and skips none
    words = "Then she sold half as many clips."
    note = Scripted(tiny_model, fmt.assistant_header[-1], tiny_tokenizer.encode(words), tiny_tokenizer.encode("\n")[0])
    assert tiny_tokenizer.decode(tiny_tokenizer.encode(words)) == words and len(tiny_tokenizer.encode(words)) > 3
    eng = StreamingEngine(note, tiny_tokenizer, EngineConfig(policy="proactive", thought_budget=32, decode_rate=3.0,
                                                            max_deep_tokens=4))
    res = next(eng.run([EpisodeInput("p", stream(3, gap=1.0))], clock=VirtualClock(fixed_step_s=0.3)))
    assert res.record["answer_chunk"] is None and res.thoughts[:2] == [words] * 2
    assert res.record["max_backlog_s"] > 0
    # every proactive turn is held (holds_every_turn): no turn is decoded to ask, the same turns
    from adasr.policy import ProactivePolicy

    assert ProactivePolicy.holds_every_turn and ProactivePolicy.holds_turns
    monkeypatch.setattr(ProactivePolicy, "holds_turn", lambda self, text: pytest.fail(f"asked about {text!r}"))
    again = next(eng.run([EpisodeInput("p", stream(3, gap=1.0))], clock=VirtualClock(fixed_step_s=0.3)))
    assert again.thoughts == res.thoughts and again.record["max_backlog_s"] == res.record["max_backlog_s"]


def test_skip_backlog_skips_a_thought_behind_which_chunks_wait():
    """The latency knob (``skip_backlog_s``): a chunk that waited at least that long while later
    chunks wait gets no thought (budget 0), so the waiting chunks are ingested together; off by
    default, and a chunk with nothing behind it keeps its slack budget."""
    from adasr.errors import ConfigError
    from adasr.policy import make_policy

    waited = PolicyContext(1, now_s=3.0, next_arrival_s=None, pending_chunks=1, decode_tokens_per_s=10.0,
                           arrivals_s=(0.0, 1.0, 2.0))
    assert waited.backlog_s == pytest.approx(2.0)
    assert AdaptivePolicy(thought_budget=64).budget_for(waited) == 1  # default: shortened to one step
    assert AdaptivePolicy(thought_budget=64, skip_backlog_s=2.0).budget_for(waited) == 0
    assert AdaptivePolicy(thought_budget=64, skip_backlog_s=2.5).budget_for(waited) == 1  # waited too little
    alone = PolicyContext(2, now_s=3.0, next_arrival_s=5.0, pending_chunks=0, decode_tokens_per_s=10.0,
                          arrivals_s=(0.0, 1.0, 2.0))
    assert AdaptivePolicy(thought_budget=64, skip_backlog_s=0.0).budget_for(alone) == 20
    assert make_policy("adaptive", skip_backlog_s=0.5).skip_backlog_s == 0.5
    with pytest.raises(ConfigError, match="adaptive only"):
        make_policy("interleaved", skip_backlog_s=0.5)
    with pytest.raises(ConfigError, match=">= 0"):
        make_policy("adaptive", skip_backlog_s=-1.0)


def test_skip_backlog_coalesces_chunks_on_a_slow_clock(tiny_model, tiny_tokenizer):
    """On a clock far slower than the budgets assume (every step 0.4 s, chunks 0.5 s apart, a
    5-token step per thought), the knob skips the thoughts of chunks that waited, so fewer chunks
    get a thought and the backlog is smaller."""
    fmt = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy="adaptive")).format
    script = tiny_tokenizer.encode("ab=c.")
    model = Scripted(tiny_model, fmt.assistant_header[-1], script, fmt.end_of_turn_id)

    def record(skip):
        eng = StreamingEngine(model, tiny_tokenizer, EngineConfig(
            policy="adaptive", thought_budget=32, decode_rate=100.0, max_deep_tokens=2, skip_backlog_s=skip))
        res = next(eng.run([EpisodeInput("s", stream(6, gap=0.5))], clock=VirtualClock(fixed_step_s=0.4)))
        return res.record, [t for t in res.thoughts if t]

    (off, off_thoughts), (on, on_thoughts) = record(None), record(0.0)
    assert off["max_backlog_s"] > 0
    assert all(t == "ab=c." for t in off_thoughts + on_thoughts)  # never cut inside a step
    assert on["skipped_chunks"] > off["skipped_chunks"] and len(on_thoughts) < len(off_thoughts)
    assert on["max_backlog_s"] < off["max_backlog_s"]
