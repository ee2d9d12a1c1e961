"""``adasr models``: the bundled base models and adapters, and whether each loads without a
network (:func:`list_models`). Checks that files exist; hashes and loads nothing.

Imports :mod:`adasr.models.registry`, ``adapters``, ``gguf``, ``hub`` and ``common``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from adasr.errors import ModelLoadError
from adasr.models.adapters import _bundled_adapters, adapter_info
from adasr.models.common import _resolve_root
from adasr.models.gguf import _assembled_gguf_path, _cache_problem, _locate_pieces
from adasr.models.hub import _in_hf_cache
from adasr.models.registry import BUNDLED


def list_models(*, cache_dir: str | os.PathLike | None = None) -> list[dict]:
    """The bundled base models and bundled adapters, for ``adasr models``.

    Cheap: checks that files exist, does not hash or load anything.

    Args:
        cache_dir: adasr cache root to inspect instead of :func:`cache_root`.

    Returns:
        One dict per model, bases first then adapters by name, with keys ``name``, ``kind``
        (``"base"`` or ``"lora"``), ``size_mb`` (megabytes, 10^6 bytes: the GGUF file for a
        base, the adapter directory for an adapter), ``base`` (the base model of an adapter,
        else ``None``), ``trained_on`` (an adapter's ``adasr_meta.json`` ``"trained_on"``, else
        ``None``), ``path`` (the cached model directory if built, else the GGUF file or first
        piece; an adapter's directory; ``""`` if unavailable), ``available`` (loadable without
        network), ``cached`` (a base's converted cache exists) and ``heldout`` (an adapter's
        held-out figures in one line, :func:`heldout_line`, else ``None``).
    """
    root = _resolve_root(cache_dir)
    rows: list[dict] = []
    base_available: dict[str, bool] = {}
    for name, spec in BUNDLED.items():
        target = root / "models" / name
        cached = target.is_dir() and _cache_problem(target, spec.sha256) is None
        path = ""
        try:
            pieces = _locate_pieces(spec)
            available = True
            assembled = _assembled_gguf_path(spec, root)
            path = str(pieces[0].path if len(pieces) == 1 else assembled if assembled.is_file() else pieces[0].path)
        except ModelLoadError:
            available = False
        if cached:
            path, available = str(target), True
        base_available[name] = available
        rows.append({
            "name": name,
            "kind": "base",
            "size_mb": round(spec.size_bytes / 1e6, 1),
            "base": None,
            "trained_on": None,
            "path": path,
            "available": available,
            "cached": cached,
            "heldout": None,
        })
    for name, adapter_dir in _bundled_adapters().items():
        try:
            base, meta = adapter_info(adapter_dir)
        except ModelLoadError:
            base, meta = None, {}
        has_weights = any(
            (adapter_dir / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")
        )
        if base is None:
            base_ok = False
        elif base in base_available:
            base_ok = base_available[base]
        elif Path(base).expanduser().exists():
            base_ok = True
        else:
            base_ok = _in_hf_cache(base)
        trained_on = meta.get("trained_on")
        rows.append({
            "name": name,
            "kind": "lora",
            "size_mb": round(_dir_size(adapter_dir) / 1e6, 1),
            "base": base,
            "trained_on": trained_on if trained_on is None or isinstance(trained_on, str) else json.dumps(trained_on),
            "path": str(adapter_dir),
            "available": bool(has_weights and base_ok),
            "cached": False,
            "heldout": heldout_line(meta),
        })
    return rows


def heldout_line(meta: dict) -> str | None:
    """An adapter's held-out figures in one line, from ``adasr_meta.json``'s ``heldout_results``
    (written by ``tools/ship_adapter.py``: one entry per evaluated file, each an ``adasr eval``
    summary's figures under a ``label``): ``"<label> <accuracy>%"`` per entry, and for a proactive
    evaluation its timely-correct and premature rates (:mod:`adasr.proactive_metrics`) instead.

    Returns:
        e.g. ``"gsm8k 26.7% (n=300)"`` or ``"threshold timely-correct 40%, premature 3% (n=100); ..."``;
        ``None`` when the metadata holds no held-out results.
    """
    results = meta.get("heldout_results")
    if not isinstance(results, list) or not results:
        return None
    parts = []
    for r in results:
        if not isinstance(r, dict):
            continue
        n = f" (n={r['count']})" if r.get("count") else ""
        if r.get("timely_correct_rate") is not None:
            figures = (f"timely-correct {r['timely_correct_rate']:.0%}, "
                       f"premature {r.get('premature_rate') or 0:.0%}")
        elif r.get("accuracy") is not None:
            figures = f"{r['accuracy']:.1%}"
        else:
            continue
        parts.append(f"{r.get('label') or 'held out'} {figures}{n}")
    return "; ".join(parts) or None


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
