"""One episode's state machine (adasr.session) on a tiny random model: its statuses, ingesting
only new tokens, the batch layout, one-line thoughts (v2) and the fresh-context deep stage (v3)."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine, run_episode
from adasr.errors import ProtocolError
from adasr.kvcache import cache_keyword
from adasr.protocol import STAGE_DEEP, STAGE_INPUT, StreamingFormat
from adasr.stream import VirtualClock

from engine_helpers import Steered, engine, stream


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


def test_protocol_v2_one_line_thoughts_and_restated_input(tiny_model, tiny_tokenizer):
    x, nl = tiny_tokenizer.encode("A")[0], tiny_tokenizer.encode("\n")[0]
    model = Steered(tiny_model, x, nl)
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
    model = Steered(tiny_model, x, nl)
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
