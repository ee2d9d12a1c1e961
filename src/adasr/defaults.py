"""Defaults shared by the command line, the evaluation loop, training and the library: defined
here once (a light module: no torch) so that ``adasr run``, ``adasr eval`` and RL rollouts agree.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MODEL", "DEFAULT_WPS", "TYPING_CPS", "DEFAULT_CHUNKER", "DEFAULT_MAX_CHUNK_TOKENS", "DEFAULT_TOKENS_PER_CHUNK"]

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The model ``adasr run``/``eval``/``train`` use when none is named (a bundled base: no download)."""

DEFAULT_WPS = 2.5
"""Default arrival rate in words per second (conversational speech)."""

TYPING_CPS = 4.0
"""Typing speed of the typing operating point, characters per second: LiveMind (Chen et al., arXiv
2406.14319) simulates a user typing at 240 characters/minute and measures latency from the last
character (``--cps 4``; docs/OPERATING_POINTS.md)."""

DEFAULT_CHUNKER = "sentence"
"""Default chunker of a text input (one sentence per chunk)."""

DEFAULT_MAX_CHUNK_TOKENS = 128
"""Default token cap of a chunk: longer chunks are split into pieces of at most this many tokens
(a long sentence would otherwise arrive, and be ingested, as one block)."""

DEFAULT_TOKENS_PER_CHUNK = 16
"""Tokens per chunk of the ``token`` chunker."""
