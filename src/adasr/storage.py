"""The files of an evaluation directory (``adasr eval``'s ``<out>/<mode>/``, layout in
:mod:`adasr.evaluation`): the append-only results store, ``config.json`` and its check on resume,
provenance, and atomic text writes. No engine, no torch (:mod:`adasr.plots` reads the same files;
:mod:`adasr.train.distill` keeps its samples in a :class:`ResultsWriter`).

* :class:`ResultsWriter` — ``results.jsonl`` (or another name): one JSON record per line, keyed
  by ``id``, flushed and fsync'ed per line; a line cut short by a kill is dropped on reading.
* :func:`write_config` / :func:`check_config` — ``config.json``: the settings and
  :func:`provenance` of the run that wrote the results; a rerun whose settings differ in a key
  outside :data:`INFORMATIONAL_KEYS` is refused, so records of two configurations never mix.
* :func:`prior_elapsed` — the real time already spent on a directory's records (from its
  ``summary.json``), so that a resumed run's throughput counts every run.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

from adasr.errors import ConfigError, DataError
from adasr.jsonl import json_object, jsonl_lines

__all__ = ["ResultsWriter", "RESULTS_FILE", "TRANSCRIPTS_FILE", "CONFIG_FILE", "SUMMARY_FILE", "INFORMATIONAL_KEYS", "check_config",
           "write_config", "prior_elapsed", "provenance", "write_text", "json_default", "normalized"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
TRANSCRIPTS_FILE = "transcripts.jsonl"
"""Beside ``results.jsonl``: what the model wrote per episode (its thoughts and deep stage), keyed by ``id``."""
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
INFORMATIONAL_KEYS = frozenset({
    "adasr_version", "torch_version", "transformers_version", "git_commit", "git_dirty", "limit", "model_path",
})
"""Keys of ``config.json`` recorded for provenance but not compared on resume: versions and the
git commit (an upgrade does not by itself invalidate records), ``limit`` (a rerun may add items)
and ``model_path`` (where the same model was read from). Every other key (model, mode, budget,
max_deep_tokens, wps, dtype, device, batch_size, clock, align_eoi, temperature, seed, data...)
changes results, latencies included, and must match."""


class ResultsWriter:
    """Append-only JSONL store of records keyed by ``id``: ``<out_dir>/<filename>``
    (``results.jsonl`` by default).

    Each :meth:`write` appends one line and flushes and fsyncs it, so a killed run loses at most
    the record being written. :meth:`done_ids` / :meth:`records` read the file back for resume.
    """

    def __init__(self, out_dir: str | Path, filename: str = RESULTS_FILE):
        self.dir = Path(out_dir)
        self.path = self.dir / filename
        self._fh = None

    # -- reading -------------------------------------------------------------------------
    def records(self) -> list[dict]:
        """All valid records in the file, in order (the last one per id wins).

        A malformed last line (a write cut short by a kill) is dropped and the file is
        rewritten without it; malformed lines elsewhere are dropped with a warning.

        Raises:
            DataError: if the file cannot be read or rewritten.
        """
        if not self.path.exists():
            return []
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {self.path}: {e.strerror or e}") from None
        lines = list(jsonl_lines(data))
        last_line = lines[-1][0] if lines else 0
        by_id: dict[str, dict] = {}
        bad_middle: list[int] = []
        dirty = bool(data) and not data.endswith(b"\n")
        for lineno, raw in lines:
            try:
                rec = json_object(raw)
                if not isinstance(rec.get("id"), str):
                    raise DataError("not a record")
            except DataError:
                dirty = True
                if lineno != last_line:
                    bad_middle.append(lineno)
                continue
            if rec["id"] in by_id:
                del by_id[rec["id"]]  # keep file order of the latest version
                dirty = True
            by_id[rec["id"]] = rec
        if bad_middle:
            warnings.warn(
                f"{self.path}: dropped malformed line(s) {bad_middle[:5]}"
                f"{' ...' if len(bad_middle) > 5 else ''}; those items will be recomputed",
                UserWarning,
                stacklevel=2,
            )
        if dirty:
            self._rewrite(list(by_id.values()))
        return list(by_id.values())

    def done_ids(self) -> set[str]:
        """Ids of the records already in the file (see :meth:`records` for repair)."""
        return {r["id"] for r in self.records()}

    def _rewrite(self, records: list[dict]) -> None:
        self.close()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in records:
                    fh.write(_dumps(rec) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            raise DataError(f"cannot rewrite {self.path}: {e.strerror or e}") from None

    # -- writing -------------------------------------------------------------------------
    def write(self, record: dict) -> None:
        """Append ``record`` as one JSON line; flushed and fsync'ed before returning.

        Raises:
            DataError: the directory or file cannot be created or opened.
        """
        if self._fh is None:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")
            except OSError as e:
                raise DataError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._fh.write(_dumps(record) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the file (a later :meth:`write` opens it again)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def json_default(obj):
    """``json.dumps``' ``default``: numpy/torch scalars as their ``.item()``, anything else
    (paths, ...) as ``str``."""
    item = getattr(obj, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return str(obj)


def _dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, default=json_default)


def normalized(config: dict) -> dict:
    """``config`` as it reads back from ``config.json`` (JSON types only), for comparisons."""
    return json.loads(json.dumps(config, default=json_default))


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _has_results(run_dir: Path) -> bool:
    results = run_dir / RESULTS_FILE
    return results.is_file() and results.stat().st_size > 0


def write_config(run_dir: Path, config: dict) -> None:
    """Write ``config.json`` unless the directory's first run already recorded it (kept as the
    record of how its results were made; :func:`check_config` has vouched that they match).

    Raises:
        DataError: the file cannot be written.
    """
    path = run_dir / CONFIG_FILE
    if path.is_file() and _has_results(run_dir):
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise DataError(f"cannot write {path}: {e.strerror or e}") from None


def _short(value) -> str:
    text = json.dumps(value, default=json_default, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def check_config(run_dir: Path, config: dict) -> None:
    """Refuse to resume ``run_dir`` if its results were made with a different configuration
    (``config``: :func:`normalized`; keys of :data:`INFORMATIONAL_KEYS` may differ, with a
    warning).

    Raises:
        ConfigError: one line naming the differing keys (old -> new values).
        DataError: an unreadable ``config.json``.
    """
    path = run_dir / CONFIG_FILE
    has_results = _has_results(run_dir)
    if not path.is_file():
        if has_results:
            logger.warning("%s has results but no %s (written by an older adasr): resuming without a "
                           "configuration check", run_dir, CONFIG_FILE)
        return
    if not has_results:  # nothing to mix with: the new configuration replaces the old one
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}: delete it to resume without a configuration check") from None
    keys = sorted((set(old) | set(config)) - INFORMATIONAL_KEYS)
    diffs = [k for k in keys if old.get(k) != config.get(k)]
    if diffs:
        what = ", ".join(f"{k} {_short(old.get(k))} -> {_short(config.get(k))}" for k in diffs)
        raise ConfigError(
            f"{run_dir} holds results of another configuration ({what}): rerun with the same settings to "
            "resume, or choose another --out"
        )
    changed = [k for k in sorted(INFORMATIONAL_KEYS & (set(old) | set(config))) if k != "limit"
               and old.get(k) != config.get(k)]
    if changed:
        logger.warning("resuming %s with different %s than its first run (recorded in %s)",
                       run_dir, ", ".join(changed), path)


def prior_elapsed(run_dir: Path, n_prior: int) -> float | None:
    """Real seconds spent on the ``n_prior`` already-done records, from the last ``summary.json``
    (written at the end of a run and on Ctrl-C), if it describes exactly those records; else
    ``None``."""
    if n_prior == 0:
        return 0.0
    try:
        prev = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        if prev.get("count") == n_prior and isinstance(prev.get("elapsed_s"), (int, float)):
            return float(prev["elapsed_s"])
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _git_commit() -> tuple[str | None, bool | None]:
    """(HEAD commit, work tree dirty?) of the git checkout adasr runs from, or ``(None, None)``."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None, None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() or None, (bool(dirty.stdout.strip()) if dirty.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


def provenance() -> dict:
    """Versions of adasr, torch and transformers, and the git commit adasr runs from (if any):
    ``{"adasr_version", "torch_version", "transformers_version", "git_commit", "git_dirty"}``."""
    from importlib import metadata

    import adasr

    info: dict = {"adasr_version": adasr.__version__}
    for dist in ("torch", "transformers"):
        try:
            info[f"{dist}_version"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[f"{dist}_version"] = None
    info["git_commit"], info["git_dirty"] = _git_commit()
    return info
