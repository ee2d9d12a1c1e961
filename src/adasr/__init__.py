"""adasr: adaptive streaming reasoning — language models that think while the input arrives.

Data flows one way: stream (chunks + arrival times) -> engine (KV-cache session) -> records
(one per episode) -> reports. See README.md and docs/ARCHITECTURE.md.

The everyday API is importable from here::

    from adasr import load_model, StreamingEngine, EngineConfig, EpisodeInput, make_stream, StreamSpec, LiveSource

Those names are loaded on first use (module ``__getattr__``), so ``import adasr`` stays light:
it imports neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from adasr.errors import AdasrError, ConfigError, DataError, InputError, ModelLoadError, ProtocolError

__version__ = "0.1.0"

_LAZY = {
    "load_model": "adasr.models",
    "LoadedModel": "adasr.models",
    "StreamingEngine": "adasr.engine",
    "EngineConfig": "adasr.engine",
    "EpisodeInput": "adasr.engine",
    "make_stream": "adasr.stream",
    "StreamSpec": "adasr.stream",
    "LiveSource": "adasr.stream",
}

__all__ = [
    "AdasrError", "ConfigError", "DataError", "InputError", "ModelLoadError", "ProtocolError",
    *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine
    from adasr.models import LoadedModel, load_model
    from adasr.stream import LiveSource, StreamSpec, make_stream


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'adasr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
