"""Typed exceptions of adasr.

Every error a user can cause (bad input, missing model, malformed data or config) raises a
subclass of :class:`AdasrError`; the CLI prints its message on one line and exits non-zero,
never a traceback.
"""


class AdasrError(Exception):
    """Base class of every user-facing adasr error. ``str(err)`` is a one-line actionable message."""

    exit_code: int = 2


class ModelLoadError(AdasrError):
    """A model name, path or file could not be resolved, verified or loaded."""


class InputError(AdasrError):
    """The input stream is unusable (empty, undecodable, malformed)."""


class DataError(AdasrError):
    """A dataset file or record is malformed, or a dataset has no valid items."""


class ProtocolError(AdasrError):
    """A chat template cannot express the streaming protocol, or an episode is malformed."""


class EvalInterrupted(AdasrError):
    """A resumable run (``adasr eval``, ``adasr data distill``) was interrupted (Ctrl-C); the records
    written so far are kept, and rerunning the same command resumes."""

    exit_code = 130


class ConfigError(AdasrError):
    """A configuration file or option is invalid (unknown key, wrong type, unknown task)."""


class BackendError(AdasrError):
    """A model runner's backend failed while generating (vLLM's message on one line), or ended a
    turn where the streaming protocol does not."""
