"""The streaming protocol renderer: template splitting, stages, decision tokens, answers, errors."""

from __future__ import annotations

import copy

import pytest

from adasr.errors import ProtocolError
from adasr.protocol import (
    STAGE_DEEP,
    STAGE_INPUT,
    STAGE_STREAM,
    Episode,
    StreamingFormat,
    find_boxed,
    parse_answer,
)


def test_render_matches_chat_template(tiny_tokenizer):
    fmt = StreamingFormat(tiny_tokenizer)
    ep = Episode(chunks=["Add 5.", "Subtract 3."], thoughts=["5 so far."], deep="So \\boxed{2}")
    text = tiny_tokenizer.decode(fmt.render(ep).input_ids)
    msgs = [
        {"role": "system", "content": fmt.instructions["streaming"]},
        {"role": "user", "content": "Add 5."},
        {"role": "assistant", "content": "5 so far."},
        {"role": "user", "content": "Subtract 3."},
        {"role": "user", "content": fmt.eoi_text},
        {"role": "assistant", "content": "So \\boxed{2}"},
    ]
    assert text == tiny_tokenizer.apply_chat_template(msgs, tokenize=False)


def test_batch_layout_is_one_user_turn(tiny_tokenizer):
    fmt = StreamingFormat(tiny_tokenizer)
    text = tiny_tokenizer.decode(fmt.render(Episode(chunks=["Add 5.", "Subtract 3."], layout="batch")).input_ids)
    msgs = [
        {"role": "system", "content": fmt.instructions["batch"]},
        {"role": "user", "content": "Add 5. Subtract 3.\n\n" + fmt.batch_eoi_text},
    ]
    assert text == tiny_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def test_stages_and_decision_tokens(tiny_tokenizer):
    fmt = StreamingFormat(tiny_tokenizer)
    ep = Episode(chunks=["a.", "b.", "c."], thoughts=["think", ""], deep="\\boxed{1}")
    r = fmt.render(ep)
    assert len(r.input_ids) == len(r.stage) == len(r.decision)
    think_ids = fmt.encode("think")
    # the two decision tokens: first token of "think", and the end-of-turn of the skip
    decisions = [r.input_ids[i] for i, d in enumerate(r.decision) if d]
    assert decisions == [think_ids[0], fmt.end_of_turn_id]
    assert all(r.stage[i] == STAGE_STREAM for i, d in enumerate(r.decision) if d)
    stream = [t for t, s in zip(r.input_ids, r.stage) if s == STAGE_STREAM]
    assert stream == think_ids + [fmt.end_of_turn_id, fmt.end_of_turn_id]
    deep = [t for t, s in zip(r.input_ids, r.stage) if s == STAGE_DEEP]
    assert deep == fmt.encode("\\boxed{1}") + [fmt.end_of_turn_id]
    assert r.stage[0] == STAGE_INPUT and r.stage[-1] == STAGE_INPUT  # the footer's "\n" is not generated


def test_text_and_ids_render_alike(tiny_tokenizer):
    fmt = StreamingFormat(tiny_tokenizer)
    ep = Episode(chunks=["a.", "b."], thoughts=["x = 1"], deep="\\boxed{1}")
    ids_ep = copy.deepcopy(ep)
    ids_ep.thoughts = [fmt.encode("x = 1")]
    ids_ep.deep = fmt.encode("\\boxed{1}")
    assert fmt.render(ep).input_ids == fmt.render(ids_ep).input_ids


@pytest.mark.parametrize(
    "ep, msg",
    [
        (Episode(chunks=[]), "at least one chunk"),
        (Episode(chunks=["a"], thoughts=["x"], layout="batch"), "no streaming thoughts"),
        (Episode(chunks=["a"], thoughts=["x", "y"]), "2 thoughts for 1 chunks"),
        (Episode(chunks=["a", "b"], thoughts=[None, "y"]), "not the last chunk"),
        (Episode(chunks=["a"], layout="sideways"), "unknown layout"),
    ],
)
def test_malformed_episodes(tiny_tokenizer, ep, msg):
    with pytest.raises(ProtocolError, match=msg):
        StreamingFormat(tiny_tokenizer).render(ep)


def test_tokenizer_without_template(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(ProtocolError, match="no chat template"):
        StreamingFormat(tok)


def test_template_that_rewrites_history(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    # drops every assistant turn but the last: not turn-separable
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(ProtocolError, match="turn-separable"):
        StreamingFormat(tok)


def test_boxed_parsing():
    assert find_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}}") == ["1", "\\frac{1}{2}"]
    assert parse_answer("so \\boxed{ 72 }.") == "72"
    assert parse_answer("no answer") is None
    assert parse_answer("\\boxed{unclosed") is None
