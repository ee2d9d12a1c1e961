"""Defaults shared by the command line, the evaluation loop, training and the library: defined
here once (a light module: no torch) so that ``adasr run``, ``adasr eval`` and RL rollouts agree.

Where two paths deliberately use different values, both are named here (``DEFAULT_*`` for
inference: ``adasr run``, ``eval``, ``serve``, :class:`~adasr.engine.EngineConfig`; ``RL_*`` for
the rollouts of ``adasr train grpo|hrpo``) instead of being written as literals.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MODEL", "DEFAULT_WPS", "TYPING_CPS", "DEFAULT_CHUNKER", "DEFAULT_MAX_CHUNK_TOKENS",
           "DEFAULT_TOKENS_PER_CHUNK", "DEFAULT_THOUGHT_BUDGET", "DEFAULT_MAX_DEEP_TOKENS", "RL_THOUGHT_BUDGET",
           "RL_MAX_DEEP_TOKENS"]

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The model ``adasr run``/``eval``/``train`` use when none is named (a bundled base: no download)."""

DEFAULT_WPS = 2.5
"""Default arrival rate in words per second (conversational speech): ``adasr run``/``eval``,
:class:`~adasr.stream.StreamSpec`, and ``POST /v1/solve`` of ``adasr serve``."""

TYPING_CPS = 4.0
"""Typing speed of the typing operating point, characters per second: LiveMind (Chen et al., arXiv
2406.14319) simulates a user typing at 240 characters/minute and measures latency from the last
character (``--cps 4``; docs/OPERATING_POINTS.md)."""

DEFAULT_CHUNKER = "sentence"
"""Default chunker of a text input (one sentence per chunk), also of ``POST /v1/solve``."""

DEFAULT_MAX_CHUNK_TOKENS = 128
"""Default token cap of a chunk in :class:`~adasr.stream.StreamSpec` (the recipe of ``adasr run``,
``adasr eval`` and RL rollouts): longer chunks are split into pieces of at most this many tokens
(a long sentence would otherwise arrive, and be ingested, as one block). The low-level builders
:func:`~adasr.stream.make_stream` and :func:`~adasr.stream.chunk_text` apply no cap unless asked."""

DEFAULT_TOKENS_PER_CHUNK = 16
"""Tokens per chunk of the ``token`` chunker."""

DEFAULT_THOUGHT_BUDGET = 64
"""Most tokens per streaming thought at inference (``adasr run``/``eval``/``serve``, ``EngineConfig``,
the thought policies) and the thought cap of ``adasr data distill``'s episodes."""

DEFAULT_MAX_DEEP_TOKENS = 512
"""Cap of the deep stage (reasoning after end of input + answer) at inference, tokens."""

RL_THOUGHT_BUDGET = 32
"""Most tokens per streaming thought of an RL rollout (the ``engine`` group's ``thought_budget``):
half the inference budget, because RL is generation-bound (a step costs about
``max_deep_tokens + n_chunks * (thought_budget + 1)`` forwards of the generation batch;
docs/TRAINING.md "Notes and limits")."""

RL_MAX_DEEP_TOKENS = 256
"""Cap of an RL rollout's deep stage, tokens (the ``engine`` group's ``max_deep_tokens``): half the
inference cap, for the same reason as :data:`RL_THOUGHT_BUDGET`."""
