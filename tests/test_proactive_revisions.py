"""Proactive revisions (docs/DESIGN.md, "Revisions"): keep listening after a response and allow the
committed answer to be revised; the record, the metrics, the turn rewards and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine
from adasr.errors import ConfigError
from adasr.policy import make_policy
from adasr.proactive_metrics import episode_metrics, summarize_proactive
from adasr.protocol import STAGE_INPUT
from adasr.stream import Chunk, ScheduledStream, VirtualClock

TEXTS = ["How many clips?", "Natalia sold 48 clips.", "Then she sold half as many.", "Add 5.", "Subtract 3.",
         "That is all."]


def stream(n: int = 6, gap: float = 1.0) -> ScheduledStream:
    return ScheduledStream([Chunk(i, TEXTS[i], gap * (i + 1)) for i in range(n)])


class _TurnScripted(torch.nn.Module):
    """The tiny model, steered (+100) to write ``scripts[k]`` in its k-th assistant turn (the turn
    after chunk k; a turn without a script is silence: the line break at once). It reads every
    token it is fed, in order, so it serves one episode (batch 1) per instance."""

    def __init__(self, model, header: list[int], scripts: dict[int, list[int]], end: int):
        super().__init__()
        self.inner, self.header, self.scripts, self.end = model, list(header), scripts, end
        self.hist: list[int] = []
        self.turn, self.pos = -1, None  # the current turn and the next index into its script

    def _target(self, tok: int) -> int:
        self.hist.append(tok)
        if self.hist[-len(self.header):] == self.header:
            self.turn, self.pos = self.turn + 1, 0
        elif self.pos is not None:
            script = self.scripts.get(self.turn, [])
            self.pos = self.pos + 1 if self.pos < len(script) and tok == script[self.pos] else None
        if self.pos is None:
            return -1
        script = self.scripts.get(self.turn, [])
        return script[self.pos] if self.pos < len(script) else self.end

    def forward(self, input_ids, logits_to_keep=0, **kw):
        assert input_ids.shape[0] == 1
        out = self.inner(input_ids=input_ids, logits_to_keep=0, **kw)
        for p, tok in enumerate(input_ids[0].tolist()):
            target = self._target(tok)
            if target >= 0:
                out.logits[0, p, target] += 100.0
        if isinstance(logits_to_keep, torch.Tensor):
            out.logits = out.logits[:, logits_to_keep]
        elif logits_to_keep:
            out.logits = out.logits[:, -logits_to_keep:]
        return out


def _run(tiny_model, tok, revisions: int, evidence: int = 3, reference: str = "9", **config):
    """One episode of 6 chunks: silent after chunk 0, ``\\boxed{7}`` after chunks 1 and 2 (a
    response, then a confirmation), ``\\boxed{9}`` after chunk 3 (a revision), silent after;
    ``config``: more :class:`EngineConfig` settings."""
    fmt = StreamingEngine(tiny_model, tok, EngineConfig(policy="proactive")).format
    seven, nine = tok.encode("\\boxed{7}"), tok.encode("\\boxed{9}")
    model = _TurnScripted(tiny_model, fmt.assistant_header, {1: seven, 2: seven, 3: nine}, tok.encode("\n")[0])
    eng = StreamingEngine(model, tok, EngineConfig(policy="proactive", thought_budget=16, decode_rate=100.0,
                                                   max_deep_tokens=4, revisions=revisions, **config))
    return next(eng.run([EpisodeInput("p", stream(), reference=reference, evidence_chunk=evidence)],
                        clock=VirtualClock(fixed_step_s=0.01)))


def test_without_revisions_the_first_response_ends_the_episode(tiny_model, tiny_tokenizer):
    res = _run(tiny_model, tiny_tokenizer, revisions=0)
    rec = res.record
    assert rec["prediction"] == "7" and rec["answer_chunk"] == 1 and rec["n_chunks"] == 2
    assert rec["first_answer_chunk"] == 1 and rec["first_prediction"] == "7" and rec["n_revisions"] == 0
    assert [e["revision"] for e in res.events if e["type"] == "response"] == [0]
    assert [e["type"] for e in res.events][-1] == "answer"


def test_one_revision_replaces_the_answer_and_ends_the_episode(tiny_model, tiny_tokenizer):
    res = _run(tiny_model, tiny_tokenizer, revisions=1)
    rec = res.record
    # chunk 2 repeated the answer (a confirmation, no event); chunk 3 revised it, which ended the episode
    assert rec["prediction"] == "9" and rec["answer_chunk"] == 3 and rec["n_chunks"] == 4
    assert rec["first_prediction"] == "7" and rec["first_answer_chunk"] == 1 and rec["n_revisions"] == 1
    assert rec["first_answer_s"] < rec["answer_s"] and rec["deep_tokens"] == 0
    responses = [e for e in res.events if e["type"] == "response"]
    assert [(e["chunk"], e["prediction"], e["revision"]) for e in responses] == [(1, "7", 0), (3, "9", 1)]
    answers = [e for e in res.events if e["type"] == "answer"]
    assert len(answers) == 1 and answers[0]["prediction"] == "9" and answers[0]["early"]
    assert not any(e["type"] == "eoi" and e["t"] < rec["answer_s"] for e in res.events)


def _digit(tok, d: str) -> int:
    """The token that tells ``\\boxed{d}`` from ``\\boxed{0}``."""
    a, b = tok.encode(f"\\boxed{{{d}}}"), tok.encode("\\boxed{0}")
    (i,) = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return a[i]


@pytest.mark.parametrize("config, prediction", [
    ({"revision_logit_bias": {"9": -1e4}}, "7"),  # the revision cannot be written: the answer stands
    ({"logit_bias": {"9": -1e4}}, "7"),  # no revision bias: the turns after the answer keep logit_bias
    ({"logit_bias": {"9": -1e4}, "revision_logit_bias": {}}, "9"),  # an unbiased revision
    ({"revision_logit_bias": {"7": -1e4}}, "9"),  # not applied before the answer: the first response is 7
])
def test_a_revision_logit_bias_sets_the_turns_after_an_answer_only(tiny_model, tiny_tokenizer, config, prediction):
    ids = {key: {_digit(tiny_tokenizer, d): b for d, b in bias.items()} for key, bias in config.items()}
    rec = _run(tiny_model, tiny_tokenizer, revisions=1, **ids).record
    assert rec["first_prediction"] == "7" and rec["first_answer_chunk"] == 1
    assert rec["prediction"] == prediction and rec["n_revisions"] == int(prediction == "9")


def test_an_unused_revision_keeps_listening_to_the_end_of_input(tiny_model, tiny_tokenizer):
    res = _run(tiny_model, tiny_tokenizer, revisions=2)
    rec = res.record
    # listening on after the revision: every chunk is read, no deep stage runs, the answer stands
    assert rec["prediction"] == "9" and rec["answer_chunk"] == 3 and rec["n_chunks"] == 6
    assert rec["n_revisions"] == 1 and rec["deep_tokens"] == 0 and rec["post_input_latency_s"] < 0
    types = [e["type"] for e in res.events]
    assert "deep_start" not in types and types.index("eoi") < types.index("answer")
    assert res.thoughts[4] == "" and len(res.thoughts) == 6  # silent after chunk 4; the last chunk: no turn


def test_revision_metrics_premature_on_the_first_response(tiny_model, tiny_tokenizer, tmp_path):
    """``premature`` is judged on the first response, correctness and timing on the final answer;
    ``adasr eval`` grades the first answer too (``first_correct``)."""
    from adasr.evaluation import evaluate
    from adasr.tasks.base import Item

    rec = _run(tiny_model, tiny_tokenizer, revisions=1).record
    rec["correct"] = True
    m = episode_metrics(rec)
    assert m["premature"] and not m["timely"] and m["proactive_score"] == 0.0 and m["response_delay_chunks"] == 0
    m = episode_metrics({**rec, "evidence_chunk": 1})  # the first response came with the evidence
    assert not m["premature"] and m["response_delay_chunks"] == 2 and not m["timely"]
    assert m["proactive_score"] == pytest.approx(0.5 ** 0.5)  # late by one chunk past the window
    with pytest.raises(ValueError, match="first_answer_chunk"):
        episode_metrics({**rec, "first_answer_chunk": 5})
    old = {k: v for k, v in rec.items() if k != "first_answer_chunk"}  # records written before the field
    assert not episode_metrics({**old, "answer_chunk": 3})["premature"]

    fmt = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy="proactive")).format
    scripts = {1: tiny_tokenizer.encode("\\boxed{7}"), 3: tiny_tokenizer.encode("\\boxed{9}")}
    models = iter([_TurnScripted(tiny_model, fmt.assistant_header, scripts, tiny_tokenizer.encode("\n")[0])
                   for _ in range(2)])
    items = [Item(f"i{k}", "x", "9", k + 1, chunks=list(TEXTS), evidence_chunk=3) for k in range(2)]
    summary = evaluate(lambda mode: StreamingEngine(next(models), tiny_tokenizer, EngineConfig(
        policy=mode, thought_budget=16, decode_rate=100.0, max_deep_tokens=4, revisions=1)), items[:1],
        modes=["proactive"], out_dir=tmp_path, progress=False, step_s=0.01)["proactive"]
    rec = json.loads((tmp_path / "proactive" / "results.jsonl").read_text())
    assert rec["correct"] is True and rec["first_correct"] is False and rec["premature"]
    p = summary["proactive"]
    assert p["accuracy"] == 1.0 and p["first_answer_accuracy"] == 0.0 and p["revised_rate"] == 1.0
    assert p["premature_rate"] == 1.0 and p["answered_before_eoi_rate"] == 1.0
    plain = summarize_proactive([{"evidence_chunk": 0, "answer_chunk": 0, "correct": True, "n_chunks": 2}])
    assert plain["first_answer_accuracy"] is None and plain["revised_rate"] == 0.0


def test_turn_rewards_grade_each_response_on_its_own_answer():
    from adasr.train.rewards import ProactiveRewardConfig, turn_rewards

    cfg = ProactiveRewardConfig()
    # a wrong response at the evidence, then a right revision one chunk later
    r = turn_rewards([2, 3], [True, True], 2, [False, True], cfg)
    assert r == pytest.approx([-cfg.turn_wrong, 1.0])
    # with the predictions: after the answer, silence and a confirmation earn 0 (not late silence)
    r = turn_rewards([1, 2, 3, 4], [False, True, False, True], 2, [False, True, False, True], cfg,
                     predictions=[None, "7", None, "7"])
    assert r == pytest.approx([cfg.turn_wait, 1.0, 0.0, 0.0])
    # a revision is judged on its own answer: right -> wrong is a wrong response
    r = turn_rewards([2, 3], [True, True], 2, [True, False], cfg, predictions=["7", "8"])
    assert r == pytest.approx([1.0, -cfg.turn_wrong])
    with pytest.raises(ValueError, match="predictions"):
        turn_rewards([2, 3], [True, True], 2, True, cfg, predictions=["7"])
    with pytest.raises(ValueError, match="correctness flags"):
        turn_rewards([2, 3], [True, True], 2, [True], cfg)


def test_revisions_are_checked():
    assert make_policy("proactive", revisions=1).revisions == 1 and make_policy("proactive").revisions == 0
    for mode, n, needle in (("adaptive", 1, "proactive only"), ("proactive", -1, ">= 0"), ("proactive", 1.5, ">= 0")):
        with pytest.raises(ConfigError, match=needle):
            make_policy(mode, revisions=n)
    with pytest.raises(ConfigError, match="proactive only"):
        EngineConfig(policy="batch", revisions=1).make_policy()
    from adasr.serve.wire import FrameError, parse_frame

    assert parse_frame(json.dumps({"type": "settings", "mode": "proactive", "revisions": 1})).revisions == 1
    with pytest.raises(FrameError):
        parse_frame(json.dumps({"type": "settings", "revisions": -1}))


def test_cli_revisions_need_proactive_mode(tiny_dir, tmp_path):
    for args in (("run", "Add 5. Then 3.", "--model", tiny_dir, "--revisions", "1"),
                 ("eval", "--data", str(tmp_path / "x.jsonl"), "--model", tiny_dir, "--revisions", "1")):
        proc = subprocess.run([sys.executable, "-m", "adasr.cli", *args], capture_output=True, timeout=120)
        err = proc.stderr.decode()
        assert proc.returncode != 0 and "Traceback" not in err and "proactive only" in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_cli_revision_logit_bias_needs_revisions_and_is_recorded(tiny_dir, tmp_path):
    def adasr(*args):
        return subprocess.run([sys.executable, "-m", "adasr.cli", *args], capture_output=True, timeout=120)

    for args in (("run", "Add 5. Then 3.", "--model", tiny_dir, "--mode", "proactive"),
                 ("eval", "--data", str(tmp_path / "x.jsonl"), "--model", tiny_dir, "--mode", "proactive")):
        proc = adasr(*args, "--revision-logit-bias", "a=-1")
        err = proc.stderr.decode()
        assert proc.returncode != 0 and "Traceback" not in err and "--revisions 1 or more" in err, err
        assert len(err.strip().splitlines()) == 1, err
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"question": "Say the first even number.", "chunks": ["Say the first even number.",
                                "3.", "4."], "answer": "4", "evidence_chunk": 2}) + "\n")
    args = ["eval", "--data", str(data), "--model", tiny_dir, "--out", str(tmp_path / "out"), "--mode", "proactive",
            "--revisions", "1", "--budget", "4", "--max-deep-tokens", "4", "--decode-rate", "20", "--step-s", "0.05"]
    proc = adasr(*args, "--revision-logit-bias", "a=-1")
    assert proc.returncode == 0, proc.stderr.decode()
    config = json.loads((tmp_path / "out" / "proactive" / "config.json").read_text())
    assert config["revision_logit_bias"] == {"a": -1.0} and "logit_bias" not in config
    proc = adasr(*args)  # resuming with other settings is refused
    assert proc.returncode != 0 and "revision_logit_bias" in proc.stderr.decode()


def test_the_turns_after_an_answer_are_the_tokens_sft_trains_on(tiny_model, tiny_tokenizer):
    """The engine's prompt after a committed answer, token for token, is the proactive layout SFT
    renders for a record continued past its answer (RESULTS §40: no layout drift explains why a
    model trained on corrections did not revise)."""
    from adasr.train.sft_data import render_row

    res = _run(tiny_model, tiny_tokenizer, revisions=2)
    turns = [t for t in res.thoughts if t is not None]  # chunks 0..4: silence, 7, 7 (confirmed), 9, silence
    assert turns == ["", "\\boxed{7}", "\\boxed{7}", "\\boxed{9}", ""]
    row = {"id": "p", "chunks": TEXTS, "thoughts": turns, "evidence_chunk": 3, "answer": "9"}
    fmt = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy="proactive")).format
    rendered, _ = render_row(fmt, row, "proactive")
    n = len(rendered.input_ids)
    assert res.token_ids[:n] == rendered.input_ids
    # then only the last chunk's user turn, fed as it closed the stream (it has no assistant turn)
    assert all(st == STAGE_INPUT for st in res.token_stage[n:]) and TEXTS[5] in tiny_tokenizer.decode(res.token_ids[n:])
