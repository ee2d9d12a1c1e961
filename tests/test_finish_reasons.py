"""Finish reasons (the shape of vLLM's finished request statuses): why a session ended, in the
session, the record (``finish_reason``), the ``answer`` event and the server's events."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine, run_episode
from adasr.metrics import NUMERIC_FIELDS, RECORD_FIELDS
from adasr.policy import InterleavedPolicy
from adasr.session import FinishReason, SessionStatus

from engine_helpers import TEXTS, stream


class _Always(torch.nn.Module):
    """The tiny model, steered (+100) to write ``token`` at every position."""

    def __init__(self, model, token: int):
        super().__init__()
        self.inner, self.token = model, token

    def forward(self, input_ids, **kw):
        out = self.inner(input_ids=input_ids, **kw)
        out.logits[..., self.token] += 100.0
        return out


class _AnswerAtOnce(InterleavedPolicy):
    """Every streaming thought commits the answer (a proactive toy policy)."""

    name = "proactive-toy"

    def commits_answer(self, thought: str) -> bool:
        return True


def _engine(model, tok, policy="interleaved", **kw) -> StreamingEngine:
    return StreamingEngine(model, tok, EngineConfig(policy=policy, thought_budget=4, max_deep_tokens=5, protocol="v1",
                                                    decode_rate=50.0, **kw))


def _stop(tok) -> int:
    return tok.convert_tokens_to_ids("<|im_end|>")


def _answer(res) -> dict:
    (answer,) = [e for e in res.events if e["type"] == "answer"]
    return answer


def test_a_deep_stage_the_model_ends_is_stopped(tiny_model, tiny_tokenizer):
    res = run_episode(_engine(_Always(tiny_model, _stop(tiny_tokenizer)), tiny_tokenizer), EpisodeInput("a", stream(3)))
    assert res.record["finish_reason"] == "stopped" and res.record["deep_tokens"] == 1
    assert _answer(res)["finish_reason"] == "stopped" and not _answer(res)["early"]


def test_a_deep_stage_at_its_cap_is_length_capped_and_not_well_formed(tiny_model, tiny_tokenizer):
    x = tiny_tokenizer.encode("A")[0]
    res = run_episode(_engine(_Always(tiny_model, x), tiny_tokenizer), EpisodeInput("a", stream(3)))
    rec = res.record
    assert rec["finish_reason"] == "length_capped" and rec["deep_tokens"] == 5 and rec["format_ok"] is False
    assert _answer(res)["finish_reason"] == "length_capped"


@pytest.mark.parametrize("stops", [True, False])
def test_a_response_before_end_of_input_is_answered_early(tiny_model, tiny_tokenizer, stops):
    """The response ends the episode at once; whether the model ended its thought itself (or the
    budget cut it) is the session's ``answer_complete`` (the record's ``format_ok``)."""
    model = _Always(tiny_model, _stop(tiny_tokenizer) if stops else tiny_tokenizer.encode("A")[0])
    eng = _engine(model, tiny_tokenizer, policy=_AnswerAtOnce(thought_budget=4))
    eng.configure(clock="virtual")
    session = eng.session(eng.add_session(EpisodeInput("p", stream(4, gap=1.0))))
    while eng.has_work:
        eng.step()
    (res,) = eng.pop_results()
    assert session.finish_reason is FinishReason.ANSWERED_EARLY and session.answer_complete is stops
    assert res.record["finish_reason"] == "answered_early" and res.record["deep_tokens"] == 0
    assert res.record["n_chunks"] == 1 and res.record["format_ok"] is False  # (no \boxed{} either way)
    assert _answer(res)["finish_reason"] == "answered_early" and _answer(res)["early"]


def test_a_committed_answer_kept_to_the_end_of_input_is_answered_early(tiny_model, tiny_tokenizer):
    """With a revision left the session listens on; the end of input ends it with its answer."""
    listening = _AnswerAtOnce(thought_budget=4)
    listening.revisions = 1
    res = run_episode(_engine(_Always(tiny_model, _stop(tiny_tokenizer)), tiny_tokenizer, policy=listening),
                      EpisodeInput("p", stream(2)))
    assert res.record["finish_reason"] == "answered_early" and res.record["n_chunks"] == 2
    assert res.record["deep_tokens"] == 0 and _answer(res)["early"]


def test_an_aborted_session_has_the_aborted_reason(tiny_model, tiny_tokenizer):
    eng = _engine(tiny_model, tiny_tokenizer)
    eng.configure(batch_size=2)
    running = eng.session(eng.add_session(EpisodeInput("running", stream(3))))
    queued = eng.session(eng.add_session(EpisodeInput("queued", stream(3))))
    assert running.finish_reason is None
    for _ in range(3):
        eng.step()
    eng.abort("running")
    eng.abort("queued")
    assert running.status is queued.status is SessionStatus.ABORTED
    assert running.finish_reason is queued.finish_reason is FinishReason.ABORTED
    assert not running.answer_complete


def test_finish_reason_is_a_text_field_of_the_record():
    assert "finish_reason" in RECORD_FIELDS and "finish_reason" not in NUMERIC_FIELDS
    assert [r.value for r in FinishReason] == ["stopped", "length_capped", "answered_early", "aborted"]


def test_the_server_sends_the_finish_reason(tiny_model, tiny_tokenizer):
    from adasr.serve import create_app

    with TestClient(create_app(_engine(tiny_model, tiny_tokenizer), model_name="tiny")) as client:
        with client.websocket_connect("/v1/sessions") as ws:
            for text in TEXTS[:2]:
                ws.send_json({"type": "chunk", "text": text})
            ws.send_json({"type": "end"})
            events = []
            while True:
                msg = ws.receive()
                if msg["type"] == "websocket.close":
                    break
                events.append(json.loads(msg["text"]))
    (answer,) = [e for e in events if e["type"] == "answer"]
    record = events[-1]["record"]
    assert record["finish_reason"] in ("stopped", "length_capped")
    assert answer["finish_reason"] == record["finish_reason"] and answer["early"] is False
    assert (record["finish_reason"] == "length_capped") == (record["deep_tokens"] == 5)
