"""The top-level API: ``from adasr import ...`` works, and ``import adasr`` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_import_adasr_does_not_import_torch():
    code = (
        "import sys, adasr\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "from adasr import load_model, StreamingEngine, EngineConfig, EpisodeInput, make_stream, LiveSource\n"
        "assert 'torch' in sys.modules\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_top_level_names_are_the_module_objects():
    import adasr
    from adasr import EngineConfig, EpisodeInput, LiveSource, StreamingEngine, load_model, make_stream
    from adasr.engine import EngineConfig as E, EpisodeInput as I, StreamingEngine as S
    from adasr.models import load_model as L
    from adasr.stream import LiveSource as LS, make_stream as M

    assert (load_model, StreamingEngine, EngineConfig, EpisodeInput, make_stream, LiveSource) == (L, S, E, I, M, LS)
    assert set(adasr.__all__) <= set(dir(adasr))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        adasr.nope  # noqa: B018
    assert make_stream("One. Two.", wps=10).chunks
