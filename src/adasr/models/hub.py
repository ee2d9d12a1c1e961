"""Hugging Face hub ids: loading one as ``transformers`` does (cache first, download what is
missing unless offline), offline mode (``HF_HUB_OFFLINE``), the Hugging Face cache, and the
one-line errors of a name that resolves to nothing (a typo of a bundled name fails before the
hub is asked).

Imports :mod:`adasr.models.registry` and :mod:`adasr.models.common`.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from adasr.errors import ConfigError, ModelLoadError
from adasr.models.common import _one_line, _quiet_progress
from adasr.models.registry import _bundled_names, close_bundled_names

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


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


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - invalid ids and the like
        return False


def _not_found(name: str, hub_why: str | None = None) -> ModelLoadError:
    """``model '<name>' not found``: not bundled, not a local path (and ``hub_why``, for an id)."""
    hub = f", and {hub_why}" if hub_why else ""
    return ModelLoadError(f"model '{name}' not found: not a bundled name ({_bundled_names()}), not a local path{hub}")


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
