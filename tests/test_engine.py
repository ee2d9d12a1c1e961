"""Engine logic on a tiny random model: ids equal the renderer's, batching is exact, the clock
model holds, ingest feeds only new tokens, sampling is seeded."""

from __future__ import annotations

import json
import time

import pytest
import torch
from transformers import DynamicCache

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine, run_episode
from adasr.errors import ConfigError, InputError, ProtocolError
from adasr.kvcache import cache_keyword
from adasr.policy import AdaptivePolicy, PolicyContext
from adasr.protocol import STAGE_DEEP, STAGE_INPUT, STAGE_STREAM, StreamingFormat
from adasr.session import SessionStatus
from adasr.stream import Chunk, LiveSource, ScheduledStream, VirtualClock

TEXTS = ["Natalia sold clips to 48 friends.", "Then she sold half as many.", "How many clips?", "Add 5.", "Subtract 3."]


def stream(n: int, gap: float = 0.5, off: int = 0) -> ScheduledStream:
    return ScheduledStream([Chunk(i, TEXTS[(i + off) % len(TEXTS)], gap * (i + 1)) for i in range(n)])


def engine(model, tok, **kw) -> StreamingEngine:
    kw.setdefault("thought_budget", 6)
    kw.setdefault("max_deep_tokens", 10)
    kw.setdefault("protocol", "v1")  # free-running thoughts (v2 ends a thought at its first line break)
    return StreamingEngine(model, tok, EngineConfig(**kw))


@pytest.mark.parametrize("mode", ["batch", "interleaved", "adaptive"])
def test_engine_ids_equal_rendered_episode(tiny_model, tiny_tokenizer, mode):
    eng = engine(tiny_model, tiny_tokenizer, policy=mode)
    res = run_episode(eng, EpisodeInput("a", stream(4)))
    rendered = eng.format.render(res.episode)
    assert res.token_ids == rendered.input_ids
    # the engine's generated-token labels agree with the renderer except forced closers
    for eng_stage, r_stage in zip(res.token_stage, rendered.stage):
        assert eng_stage in (r_stage, STAGE_INPUT)
    assert len(res.episode.chunks) == 4


def test_batched_run_equals_single_runs(tiny_model, tiny_tokenizer):
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved")
    inputs = lambda: [EpisodeInput(f"e{i}", stream(2 + i, off=i)) for i in range(5)]  # noqa: E731
    single = {r.id: r for inp in inputs() for r in eng.run([inp])}
    batched = list(eng.run(inputs(), batch_size=3))
    assert sorted(r.id for r in batched) == sorted(single)
    for r in batched:
        assert r.token_ids == single[r.id].token_ids
        assert r.deep == single[r.id].deep


def test_cache_compaction_keeps_results(tiny_model, tiny_tokenizer):
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved", compact_min_len=16, compact_ratio=0.9)
    single = {r.id: r.token_ids for r in (run_episode(eng, EpisodeInput(f"e{i}", stream(3 + i))) for i in range(3))}
    eng.stats["compactions"] = 0
    batched = list(eng.run([EpisodeInput(f"e{i}", stream(3 + i)) for i in range(3)], batch_size=3))
    assert eng.stats["compactions"] > 0
    assert all(r.token_ids == single[r.id] for r in batched)


def test_record_fields_and_stages(tiny_model, tiny_tokenizer):
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved")
    res = run_episode(eng, EpisodeInput("a", stream(3), reference="72"))
    rec = res.record
    for key in ("input_tokens", "stream_tokens", "deep_tokens", "post_input_tokens", "skipped_chunks",
                "pre_reasoning_wait_tokens", "post_input_ttft_s", "post_input_latency_s", "max_backlog_s",
                "wall_s", "correct", "prediction", "reference", "format_ok"):
        assert key in rec
    assert rec["stream_tokens"] == sum(s == STAGE_STREAM for s in res.token_stage)
    assert rec["deep_tokens"] == sum(s == STAGE_DEEP for s in res.token_stage)
    assert rec["input_tokens"] + rec["stream_tokens"] + rec["deep_tokens"] == len(res.token_ids)
    # 3 chunks: thoughts after the first two, none after the last (the stream closed with it)
    assert len(res.thoughts) == 3 and res.thoughts[2] is None
    assert 0 < rec["stream_tokens"] <= 2 * (6 + 1)
    assert rec["reference"] == "72" and rec["correct"] is None
    assert rec["eoi_s"] == pytest.approx(1.5)
    assert 0 <= rec["post_input_ttft_s"] <= rec["post_input_latency_s"]


def test_batch_mode_has_no_thoughts_and_waits_for_all_input(tiny_model, tiny_tokenizer):
    eng = engine(tiny_model, tiny_tokenizer, policy="batch")
    res = run_episode(eng, EpisodeInput("a", stream(3)))
    assert res.record["stream_tokens"] == 0
    assert res.record["pre_reasoning_wait_tokens"] == sum(s == STAGE_INPUT for s in res.token_stage[: res.token_stage.index(STAGE_DEEP)])
    assert res.record["post_input_tokens"] == res.record["deep_tokens"]


def test_ingest_feeds_only_new_tokens(tiny_model, tiny_tokenizer):
    eng = engine(tiny_model, tiny_tokenizer, policy="batch")
    run_episode(eng, EpisodeInput("a", stream(5)))
    # every token is fed exactly once: the prefix is never re-encoded
    res = run_episode(eng, EpisodeInput("b", stream(5)))
    fed = lambda: eng.stats["tokens_fed"] + eng.stats["prefix_hits"] * len(eng.format.prefix_ids("batch"))  # noqa: E731
    fed_before = fed()
    run_episode(eng, EpisodeInput("c", stream(5)))
    footer = eng.format.assistant_footer
    stopped = res.token_stage[-len(footer)] == STAGE_DEEP and res.token_ids[-len(footer)] == footer[0]
    unfed_tail = len(footer) + (0 if stopped else 1)  # the deep stage's last token + closer end the episode
    assert fed() - fed_before == len(res.token_ids) - unfed_tail


def test_virtual_clock_backlog_and_waiting(tiny_model, tiny_tokenizer):
    # all chunks arrive at t=0: every chunk after the first waits behind thoughts (backlog > 0)
    burst = ScheduledStream([Chunk(i, TEXTS[i], 0.0) for i in range(4)])
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved")
    rec = run_episode(eng, EpisodeInput("burst", burst)).record
    assert rec["max_backlog_s"] > 0
    # widely spaced chunks: the clock jumps, nothing waits, and EOI is the last arrival
    slow = stream(3, gap=100.0)
    rec = run_episode(eng, EpisodeInput("slow", slow)).record
    assert rec["max_backlog_s"] == 0.0
    assert rec["eoi_s"] == pytest.approx(300.0)
    assert rec["post_input_latency_s"] < 100.0  # compute time only, not the waits


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
    model = _Scripted(tiny_model, fmt.assistant_header[-1], script, fmt.end_of_turn_id)

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


def test_sampling_is_seeded(tiny_model, tiny_tokenizer):
    def sample(seed):
        eng = engine(tiny_model, tiny_tokenizer, policy="interleaved", temperature=1.0, top_p=0.9, top_k=50)
        return run_episode(eng, EpisodeInput("s", stream(3), seed=seed)).token_ids

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_live_source_needs_real_clock(tiny_model, tiny_tokenizer):
    src = LiveSource()
    src.start()
    src.push("Natalia sold clips.")
    eng = engine(tiny_model, tiny_tokenizer, policy="adaptive")
    with pytest.raises(InputError, match="real clock"):
        run_episode(eng, EpisodeInput("live", src), clock="virtual")


def test_live_source_real_clock(tiny_model, tiny_tokenizer):
    import threading
    import time

    src = LiveSource()
    src.start()

    def producer():
        for t in TEXTS[:3]:
            src.push(t)
            time.sleep(0.05)
        src.close()

    threading.Thread(target=producer, daemon=True).start()
    eng = engine(tiny_model, tiny_tokenizer, policy="adaptive")
    res = run_episode(eng, EpisodeInput("live", src), clock="real")
    assert res.episode.chunks == TEXTS[:3]
    assert res.token_ids == eng.format.render(res.episode).input_ids


def test_bad_config():
    with pytest.raises(ConfigError):
        EngineConfig(max_deep_tokens=0).validate()
    with pytest.raises(ConfigError):
        EngineConfig(policy="telepathy").make_policy()


def test_backend_choice(tiny_model, tiny_tokenizer):
    from types import SimpleNamespace

    from adasr.backends import make_engine
    from adasr.engine import BACKENDS
    from adasr.scheduler import Scheduler

    assert BACKENDS == ("torch", "vllm")
    with pytest.raises(ConfigError, match="unknown backend"):
        EngineConfig(backend="tpu-magic").validate()
    loaded = SimpleNamespace(model=tiny_model, tokenizer=tiny_tokenizer)
    eng = make_engine(loaded, EngineConfig(policy="batch", max_deep_tokens=4, protocol="v1"))
    assert type(eng) is StreamingEngine
    assert run_episode(eng, EpisodeInput("a", stream(2))).token_ids
    with pytest.raises(ConfigError, match="vllm backend only"):
        make_engine(loaded, EngineConfig(), yield_tokens=4)
    # a session whose tokens a backend is still generating is not asked what to feed
    eng.configure(clock="virtual")
    eng.add_session(EpisodeInput("b", stream(2)))
    eng._update_rows(refill=True)
    sched: Scheduler = eng.scheduler
    assert sched.plan(10.0, busy=frozenset({"b"})) == [[]]
    assert sched.running[0].status is SessionStatus.WAITING and not sched.running[0].ids


def test_refilled_slots_see_their_arrivals(tiny_model, tiny_tokenizer):
    """Regression: a row started at a non-zero clock time must still see arrivals the clock
    jumped to exactly (float rounding once made the engine spin forever)."""
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved")
    inputs = [EpisodeInput(f"e{i}", stream(3, gap=0.1 * (i + 1) + 0.0123)) for i in range(6)]
    results = list(eng.run(inputs, batch_size=2))
    assert len(results) == 6


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


class _Scripted(torch.nn.Module):
    """The tiny model, steered (+100) to continue ``script`` token by token: after ``start`` it
    writes ``script[0]``, after ``script[i]`` it writes ``script[i + 1]``, after the last one
    ``end``. Works at every position of a multi-token forward (it steers all positions, then
    keeps those the engine asked for)."""

    def __init__(self, model, start: int, script: list[int], end: int):
        super().__init__()
        self.inner = model
        self.next = {start: script[0], **{a: b for a, b in zip(script, script[1:])}, script[-1]: end}

    def forward(self, input_ids, logits_to_keep=0, **kw):
        out = self.inner(input_ids=input_ids, logits_to_keep=0, **kw)
        target = torch.tensor([[self.next.get(int(t), -1) for t in row] for row in input_ids])
        b, pos = (target >= 0).nonzero(as_tuple=True)
        out.logits[b, pos, target[b, pos]] += 100.0
        if isinstance(logits_to_keep, torch.Tensor):
            out.logits = out.logits[:, logits_to_keep]
        elif logits_to_keep:
            out.logits = out.logits[:, -logits_to_keep:]
        return out


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
    model = _Scripted(tiny_model, fmt.assistant_header[-1], tiny_tokenizer.encode("\\boxed{7}"),
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


def test_a_proactive_response_is_not_cut_by_the_slack_or_an_arrival(tiny_model, tiny_tokenizer):
    """A response half written (``\\boxed{`` open) runs past the slack budget up to the thought
    budget and does not yield to the next chunk; other thoughts are cut as before."""
    from adasr.policy import ProactivePolicy, response_started

    assert response_started("27 + 7 = 34. \\boxed{3") and response_started("so \\bo") and response_started("\\")
    assert not response_started("27 + 7 = 34.") and not response_started("\\boxed{34}")
    assert not response_started("\\frac{1}{2}")
    fmt = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy="proactive")).format
    script = tiny_tokenizer.encode("x \\boxed{7}")
    assert len(script) > 3
    model = _Scripted(tiny_model, fmt.assistant_header[-1], script, tiny_tokenizer.encode("\n")[0])
    # slack: 1 s to the next chunk at 3 tokens/s = a 3-token budget; the response needs more
    eng = StreamingEngine(model, tiny_tokenizer, EngineConfig(policy="proactive", thought_budget=32, decode_rate=3.0))
    res = next(eng.run([EpisodeInput("p", stream(4, gap=1.0), reference="7")], clock=VirtualClock(fixed_step_s=0.01)))
    assert res.record["prediction"] == "7" and res.record["answer_chunk"] == 0
    # the next chunk arrives after 3 steps (0.3 s each): the response goes on past the arrival
    eng = StreamingEngine(model, tiny_tokenizer, EngineConfig(policy="proactive", thought_budget=32, decode_rate=100.0))
    res = next(eng.run([EpisodeInput("p", stream(4, gap=1.0), reference="7")], clock=VirtualClock(fixed_step_s=0.3)))
    assert res.record["prediction"] == "7" and res.record["answer_chunk"] == 0
    # a note (no box) is still cut at the slack budget: the adaptive policy as before
    note = _Scripted(tiny_model, fmt.assistant_header[-1], tiny_tokenizer.encode("x y z w v u"),
                     tiny_tokenizer.encode("\n")[0])
    eng = StreamingEngine(note, tiny_tokenizer, EngineConfig(policy="proactive", thought_budget=32, decode_rate=3.0,
                                                            max_deep_tokens=4))
    res = next(eng.run([EpisodeInput("p", stream(3, gap=1.0))], clock=VirtualClock(fixed_step_s=0.01)))
    assert res.record["answer_chunk"] is None and max(len(t) for t in res.thoughts if t) <= 3


def test_a_response_closed_by_the_last_arrival_ends_the_run(tiny_model, tiny_tokenizer):
    """A thought that holds a whole ``\\boxed{}`` and is cut by the last chunk's arrival commits the
    answer while the step is planned; with no arrival left anywhere the engine retires it instead
    of waiting for input that cannot come (it raised "a live input source needs the real clock"
    in GRPO rollouts on per-stream clocks)."""
    fmt = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy="proactive")).format
    script = tiny_tokenizer.encode("\\boxed{7} and so on and so on and so on")
    class Slow(_Scripted):  # per-stream clocks charge measured steps: 0.1 s each puts the arrival mid-thought
        def forward(self, *args, **kw):
            time.sleep(0.1)
            return super().forward(*args, **kw)

    model = Slow(tiny_model, fmt.assistant_header[-1], script, tiny_tokenizer.encode("\n")[0])
    eng = StreamingEngine(model, tiny_tokenizer, EngineConfig(policy="proactive", thought_budget=64, decode_rate=100.0))
    for clock in (lambda: "per-stream", lambda: VirtualClock(fixed_step_s=0.3)):
        for n_chunks in (2, 4):  # cut by the last arrival; by one with chunks still to come
            inputs = [EpisodeInput(f"p{i}", stream(n_chunks, gap=1.0), reference="7") for i in range(2)]
            results = list(eng.run(inputs, batch_size=2, clock=clock()))
            assert sorted(r.id for r in results) == ["p0", "p1"]
            # the episode ended at chunk 0: no later chunk is ingested into it
            assert all(r.record["prediction"] == "7" and r.record["answer_chunk"] == 0
                       and r.record["n_chunks"] == 1 and r.record["deep_tokens"] == 0 for r in results)


def test_eoi_aligned_waves_equal_single_runs(tiny_model, tiny_tokenizer):
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved")
    inputs = lambda: [EpisodeInput(f"e{i}", stream(2 + i % 3, gap=0.3 + 0.1 * i)) for i in range(5)]  # noqa: E731
    single = {r.id: r for inp in inputs() for r in eng.run([inp])}
    events = []
    aligned = list(eng.run(inputs(), batch_size=3, align_eoi=True, on_event=events.append))
    assert sorted(r.id for r in aligned) == sorted(single)
    assert all(r.token_ids == single[r.id].token_ids for r in aligned)
    assert all(r.record["eoi_s"] == single[r.id].record["eoi_s"] for r in aligned)
    with pytest.raises(InputError, match="end of input"):
        src = LiveSource()
        src.start()
        list(eng.run([EpisodeInput("live", src)], batch_size=2, align_eoi=True, clock="real"))


def test_per_stream_clocks_fill_every_step(tiny_model, tiny_tokenizer):
    """Per-stream clocks: a waiting row jumps to its own next arrival instead of sitting steps
    out, so a batch of misaligned streams takes exactly as many steps as its longest stream run
    alone, with the same tokens and the same arrival-relative timeline."""
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved")
    inputs = lambda: [EpisodeInput(f"e{i}", stream(2 + i, gap=0.7 + 0.9 * i, off=i)) for i in range(3)]  # noqa: E731
    single, steps = {}, []
    for inp in inputs():
        before = eng.stats["steps"]
        single[inp.id] = run_episode(eng, inp)
        steps.append(eng.stats["steps"] - before)
    before = eng.stats["steps"]
    batched = list(eng.run(inputs(), batch_size=3, clock="per-stream"))
    assert eng.stats["steps"] - before == max(steps)
    for r in batched:
        assert r.token_ids == single[r.id].token_ids
        assert r.record["eoi_s"] == single[r.id].record["eoi_s"]
        assert r.record["post_input_latency_s"] > 0
    # refilled slots start their own clock at 0
    refilled = list(eng.run([EpisodeInput(f"r{i}", stream(2 + i % 2, gap=0.4 + 0.3 * i)) for i in range(5)],
                            batch_size=2, clock="per-stream"))
    assert sorted(r.id for r in refilled) == [f"r{i}" for i in range(5)]
    for r in refilled:
        i = int(r.id[1:])
        assert r.record["eoi_s"] == pytest.approx((0.4 + 0.3 * i) * (2 + i % 2))
    with pytest.raises(ConfigError, match="shared clock"):
        list(eng.run(inputs(), batch_size=3, clock="per-stream", align_eoi=True))


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


class _Steered(torch.nn.Module):
    """The tiny model, steered to write ``x \\n x \\n ...``: +100 on the newline token after ``x``
    and on ``x`` after anything else."""

    def __init__(self, model, x: int, newline: int):
        super().__init__()
        self.inner, self.x, self.nl = model, x, newline

    def forward(self, input_ids, **kw):
        out = self.inner(input_ids=input_ids, **kw)
        after_x = (input_ids[:, -1] == self.x) if input_ids.shape[1] == 1 else torch.zeros(len(input_ids), dtype=torch.bool)
        out.logits[:, -1, self.nl] += 100.0 * after_x
        out.logits[:, -1, self.x] += 100.0 * ~after_x
        return out


def test_protocol_v2_one_line_thoughts_and_restated_input(tiny_model, tiny_tokenizer):
    x, nl = tiny_tokenizer.encode("A")[0], tiny_tokenizer.encode("\n")[0]
    model = _Steered(tiny_model, x, nl)
    results = {}
    for protocol in ("v1", "v2"):
        eng = StreamingEngine(model, tiny_tokenizer, EngineConfig(policy="interleaved", thought_budget=6,
                                                                  max_deep_tokens=5, protocol=protocol))
        res = run_episode(eng, EpisodeInput("a", stream(3)))
        assert res.token_ids == eng.format.render(res.episode).input_ids
        results[protocol] = (res, eng.format)
    v1, v2 = results["v1"][0], results["v2"][0]
    assert v1.episode.thoughts[:2] == [[x, nl, x, nl, x, nl]] * 2  # free-running until the budget
    assert v2.episode.thoughts[:2] == [[x], [x]]  # one line: the turn closes at the line break
    assert v2.record["stream_tokens"] == 2 and v2.record["skipped_chunks"] == 1
    # v2 restates the whole input in the end-of-input turn; v1 does not
    fmt2 = results["v2"][1]
    restated = fmt2.encode(fmt2.eoi_text.replace("{input}", " ".join(v2.episode.chunks)))
    ids = v2.token_ids
    assert any(ids[i:i + len(restated)] == restated for i in range(len(ids)))
    assert "{input}" not in tiny_tokenizer.decode(v2.token_ids)
    assert " ".join(v1.episode.chunks) not in tiny_tokenizer.decode(v1.token_ids)


def test_protocol_v3_deep_stage_reads_a_fresh_context(tiny_model, tiny_tokenizer):
    """v3: at end of input the row's cache is dropped and the deep stage continues a read-then-think
    prompt holding the whole input and the notes: its tokens are greedy generation from that
    prompt alone, in a batch of rows too (the other row's cache and positions are untouched)."""
    x, nl = tiny_tokenizer.encode("A")[0], tiny_tokenizer.encode("\n")[0]
    model = _Steered(tiny_model, x, nl)
    eng = StreamingEngine(model, tiny_tokenizer, EngineConfig(policy="interleaved", thought_budget=6,
                                                              max_deep_tokens=5, protocol="v3"))
    alone = next(eng.run([EpisodeInput("a", stream(3))], clock=VirtualClock(fixed_step_s=0.01)))
    fmt = eng.format
    notes = [tiny_tokenizer.decode(th) for th in alone.episode.thoughts if th]
    assert notes == ["A", "A"]
    prompt = fmt.fresh_deep_ids(alone.episode.chunks, notes)
    assert tiny_tokenizer.decode(prompt).count("- A") == 2
    ref, feed, kw = list(prompt), list(prompt), {cache_keyword(tiny_model): DynamicCache()}
    with torch.inference_mode():  # greedy decoding from the fresh prompt alone
        for _ in range(5):
            ref.append(int(model(torch.tensor([feed]), use_cache=True, **kw).logits[0, -1].argmax()))
            feed = ref[-1:]
    deep = alone.episode.deep
    assert deep and deep == ref[len(prompt):len(prompt) + len(deep)]
    ids, n = alone.token_ids, len(prompt) + len(deep)  # the fresh context, then the deep stage
    assert any(ids[i:i + n] == prompt + deep for i in range(len(ids)))
    with pytest.raises(ProtocolError, match="inference only"):
        fmt.render(alone.episode)
    prefix_fmt = StreamingFormat(tiny_tokenizer, "v3-prefix")  # the notes open the answer
    opened = prefix_fmt.fresh_deep_ids(alone.episode.chunks, notes)
    assert opened[-len(prefix_fmt.encode("A\nA\n")):] == prefix_fmt.encode("A\nA\n")
    # batched (the steering above only works one token at a time: the plain model here)
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved", protocol="v3")
    inputs = lambda: [EpisodeInput("a", stream(3)), EpisodeInput("b", stream(4, off=1))]  # noqa: E731
    single = {r.id: r for inp in inputs() for r in eng.run([inp])}
    both = {r.id: r for r in eng.run(inputs(), batch_size=2)}
    start = eng.format.prefix_ids("batch")

    def fresh_part(ids):  # from the fresh context's system turn to the end
        i = max(i for i in range(len(ids)) if ids[i:i + len(start)] == start)
        return ids[i:]

    for k in "ab":
        assert single[k].episode.deep and fresh_part(single[k].token_ids) == fresh_part(both[k].token_ids)


# -- the step API -----------------------------------------------------------------------------


def test_add_session_mid_episode_gives_the_ids_of_a_run_alone(tiny_model, tiny_tokenizer):
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved")
    alone = run_episode(eng, EpisodeInput("late", stream(3, off=2))).token_ids
    eng.configure(batch_size=2)
    first = eng.add_session(EpisodeInput("first", stream(4)))
    while len(eng.session(first).chunks) < 2:  # the first session is mid-episode ...
        eng.step()
    assert eng.session(first).status is not SessionStatus.FINISHED and eng.runner.batch_size == 1
    eng.add_session(EpisodeInput("late", stream(3, off=2)))  # ... when the second one joins
    eng.step()
    assert eng.runner.batch_size == 2
    with pytest.raises(ConfigError, match="already running"):
        eng.add_session(EpisodeInput("late", stream(1)))
    with pytest.raises(ConfigError, match="idle engine"):
        next(eng.run([EpisodeInput("other", stream(1))]))
    while eng.has_work:
        eng.step()
    results = {r.id: r for r in eng.pop_results()}
    assert sorted(results) == ["first", "late"] and not eng.has_work
    assert results["late"].token_ids == alone
    assert results["first"].token_ids == run_episode(eng, EpisodeInput("first", stream(4))).token_ids


def test_per_session_mode_gets_its_own_protocol_unless_one_is_fixed(tiny_model, tiny_tokenizer):
    from adasr.policy import make_policy
    from adasr.protocol import UNTRAINED_PROTOCOL, protocol_format

    proactive = make_policy("proactive", thought_budget=6)
    untrained = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy="adaptive", max_deep_tokens=6))
    assert untrained.format is protocol_format(tiny_tokenizer, UNTRAINED_PROTOCOL)
    own = protocol_format(tiny_tokenizer, "proactive-v1")
    assert untrained.session_format(proactive) is own  # a server's proactive session on an adaptive engine
    sid = untrained.add_session(EpisodeInput("p", stream(2)), policy=proactive)
    while untrained.has_work:
        untrained.step()
    (result,) = untrained.pop_results()
    assert result.id == sid and result.token_ids[:len(own.prefix_ids("streaming"))] == own.prefix_ids("streaming")
    fixed = engine(tiny_model, tiny_tokenizer, policy="adaptive")  # protocol v1 asked for: every session keeps it
    assert fixed.session_format(proactive) is fixed.format is protocol_format(tiny_tokenizer, "v1")


def test_abort_frees_the_rows(tiny_model, tiny_tokenizer):
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved")
    eng.configure(batch_size=3)

    def rows() -> tuple[int, int, int]:
        return eng.runner.batch_size, eng.runner.mask.shape[0], eng.runner.cache.layers[0].keys.shape[0]

    eng.add_session(EpisodeInput("keep", stream(4)))
    for _ in range(4):
        eng.step()
    baseline = rows()
    assert baseline == (1, 1, 1)
    eng.add_session(EpisodeInput("drop", stream(4, off=1)))
    for _ in range(4):
        eng.step()
    assert rows() == (2, 2, 2)
    eng.abort("drop")
    assert eng.session("drop").status is SessionStatus.ABORTED and eng.has_work
    eng.step()  # the aborted session's rows are freed at the next step
    assert rows() == baseline
    with pytest.raises(KeyError):
        eng.session("drop")
    eng.add_session(EpisodeInput("queued", stream(2)))
    eng.configure(batch_size=1)  # no room: it waits in the queue; aborted there, it never gets a row
    eng.abort("queued")
    with pytest.raises(KeyError):
        eng.abort("queued")
    while eng.has_work:
        eng.step()
    assert [r.id for r in eng.pop_results()] == ["keep"] and rows()[0] == 1


def test_step_returns_typed_events(tiny_model, tiny_tokenizer):
    from adasr.events import Event, Thought, Token

    x, nl = tiny_tokenizer.encode("A")[0], tiny_tokenizer.encode("\n")[0]
    eng = StreamingEngine(_Steered(tiny_model, x, nl), tiny_tokenizer,
                          EngineConfig(policy="interleaved", thought_budget=3, max_deep_tokens=5, protocol="v1"))
    eng.add_session(EpisodeInput("a", stream(3)))
    assert eng.has_work
    events = []
    while eng.has_work:
        events += eng.step()
    assert not eng.has_work
    (res,) = eng.pop_results()
    assert all(isinstance(e, Event) for e in events)
    assert {e.type for e in events} == {"arrive", "ingest", "token", "thought", "eoi", "deep_start", "answer"}
    # the timeline of the result is the step events, token events left out, as dicts
    assert [e.as_dict() for e in events if e.type != "token"] == res.events
    assert [e.as_dict() for e in events if isinstance(e, Token)][0].keys() == {"type", "t", "stage", "token", "id"}
    # token events carry their text, decoded once by the engine
    deep = "".join(e.text for e in events if isinstance(e, Token) and e.stage == STAGE_DEEP)
    assert deep == res.deep == "A\nA\nA"
    thoughts = [e for e in events if isinstance(e, Thought)]
    assert [t.text for t in thoughts] == res.thoughts[:2] == ["A\nA", "A\nA"]


def test_session_status_transitions(tiny_model, tiny_tokenizer):
    from adasr.session import SessionStatus as S

    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved")
    eng.configure(clock=VirtualClock(fixed_step_s=0.01))  # the prompt is read before chunk 0, however loaded the machine
    session = eng.session(eng.add_session(EpisodeInput("s", stream(3))))
    seen = [session.status]
    while eng.has_work:
        eng.step()
        if session.status is not seen[-1]:
            seen.append(session.status)
    # waiting for a row, the system prompt, waiting for chunk 0, a thought after it ...
    assert seen[:4] == [S.WAITING, S.INGESTING, S.WAITING, S.THINKING]
    # ... the last chunk closes the stream: the deep stage, then the answer
    assert seen[-2:] == [S.DEEP, S.FINISHED] and set(seen) == {S.WAITING, S.INGESTING, S.THINKING, S.DEEP, S.FINISHED}


class _Counted(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.inner, self.calls = model, 0

    def forward(self, *args, **kw):
        self.calls += 1
        return self.inner(*args, **kw)


def test_pinned_decode_rate_makes_adaptive_budgets_reproducible(tiny_model, tiny_tokenizer):
    def budgets(**kw) -> tuple[list, StreamingEngine]:
        seen = []

        class Spy(AdaptivePolicy):
            def budget_for(self, ctx):
                seen.append((ctx.decode_tokens_per_s, super().budget_for(ctx)))
                return seen[-1][1]

        model = _Counted(tiny_model)
        eng = StreamingEngine(model, tiny_tokenizer, EngineConfig(policy=Spy(thought_budget=6), max_deep_tokens=4,
                                                                  protocol="v1", **kw))
        calibration = model.calls
        list(eng.run([EpisodeInput(f"e{i}", stream(4, gap=1.0, off=i)) for i in range(3)], batch_size=2))
        return seen, eng, calibration

    first, eng, calibration = budgets(decode_rate=2.5)
    again, _, _ = budgets(decode_rate=2.5)
    # slack ~1 s at 2.5 tokens/s: 2 tokens per thought, whatever this machine's speed
    assert first == again == [(2.5, 2)] * 9
    assert eng.decode_rate == 2.5 and calibration == 0  # pinned: never measured, never updated
    measured, eng, calibration = budgets()
    assert calibration > 0 and eng.decode_rate > 2.5 and len({rate for rate, _ in measured}) > 1
    _, eng, calibration = budgets(initial_decode_rate=eng.decode_rate)  # a measured rate carried along
    assert calibration == 0
    with pytest.raises(ConfigError, match="decode_rate"):
        EngineConfig(decode_rate=0).validate()


def test_engine_config_policy_is_a_mode_name_or_a_policy(tiny_model, tiny_tokenizer):
    from adasr.policy import InterleavedPolicy

    assert isinstance(EngineConfig(policy="adaptive", thought_budget=7).make_policy(), AdaptivePolicy)
    assert EngineConfig(policy="interleaved", thought_budget=7).make_policy().thought_budget == 7
    own = InterleavedPolicy(thought_budget=3)
    assert EngineConfig(policy=own).make_policy() is own
    with pytest.raises(ConfigError, match="mode name or a ThoughtPolicy"):
        EngineConfig(policy=3).make_policy()


def test_live_view_shows_decoded_event_text(tiny_model, tiny_tokenizer):
    import io

    from rich.console import Console

    from adasr.view import LiveView

    x, nl = tiny_tokenizer.encode("A")[0], tiny_tokenizer.encode("\n")[0]
    eng = StreamingEngine(_Steered(tiny_model, x, nl), tiny_tokenizer,
                          EngineConfig(policy="interleaved", thought_budget=3, max_deep_tokens=5, protocol="v1"))
    out = io.StringIO()
    with LiveView(Console(file=out, width=80)) as view:
        res = run_episode(eng, EpisodeInput("v", stream(3)), on_event=view.on_event)
    assert view.deep == res.deep and view.thought_done == {0: "A\nA", 1: "A\nA"}
    assert TEXTS[0] in out.getvalue() and "deep stage" in out.getvalue()
