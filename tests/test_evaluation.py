"""The resumable evaluation loop (adasr.evaluation): interrupt and resume, truncated results,
per-mode summaries, clock defaults, the run's recorded configuration, budget sweeps.

The engine is replaced by a fake that follows the ``StreamingEngine.run`` contract
(yields objects with ``.id`` and ``.record``), so most of these tests need no model.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
import types
from dataclasses import dataclass

import pytest

from adasr.errors import AdasrError
from adasr.metrics import RECORD_FIELDS
from adasr.stream import StreamSpec
from adasr.tasks.base import Item


# ---------------------------------------------------------------------------------------------
# evaluation loop with a fake engine
# ---------------------------------------------------------------------------------------------


@dataclass
class _FakeInput:
    id: str
    source: object
    reference: str | None = None


@pytest.fixture
def fake_runtime(monkeypatch):
    """Use the real adasr.engine.EpisodeInput / adasr.stream.make_stream when they exist."""
    try:
        import adasr.engine  # noqa: F401
    except ImportError:
        mod = types.ModuleType("adasr.engine")
        mod.EpisodeInput = _FakeInput
        monkeypatch.setitem(sys.modules, "adasr.engine", mod)
    import adasr.stream

    if not hasattr(adasr.stream, "make_stream"):
        monkeypatch.setattr(adasr.stream, "make_stream", lambda text, wps=2.5: ("stream", text, wps),
                            raising=False)


@dataclass
class _Result:
    id: str
    record: dict
    thoughts: list = None
    deep: str = ""


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from conftest import make_tiny_tokenizer

    return make_tiny_tokenizer()


class FakeEngine:
    """Follows the StreamingEngine.run contract; answers right for even-numbered items."""

    def __init__(self, mode, seen, interrupt_at=None):
        self.mode, self.seen, self.interrupt_at = mode, seen, interrupt_at
        self.tokenizer = _tokenizer()  # the stream spec's token cap reads the engine's tokenizer

    def run(self, inputs, batch_size=1, clock="virtual", align_eoi=False):
        assert clock in ("virtual", "per-stream") and batch_size >= 1
        self.seen.append(("run", (batch_size, clock, align_eoi)))
        for n, inp in enumerate(inputs, start=1):
            if self.interrupt_at == n:
                raise KeyboardInterrupt
            self.seen.append((self.mode, inp.id))
            idx = int(inp.id.rsplit("-", 1)[1])
            rec = {f: 0 for f in RECORD_FIELDS}
            rec.update(answer_chunk=None, evidence_chunk=None, evidence_s=None)  # not a proactive stream
            rec.update(id=inp.id, mode=self.mode, correct=None, reference=inp.reference,
                       prediction=inp.reference if idx % 2 == 0 else "-1", format_ok=True,
                       post_input_latency_s=float(idx), wall_s=1.0,
                       stream_tokens=0 if self.mode == "batch" else 7)
            yield _Result(inp.id, rec, thoughts=[None, f"note {idx}."], deep=f"\\boxed{{{rec['prediction']}}}")


def _items(n=5):
    return [Item(id=f"gsm8k-train-{i}", question=f"What is {i} plus {i}?", reference=str(2 * i), line=i)
            for i in range(1, n + 1)]


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_interrupt_then_resume(tmp_path, fake_runtime):
    from adasr.evaluation import EvalInterrupted, evaluate

    seen: list = []
    items = _items(5)
    with pytest.raises(EvalInterrupted, match=r"^interrupted after 2 records.*rerun the same command to resume$") as ei:
        evaluate(lambda m: FakeEngine(m, seen, interrupt_at=3), items, modes=["adaptive"],
                 out_dir=tmp_path, progress=False)
    assert isinstance(ei.value, AdasrError)
    results = tmp_path / "adaptive" / "results.jsonl"
    assert [r["id"] for r in _read(results)] == ["gsm8k-train-1", "gsm8k-train-2"]
    assert json.loads((tmp_path / "adaptive" / "summary.json").read_text())["complete"] is False
    # what the model wrote, beside each record
    assert _read(tmp_path / "adaptive" / "transcripts.jsonl") == [
        {"id": "gsm8k-train-1", "thoughts": [None, "note 1."], "deep": "\\boxed{-1}"},
        {"id": "gsm8k-train-2", "thoughts": [None, "note 2."], "deep": "\\boxed{4}"}]

    seen.clear()
    sums = evaluate(lambda m: FakeEngine(m, seen), items, modes=["adaptive"], out_dir=tmp_path, progress=False)
    assert [i for m, i in seen if m != "run"] == ["gsm8k-train-3", "gsm8k-train-4", "gsm8k-train-5"]
    recs = _read(results)
    assert sorted(r["id"] for r in recs) == [it.id for it in items]
    assert [t["id"] for t in _read(tmp_path / "adaptive" / "transcripts.jsonl")] == [it.id for it in items]
    assert all(set(RECORD_FIELDS) <= set(r) for r in recs)
    assert [r["correct"] for r in recs] == [False, True, False, True, False]
    assert [r["reference"] for r in recs] == ["2", "4", "6", "8", "10"]
    s = sums["adaptive"]
    assert s["count"] == 5 and s["accuracy"] == pytest.approx(0.4) and s["complete"] is True
    assert s["problems_per_hour"] is not None and s["problems_per_hour"] > 0
    assert json.loads((tmp_path / "adaptive" / "summary.json").read_text())["count"] == 5
    assert "| metric | adaptive |" in (tmp_path / "adaptive" / "summary.md").read_text()

    # everything done: the engine is not even built
    def no_engine(mode):
        raise AssertionError("engine built although nothing is left to do")

    assert evaluate(no_engine, items, modes=["adaptive"], out_dir=tmp_path, progress=False)["adaptive"]["count"] == 5


class SwallowingEngine(FakeEngine):
    """A Ctrl-C arrives while the engine is in library code that catches everything."""

    def run(self, inputs, **kw):
        for n, result in enumerate(super().run(inputs, **kw), start=1):
            if n == 2:
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(1)  # the handler runs here; the KeyboardInterrupt is swallowed
                except BaseException:  # noqa: BLE001 (the point of this fake)
                    pass
            yield result


def test_ctrl_c_swallowed_by_library_code_still_stops_the_eval(tmp_path, fake_runtime):
    from adasr.evaluation import EvalInterrupted, evaluate

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(EvalInterrupted, match="interrupted after 2 records"):
        evaluate(lambda m: SwallowingEngine(m, []), _items(5), modes=["adaptive"], out_dir=tmp_path, progress=False)
    assert len(_read(tmp_path / "adaptive" / "results.jsonl")) == 2
    assert signal.getsignal(signal.SIGINT) is before  # evaluate's handler is removed


def test_truncated_last_line_is_dropped_and_recomputed(tmp_path, fake_runtime):
    from adasr.evaluation import evaluate
    from adasr.storage import ResultsWriter

    writer = ResultsWriter(tmp_path / "batch")
    with writer:
        for i in (1, 2):
            writer.write({"id": f"gsm8k-train-{i}", "mode": "batch", "correct": True, "reference": str(2 * i)})
    path = tmp_path / "batch" / "results.jsonl"
    with open(path, "a") as fh:
        fh.write('{"id": "gsm8k-train-3", "mode": "ba')  # killed mid-write
    assert ResultsWriter(tmp_path / "batch").done_ids() == {"gsm8k-train-1", "gsm8k-train-2"}
    assert path.read_text().endswith("}\n") and len(path.read_text().splitlines()) == 2

    with open(path, "a") as fh:
        fh.write('{"id": "gsm8k-train-3"')
    seen: list = []
    evaluate(lambda m: FakeEngine(m, seen), _items(3), modes=["batch"], out_dir=tmp_path, progress=False)
    assert [x for x in seen if x[0] != "run"] == [("batch", "gsm8k-train-3")]
    assert [r["id"] for r in _read(path)] == ["gsm8k-train-1", "gsm8k-train-2", "gsm8k-train-3"]


def test_multi_mode_summary_has_one_column_per_mode(tmp_path, fake_runtime):
    from adasr.evaluation import evaluate

    seen: list = []
    modes = ["batch", "interleaved", "adaptive"]
    sums = evaluate(lambda m: FakeEngine(m, seen), _items(4), modes=modes, out_dir=tmp_path, progress=True)
    assert list(sums) == modes
    md = (tmp_path / "summary.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| metric"))
    assert header == "| metric | batch | interleaved | adaptive |"
    for m in modes:
        assert (tmp_path / m / "summary.json").exists() and (tmp_path / m / "summary.md").exists()
        assert sums[m]["count"] == 4 and sums[m]["accuracy"] == pytest.approx(0.5)
    assert sums["batch"]["mean_stream_tokens"] == 0 and sums["adaptive"]["mean_stream_tokens"] == 7


@pytest.mark.parametrize("batch_size, clock, align, expected", [
    (1, None, None, (1, "virtual", False)),
    (4, None, None, (4, "virtual", True)),  # one shared timeline: EOI-aligned waves
    (4, "per-stream", None, (4, "per-stream", False)),  # a server at full load: every row always busy
    (4, None, True, (4, "virtual", True)),
    (4, "virtual", False, (4, "virtual", False)),
])
def test_eval_clock_defaults_are_recorded(tmp_path, fake_runtime, batch_size, clock, align, expected):
    from adasr.evaluation import evaluate

    seen: list = []
    kw = {} if clock is None else {"clock": clock}  # None: the default clock
    sums = evaluate(lambda m: FakeEngine(m, seen), _items(3), modes=["adaptive"], out_dir=tmp_path,
                    progress=False, batch_size=batch_size, align_eoi=align, **kw)
    assert [c for m, c in seen if m == "run"] == [expected]
    s = sums["adaptive"]
    assert (s["batch_size"], s["clock"], s["align_eoi"]) == expected
    assert json.loads((tmp_path / "adaptive" / "summary.json").read_text())["clock"] == expected[1]


def test_eval_unknown_clock(tmp_path, fake_runtime):
    from adasr.errors import ConfigError
    from adasr.evaluation import evaluate

    with pytest.raises(ConfigError, match="unknown clock 'wall'"):
        evaluate(lambda m: FakeEngine(m, []), _items(2), modes=["adaptive"], out_dir=tmp_path, progress=False,
                 clock="wall")


# ---------------------------------------------------------------------------------------------
# provenance: config.json, refusal of a different configuration, resume of the same
# ---------------------------------------------------------------------------------------------

RUN_CONFIG = {"model": "m", "dtype": "float32", "device": "cpu", "budget": 64, "max_deep_tokens": 512,
              "temperature": 0.0, "seed": 0, "data": "/d/train.jsonl", "limit": 3}


def test_eval_records_its_configuration(tmp_path, fake_runtime):
    from adasr.evaluation import evaluate

    evaluate(lambda m: FakeEngine(m, []), _items(3), modes=["batch", "adaptive"], out_dir=tmp_path, progress=False,
             batch_size=2, stream=StreamSpec(wps=4.0), run_config=RUN_CONFIG)
    for mode in ("batch", "adaptive"):
        cfg = json.loads((tmp_path / mode / "config.json").read_text())
        assert {k: cfg[k] for k in RUN_CONFIG} == RUN_CONFIG
        assert (cfg["mode"], cfg["batch_size"], cfg["wps"], cfg["clock"], cfg["align_eoi"]) == (mode, 2, 4.0, "virtual", True)
        assert cfg["adasr_version"] and cfg["torch_version"] and cfg["transformers_version"]
        assert "git_commit" in cfg


def test_eval_refuses_a_different_configuration_and_resumes_the_same(tmp_path, fake_runtime):
    from adasr.errors import ConfigError
    from adasr.evaluation import EvalInterrupted, evaluate

    seen: list = []
    items = _items(5)
    with pytest.raises(EvalInterrupted):
        evaluate(lambda m: FakeEngine(m, seen, interrupt_at=3), items, modes=["adaptive"], out_dir=tmp_path,
                 progress=False, run_config=RUN_CONFIG)
    results = tmp_path / "adaptive" / "results.jsonl"
    before = results.read_text()
    first = (tmp_path / "adaptive" / "config.json").read_text()

    def must_not_run(mode):
        raise AssertionError("a refused eval must not build an engine")

    for change, named in [({"budget": 32}, "budget 64 -> 32"), ({"model": "other"}, 'model "m" -> "other"'),
                          ({"temperature": 0.7, "seed": 1}, "seed 0 -> 1, temperature 0.0 -> 0.7")]:
        with pytest.raises(ConfigError) as info:
            evaluate(must_not_run, items, modes=["adaptive"], out_dir=tmp_path, progress=False,
                     run_config={**RUN_CONFIG, **change})
        msg = str(info.value)
        assert "\n" not in msg and named in msg and "another --out" in msg
    with pytest.raises(ConfigError, match="batch_size 1 -> 4"):
        evaluate(must_not_run, items, modes=["adaptive"], out_dir=tmp_path, progress=False, batch_size=4,
                 run_config=RUN_CONFIG)
    with pytest.raises(ConfigError, match="wps 2.5 -> 5.0"):  # a new mode is fine, a changed one is not
        evaluate(must_not_run, items, modes=["batch", "adaptive"], out_dir=tmp_path, progress=False, stream=StreamSpec(wps=5.0),
                 run_config=RUN_CONFIG)
    assert not (tmp_path / "batch").exists()  # refused before anything ran
    assert results.read_text() == before and (tmp_path / "adaptive" / "config.json").read_text() == first

    # the same configuration (a larger limit and another adasr version are not result settings) resumes
    seen.clear()
    sums = evaluate(lambda m: FakeEngine(m, seen), items, modes=["adaptive"], out_dir=tmp_path, progress=False,
                    run_config={**RUN_CONFIG, "limit": 50, "adasr_version": "9.9"})
    assert [i for m, i in seen if m != "run"] == ["gsm8k-train-3", "gsm8k-train-4", "gsm8k-train-5"]
    assert sums["adaptive"]["count"] == 5
    assert (tmp_path / "adaptive" / "config.json").read_text() == first  # the first run's record stays


def test_eval_dir_without_config_or_results(tmp_path, fake_runtime):
    """An older eval directory (results, no config.json) resumes; a directory with a config but
    no results takes the new configuration."""
    from adasr.evaluation import evaluate

    evaluate(lambda m: FakeEngine(m, []), _items(2), modes=["batch"], out_dir=tmp_path, progress=False,
             run_config=RUN_CONFIG)
    (tmp_path / "batch" / "config.json").unlink()
    seen: list = []
    evaluate(lambda m: FakeEngine(m, seen), _items(3), modes=["batch"], out_dir=tmp_path, progress=False,
             run_config={**RUN_CONFIG, "budget": 8})
    assert [i for m, i in seen if m != "run"] == ["gsm8k-train-3"]
    assert json.loads((tmp_path / "batch" / "config.json").read_text())["budget"] == 8

    (tmp_path / "adaptive").mkdir()
    (tmp_path / "adaptive" / "config.json").write_text(json.dumps({"budget": 1}))
    evaluate(lambda m: FakeEngine(m, []), _items(2), modes=["adaptive"], out_dir=tmp_path, progress=False,
             run_config=RUN_CONFIG)
    assert json.loads((tmp_path / "adaptive" / "config.json").read_text())["budget"] == 64


def test_eval_fixed_step_clock_gives_load_independent_latencies(tmp_path, tiny_model, tiny_tokenizer):
    """``step_s``: every step costs exactly that on the virtual clock, so post-input latencies are
    whole numbers of steps (arrivals fall on whole seconds here), and the setting is recorded."""
    from adasr.engine import EngineConfig, StreamingEngine
    from adasr.errors import ConfigError
    from adasr.evaluation import evaluate
    from adasr.stream import StreamSpec

    items = [Item(f"i{k}", "x", "7", k + 1, chunks=["Add 2.", "Add 5.", "What is it?"]) for k in range(2)]

    def factory(mode):
        return StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy=mode, max_deep_tokens=6, decode_rate=4.0))

    evaluate(factory, items, modes=["batch"], out_dir=tmp_path, progress=False, stream=StreamSpec(wps=1.0), step_s=0.25)
    recs = _read(tmp_path / "batch" / "results.jsonl")
    for r in recs:
        steps = r["post_input_latency_s"] / 0.25
        assert abs(steps - round(steps)) < 1e-6 and round(steps) >= 6  # the deep stage: >= 6 steps
    assert json.loads((tmp_path / "batch" / "config.json").read_text())["step_s"] == 0.25
    with pytest.raises(ConfigError, match="step_s needs the virtual clock"):
        evaluate(factory, items, modes=["batch"], out_dir=tmp_path / "x", progress=False, clock="per-stream",
                 step_s=0.25)


def test_budget_sweep_with_step_s_resumes(tmp_path, tiny_model, tiny_tokenizer):
    """A budget sweep with ``step_s`` records it in every ``config.json``; rerunning the same sweep
    into the same directory resumes (no refusal, nothing recomputed)."""
    from adasr.engine import EngineConfig, StreamingEngine
    from adasr.evaluation import evaluate_budgets

    items = [Item(f"i{k}", "x", "7", k + 1, chunks=["Add 2.", "What is it?"]) for k in range(2)]
    built = []

    def factory(mode, budget):
        built.append((mode, budget))
        return StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy=mode, thought_budget=budget,
                                                                         max_deep_tokens=4, decode_rate=4.0))

    kwargs = dict(budgets=[2, 3], modes=["interleaved"], out_dir=tmp_path, progress=False,
                  stream=StreamSpec(wps=1.0), step_s=0.25)
    first = evaluate_budgets(factory, items, **kwargs)
    assert len(built) == 2
    for b in (2, 3):
        assert json.loads((tmp_path / f"budget-{b}" / "interleaved" / "config.json").read_text())["step_s"] == 0.25
    second = evaluate_budgets(factory, items, **kwargs)  # resumes: everything is already done
    assert len(built) == 2
    assert second.keys() == first.keys()
    for b in (2, 3):
        assert len(_read(tmp_path / f"budget-{b}" / "interleaved" / "results.jsonl")) == 2


def test_rescaled_read_then_think_matches_a_run_at_the_other_point(tmp_path, tiny_model, tiny_tokenizer):
    """``rescale_read_then_think``: a pinned-clock batch run moved to another operating point (other
    arrival, chunker and step time) gives the records that running that point gives: the same
    tokens and answers, latencies x the step ratio, end of input from the new schedule."""
    from adasr.engine import EngineConfig, StreamingEngine
    from adasr.errors import ConfigError
    from adasr.evaluation import evaluate, rescale_read_then_think

    items = [Item(f"i{k}", f"Tom has {k + 2} apples, and he buys 3 more. How many apples does he have now?", "5",
                  k + 1) for k in range(3)]

    def factory(mode):
        return StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy=mode, max_deep_tokens=7, decode_rate=4.0))

    common = dict(modes=["batch"], progress=False, batch_size=2)
    evaluate(factory, items, out_dir=tmp_path / "speech", stream=StreamSpec(wps=2.5), step_s=0.14, **common)
    typing = StreamSpec(cps=4.0, chunker="clause")
    evaluate(factory, items, out_dir=tmp_path / "real", stream=typing, step_s=0.02, **common)
    summary = rescale_read_then_think(tmp_path / "speech", items, out_dir=tmp_path / "moved", stream=typing,
                                      step_s=0.02, decode_rate=50.0, tokenizer=tiny_tokenizer)
    real = {r["id"]: r for r in _read(tmp_path / "real" / "batch" / "results.jsonl")}
    moved = {r["id"]: r for r in _read(tmp_path / "moved" / "batch" / "results.jsonl")}
    assert real.keys() == moved.keys() and summary["count"] == 3
    for i, r in real.items():
        m = moved[i]
        assert (m["deep_tokens"], m["prediction"]) == (r["deep_tokens"], r["prediction"])
        for key in ("post_input_latency_s", "post_input_ttft_s", "eoi_s", "answer_s"):
            assert m[key] == pytest.approx(r[key], abs=1e-6), key
    config = json.loads((tmp_path / "moved" / "batch" / "config.json").read_text())
    assert (config["step_s"], config["cps"], config["chunker"]) == (0.02, 4.0, "clause")
    assert config["rescale_factor"] == pytest.approx(0.02 / 0.14)

    with pytest.raises(ConfigError, match="not the data"):
        rescale_read_then_think(tmp_path / "speech", items, out_dir=tmp_path / "x", stream=typing, step_s=0.02,
                                tokenizer=tiny_tokenizer, data=tmp_path / "other.jsonl")
    with pytest.raises(ConfigError, match="no record"):
        rescale_read_then_think(tmp_path / "speech", _items(1), out_dir=tmp_path / "x", stream=typing, step_s=0.02)
    evaluate(factory, items[:1], out_dir=tmp_path / "measured", stream=typing, **common)
    with pytest.raises(ConfigError, match="pinned virtual clock"):
        rescale_read_then_think(tmp_path / "measured", items[:1], out_dir=tmp_path / "x", stream=typing, step_s=0.02)
