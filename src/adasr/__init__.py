"""adasr: adaptive streaming reasoning — language models that think while the input arrives.

Data flows one way: stream (chunks + arrival times) -> engine (KV-cache session) -> records
(one per episode) -> reports. See README.md and docs/ARCHITECTURE.md.
"""

from adasr.errors import AdasrError, ConfigError, DataError, InputError, ModelLoadError, ProtocolError

__version__ = "0.1.0"
__all__ = ["AdasrError", "ConfigError", "DataError", "InputError", "ModelLoadError", "ProtocolError"]
