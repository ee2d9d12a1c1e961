"""The live terminal view (adasr.view) shows the engine's decoded event text."""

from __future__ import annotations


from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine, run_episode

from engine_helpers import TEXTS, Steered, stream


def test_live_view_shows_decoded_event_text(tiny_model, tiny_tokenizer):
    import io

    from rich.console import Console

    from adasr.view import LiveView

    x, nl = tiny_tokenizer.encode("A")[0], tiny_tokenizer.encode("\n")[0]
    eng = StreamingEngine(Steered(tiny_model, x, nl), tiny_tokenizer,
                          EngineConfig(policy="interleaved", thought_budget=3, max_deep_tokens=5, protocol="v1"))
    out = io.StringIO()
    with LiveView(Console(file=out, width=80)) as view:
        res = run_episode(eng, EpisodeInput("v", stream(3)), on_event=view.on_event)
    assert view.deep == res.deep and view.thought_done == {0: "A\nA", 1: "A\nA"}
    assert TEXTS[0] in out.getvalue() and "deep stage" in out.getvalue()
