"""The model-runner role: one engine class whose backend is its ModelRunner; a step's plan is a
SchedulerOutput (the rows that start over travel in it, not as a flag on the session)."""

from __future__ import annotations

from functools import partial

import pytest

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine, run_episode
from adasr.errors import ConfigError
from adasr.runner import ModelRunner, RunnerOutput, RunnerSpec, TorchModelRunner
from adasr.scheduler import SchedulerOutput

from engine_helpers import stream


class _Recording(TorchModelRunner):
    """The torch runner, recording each step's restarted rows and the statuses of their sessions."""

    def __init__(self, model, spec: RunnerSpec):
        super().__init__(model, spec)
        self.restarts: list[list[tuple[int, str, str]]] = []

    def execute_model(self, out: SchedulerOutput) -> None:
        self.restarts.append([(i, out.sessions[i].id, out.sessions[i].status.value) for i in out.restart_rows])
        super().execute_model(out)


@pytest.mark.parametrize("protocol", ["v1", "v3"])
def test_a_fresh_deep_context_is_a_restarted_row_of_the_step(tiny_model, tiny_tokenizer, protocol):
    cfg = EngineConfig(policy="interleaved", thought_budget=4, max_deep_tokens=4, protocol=protocol, decode_rate=50.0)
    eng = StreamingEngine(None, tiny_tokenizer, cfg, runner=partial(_Recording, tiny_model))
    results = {r.id: r for r in eng.run([EpisodeInput("a", stream(3)), EpisodeInput("b", stream(2))], batch_size=2)}
    restarted = [r for step in eng.runner.restarts for r in step]
    if protocol == "v1":
        assert restarted == []
    else:  # once per session, in the step that starts its deep stage, at its row
        assert sorted(restarted) == [(0, "a", "deep"), (1, "b", "deep")]
    assert sorted(results) == ["a", "b"] and all(r.episode.deep for r in results.values())
    sid = eng.add_session(EpisodeInput("c", stream(1)))
    assert "restart_row" not in vars(eng.session(sid))  # no flag for another component to clear


class _Stopping(ModelRunner):
    """A runner without a model: every generating session's next token is the end of its turn."""

    def __init__(self, spec: RunnerSpec, stop: int):
        self.spec, self.stop, self.rows, self.derived = spec, stop, 0, []

    def execute_model(self, out: SchedulerOutput) -> None:
        self.spec.stats["tokens_fed"] += sum(len(f) for f in out.feeds)

    def sample_tokens(self, out: SchedulerOutput) -> RunnerOutput:
        n = len(out.sessions)
        tokens = [[self.stop] if s.generating else [] for s in out.sessions]
        return RunnerOutput(tokens, [0] * n, [bool(f) for f in out.feeds], [False] * n)

    def apply_rows(self, changes, freed) -> None:
        self.rows = self.rows - len(freed) + len(changes.refilled) + changes.added

    def measure_decode_rate(self, prompt_ids: list[int]) -> float:
        return 100.0

    @property
    def kv_rows(self) -> int:
        return self.rows

    def kv_bytes(self) -> None:
        return None

    def derive(self, spec: RunnerSpec) -> "_Stopping":
        self.derived.append(spec.config)
        return _Stopping(spec, self.stop)


def test_the_engine_runs_on_any_model_runner(tiny_tokenizer):
    stop = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    eng = StreamingEngine(None, tiny_tokenizer, EngineConfig(policy="interleaved", protocol="v1"),
                          runner=partial(_Stopping, stop=stop))
    assert eng.decode_rate == 100.0 and eng.kv_bytes() is None
    res = run_episode(eng, EpisodeInput("a", stream(3)))
    assert res.token_ids == eng.format.render(res.episode).input_ids  # every thought a skip, then a stop
    assert res.record["finish_reason"] == "stopped" and res.record["deep_tokens"] == 1
    assert res.thoughts == ["", "", None] and eng.kv_rows == 0
    batch = eng.derive(EngineConfig(policy="batch", protocol="v1"))
    assert isinstance(batch.runner, _Stopping) and eng.runner.derived == [batch.config]
    assert batch.policy.name == "batch" and run_episode(batch, EpisodeInput("b", stream(3))).record["finish_reason"] == "stopped"


def test_derive_shares_the_model_and_an_engine_takes_a_model_or_a_runner(tiny_model, tiny_tokenizer):
    eng = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy="adaptive", decode_rate=50.0))
    other = eng.derive(EngineConfig(policy="batch", decode_rate=50.0))
    assert type(other) is StreamingEngine and other.model is tiny_model and other.runner is not eng.runner
    assert isinstance(other.runner, TorchModelRunner) and other.policy.name == "batch"
    with pytest.raises(ConfigError, match="exactly one"):
        StreamingEngine(tiny_model, tiny_tokenizer, runner=partial(TorchModelRunner, tiny_model))
    with pytest.raises(ConfigError, match="exactly one"):
        StreamingEngine(None, tiny_tokenizer)
