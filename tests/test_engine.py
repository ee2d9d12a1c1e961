"""The engine's public API on a tiny random model: ids equal the renderer's, batching is exact,
records, sampling is seeded, the configuration and backend choice, the decode rate, and the step
API (sessions added mid-episode, per-session protocols, abort, typed events)."""

from __future__ import annotations

import pytest
import torch

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine, run_episode
from adasr.errors import ConfigError
from adasr.policy import AdaptivePolicy
from adasr.protocol import STAGE_DEEP, STAGE_INPUT, STAGE_STREAM
from adasr.session import SessionStatus
from adasr.stream import VirtualClock

from engine_helpers import Steered, engine, stream


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


def test_sampling_is_seeded(tiny_model, tiny_tokenizer):
    def sample(seed):
        eng = engine(tiny_model, tiny_tokenizer, policy="interleaved", temperature=1.0, top_p=0.9, top_k=50)
        return run_episode(eng, EpisodeInput("s", stream(3), seed=seed)).token_ids

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


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
    assert sched.plan(10.0, busy=frozenset({"b"})).feeds == [[]]
    assert sched.running[0].status is SessionStatus.WAITING and not sched.running[0].ids


def test_engine_config_policy_is_a_mode_name_or_a_policy(tiny_model, tiny_tokenizer):
    from adasr.policy import InterleavedPolicy

    assert isinstance(EngineConfig(policy="adaptive", thought_budget=7).make_policy(), AdaptivePolicy)
    assert EngineConfig(policy="interleaved", thought_budget=7).make_policy().thought_budget == 7
    own = InterleavedPolicy(thought_budget=3)
    assert EngineConfig(policy=own).make_policy() is own
    with pytest.raises(ConfigError, match="mode name or a ThoughtPolicy"):
        EngineConfig(policy=3).make_policy()


class _Counted(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.inner, self.calls = model, 0

    def forward(self, *args, **kw):
        self.calls += 1
        return self.inner(*args, **kw)


def test_pinned_decode_rate_makes_adaptive_budgets_reproducible(tiny_model, tiny_tokenizer):
    def budgets(clock="virtual", **kw) -> tuple[list, StreamingEngine]:
        seen = []

        class Spy(AdaptivePolicy):
            def budget_for(self, ctx):
                seen.append((ctx.decode_tokens_per_s, super().budget_for(ctx)))
                return seen[-1][1]

        model = _Counted(tiny_model)
        eng = StreamingEngine(model, tiny_tokenizer, EngineConfig(policy=Spy(thought_budget=6), max_deep_tokens=4,
                                                                  protocol="v1", **kw))
        calibration = model.calls
        list(eng.run([EpisodeInput(f"e{i}", stream(4, gap=1.0, off=i)) for i in range(3)], batch_size=2, clock=clock))
        return seen, eng, calibration

    # a pinned rate and a pinned step cost (the CLI's --decode-rate R --step-s S): with the step
    # charged its measured duration, a loaded machine would shrink the slack and the budgets
    first, eng, calibration = budgets(VirtualClock(fixed_step_s=0.05), decode_rate=2.5)
    again, _, _ = budgets(VirtualClock(fixed_step_s=0.05), decode_rate=2.5)
    # slack ~1 s at 2.5 tokens/s: 2 tokens per thought, whatever this machine's speed or load
    assert first == again == [(2.5, 2)] * 9
    assert eng.decode_rate == 2.5 and calibration == 0  # pinned: never measured, never updated
    measured, eng, calibration = budgets()
    assert calibration > 0 and eng.decode_rate > 2.5 and len({rate for rate, _ in measured}) > 1
    _, eng, calibration = budgets(initial_decode_rate=eng.decode_rate)  # a measured rate carried along
    assert calibration == 0
    with pytest.raises(ConfigError, match="decode_rate"):
        EngineConfig(decode_rate=0).validate()


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
    eng = StreamingEngine(Steered(tiny_model, x, nl), tiny_tokenizer,
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
