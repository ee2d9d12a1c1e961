"""How a session samples its tokens: :class:`SamplingParams` (the shape of vLLM's ``SamplingParams``).

One frozen, validated object travels from the engine's config (:attr:`adasr.engine.EngineConfig.sampling`)
or a server's per-session settings (:meth:`adasr.serve.wire.SessionSettings.sampling`) through
:meth:`adasr.engine.StreamingEngine.add_session` and the session to the model runner, which warps
and samples the logits with it (:func:`adasr.runner.logits_warpers`, vLLM's sampler with the
``vllm`` backend). A light module (no torch): the wire imports it.

The seed is not a sampling parameter here: each episode's generator is seeded from the engine's
base seed (``EngineConfig.seed``) and the episode's own (``EpisodeInput.seed``, a server
session's ``seed`` setting), so that one :class:`SamplingParams` serves every session with those
settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from adasr.errors import ConfigError

__all__ = ["GREEDY", "SamplingParams"]


@dataclass(frozen=True)
class SamplingParams:
    """The sampling settings of a session (hashable: the runner caches its logits warpers by them).

    Attributes:
        temperature: 0 for greedy decoding (argmax; ``top_p`` and ``top_k`` are then unused),
            else the temperature the logits are divided by.
        top_p: nucleus sampling: keep the smallest set of tokens whose probability reaches it
            (1.0 = off).
        top_k: keep the ``top_k`` most likely tokens (0 = off).

    Raises:
        ConfigError: ``temperature`` negative or not finite, ``top_p`` outside (0, 1], ``top_k``
            negative or not an integer.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        t, p, k = self.temperature, self.top_p, self.top_k
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t >= 0 and isinstance(p, (int, float))
                and 0 < p <= 1 and isinstance(k, int) and not isinstance(k, bool) and k >= 0):
            raise ConfigError(f"sampling needs temperature >= 0, 0 < top_p <= 1 and an integer top_k >= 0; "
                              f"got temperature={t!r}, top_p={p!r}, top_k={k!r}")

    @property
    def greedy(self) -> bool:
        """Whether tokens are the argmax (``temperature == 0``)."""
        return self.temperature == 0


GREEDY = SamplingParams()
"""Greedy decoding (the engine's default)."""
