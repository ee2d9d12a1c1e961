"""load_model(): bundled GGUF models, local directories, PEFT adapters and Hugging Face ids.

Everything the engine and the trainers run goes through :func:`load_model`, which returns a
:class:`LoadedModel` (model in eval mode on the CPU unless another device is asked, float32
unless asked otherwise, and a tokenizer whose pad token is set).

Resolution order of ``load_model(name_or_path)``:

1. a **bundled base model** name (:data:`BUNDLED`): its GGUF weights ship inside installed
   Python distributions, so it works with no network. The first load verifies the GGUF's
   SHA-256, dequantizes it to float32 (15-40 s) and caches the result as a plain safetensors
   model directory under ``cache_root()/models/<name>/``; later loads read that directory
   (a few seconds). A corrupt or half-written cache entry is rebuilt automatically once.
2. a **bundled adapter** name (a PEFT LoRA adapter directory under ``adasr/adapters/<name>/``);
3. an existing **local path**: a ``.gguf`` file (dequantized and cached like a bundled model),
   a Hugging Face model directory (``config.json``) or a PEFT adapter directory
   (``adapter_config.json``; its base is loaded through :func:`load_model` recursively, the
   adapter merged into it);
4. a **Hugging Face hub id**, loaded as ``transformers`` loads it: from the Hugging Face cache,
   downloading what is missing (optionally at a ``revision``); with ``HF_HUB_OFFLINE=1`` only
   the cache is read. A name without an owner (not ``org/name``) that is close to a bundled name
   (``difflib``) and not in the Hugging Face cache is taken for a typo: it fails at once with a
   :class:`~adasr.errors.ConfigError` naming the closest bundled names, never asking the hub.

The weights are moved to ``device`` (``"cpu"`` by default, ``"cuda"``, ``"cuda:N"`` or
``"auto"``) once loaded. Every failure raises :class:`~adasr.errors.ModelLoadError` with a
one-line message (an unknown or unavailable device: :class:`~adasr.errors.ConfigError`).

The one module of :mod:`adasr.models` that chooses what a name is; it imports every other one
(``registry``, ``adapters``, ``gguf``, ``hub``, ``devices``, ``common``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from adasr.defaults import DEFAULT_MODEL
from adasr.errors import ModelLoadError
from adasr.models.adapters import META_FILE, _adapter_protocol, _bundled_adapters, adapter_info
from adasr.models.common import _load_pretrained_dir, _one_line, _resolve_root
from adasr.models.devices import _finish_dtype, resolve_device, resolve_dtype
from adasr.models.gguf import _load_local_gguf, _load_via_cache, resolve_bundled_gguf
from adasr.models.hub import _HUB_ID, _check_not_a_typo, _load_hub, _not_found
from adasr.models.registry import BUNDLED

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_MAX_ADAPTER_DEPTH = 4


@dataclass
class LoadedModel:
    """A model ready for inference.

    Attributes:
        model: the causal LM, in eval mode, on the device asked for (CPU by default), float32
            unless another dtype was asked.
        tokenizer: its tokenizer; ``pad_token`` is always set (falls back to the EOS token).
        name: the registry name, path or hub id as given to :func:`load_model`.
        source: ``"bundled"``, ``"local"`` (a directory or ``.gguf`` file), ``"hub"`` or
            ``"adapter"`` (a PEFT adapter merged into its base).
        path: the directory the weights were loaded from (for an adapter: the adapter dir).
        protocol: the streaming protocol preset a trained adapter was trained with
            (``adasr_meta.json``'s ``"protocol"``; ``"v1"`` for adapters that predate the field),
            ``None`` for a model adasr did not train (the engine then uses its mode's default:
            :func:`adasr.protocol.mode_protocol`).
    """

    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    name: str
    source: str
    path: str
    protocol: str | None = None


def _finish(model: Any, tokenizer: Any, dtype: torch.dtype | None) -> tuple[Any, Any]:
    """Common post-processing: dtype, CPU, eval mode, pad token."""
    if dtype is not None and model.dtype != dtype:
        model = model.to(dtype)
    model.eval()
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            eos = getattr(model.generation_config, "eos_token_id", None)
            eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
            if eos is None:
                raise ModelLoadError("the tokenizer has neither a pad nor an EOS token; cannot pad batches")
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(eos))
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _load_adapter(
    adapter_dir: Path, *, dtype: torch.dtype | None, trust_remote_code: bool, cache_dir: Any, depth: int
) -> tuple[Any, Any]:
    base, _ = adapter_info(adapter_dir)
    if base is None:
        raise ModelLoadError(f"adapter {adapter_dir} does not name its base model (base_model_name_or_path)")
    if depth >= _MAX_ADAPTER_DEPTH:
        raise ModelLoadError(f"adapter {adapter_dir}: chain of adapters deeper than {_MAX_ADAPTER_DEPTH}")
    # Merge in float32 (exact), cast afterwards.
    loaded = _load(base, dtype=None, trust_remote_code=trust_remote_code, cache_dir=cache_dir, depth=depth + 1)
    try:
        from peft import PeftModel

        with warnings.catch_warnings():  # peft 0.21 calls a transformers API deprecated in 5.x
            warnings.filterwarnings("ignore", category=FutureWarning)
            peft_model = PeftModel.from_pretrained(loaded.model, str(adapter_dir), is_trainable=False)
            model = peft_model.merge_and_unload()
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot apply adapter {adapter_dir} to base '{base}': {_one_line(err)}"
        ) from err
    tokenizer = loaded.tokenizer
    if (adapter_dir / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir), trust_remote_code=trust_remote_code)
        except Exception as err:  # noqa: BLE001
            raise ModelLoadError(f"cannot load the tokenizer of adapter {adapter_dir}: {_one_line(err)}") from err
    return _finish_dtype(model, dtype), tokenizer


def _load(
    name_or_path: str,
    *,
    dtype: torch.dtype | None,
    trust_remote_code: bool,
    cache_dir: str | os.PathLike | None,
    depth: int,
    revision: str | None = None,
) -> LoadedModel:
    name = str(name_or_path)
    root = _resolve_root(cache_dir)
    if not name.strip():
        raise ModelLoadError("empty model name: give a bundled name, a local path or a Hugging Face id")
    if revision is not None and (name in BUNDLED or name in _bundled_adapters() or Path(name).expanduser().exists()):
        raise ModelLoadError(f"a revision ('{revision}') applies to Hugging Face hub ids only, not to '{name}'")

    if name in BUNDLED:
        spec = BUNDLED[name]
        target = root / "models" / name

        def source() -> tuple[Path, str]:
            return resolve_bundled_gguf(name, cache_dir=root), spec.sha256

        model, tok = _load_via_cache(
            target, source, source_sha256=spec.sha256, label=f"bundled model '{name}'",
            dtype=dtype, trust_remote_code=trust_remote_code,
        )
        model, tok = _finish(model, tok, dtype)
        return LoadedModel(model, tok, name, "bundled", str(target))

    adapters = _bundled_adapters()
    if name in adapters:
        model, tok = _load_adapter(
            adapters[name], dtype=dtype, trust_remote_code=trust_remote_code, cache_dir=cache_dir, depth=depth
        )
        model, tok = _finish(model, tok, dtype)
        return LoadedModel(model, tok, name, "adapter", str(adapters[name]), _adapter_protocol(adapters[name]))

    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"{path} is a file but not a .gguf file: give a model directory or a .gguf file")
        model, tok, target = _load_local_gguf(path, root, dtype=dtype, trust_remote_code=trust_remote_code)
        model, tok = _finish(model, tok, dtype)
        return LoadedModel(model, tok, name, "local", str(target))
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            model, tok = _load_adapter(
                path, dtype=dtype, trust_remote_code=trust_remote_code, cache_dir=cache_dir, depth=depth
            )
            model, tok = _finish(model, tok, dtype)
            return LoadedModel(model, tok, name, "adapter", str(path.resolve()), _adapter_protocol(path))
        if (path / "config.json").is_file():
            model, tok = _load_pretrained_dir(path, dtype=dtype, trust_remote_code=trust_remote_code, what="model")
            model, tok = _finish(model, tok, dtype)
            trained = (path / META_FILE).is_file()  # a full fine-tune saved by adasr train
            return LoadedModel(model, tok, name, "local", str(path.resolve()), _adapter_protocol(path) if trained else None)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            model, tok, target = _load_local_gguf(ggufs[0], root, dtype=dtype, trust_remote_code=trust_remote_code)
            model, tok = _finish(model, tok, dtype)
            return LoadedModel(model, tok, name, "local", str(target))
        raise ModelLoadError(
            f"directory {path} is neither a Hugging Face model (no config.json), a PEFT adapter "
            "(no adapter_config.json), nor a directory with exactly one .gguf file"
        )

    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.replace("/", "") or name.count("/") > 1
    if looks_like_path:
        raise _not_found(name)
    _check_not_a_typo(name)
    if not _HUB_ID.match(name):
        raise _not_found(name, "not a valid Hugging Face hub id")
    model, tok = _load_hub(name, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision)
    model, tok = _finish(model, tok, dtype)
    return LoadedModel(model, tok, name, "hub", str(getattr(model, "name_or_path", name)))


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: "torch.dtype | str | None" = None,
    device: "str | torch.device | None" = "cpu",
    revision: str | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for inference.

    Args:
        name_or_path: a bundled model name (see :data:`BUNDLED`), a bundled adapter name, a path
            to a ``.gguf`` file, a Hugging Face model directory, a PEFT adapter directory (its
            base, named by ``adasr_meta.json``'s ``"base"`` or ``base_model_name_or_path``, is
            loaded through this function and the adapter merged into it), or a Hugging Face hub
            id (read from the Hugging Face cache, downloaded if missing unless ``HF_HUB_OFFLINE``
            is set, exactly as ``transformers`` does).
        dtype: torch dtype of the returned weights (or its name); ``None`` means ``torch.float32``;
            ``"auto"``: bfloat16 where it runs natively on ``device``, else float32
            (:func:`resolve_dtype`).
        device: where the weights go: ``"cpu"`` (default), ``"cuda"`` / ``"cuda:N"`` or
            ``"auto"`` (CUDA if available); see :func:`resolve_device`. Loading, conversion and
            adapter merging happen on the CPU; the finished model is moved.
        revision: branch, tag or commit of a Hugging Face hub id (``None``: the default branch);
            an error for any other kind of name.
        trust_remote_code: allow custom modelling code from the model's repository (off by
            default).
        cache_dir: adasr cache root for this call (where bundled and ``.gguf`` models are
            converted); defaults to :func:`cache_root`. Hub models always use the Hugging Face
            cache (``$HF_HOME``).

    Returns:
        A :class:`LoadedModel`: model in eval mode on ``device``, tokenizer with a pad token,
        ``generation_config.pad_token_id`` set.

    Raises:
        ModelLoadError: the name resolves to nothing, a file is missing, fails its hash check or
            is corrupt, a download fails, or the cache cannot be written. The message is one line.
        ConfigError: an unknown device, or CUDA asked for without CUDA (checked before loading);
            a name without an owner that is close to a bundled name (a typo: the message names
            the closest ones; checked before the hub is asked).

    Timing: the first load of a bundled model dequantizes its GGUF and writes the cache
    (~15-20 s for SmolLM2-135M, ~45 s for Qwen2.5-Coder-0.5B on two busy cores); later loads take
    under a second (the safetensors file is memory-mapped).
    """
    dev = resolve_device(device)
    loaded = _load(
        name_or_path, dtype=resolve_dtype(dtype, dev), trust_remote_code=trust_remote_code, cache_dir=cache_dir, depth=0,
        revision=revision,
    )
    if dev.type != "cpu":
        loaded.model = loaded.model.to(dev)
    return loaded
