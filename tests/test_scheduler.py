"""The scheduler's clocks and rows (adasr.scheduler) on a tiny random model: backlog and waiting
on the virtual clock, refilled rows, EOI-aligned waves, per-stream clocks, live sources, a session
ended by the last arrival retired."""

from __future__ import annotations

import time

import pytest

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine, run_episode
from adasr.errors import ConfigError, InputError
from adasr.stream import Chunk, LiveSource, ScheduledStream, VirtualClock

from engine_helpers import TEXTS, Scripted, engine, stream


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


def test_refilled_slots_see_their_arrivals(tiny_model, tiny_tokenizer):
    """Regression: a row started at a non-zero clock time must still see arrivals the clock
    jumped to exactly (float rounding once made the engine spin forever)."""
    eng = engine(tiny_model, tiny_tokenizer, policy="interleaved")
    inputs = [EpisodeInput(f"e{i}", stream(3, gap=0.1 * (i + 1) + 0.0123)) for i in range(6)]
    results = list(eng.run(inputs, batch_size=2))
    assert len(results) == 6


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


def test_a_response_closed_by_the_last_arrival_ends_the_run(tiny_model, tiny_tokenizer):
    """A thought that holds a whole ``\\boxed{}`` and is cut by the last chunk's arrival commits the
    answer while the step is planned; with no arrival left anywhere the engine retires it instead
    of waiting for input that cannot come (it raised "a live input source needs the real clock"
    in GRPO rollouts on per-stream clocks)."""
    fmt = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy="proactive")).format
    script = tiny_tokenizer.encode("\\boxed{7} and so on and so on and so on")
    class Slow(Scripted):  # per-stream clocks charge measured steps: 0.1 s each puts the arrival mid-thought
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
