"""Where and in which dtype a model runs: the device choice (``"cpu"``, ``"cuda"``,
``"cuda:N"``, ``"auto"``) and the dtype of the returned weights.

Imports nothing of :mod:`adasr.models`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from adasr.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

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


def native_bfloat16(device: "str | torch.device | None" = "cpu") -> bool:
    """Whether bfloat16 matrix products run natively on ``device``.

    On CUDA: ``torch.cuda.is_bf16_supported()``. On the CPU: oneDNN's bfloat16 support (x86 CPUs
    with AVX-512, fastest with AVX512-BF16 or AMX). Without it PyTorch multiplies bfloat16 matrices
    with a reference loop: measured on a 2-core AMD EPYC with AVX2 only, a 1024 x 1024 bfloat16
    product ran at 1 GFLOP/s against 171 GFLOP/s in float32, and a batch-8 prefill of SmolLM2-135M
    took 7.5x as long (benchmarks/RESULTS.md section 46; CPUs with AMX make bfloat16 ~2x faster
    than float32 instead).

    Raises:
        ConfigError: an unknown device name (:func:`resolve_device`).
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolve_dtype(dtype: Any, device: "str | torch.device | None" = "cpu") -> torch.dtype | None:
    """The torch dtype a model loads in: ``None`` (float32), a ``torch.dtype``, its name
    (``"bfloat16"``), or ``"auto"``: bfloat16 where :func:`native_bfloat16` says it runs natively
    on ``device``, else float32. Asking for bfloat16 where it does not run natively logs a warning
    (it works, much slower than float32).

    Raises:
        ModelLoadError: anything else (one line).
    """
    if isinstance(dtype, str) and dtype == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    if dtype is None or isinstance(dtype, torch.dtype):
        resolved = dtype
    elif isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        resolved = getattr(torch, dtype)
    else:
        raise ModelLoadError(f"invalid dtype {dtype!r}: expected a torch.dtype such as torch.float32, or 'auto'")
    if resolved == torch.bfloat16 and not native_bfloat16(device):
        where = ("this GPU" if resolve_device(device).type == "cuda"
                 else f"this CPU (PyTorch capability {torch.backends.cpu.get_cpu_capability()})")
        logger.warning("bfloat16 asked for, but %s has no native bfloat16: its prefills (and training) run "
                       "many times slower than in float32 here; use dtype float32 or auto", where)
    return resolved


def _finish_dtype(model: Any, dtype: torch.dtype | None) -> Any:
    return model.to(dtype) if dtype is not None and model.dtype != dtype else model
