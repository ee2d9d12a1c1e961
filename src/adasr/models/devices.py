"""Where and in which dtype a model runs: the device choice (``"cpu"``, ``"cuda"``,
``"cuda:N"``, ``"auto"``) and the dtype of the returned weights.

Imports nothing of :mod:`adasr.models`.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from adasr.errors import ConfigError, ModelLoadError

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


def _resolve_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    raise ModelLoadError(f"invalid dtype {dtype!r}: expected a torch.dtype such as torch.float32")


def _finish_dtype(model: Any, dtype: torch.dtype | None) -> Any:
    return model.to(dtype) if dtype is not None and model.dtype != dtype else model
