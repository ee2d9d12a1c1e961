"""What adasr knows about a trained model: the bundled adapters (``adasr/adapters/<name>/``),
an adapter's base model, ``adasr_meta.json`` and the streaming protocol a model was trained with.

Reads metadata only (no weights). Imports :mod:`adasr.models.common` only (and
:data:`adasr.protocol.TRAINING_PROTOCOL`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from adasr.errors import ModelLoadError
from adasr.models.common import _one_line
from adasr.protocol import TRAINING_PROTOCOL

META_FILE = "adasr_meta.json"
"""The metadata file adasr writes beside a model it trained (read by :func:`read_meta`)."""
_ADAPTERS_DIR = Path(__file__).parent.parent / "adapters"


def _bundled_adapters() -> dict[str, Path]:
    """Bundled adapter directories (``adasr/adapters/<name>/adapter_config.json``), by name."""
    if not _ADAPTERS_DIR.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(_ADAPTERS_DIR.iterdir())
        if p.is_dir() and not p.name.startswith((".", "_")) and (p / "adapter_config.json").is_file()
    }


def adapter_dir(name: str | os.PathLike) -> Path | None:
    """The PEFT adapter directory ``name`` stands for: a bundled adapter's (``adasr models``
    lists them, e.g. ``qwen2.5-coder-0.5b-proactive``) or ``name`` itself when it is a directory
    holding ``adapter_config.json``; ``None`` for anything else (a base model, a hub id, a full
    model directory)."""
    path = _named_dir(name)
    return path if path.is_dir() and (path / "adapter_config.json").is_file() else None


def _named_dir(name: str | os.PathLike) -> Path:
    """The directory ``name`` stands for: a bundled adapter's, else ``name`` as a path (which may not exist)."""
    bundled = _bundled_adapters()
    return bundled[str(name)] if str(name) in bundled else Path(name).expanduser()


def adapter_info(adapter_dir: str | os.PathLike) -> tuple[str | None, dict]:
    """The base model and adasr metadata of a PEFT adapter directory (the one reader of both).

    The base is ``adasr_meta.json``'s ``"base"`` (the name adasr loads: a bundled name, a path,
    a hub id) if present, else ``adapter_config.json``'s ``base_model_name_or_path`` (which, for
    adapters adasr trained on a bundled base, is the upstream hub id). A relative base that
    exists beside the adapter is made absolute.

    Returns:
        ``(base or None, metadata dict or {})``.

    Raises:
        ModelLoadError: ``adapter_config.json`` or ``adasr_meta.json`` is unreadable.
    """
    adapter_dir = Path(adapter_dir)
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"unreadable adapter_config.json in {adapter_dir}: {_one_line(err)}") from err
    meta = read_meta(adapter_dir)
    base = meta.get("base") or (cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None)
    if isinstance(base, str) and base and not Path(base).is_absolute() and (adapter_dir / base).exists():
        base = str((adapter_dir / base).resolve())
    return (base if isinstance(base, str) and base else None), meta


def read_meta(model_dir: str | os.PathLike) -> dict:
    """``adasr_meta.json`` of a model adasr trained (adapter or full), or ``{}`` if it has none.

    Raises:
        ModelLoadError: the file exists but is unreadable.
    """
    meta_path = Path(model_dir) / META_FILE
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"unreadable {META_FILE} in {model_dir}: {_one_line(err)}") from err
    return meta if isinstance(meta, dict) else {}


def _adapter_protocol(model_dir: Path) -> str:
    """The protocol preset an adasr-trained model was trained with (``"v1"``,
    :data:`adasr.protocol.TRAINING_PROTOCOL`, when its ``adasr_meta.json`` predates the field)."""
    return str(read_meta(model_dir).get("protocol") or TRAINING_PROTOCOL)


def trained_protocol(name: str | os.PathLike | None) -> str | None:
    """The streaming protocol an adasr-trained model was trained with, or ``None`` when ``name``
    is not one (a bundled base, a Hugging Face id, a directory without ``adasr_meta.json``).

    Args:
        name: a bundled adapter name or a model / adapter directory.

    Raises:
        ModelLoadError: its ``adasr_meta.json`` is unreadable.
    """
    if not name:
        return None
    path = _named_dir(name)
    if not (path / META_FILE).is_file():
        return None
    return _adapter_protocol(path)
