"""GGUF files to cached safetensors models: locating a bundled model's pieces inside their
distributions, verifying them (SHA-256) and assembling them, then dequantizing a GGUF once to a
float32 model directory under ``cache_root()/models/`` that later loads read directly.

A cache entry holds ``adasr_cache.json`` (format, source hash, file sizes); an entry that fails
its check is deleted and rebuilt once. Imports :mod:`adasr.models.registry`,
:mod:`adasr.models.common` and :mod:`adasr.models.devices`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata as metadata
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adasr.errors import ModelLoadError
from adasr.models.common import (
    _HASH_BLOCK,
    _load_pretrained_dir,
    _one_line,
    _quiet_progress,
    _resolve_root,
    _sha256_file,
    _tmp_sibling,
)
from adasr.models.devices import _finish_dtype
from adasr.models.registry import BundledModel, _bundled_spec

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Version of the layout of a cached model directory (bump to invalidate old caches)."""

_MARKER = "adasr_cache.json"


# --------------------------------------------------------------------------------------------
# Locating and verifying bundled GGUF files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Piece:
    """One file of a bundled GGUF, located inside an installed distribution (never imported)."""

    distribution: str
    relpath: str
    path: Path
    sha256: str | None  # hex digest from the distribution's RECORD, if recorded
    size: int | None


def _record_sha256(hash_obj: Any) -> str | None:
    """Hex SHA-256 of a RECORD entry (``importlib.metadata.FileHash``), if it is one."""
    if hash_obj is None or getattr(hash_obj, "mode", None) != "sha256":
        return None
    import base64

    value = hash_obj.value
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    except (ValueError, TypeError):
        return None


def _locate_pieces(spec: BundledModel) -> list[_Piece]:
    """Locate the files of a bundled model inside their installed distributions.

    Reads only distribution metadata (``importlib.metadata``); the distributions' packages are
    never imported.

    Raises:
        ModelLoadError: a distribution is not installed or lacks its file.
    """
    pieces: list[_Piece] = []
    for dist_name, relpath in spec.pieces:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise ModelLoadError(
                f"bundled model '{spec.name}' needs the distribution {dist_name}=={spec.version}, which "
                f"is not installed: run `{spec.reinstall_command([dist_name])}`"
            ) from None
        entry = next((f for f in (dist.files or []) if f.as_posix() == relpath), None)
        path = Path(dist.locate_file(entry if entry is not None else relpath))
        if not path.is_file():
            raise ModelLoadError(
                f"bundled model '{spec.name}': file {relpath} of {dist_name} is missing ({path}): run "
                f"`{spec.reinstall_command([dist_name])}`"
            )
        pieces.append(
            _Piece(
                distribution=dist_name,
                relpath=relpath,
                path=path,
                sha256=_record_sha256(getattr(entry, "hash", None)),
                size=getattr(entry, "size", None),
            )
        )
    return pieces


def _assembled_gguf_path(spec: BundledModel, root: Path) -> Path:
    return root / "gguf" / spec.gguf_filename


def resolve_bundled_gguf(name: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path to the verified GGUF file of a bundled model.

    A single-piece model is used in place (inside its installed distribution). A multi-piece
    model is concatenated once into ``<cache>/gguf/<file>.gguf`` (written to a temporary file,
    then renamed); an existing assembled file is re-verified and rebuilt if it does not match.
    Every returned file has been checked against the registry's SHA-256 in this call (hashing
    ~100-500 MB takes about a second).

    Args:
        name: a key of :data:`BUNDLED`.
        cache_dir: adasr cache root to use instead of :func:`cache_root`.

    Returns:
        Absolute path of the GGUF file.

    Raises:
        ModelLoadError: unknown name, a distribution missing, a piece or the assembled file
            failing its hash check (the message names the piece and the reinstall command), or
            the cache not writable.
    """
    spec = _bundled_spec(name)
    pieces = _locate_pieces(spec)
    if len(pieces) == 1:
        piece = pieces[0]
        digest = _sha256_file(piece.path)
        if digest != spec.sha256:
            raise ModelLoadError(
                f"bundled model '{name}': {piece.path} is corrupt (SHA-256 {digest[:12]}..., expected "
                f"{spec.sha256[:12]}...): run `{spec.reinstall_command()}`"
            )
        return piece.path

    target = _assembled_gguf_path(spec, _resolve_root(cache_dir))
    if target.is_file():
        if target.stat().st_size == spec.size_bytes and _sha256_file(target) == spec.sha256:
            return target
        logger.warning("assembled GGUF %s does not match its SHA-256; rebuilding it", target)
        with contextlib.suppress(OSError):
            target.unlink()
    return _assemble_pieces(spec, pieces, target)


def _assemble_pieces(spec: BundledModel, pieces: list[_Piece], target: Path) -> Path:
    """Concatenate ``pieces`` into ``target`` atomically, verifying every piece and the whole."""
    tmp = _tmp_sibling(target)
    total = hashlib.sha256()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            for piece in pieces:
                h = hashlib.sha256()
                with open(piece.path, "rb") as fh:
                    while block := fh.read(_HASH_BLOCK):
                        h.update(block)
                        total.update(block)
                        out.write(block)
                if piece.sha256 is not None and h.hexdigest() != piece.sha256:
                    raise ModelLoadError(
                        f"bundled model '{spec.name}': piece {piece.relpath} of {piece.distribution} is "
                        f"corrupt ({piece.path} fails its SHA-256 check): run "
                        f"`{spec.reinstall_command([piece.distribution])}`"
                    )
            out.flush()
            os.fsync(out.fileno())
        if total.hexdigest() != spec.sha256:
            raise ModelLoadError(
                f"bundled model '{spec.name}': the assembled GGUF has SHA-256 {total.hexdigest()[:12]}..., "
                f"expected {spec.sha256[:12]}... (a piece is corrupt or of the wrong version): run "
                f"`{spec.reinstall_command()}`"
            )
        os.replace(tmp, target)
    except OSError as err:
        raise ModelLoadError(f"cannot write the assembled GGUF to {target}: {_one_line(err)}") from err
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return target


# --------------------------------------------------------------------------------------------
# GGUF -> cached safetensors directory
# --------------------------------------------------------------------------------------------


def _read_marker(directory: Path) -> dict | None:
    try:
        return json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _cache_problem(directory: Path, source_sha256: str | None = None) -> str | None:
    """Why a cached model directory is unusable (``None`` if it looks complete)."""
    marker = _read_marker(directory)
    if marker is None:
        return f"missing or unreadable {_MARKER} (incomplete build)"
    if marker.get("format") != CACHE_FORMAT:
        return f"cache format {marker.get('format')!r} is not {CACHE_FORMAT}"
    if source_sha256 is not None and marker.get("source_sha256") != source_sha256:
        return "built from a different GGUF file"
    for fname, size in (marker.get("files") or {}).items():
        path = directory / fname
        if not path.is_file():
            return f"{fname} is missing"
        if path.stat().st_size != size:
            return f"{fname} is truncated or altered ({path.stat().st_size} bytes, expected {size})"
    return None


def _check_tied(model: Any, where: str) -> None:
    if getattr(model.config, "tie_word_embeddings", False) or getattr(
        model.config.get_text_config(), "tie_word_embeddings", False
    ):
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
        if out is not None and out.weight is not inp.weight:
            raise ModelLoadError(f"{where}: the input and output embeddings should be tied but are not")


def _load_gguf(gguf: Path, *, trust_remote_code: bool) -> tuple[Any, Any]:
    """Tokenizer and dequantized float32 model from a GGUF file (15-40 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils.quantization_config import GgufConfig

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, trust_remote_code=trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent),
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
            trust_remote_code=trust_remote_code,
        )
    except ModelLoadError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader error means an unusable file
        raise ModelLoadError(f"cannot read GGUF file {gguf}: {_one_line(err)}") from err
    return model, tokenizer


def _dense_copy(qmodel: Any) -> Any:
    """A plain (non-quantized, serializable) model holding ``qmodel``'s dequantized weights."""
    from transformers import AutoModelForCausalLM

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        no_init_weights = contextlib.nullcontext

    config = copy.deepcopy(qmodel.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with no_init_weights():
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # assign=True: take over the dequantized tensors instead of copying 0.5-2.5 GB (qmodel is
    # discarded afterwards); re-tie, since assigning replaces the shared Parameter objects.
    fresh.load_state_dict(qmodel.state_dict(), strict=True, assign=True)
    fresh.tie_weights()
    fresh.generation_config = copy.deepcopy(qmodel.generation_config)
    _check_tied(fresh, "dequantized model")
    return fresh


_PROBE_TEXT = "Streaming check: 12 + 7 = 19; ¿qué tal? def f(x):\n    return x * 2"


def _verify_conversion(ref_model: Any, ref_tok: Any, model: Any, tok: Any, where: str) -> None:
    """The reloaded model and tokenizer must behave exactly like the GGUF-loaded ones."""
    ids = ref_tok(_PROBE_TEXT)["input_ids"]
    if tok(_PROBE_TEXT)["input_ids"] != ids:
        raise ModelLoadError(f"{where}: the saved tokenizer does not reproduce the GGUF tokenizer")
    if getattr(ref_tok, "chat_template", None) and tok.chat_template != ref_tok.chat_template:
        raise ModelLoadError(f"{where}: the saved tokenizer lost the chat template")
    x = torch.tensor([ids[:16]])
    with torch.inference_mode():
        a = ref_model(input_ids=x).logits
        b = model(input_ids=x).logits
    diff = (a - b).abs().max().item()
    if not diff <= 1e-3:
        raise ModelLoadError(f"{where}: the saved model's logits differ from the GGUF model's by {diff:.3g}")


def _build_cache(gguf: Path, target: Path, *, source_sha256: str, label: str, trust_remote_code: bool) -> tuple[Any, Any]:
    """Dequantize ``gguf`` and save it as a safetensors model directory ``target`` (atomic).

    Returns the float32 model and tokenizer, loaded back from the saved files.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import transformers

    t0 = time.perf_counter()
    logger.info("preparing %s: dequantizing %s (one time, up to a minute)", label, gguf)
    qmodel, qtok = _load_gguf(gguf, trust_remote_code=trust_remote_code)
    logger.debug("GGUF read and dequantized in %.1f s", time.perf_counter() - t0)
    tmp = _tmp_sibling(target)
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fresh = _dense_copy(qmodel)
            fresh.save_pretrained(str(tmp))
            del fresh
            qtok.save_pretrained(str(tmp))
            logger.debug("dense copy saved to %s at %.1f s", tmp, time.perf_counter() - t0)
        except ModelLoadError:
            raise
        except Exception as err:  # noqa: BLE001
            raise ModelLoadError(f"cannot save the converted {label} to {tmp.parent}: {_one_line(err)}") from err
        try:
            with _quiet_progress():
                model = AutoModelForCausalLM.from_pretrained(
                    str(tmp), dtype=torch.float32, trust_remote_code=trust_remote_code
                )
                tok = AutoTokenizer.from_pretrained(str(tmp), trust_remote_code=trust_remote_code)
        except Exception as err:  # noqa: BLE001
            raise ModelLoadError(f"cannot reload the converted {label} from {tmp}: {_one_line(err)}") from err
        _check_tied(model, f"converted {label}")
        _verify_conversion(qmodel, qtok, model, tok, f"converted {label}")
        del qmodel
        logger.debug("reloaded and verified at %.1f s", time.perf_counter() - t0)
        umask = os.umask(0)
        os.umask(umask)
        for p in tmp.iterdir():  # some writers create 0600 files; a shared cache should be readable
            p.chmod(0o666 & ~umask)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        marker = {
            "format": CACHE_FORMAT,
            "label": label,
            "source": str(gguf),
            "source_sha256": source_sha256,
            "transformers": transformers.__version__,
            "files": files,
        }
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        try:
            os.replace(tmp, target)
        except OSError:
            if _cache_problem(target, source_sha256) is not None:  # not a concurrent build's win
                raise
    except OSError as err:
        raise ModelLoadError(f"cannot write the model cache {target}: {_one_line(err)}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for obj in (model, model.config, tok):
        with contextlib.suppress(AttributeError, TypeError):
            obj.name_or_path = str(target)
    logger.info("cached %s in %s (%.1f s)", label, target, time.perf_counter() - t0)
    return model, tok


def _load_via_cache(
    target: Path,
    gguf_fn: Any,
    *,
    source_sha256: str | None,
    label: str,
    dtype: torch.dtype | None,
    trust_remote_code: bool,
) -> tuple[Any, Any]:
    """Load ``target`` if it is a complete cache entry, else (re)build it from ``gguf_fn()``.

    A corrupt entry is deleted and rebuilt once; if the rebuilt entry still fails, the error
    names the directory.
    """
    problem = _cache_problem(target, source_sha256) if target.exists() else "not built yet"
    if problem is None:
        try:
            return _load_pretrained_dir(target, dtype=dtype, trust_remote_code=trust_remote_code, what=label)
        except ModelLoadError as err:
            problem = str(err)
    if target.exists():
        logger.warning("model cache %s is unusable (%s); rebuilding it", target, problem)
        shutil.rmtree(target, ignore_errors=True)
        if target.exists():
            raise ModelLoadError(
                f"model cache {target} is corrupt ({problem}) and could not be removed: delete it to rebuild it"
            )
    gguf, sha = gguf_fn()
    model, tok = _build_cache(gguf, target, source_sha256=sha, label=label, trust_remote_code=trust_remote_code)
    return _finish_dtype(model, dtype), tok


def _gguf_cache_dir(gguf: Path, root: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = re.sub(r"[^\w.-]+", "_", gguf.stem)[:80]
    return root / "models" / f"gguf-{stem}-{key}"


def _load_local_gguf(gguf: Path, root: Path, *, dtype: torch.dtype | None, trust_remote_code: bool) -> tuple[Any, Any, Path]:
    target = _gguf_cache_dir(gguf, root)

    def source() -> tuple[Path, str]:
        return gguf, _sha256_file(gguf)

    model, tok = _load_via_cache(
        target, source, source_sha256=None, label=f"GGUF {gguf.name}", dtype=dtype, trust_remote_code=trust_remote_code
    )
    return model, tok, target
