"""`adasr serve` on a tiny random model: the event sequence, continuous batching of live sessions
in one engine, every bad-input case (error event + close code, and the server keeps serving),
rows freed on disconnect, the API key, SSE, metrics, and what only a real server shows (close
codes set by uvicorn, a port in TIME_WAIT). The client and `adasr run --server`: test_client.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from adasr.client import Client, sessions_url
from adasr.errors import ConfigError
from adasr.serve import create_app
from adasr.serve.wire import MAX_FRAME_BYTES, event_from_wire, event_to_wire

from serve_helpers import TEXT, make_engine, wait_for


@pytest.fixture
def serve(tiny_model, tiny_tokenizer):
    """serve(**create_app kwargs, engine=...) -> a started TestClient (closed at teardown)."""
    clients = []

    def start(engine=None, **kw):
        engine = engine or make_engine(tiny_model, tiny_tokenizer)
        client = TestClient(create_app(engine, model_name="tiny", **kw))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for c in clients:
        c.__exit__(None, None, None)


def until_close(ws) -> tuple[list[dict], int]:
    """Every event until the server closes the socket, and the close code."""
    events = []
    while True:
        msg = ws.receive()
        if msg["type"] == "websocket.close":
            return events, msg["code"]
        events.append(json.loads(msg["text"]))


def next_event(ws, type_: str, **match) -> dict:
    while True:
        ev = ws.receive_json()
        if ev["type"] == type_ and all(ev.get(k) == v for k, v in match.items()):
            return ev


def run_session(client, chunks=TEXT, settings=None, **connect) -> tuple[list[dict], int]:
    with client.websocket_connect("/v1/sessions", **connect) as ws:
        if settings:
            ws.send_json({"type": "settings", **settings})
        for c in chunks:
            ws.send_json({"type": "chunk", "text": c})
        ws.send_json({"type": "end"})
        return until_close(ws)


def idle(client) -> bool:
    """No session open, no engine session, no KV rows and no key/value bytes: the baseline."""
    s = client.get("/health").json()
    return s["sessions"] == 0 and s["engine_sessions"] == 0 and s["rows"] == 0 and s["kv_bytes"] == 0


# -- a session ------------------------------------------------------------------------------------
def test_session_events_end_with_the_record(serve):
    client = serve()
    events, code = run_session(client)
    assert code == 1000
    types = [e["type"] for e in events]
    assert types[0] == "session" and types[-1] == "record"
    sid = events[0]["id"]
    assert all(e["id"] == sid for e in events)
    assert [e["chunk"] for e in events if e["type"] == "arrive"] == [0, 1, 2]
    assert [e["text"] for e in events if e["type"] == "arrive"] == TEXT
    # interleaved: a thought after each chunk but the last (the stream closed with it), streamed token by token
    thoughts = [e for e in events if e["type"] == "thought"]
    assert [t["chunk"] for t in thoughts] == [0, 1]
    stream_tokens = [e for e in events if e["type"] == "token" and e["stage"] == "stream"]
    assert len(stream_tokens) == sum(t["tokens"] for t in thoughts) - sum(1 for t in thoughts if t["tokens"] < 6)
    assert types.index("eoi") < types.index("deep_start") < types.index("answer") < types.index("record")
    deep = [e for e in events if e["type"] == "token" and e["stage"] == "deep"]
    assert 1 <= len(deep) <= 10 and all(types.index("deep_start") < events.index(e) for e in deep)
    rec = events[-1]["record"]
    assert rec["id"] == sid and rec["n_chunks"] == 3 and rec["mode"] == "interleaved"
    assert rec["deep_tokens"] == len(deep) + (0 if len(deep) == 10 else 1)
    assert 0 <= rec["post_input_ttft_s"] <= rec["post_input_latency_s"]  # real-clock seconds
    assert events[-1]["thoughts"][2] is None and "".join(e["text"] for e in deep) == events[-1]["deep"]
    assert wait_for(lambda: idle(client))


def test_per_session_settings_change_mode_and_budgets(serve):
    client = serve()
    events, code = run_session(client, settings={"mode": "batch", "max_deep_tokens": 3})
    assert code == 1000
    assert not [e for e in events if e["type"] == "thought"]
    rec = events[-1]["record"]
    assert rec["mode"] == "batch" and rec["stream_tokens"] == 0 and rec["deep_tokens"] <= 3
    events, _ = run_session(client, settings={"thought_budget": 2})
    assert all(t["tokens"] <= 2 + 1 for t in events if t["type"] == "thought")
    assert events[-1]["record"]["mode"] == "interleaved"
    events, code = run_session(client, settings={"mode": "proactive", "revisions": 1, "max_deep_tokens": 3})
    assert code == 1000 and events[-1]["record"]["mode"] == "proactive"


def test_a_proactive_server_takes_its_default_revisions_and_sessions_their_own(serve, tiny_model, tiny_tokenizer):
    """`adasr serve --mode proactive --revisions 1`: /v1/models reports the default (the page shows
    it); a session may ask for other revisions (``revisions`` in settings or in a /v1/solve body),
    and a bad value is refused like any setting."""
    client = serve(make_engine(tiny_model, tiny_tokenizer, policy="proactive", revisions=1, protocol=None))
    assert client.get("/v1/models").json()["data"][0]["revisions"] == 1
    for settings in (None, {"revisions": 0}, {"revisions": 3, "max_deep_tokens": 3}):
        events, code = run_session(client, settings=settings)
        assert code == 1000 and events[-1]["record"]["mode"] == "proactive"
    events, code = run_session(client, settings={"revisions": 9})
    assert code == 4400 and events[-1]["code"] == "invalid_frame" and "revisions" in events[-1]["message"]
    ok = client.post("/v1/solve", json={"text": "Add 5. Add 7.", "wps": 50, "revisions": 2, "max_deep_tokens": 3})
    assert ok.status_code == 200 and '"type": "record"' in ok.text
    bad = client.post("/v1/solve", json={"text": "Add 5.", "revisions": -1})
    assert bad.status_code == 422 and bad.json()["message"].startswith("revisions: ")
    assert wait_for(lambda: idle(client))


def test_per_session_sampling_is_seeded_and_isolated(serve):
    client = serve()
    hot = {"mode": "batch", "temperature": 1.5, "max_deep_tokens": 10}

    def deep(settings) -> str:
        events, code = run_session(client, settings=settings)
        assert code == 1000
        return events[-1]["deep"]

    a, b, c = deep({**hot, "seed": 1}), deep({**hot, "seed": 1}), deep({**hot, "seed": 2})
    assert a == b and a != c  # sampled, seeded per episode
    greedy = deep({"mode": "batch", "max_deep_tokens": 10})
    assert greedy == deep({"mode": "batch", "max_deep_tokens": 10, "temperature": 0.0}) != a
    with client.websocket_connect("/v1/sessions") as ws:
        ws.send_json({"type": "settings", "top_p": 0})
        events, code = until_close(ws)
    assert code == 4400 and events[-1]["code"] == "invalid_frame" and "top_p" in events[-1]["message"]


def test_forced_skips_are_reported(serve, tiny_model, tiny_tokenizer):
    client = serve(make_engine(tiny_model, tiny_tokenizer, thought_budget=0))
    events, code = run_session(client)
    skips = [e for e in events if e["type"] == "thought"]
    assert code == 1000 and [s["chunk"] for s in skips] == [0, 1]
    assert all(s["skipped"] and s["forced"] and s["tokens"] == 0 for s in skips)
    assert events[-1]["record"]["skipped_chunks"] == 3


# -- the read-then-think estimate of the record event -----------------------------------------------
def test_read_then_think_estimate_adds_the_tokens_written_before_eoi_at_the_measured_rate():
    from adasr.serve.wire import read_then_think_estimate

    est = read_then_think_estimate(40, decode_tokens=50, decode_s=5.0, post_input_latency_s=3.0)
    assert est == {"stream_tokens_before_eoi": 40, "decode_tokens": 50, "decode_s": 5.0, "decode_tokens_per_s": 10.0,
                   "estimated_post_input_latency_s": 3.0 + 40 / 10.0}
    # nothing written before end of input: the session read, then thought; the estimate is the measurement
    assert read_then_think_estimate(0, 0, 0.0, 2.5)["estimated_post_input_latency_s"] == 2.5
    none = read_then_think_estimate(7, 0, 0.0, 2.5)  # tokens but no decode step to measure a rate on
    assert none["decode_tokens_per_s"] is None and none["estimated_post_input_latency_s"] is None
    assert read_then_think_estimate(7, 10, 1.0, None)["estimated_post_input_latency_s"] is None


def test_session_pace_counts_decode_steps_and_tokens_before_eoi():
    from adasr.events import DeepStart, Ingest, Token
    from adasr.protocol import Stage
    from adasr.serve.worker import SessionPace

    pace = SessionPace()
    steps = [  # (events of one step, its duration)
        ([Ingest(0.5, "s", 0), Token(0.6, "s", Stage.STREAM, 11)], 0.4),  # a prefill step: no decode step
        ([Token(0.7, "s", Stage.STREAM, 12)], 0.1),
        ([Token(0.8, "s", Stage.STREAM, 13)], 0.1),
        ([], 0.2),  # the session sat this step out
        ([Token(1.2, "s", Stage.STREAM, 14)], 0.0),  # a step without a forward
        ([Token(2.1, "s", Stage.STREAM, 15)], 0.1),  # still thinking after end of input (eoi_s = 2.0)
        ([DeepStart(2.2, "s"), Token(2.3, "s", Stage.DEEP, 16)], 0.3),  # the end-of-input turn: a prefill step
        ([Token(2.4, "s", Stage.DEEP, 17)], 0.1),
    ]
    for events, dt in steps:
        for ev in events:
            pace.on_event(ev)
        pace.end_step(dt)
    assert pace.decode_tokens == 4 and pace.decode_s == pytest.approx(0.4)
    est = pace.estimate({"eoi_s": 2.0, "post_input_latency_s": 0.5})
    assert est["stream_tokens_before_eoi"] == 4 and est["decode_tokens_per_s"] == pytest.approx(10.0)
    assert est["estimated_post_input_latency_s"] == pytest.approx(0.5 + 4 / 10.0)


def test_the_record_event_carries_the_read_then_think_estimate(serve):
    client = serve()
    with client.websocket_connect("/v1/sessions") as ws:
        ws.send_json({"type": "chunk", "text": TEXT[0]})
        events = []
        while not (events and events[-1]["type"] == "thought"):  # the model thinks while the input arrives
            events.append(ws.receive_json())
        for c in TEXT[1:]:
            ws.send_json({"type": "chunk", "text": c})
        ws.send_json({"type": "end"})
        rest, code = until_close(ws)
    events += rest
    assert code == 1000
    last = events[-1]
    rec, est = last["record"], last["read_then_think"]
    before = [e for e in events if e["type"] == "token" and e["stage"] == "stream" and e["t"] <= rec["eoi_s"]]
    assert est["stream_tokens_before_eoi"] == len(before) > 0
    assert est["decode_tokens"] >= 1 and est["decode_s"] > 0
    assert est["decode_tokens_per_s"] == pytest.approx(est["decode_tokens"] / est["decode_s"])
    assert est["estimated_post_input_latency_s"] == pytest.approx(
        rec["post_input_latency_s"] + est["stream_tokens_before_eoi"] / est["decode_tokens_per_s"])
    assert est["estimated_post_input_latency_s"] > rec["post_input_latency_s"]


def test_sessions_join_while_another_is_mid_episode(serve, tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer)
    client = serve(engine)
    running: list[int] = []
    step = engine.step

    def counting_step():
        out = step()
        running.append(len(engine.scheduler.running))
        return out

    engine.step = counting_step  # called by the engine thread only
    with client.websocket_connect("/v1/sessions") as a:
        a.send_json({"type": "chunk", "text": TEXT[0]})
        next_event(a, "thought", chunk=0)  # A is mid-episode (its input has not ended)
        b_events, b_code = run_session(client)  # B joins, runs and leaves meanwhile
        a.send_json({"type": "chunk", "text": TEXT[1]})
        a.send_json({"type": "end"})
        a_events, a_code = until_close(a)
    assert a_code == b_code == 1000
    assert a_events[-1]["type"] == b_events[-1]["type"] == "record"
    assert a_events[-1]["id"] != b_events[-1]["id"]
    assert max(running) == 2  # both sessions held rows of one batch in the same steps
    assert engine.stats["row_steps"] > engine.stats["steps"]  # some forwards served both rows
    assert wait_for(lambda: idle(client))


def test_engine_sessions_with_their_own_policy_and_sampling_match_dedicated_engines(tiny_model, tiny_tokenizer):
    """What the server relies on: per-session policy, deep cap and sampling in one batch give the
    episodes that engines configured that way give alone."""
    from adasr.engine import EpisodeInput
    from adasr.policy import make_policy
    from adasr.sampling import SamplingParams
    from adasr.stream import Chunk, ScheduledStream

    def src():
        return ScheduledStream([Chunk(i, t, 0.5 * (i + 1)) for i, t in enumerate(TEXT)])

    alone_a = next(make_engine(tiny_model, tiny_tokenizer, policy="batch", max_deep_tokens=5, temperature=1.3,
                               top_k=20).run([EpisodeInput("a", src(), seed=7)]))
    alone_b = next(make_engine(tiny_model, tiny_tokenizer).run([EpisodeInput("b", src())]))
    shared = make_engine(tiny_model, tiny_tokenizer)  # interleaved, greedy, deep cap 10
    shared.configure(batch_size=2)
    shared.add_session(EpisodeInput("a", src(), seed=7), policy=make_policy("batch"), max_deep_tokens=5,
                       sampling=SamplingParams(1.3, 1.0, 20))
    shared.add_session(EpisodeInput("b", src()))
    results = {}
    while shared.has_work:
        shared.step()
        results.update((r.id, r) for r in shared.pop_results())
    assert results["a"].token_ids == alone_a.token_ids and results["a"].record["mode"] == "batch"
    assert results["b"].token_ids == alone_b.token_ids
    with pytest.raises(ConfigError):
        shared.add_session(EpisodeInput("c", src()), sampling=SamplingParams(1.0, 0.0, 0))


def test_a_yielding_policy_ends_its_thought_when_a_live_input_ends(tiny_model, tiny_tokenizer):
    """A live client cannot mark its last chunk: end of input arrives after it was ingested. The
    adaptive policy (which yields to arrivals) ends the thought then, as it does for a chunk: at the
    end of its current step (never inside one), or at its thought budget."""
    from adasr.policy import step_complete

    from adasr.engine import EpisodeInput, run_episode
    from adasr.events import Token
    from adasr.stream import LiveSource

    def episode(mode: str):
        source = LiveSource()
        source.push(TEXT[0])
        seen = []

        def on_event(ev):
            if isinstance(ev, Token):
                seen.append(ev)
                if len(seen) == 3:
                    source.close()  # end of input arrives while the model thinks

        engine = make_engine(tiny_model, tiny_tokenizer, policy=mode, thought_budget=20)
        return run_episode(engine, EpisodeInput("live", source), clock="real", on_event=on_event)

    yielding = episode("adaptive")
    thought = yielding.thoughts[0]
    ids = tiny_tokenizer.encode(thought, add_special_tokens=False)
    assert len(ids) >= 3 and yielding.record["deep_tokens"] >= 1
    # it ran on past end of input only while its step was unfinished
    assert step_complete(thought) or yielding.record["stream_tokens"] == 20
    assert not any(step_complete(tiny_tokenizer.decode(ids[:k])) for k in range(3, len(ids) - 1))
    assert len(episode("interleaved").episode.thoughts[0]) == 20  # a non-yielding policy thinks to its budget


# -- limits and bad input -------------------------------------------------------------------------
BAD_FRAMES = [
    ("text", "{not json", "invalid_json", 4400),
    ("bytes", b'{"type": "chunk", "text": "caf\xe9"}', "invalid_utf8", 1007),
    ("text", json.dumps({"type": "chunk", "text": "x" * (MAX_FRAME_BYTES + 10)}), "too_big", 1009),
    ("text", json.dumps({"type": "hello"}), "unknown_type", 4400),
    ("text", json.dumps({"type": "chunk"}), "invalid_frame", 4400),
    ("text", json.dumps([1, 2]), "invalid_frame", 4400),
    ("text", json.dumps({"type": "chunk", "text": "x", "path": "/etc/passwd"}), "invalid_frame", 4400),
    ("text", json.dumps({"type": "settings", "model": "/tmp/evil", "trust_remote_code": True}), "invalid_frame", 4400),
    ("text", json.dumps({"type": "settings", "mode": "fast"}), "invalid_frame", 4400),
    ("text", json.dumps({"type": "settings", "max_deep_tokens": 10_000}), "invalid_settings", 4400),
    ("text", json.dumps({"type": "settings", "mode": "adaptive", "revisions": 1}), "invalid_settings", 4400),
    ("text", json.dumps({"type": "settings", "mode": "proactive", "revisions": 9}), "invalid_frame", 4400),
    ("text", json.dumps({"type": "settings", "mode": "proactive", "revisions": -1}), "invalid_frame", 4400),
    ("text", json.dumps({"type": "settings", "mode": "proactive", "revisions": 1.5}), "invalid_frame", 4400),
    ("text", json.dumps({"type": "settings", "revisions": 1}), "invalid_settings", 4400),  # (an interleaved server)
    ("text", json.dumps({"type": "end"}), "empty_input", 4400),
    ("text", "[" * 50_000, "invalid_json", 4400),  # nested too deeply for the JSON parser
    ("text", '{"type": "chunk", "text": "x", "n": ' + "[" * 30_000 + "]" * 30_000 + "}", "invalid_json", 4400),
    ("text", '{"type": "chunk", "text": "x", "n": 1' + "0" * 5_000 + "}", "invalid_json", 4400),  # int too long
    ("text", '{"type": "chunk", "text": "caf\udce9"}', "invalid_utf8", 1007),  # a text frame with a lone surrogate
    ("text", '{"type": "chunk", "text": "caf\\ud800"}', "invalid_frame", 4400),  # JSON-escaped lone surrogate
    ("text", json.dumps({"type": "settings", "seed": 2**64}), "invalid_settings", 4400),
    ("text", json.dumps({"type": "settings", "seed": 2**63}), "invalid_settings", 4400),
    ("text", json.dumps({"type": "settings", "seed": -1}), "invalid_settings", 4400),
    ("text", json.dumps({"type": "settings", "temperature": 1e-300}), "invalid_frame", 4400),  # logits overflow
    ("text", '{"type": "settings", "temperature": NaN}', "invalid_frame", 4400),
]


def _first_frame(frame) -> bool:
    """Whether a bad frame is only bad as a session's first frame (settings, or end before any text)."""
    return isinstance(frame, str) and frame.startswith(('{"type": "settings"', '{"type": "end"'))


@pytest.mark.parametrize("kind,frame,code,close", BAD_FRAMES, ids=[f[2] + str(i) for i, f in enumerate(BAD_FRAMES)])
def test_bad_frames_get_an_error_and_a_close_code(serve, kind, frame, code, close):
    client = serve()
    with client.websocket_connect("/v1/sessions") as other:  # a live session that must not notice
        other.send_json({"type": "chunk", "text": TEXT[0]})
        with client.websocket_connect("/v1/sessions") as ws:
            if not _first_frame(frame):
                ws.send_json({"type": "chunk", "text": "Add 5."})
            (ws.send_bytes if kind == "bytes" else ws.send_text)(frame)
            events, got = until_close(ws)
        assert got == close
        assert events[-1] == {"type": "error", "code": code, "message": events[-1]["message"], "fatal": True}
        assert events[-1]["message"]
        other.send_json({"type": "end"})
        events, got = until_close(other)
    assert got == 1000 and events[-1]["type"] == "record"
    assert run_session(client)[1] == 1000  # and a new session afterwards
    assert wait_for(lambda: idle(client))


def test_settings_after_the_first_frame_are_refused(serve):
    client = serve()
    with client.websocket_connect("/v1/sessions") as ws:
        ws.send_json({"type": "chunk", "text": "Add 5."})
        ws.send_json({"type": "settings", "mode": "batch"})
        events, code = until_close(ws)
    assert code == 4400 and events[-1]["code"] == "invalid_frame" and "first frame" in events[-1]["message"]


def test_a_chunk_after_end_is_ignored_with_an_error_event(serve):
    client = serve()
    with client.websocket_connect("/v1/sessions") as ws:
        ws.send_json({"type": "chunk", "text": "Add 5."})
        ws.send_json({"type": "end"})
        ws.send_json({"type": "chunk", "text": "Subtract 3."})
        events, code = until_close(ws)
    assert code == 1000 and events[-1]["type"] == "record"
    errors = [e for e in events if e["type"] == "error"]
    assert [(e["code"], e["fatal"]) for e in errors] == [("after_end", False)]
    assert events[-1]["record"]["n_chunks"] == 1


def test_more_sessions_than_the_limit_are_refused(serve):
    client = serve(max_sessions=1)
    with client.websocket_connect("/v1/sessions") as first:
        first.send_json({"type": "chunk", "text": "Add 5."})
        next_event(first, "arrive")
        with client.websocket_connect("/v1/sessions") as second:  # refused at its first frame
            second.send_json({"type": "chunk", "text": "Add 5."})
            events, code = until_close(second)
        assert code == 4429 and events == [{"type": "error", "code": "server_full",
                                            "message": events[0]["message"], "fatal": True}]
        resp = client.post("/v1/solve", json={"text": "Add 5. What?"})
        assert resp.status_code == 429 and resp.json()["error"] == "server_full"
        first.send_json({"type": "end"})
        assert until_close(first)[1] == 1000
    assert run_session(client)[1] == 1000  # the slot is free again


def test_an_idle_session_times_out_and_frees_its_row(serve):
    client = serve(idle_timeout_s=0.3)
    with client.websocket_connect("/v1/sessions") as ws:
        ws.send_json({"type": "chunk", "text": "Add 5."})
        events, code = until_close(ws)
    assert code == 4408 and events[-1]["code"] == "idle_timeout"
    assert wait_for(lambda: idle(client))
    assert run_session(client)[1] == 1000


def test_slots_are_taken_at_the_first_frame(serve):
    """Connections that send nothing hold no slot; the limit is checked at the first frame."""
    client = serve(max_sessions=1)
    with client.websocket_connect("/v1/sessions") as silent, client.websocket_connect("/v1/sessions"):
        assert client.get("/health").json()["sessions"] == 0
        assert run_session(client)[1] == 1000  # two silent connections do not block a session
        silent.send_json({"type": "chunk", "text": "Add 5."})  # its first frame takes the slot
        assert next_event(silent, "session")["type"] == "session"
        assert client.get("/health").json()["sessions"] == 1
        with client.websocket_connect("/v1/sessions") as late:
            late.send_json({"type": "settings", "mode": "batch"})
            events, code = until_close(late)
        assert code == 4429 and [e["code"] for e in events] == ["server_full"]
        silent.send_json({"type": "end"})
        assert until_close(silent)[1] == 1000
    assert wait_for(lambda: idle(client))


def test_a_silent_connection_is_closed_after_the_handshake_timeout(serve):
    client = serve(handshake_timeout_s=0.3, idle_timeout_s=30)
    t0 = time.monotonic()
    with client.websocket_connect("/v1/sessions") as ws:
        events, code = until_close(ws)
    assert code == 4408 and [e["code"] for e in events] == ["idle_timeout"]
    assert "first frame" in events[0]["message"] and time.monotonic() - t0 < 10
    assert wait_for(lambda: idle(client))


def test_a_session_seed_is_checked_and_any_int_seeds_the_generator(serve, tiny_model, tiny_tokenizer):
    from adasr.engine import EpisodeInput
    from adasr.stream import Chunk, ScheduledStream

    client = serve()
    hot = {"mode": "batch", "temperature": 1.5, "max_deep_tokens": 6}
    events, code = run_session(client, settings={**hot, "seed": 2**63 - 1})  # the largest seed
    assert code == 1000 and events[-1]["type"] == "record"
    for seed in (2**64, 2**63, -1):
        resp = client.post("/v1/solve", json={"text": "Add 5. What?", "seed": seed})
        assert resp.status_code == 422 and resp.json()["error"] == "invalid_settings"
        assert "2**63-1" in resp.json()["message"]
    assert client.get("/health").json()["status"] == "ok" and wait_for(lambda: idle(client))
    # in-process, any Python int seeds an episode (reduced modulo 2**64)
    engine = make_engine(tiny_model, tiny_tokenizer, temperature=1.0)
    src = ScheduledStream([Chunk(0, TEXT[0], 0.0)])
    for seed in (2**64, 2**200, -(2**70)):
        engine.add_session(EpisodeInput(f"s{seed}", src, seed=seed))
    assert engine.session(f"s{2**64}").generator.initial_seed() == 0


def test_a_session_the_engine_refuses_ends_alone(serve, tiny_model, tiny_tokenizer):
    """An exception while adding one session ends that session (engine_error, 1011), not the
    engine thread: the session beside it and later ones run."""
    engine = make_engine(tiny_model, tiny_tokenizer)
    add = engine.add_session

    def picky(inp, **kw):
        if inp.seed == 13:
            raise ValueError("no thirteen")
        return add(inp, **kw)

    engine.add_session = picky  # called by the engine thread only
    client = serve(engine)
    with client.websocket_connect("/v1/sessions") as other:
        other.send_json({"type": "chunk", "text": TEXT[0]})
        next_event(other, "arrive")
        events, code = run_session(client, settings={"seed": 13})
        assert code == 1011 and events[-1]["code"] == "engine_error" and "no thirteen" in events[-1]["message"]
        other.send_json({"type": "end"})
        assert until_close(other)[1] == 1000
    assert run_session(client)[1] == 1000
    assert client.get("/health").json()["status"] == "ok" and wait_for(lambda: idle(client))


def test_the_engine_loop_restarts_in_place_after_an_unexpected_error(serve, tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer)
    pop = engine.pop_results
    failed = []

    def flaky():
        out = pop()
        if out and not failed:
            failed.append(True)
            raise RuntimeError("bookkeeping bug")
        return out

    engine.pop_results = flaky  # outside engine.step: the worker's own bookkeeping fails once
    client = serve(engine)
    events, code = run_session(client)
    assert code == 1011 and events[-1]["code"] == "engine_error" and "bookkeeping bug" in events[-1]["message"]
    assert run_session(client)[1] == 1000  # the same thread goes on
    assert client.get("/health").json()["status"] == "ok" and wait_for(lambda: idle(client))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # (the SystemExit below)
def test_health_reports_a_dead_engine_thread(serve, tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer)

    def fatal():
        raise SystemExit("gone")  # not an Exception: the thread ends

    client = serve(engine)
    assert client.get("/health").status_code == 200
    engine.step = fatal
    events, code = run_session(client)  # the live session learns it, it does not hang
    assert code == 1011 and events[-1]["code"] == "engine_error"
    wait_for(lambda: client.get("/health").status_code == 503)  # (the thread ends right after telling them)
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "dead"
    events, code = run_session(client)  # later sessions are refused at once
    assert code == 1011 and [e["code"] for e in events] == ["engine_error"]
    resp = client.post("/v1/solve", json={"text": "Add 5. What?"})
    assert resp.status_code == 503 and resp.json()["error"] == "engine_error"
    assert client.get("/health").json()["sessions"] == 0


def test_disconnect_mid_thought_frees_the_kv_rows(serve, tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer, thought_budget=500, max_deep_tokens=500)
    client = serve(engine)
    assert wait_for(lambda: idle(client))  # the baseline: no rows, no keys/values
    with client.websocket_connect("/v1/sessions") as ws:
        ws.send_json({"type": "chunk", "text": TEXT[0]})
        for _ in range(3):
            next_event(ws, "token", stage="stream")  # thinking (a 500-token thought)
        held = client.get("/health").json()
        assert held["rows"] == 1 and held["kv_bytes"] > 0 and held["sessions"] == 1
    # the client is gone mid-thought: the session is aborted and its row dropped
    assert wait_for(lambda: idle(client))
    assert not engine.has_work
    assert 'adasr_sessions_total{outcome="aborted"} 1.0' in client.get("/metrics").text
    assert run_session(client, settings={"thought_budget": 2, "max_deep_tokens": 3})[1] == 1000


def test_api_key(serve):
    client = serve(api_key="s3cret")
    for connect in ({}, {"headers": {"Authorization": "Bearer wrong"}}):
        with client.websocket_connect("/v1/sessions", **connect) as ws:
            events, code = until_close(ws)
        assert code == 4401 and events[-1]["code"] == "unauthorized"
    events, code = run_session(client, headers={"Authorization": "Bearer s3cret"})
    assert code == 1000 and events[-1]["type"] == "record"
    assert run_session(client, [TEXT[0]], headers={"X-API-Key": "s3cret"})[1] == 1000
    with client.websocket_connect("/v1/sessions?api_key=s3cret") as ws:  # the page's way (no headers in browsers)
        ws.send_json({"type": "chunk", "text": "Add 5."})
        ws.send_json({"type": "end"})
        assert until_close(ws)[1] == 1000
    assert client.get("/v1/models").status_code == 401
    assert client.post("/v1/solve", json={"text": "Add 5."}).status_code == 401
    assert client.get("/v1/models", headers={"X-API-Key": "s3cret"}).json()["data"][0]["id"] == "tiny"
    assert client.get("/health").status_code == 200


# -- HTTP routes ----------------------------------------------------------------------------------
def sse_events(text: str) -> list[dict]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        ev = json.loads(lines["data"])
        assert ev["type"] == lines["event"]
        out.append(ev)
    return out


def test_solve_streams_the_same_events_as_sse(serve):
    client = serve()
    resp = client.post("/v1/solve", json={"text": " ".join(TEXT), "wps": 40, "mode": "interleaved"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert events[0]["type"] == "session" and events[-1]["type"] == "record"
    arrivals = [e for e in events if e["type"] == "arrive"]
    assert [a["text"] for a in arrivals] == TEXT
    words = [len(t.split()) for t in TEXT]  # chunk k arrives when its last word is spoken, at 40 words/s
    assert arrivals[-1]["t"] >= sum(words) / 40 - 0.05
    assert events[-1]["record"]["n_chunks"] == 3
    typed = sse_events(client.post("/v1/solve", json={"text": " ".join(TEXT), "cps": 400}).text)
    chars = len(" ".join(TEXT))  # as typed at 400 characters/s: the last chunk with the last character
    assert [e for e in typed if e["type"] == "arrive"][-1]["t"] >= chars / 400 - 0.05
    assert client.post("/v1/solve", json={"text": "Add 5.", "cps": 0}).status_code == 422
    blank = client.post("/v1/solve", json={"text": "   "})
    assert blank.status_code == 422 and blank.json()["error"] == "empty_input"
    surrogate = client.post("/v1/solve", content=b'{"text": "Add \\ud800 5."}',
                            headers={"content-type": "application/json"})
    assert surrogate.status_code == 422 and surrogate.json()["error"] == "invalid_request"
    assert surrogate.json()["message"].startswith("text: ")
    nested = client.post("/v1/solve", content=b"[" * 50_000, headers={"content-type": "application/json"})
    assert 400 <= nested.status_code < 500
    bad = client.post("/v1/solve", json={"text": "Add 5.", "wps": -1})
    assert bad.status_code == 422
    assert client.post("/v1/solve", json={"text": "Add 5.", "path": "/etc/passwd"}).status_code == 422
    assert wait_for(lambda: idle(client))


def test_models_health_metrics_and_the_page(serve):
    client = serve(max_sessions=3)
    assert client.get("/v1/models").json()["data"][0] == {"id": "tiny", "object": "model", "mode": "interleaved",
                                                         "revisions": 0, "protocol": "v1", "max_sessions": 3}
    assert client.get("/health").json()["status"] == "ok"
    run_session(client)
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("adasr_sessions_active 0.0", 'adasr_sessions_total{outcome="finished"} 1.0', "adasr_queue_length",
                 "adasr_tokens_per_second", "adasr_step_seconds_count", "adasr_kv_rows", "adasr_generated_tokens_total"):
        assert name in metrics.text
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    js = client.get("/static/app.js").text
    assert "/v1/sessions" in js and client.get("/static/style.css").status_code == 200


def test_wire_events_round_trip(tiny_model, tiny_tokenizer):
    from adasr.engine import EpisodeInput, run_episode
    from adasr.stream import Chunk, ScheduledStream

    engine = make_engine(tiny_model, tiny_tokenizer)
    seen = []
    run_episode(engine, EpisodeInput("a", ScheduledStream([Chunk(i, t, i + 1.0) for i, t in enumerate(TEXT)])),
                on_event=seen.append)
    assert {type(e).__name__ for e in seen} >= {"Arrive", "Ingest", "Token", "Thought", "Eoi", "DeepStart", "Answer"}
    for ev in seen:
        assert event_from_wire(json.loads(json.dumps(event_to_wire(ev)))) == ev


# -- a real server (uvicorn in a thread, or `adasr serve`) -----------------------------------------
def test_oversized_frame_on_a_real_server_closes_with_1009(live_server):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(sessions_url(live_server), max_size=None) as ws:
        ws.send(json.dumps({"type": "chunk", "text": "x" * (MAX_FRAME_BYTES + 10)}))
        with pytest.raises(ConnectionClosed) as info:
            while True:
                ws.recv(timeout=10)
    assert info.value.rcvd.code == 1009
    assert Client(live_server).solve(iter(TEXT))["record"]["n_chunks"] == 3  # still serving


def test_invalid_utf8_text_frame_on_a_real_server_closes_with_1007(live_server):
    """uvicorn closes such a frame with 1007 itself; it is logged below ERROR, without a traceback."""
    import logging

    import httpx
    from websockets.exceptions import ConnectionClosed
    from websockets.frames import Close, Frame, Opcode
    from websockets.sync.client import connect

    class Records(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.records = []

        def emit(self, record):
            self.records.append(record)

    seen = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "asyncio")]
    for logger in loggers:
        logger.addHandler(seen)
    bad = b'{"type": "chunk", "text": "caf\xe9"}'
    try:
        with connect(sessions_url(live_server)) as ws:
            ws.send(bad, text=True)  # a text frame that is not UTF-8
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    ws.recv(timeout=10)
        assert info.value.rcvd.code == 1007
        with connect(sessions_url(live_server)) as ws:  # one, then the client's close, read in one go by uvicorn
            close = Frame(Opcode.CLOSE, Close(1000, "").serialize())
            ws.socket.sendall(Frame(Opcode.TEXT, bad).serialize(mask=True) + close.serialize(mask=True))
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=10)
        assert wait_for(lambda: httpx.get(live_server + "/health").json()["sessions"] == 0)
    finally:
        for logger in loggers:
            logger.removeHandler(seen)
    assert not [r for r in seen.records if r.levelno >= logging.ERROR or r.exc_info], \
        [r.getMessage() for r in seen.records]
    assert Client(live_server).solve(iter(TEXT))["record"]["n_chunks"] == 3


def test_serve_probes_a_port_in_time_wait(tmp_path):
    """A restart right after a server had connections: the port's old connections are in TIME_WAIT
    (uvicorn's listener sets SO_REUSEADDR, so its connections' TIME_WAIT allow a reusing bind)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    peer = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server side closes first: its end goes to TIME_WAIT
    peer.recv(1)
    peer.close()
    srv.close()
    out = subprocess.run([sys.executable, "-m", "adasr.cli", "serve", "--model", str(tmp_path), "--dtype", "bogus",
                          "--port", str(port)], capture_output=True, timeout=60)
    err = out.stderr.decode()
    assert out.returncode != 0 and "cannot listen" not in err and "unknown dtype" in err, err


