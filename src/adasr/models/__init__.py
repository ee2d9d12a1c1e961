"""Models: :func:`load_model` (bundled GGUF models, local directories, PEFT adapters and Hugging
Face ids) and :func:`list_models` (``adasr models``).

One job per module; each imports only those above it in this list:

* ``common``: the cache root, file hashing, temporary siblings, one-line error text, loading a
  model directory with ``transformers``;
* ``devices``: the device (``cpu``, ``cuda``, ``cuda:N``, ``auto``) and dtype of the weights;
* ``adapters``: the bundled adapters, an adapter's base, ``adasr_meta.json`` and the protocol
  a model was trained with (metadata only);
* ``registry``: the bundled base models (:data:`BUNDLED`) and the bundled names (typos);
* ``gguf``: bundled GGUF pieces located, verified and assembled; a GGUF dequantized once into a
  cached safetensors directory;
* ``hub``: Hugging Face hub ids, offline mode, the Hugging Face cache, not-found errors;
* ``loader``: :func:`load_model` (the resolution order of a name) and :class:`LoadedModel`;
* ``listing``: :func:`list_models`.

The names below are the public API; import them from ``adasr.models``. A test that replaces a
private function patches it in the module that calls it (``adasr.models.loader._load_hub``,
``adasr.models.gguf._locate_pieces``, ``adasr.models.adapters._ADAPTERS_DIR``).
"""

from adasr.defaults import DEFAULT_MODEL  # re-exported: the model used when none is given
from adasr.models.adapters import META_FILE, adapter_dir, adapter_info, read_meta, trained_protocol
from adasr.models.common import cache_root
from adasr.models.devices import DEVICES, native_bfloat16, resolve_device, resolve_dtype
from adasr.models.gguf import resolve_bundled_gguf
from adasr.models.hub import hf_offline
from adasr.models.listing import list_models
from adasr.models.loader import LoadedModel, load_model
from adasr.models.registry import BUNDLED, BundledModel, close_bundled_names, hub_base_id

__all__ = [
    "BUNDLED",
    "DEFAULT_MODEL",
    "DEVICES",
    "META_FILE",
    "BundledModel",
    "LoadedModel",
    "adapter_dir",
    "adapter_info",
    "cache_root",
    "close_bundled_names",
    "hf_offline",
    "hub_base_id",
    "list_models",
    "load_model",
    "native_bfloat16",
    "read_meta",
    "resolve_bundled_gguf",
    "resolve_device",
    "resolve_dtype",
    "trained_protocol",
]
