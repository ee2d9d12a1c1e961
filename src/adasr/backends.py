"""The engine factory: an engine whose model runner is the backend named by ``EngineConfig.backend``
(torch | vllm)."""

from __future__ import annotations

from functools import partial

from adasr.engine import EngineConfig, StreamingEngine
from adasr.errors import ConfigError
from adasr.protocol import StreamingFormat

__all__ = ["make_engine"]


def make_engine(loaded, config: EngineConfig | None = None, fmt: StreamingFormat | None = None,
                **backend_options) -> StreamingEngine:
    """The engine of ``config.backend`` for a loaded model (the one factory the CLI and a server
    use: ``adasr run|eval --backend vllm``); :meth:`StreamingEngine.derive` gives engines of other
    modes on the same backend resources.

    Args:
        loaded: a :class:`adasr.models.LoadedModel` (its model, tokenizer, path, source).
        config: the engine settings; ``config.backend`` picks the model runner.
        fmt: the protocol pieces (default: from ``config.protocol``).
        **backend_options: options of the vLLM backend (:class:`adasr.vllm_backend.VllmOptions`
            fields, e.g. ``max_model_len``, ``yield_tokens``); none for ``torch``.

    Returns:
        a :class:`StreamingEngine` whose runner is a :class:`~adasr.runner.TorchModelRunner`
        (``torch``) or an :class:`adasr.vllm_backend.VllmModelRunner` that owns its vLLM runtime
        (``vllm``: :meth:`StreamingEngine.close` shuts it down).

    Raises:
        ConfigError: an unknown backend, options for ``torch``, or ``vllm`` not installed.
    """
    config = config or EngineConfig()
    config.validate()
    if config.backend == "vllm":
        from adasr.vllm_backend import VllmModelRunner, VllmOptions, VllmRuntime

        runtime = VllmRuntime.from_loaded(loaded, VllmOptions(**backend_options))
        try:
            return StreamingEngine(None, loaded.tokenizer, config, fmt,
                                   runner=partial(VllmModelRunner, runtime, owns_runtime=True))
        except BaseException:
            runtime.close()
            raise
    if backend_options:
        raise ConfigError(f"options {', '.join(backend_options)} apply to the vllm backend only")
    return StreamingEngine(loaded.model, loaded.tokenizer, config, fmt)
