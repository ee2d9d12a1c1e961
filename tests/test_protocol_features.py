"""Protocols as named features: the preset table, name <-> features, unknown names, and the one
rule that picks a run's protocol when nothing names one (adasr.protocol.mode_protocol)."""

from __future__ import annotations

import dataclasses

import pytest

from adasr.engine import EngineConfig, StreamingEngine
from adasr.errors import ConfigError
from adasr.policy import MODES, make_policy
from adasr.protocol import (
    EOI_RESTATE_TEXT,
    EOI_TEXT,
    FRESH_DEEP_PREFIX_TEXT,
    FRESH_DEEP_TEXT,
    NOTES_INSTRUCTION,
    PRESETS,
    PROACTIVE_INSTRUCTION,
    STREAMING_INSTRUCTION,
    Protocol,
    StreamingFormat,
    mode_protocol,
    protocol_format,
    resolve_protocol,
)

FEATURES = ("one_line_thoughts", "restate_input", "fresh_deep", "notes_in_answer", "proactive")

# preset -> (features it has, streaming instruction, end-of-input text): the texts each version
# rendered before protocols were features (stored adapters were trained on them)
EXPECTED = {
    "v1": (set(), STREAMING_INSTRUCTION, EOI_TEXT),
    "v1-restate": ({"restate_input"}, STREAMING_INSTRUCTION, EOI_RESTATE_TEXT),
    "v2": ({"one_line_thoughts", "restate_input"}, NOTES_INSTRUCTION, EOI_RESTATE_TEXT),
    "v3": ({"one_line_thoughts", "restate_input", "fresh_deep"}, NOTES_INSTRUCTION, FRESH_DEEP_TEXT),
    "v3-prefix": ({"one_line_thoughts", "restate_input", "fresh_deep", "notes_in_answer"}, NOTES_INSTRUCTION,
                  FRESH_DEEP_PREFIX_TEXT),
    "proactive-v1": ({"one_line_thoughts", "restate_input", "proactive"}, PROACTIVE_INSTRUCTION, EOI_RESTATE_TEXT),
}


def _features(p: Protocol) -> dict[str, bool]:
    return {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name != "name"}


def test_presets_are_the_shipped_versions_with_their_features_and_texts():
    assert list(PRESETS) == list(EXPECTED)
    assert tuple(_features(PRESETS["v1"])) == FEATURES
    for name, (features, instruction, eoi_text) in EXPECTED.items():
        p = PRESETS[name]
        assert p.name == name
        assert {f for f, on in _features(p).items() if on} == features, name
        assert (p.streaming_instruction, p.eoi_text) == (instruction, eoi_text), name


def test_name_features_name_round_trip():
    """Each preset's features are its own: name -> features -> name finds the same preset."""
    for name in PRESETS:
        features = _features(resolve_protocol(name))
        assert [n for n, p in PRESETS.items() if _features(p) == features] == [name]
        assert Protocol(name, **features) == PRESETS[name]
    p = PRESETS["v2"]
    assert resolve_protocol(p) is p  # an object is its own protocol


@pytest.mark.parametrize("bad", ["v9", "V1", "", 3, None])
def test_unknown_protocol_is_one_actionable_config_error(bad):
    with pytest.raises(ConfigError) as err:
        resolve_protocol(bad)
    msg = str(err.value)
    assert msg == f"unknown protocol {bad!r}: use one of v1, v1-restate, v2, v3, v3-prefix, proactive-v1"


@pytest.mark.parametrize("features, needs", [
    ({"fresh_deep": True, "one_line_thoughts": True}, "fresh_deep needs restate_input"),
    ({"notes_in_answer": True, "restate_input": True}, "notes_in_answer needs fresh_deep"),
    ({"one_line_thoughts": True}, "one_line_thoughts needs restate_input"),
    ({"proactive": True, "restate_input": True}, "proactive needs one_line_thoughts"),
])
def test_contradicting_features_are_refused(features, needs):
    with pytest.raises(ConfigError, match=f"protocol 'custom': {needs}$"):
        Protocol("custom", **features)


def test_mode_protocol_is_the_one_default_rule():
    assert mode_protocol("proactive").name == "proactive-v1"
    for mode in ("batch", "interleaved", "adaptive", None):
        assert mode_protocol(mode).name == "v3-prefix"
    for mode in (*MODES, None):  # training renders its episodes: v1 whatever the mode
        assert mode_protocol(mode, training=True).name == "v1"
        for named in ("v2", PRESETS["v1-restate"]):  # a named (trained) protocol always wins
            assert mode_protocol(mode, named).name == resolve_protocol(named).name
            assert mode_protocol(mode, named, training=True) is resolve_protocol(named)
    with pytest.raises(ConfigError, match="unknown protocol 'v9'"):
        mode_protocol("adaptive", "v9")


def test_formats_take_a_name_or_a_protocol(tiny_tokenizer):
    custom = Protocol("notes-only", one_line_thoughts=True, restate_input=True)  # v2's features, another name
    fmt = StreamingFormat(tiny_tokenizer, custom)
    assert fmt.protocol is custom and fmt.eoi_text == PRESETS["v2"].eoi_text
    assert StreamingFormat(tiny_tokenizer).protocol is PRESETS["v1"]  # the training default
    assert protocol_format(tiny_tokenizer, "v3") is protocol_format(tiny_tokenizer, PRESETS["v3"])
    with pytest.raises(ConfigError, match="unknown protocol 'v9'"):
        StreamingFormat(tiny_tokenizer, "v9")


@pytest.mark.parametrize("mode", MODES)
def test_engine_uses_the_mode_rule(tiny_model, tiny_tokenizer, mode):
    """An engine without a named protocol runs its mode's default; a named one wins (and is what
    every per-session mode gets, as a trained adapter's)."""
    eng = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy=mode, decode_rate=100.0))
    assert eng.format.protocol is mode_protocol(mode)
    named = StreamingEngine(tiny_model, tiny_tokenizer, EngineConfig(policy=mode, decode_rate=100.0, protocol="v2"))
    assert named.format.protocol.name == "v2"
    for other in MODES:
        assert eng.session_format(make_policy(other)).protocol is mode_protocol(other)
        assert named.session_format(make_policy(other)) is named.format
