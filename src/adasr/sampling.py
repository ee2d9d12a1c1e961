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

__all__ = ["GREEDY", "SamplingParams", "parse_logit_bias", "resolve_logit_bias"]


@dataclass(frozen=True)
class SamplingParams:
    """The sampling settings of a session (hashable: the runner caches its logits warpers by them).

    Attributes:
        temperature: 0 for greedy decoding (argmax; ``top_p`` and ``top_k`` are then unused),
            else the temperature the logits are divided by.
        top_p: nucleus sampling: keep the smallest set of tokens whose probability reaches it
            (1.0 = off).
        top_k: keep the ``top_k`` most likely tokens (0 = off).
        logit_bias: ``((token_id, bias), ...)``, sorted by token id (a mapping is accepted and
            sorted): ``bias`` is added to that token's logit before anything else, greedy
            decoding included (vLLM's and the OpenAI API's ``logit_bias``). A bias ``b`` on one of
            two competing tokens moves the greedy choice between them to a probability threshold:
            with ``b = ln((1 - tau) / tau)`` on " yes", the model writes " yes" rather than " no"
            only when ``p(yes) / (p(yes) + p(no)) > tau`` (the proactive commit threshold,
            docs/DESIGN.md "Commit threshold").

    Raises:
        ConfigError: ``temperature`` negative or not finite, ``top_p`` outside (0, 1], ``top_k``
            negative or not an integer, a ``logit_bias`` token id that is not an integer >= 0 or a
            bias that is not a finite number.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    logit_bias: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        t, p, k = self.temperature, self.top_p, self.top_k
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t >= 0 and isinstance(p, (int, float))
                and 0 < p <= 1 and isinstance(k, int) and not isinstance(k, bool) and k >= 0):
            raise ConfigError(f"sampling needs temperature >= 0, 0 < top_p <= 1 and an integer top_k >= 0; "
                              f"got temperature={t!r}, top_p={p!r}, top_k={k!r}")
        bias = self.logit_bias
        pairs = list(bias.items()) if isinstance(bias, dict) else list(bias or ())
        for pair in pairs:
            ok = isinstance(pair, (tuple, list)) and len(pair) == 2
            tok, b = pair if ok else (None, None)
            if not (ok and isinstance(tok, int) and not isinstance(tok, bool) and tok >= 0
                    and isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)):
                raise ConfigError(f"logit_bias takes (token id >= 0, finite bias) pairs; got {pair!r}")
        if len({tok for tok, _ in pairs}) != len(pairs):
            raise ConfigError(f"logit_bias names a token twice: {sorted(tok for tok, _ in pairs)}")
        object.__setattr__(self, "logit_bias", tuple(sorted((tok, float(b)) for tok, b in pairs)))

    @property
    def greedy(self) -> bool:
        """Whether tokens are the argmax (``temperature == 0``)."""
        return self.temperature == 0


GREEDY = SamplingParams()
"""Greedy decoding (the engine's default)."""


def parse_logit_bias(values: list[str] | tuple[str, ...]) -> dict[str, float]:
    """``--logit-bias`` values ``TEXT=BIAS`` (split at the last ``=``; the text keeps its spaces,
    e.g. ``" yes=-0.85"``) as ``{text: bias}``.

    Raises:
        ConfigError: a value without ``=``, an empty text, a bias that is not a finite number, or a
            text given twice.
    """
    out: dict[str, float] = {}
    for value in values:
        text, sep, num = str(value).rpartition("=")
        try:
            bias = float(num) if sep and text else math.nan
        except ValueError:
            bias = math.nan
        if not math.isfinite(bias):
            raise ConfigError(f"--logit-bias takes TEXT=BIAS with a finite number, e.g. --logit-bias ' yes=-0.85'; "
                              f"got {value!r}")
        if text in out:
            raise ConfigError(f"--logit-bias names {text!r} twice")
        out[text] = bias
    return out


def resolve_logit_bias(tokenizer, by_text: dict[str, float]) -> tuple[tuple[int, float], ...]:
    """``{text: bias}`` as :attr:`SamplingParams.logit_bias` pairs of ``tokenizer``'s token ids.

    Each text must be exactly one token of this tokenizer (``tokenizer.encode(text,
    add_special_tokens=False)``), so that the bias lands on the token the model writes; a
    leading space is part of most tokens (" yes" and "yes" are two tokens).

    Raises:
        ConfigError: a text that is not exactly one token (its tokens are named).
    """
    pairs = []
    for text, bias in by_text.items():
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            pieces = [tokenizer.decode([i]) for i in ids]
            raise ConfigError(f"logit bias on {text!r}: it is {len(ids)} tokens {pieces} for this tokenizer; "
                              f"a bias applies to one token")
        pairs.append((ids[0], bias))
    return SamplingParams(logit_bias=tuple(pairs)).logit_bias
