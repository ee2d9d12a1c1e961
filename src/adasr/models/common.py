"""What the loaders of :mod:`adasr.models` share: the cache root, file hashing and temporary
siblings for atomic writes, one-line error text, and loading a model directory with
``transformers`` (progress bars hidden).

Imports nothing of :mod:`adasr.models` (every other module of the package may import it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import torch

from adasr.errors import ModelLoadError

_HASH_BLOCK = 8 * 1024 * 1024


def cache_root() -> Path:
    """Root directory of adasr's caches.

    Returns:
        ``$ADASR_CACHE`` if set and non-empty, else ``~/.cache/adasr``. Not created here.
    """
    env = os.environ.get("ADASR_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "adasr"


def _one_line(err: BaseException | str, limit: int = 300) -> str:
    """First non-empty line of an error message, shortened to ``limit`` characters."""
    text = str(err).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not line:
        line = type(err).__name__ if isinstance(err, BaseException) else "unknown error"
    elif isinstance(err, BaseException) and not isinstance(err, ModelLoadError):
        line = f"{type(err).__name__}: {line}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _resolve_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root()


def _tmp_sibling(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def _quiet_progress(enabled: bool = True) -> Iterator[None]:
    """Hide transformers' per-load progress bars (they would clutter the CLI's output)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if enabled and was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled and was_enabled:
            hf_logging.enable_progress_bar()


def _load_pretrained_dir(directory: Path, *, dtype: torch.dtype | None, trust_remote_code: bool, what: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with _quiet_progress():
            model = AutoModelForCausalLM.from_pretrained(
                str(directory), dtype=dtype or torch.float32, trust_remote_code=trust_remote_code
            )
            tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(f"cannot load {what} from {directory}: {_one_line(err)}") from err
    return model, tokenizer
