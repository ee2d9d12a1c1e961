"""JSON lines: the one reader and writer of adasr's ``*.jsonl`` files.

Every data file adasr reads or writes (GSM8K problems, built streaming episodes, distillation
samples, evaluation records) holds one JSON object a line, UTF-8. This module reads a file's
bytes (:func:`file_bytes`), splits them into lines (:func:`jsonl_lines`), decodes one line
(:func:`json_object`), reads a whole file (:func:`read_jsonl`) and writes one
(:func:`write_jsonl`). Readers with their own policy for a bad line (skip it, report it, repair a
line cut short by a kill) build on :func:`jsonl_lines` and :func:`json_object`.
It imports nothing of adasr but :mod:`adasr.errors`, so every layer can use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

from adasr.errors import DataError

__all__ = ["file_bytes", "json_object", "jsonl_lines", "read_jsonl", "write_jsonl"]

_BOM = b"\xef\xbb\xbf"


def file_bytes(path: str | os.PathLike, what: str = "data file") -> bytes:
    """The bytes of a data file.

    Raises:
        DataError: ``<what> not found: <path>``, ``<what> path is not a file: <path>``, or
            ``cannot read <what> <path>: <reason>``.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} not found: {p}")
    if not p.is_file():
        raise DataError(f"{what} path is not a file: {p}")
    try:
        return p.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {what} {p}: {e.strerror or e}") from None


def jsonl_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a JSON-lines file's bytes, as ``(line number, line)``.

    Lines are split at ``\\n`` only (a JSON string may hold U+2028 or U+0085, which
    ``str.splitlines`` would split at); line numbers are 1-based and count blank lines; a
    trailing ``\\r`` and a UTF-8 byte-order mark at the start of the file are dropped.
    """
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        if raw.strip():
            yield lineno, raw.rstrip(b"\r")


def json_object(line: str | bytes) -> dict:
    """Decode one JSON line that must hold a JSON object.

    Args:
        line: the line, as text or as UTF-8 bytes.

    Raises:
        DataError: invalid UTF-8, invalid JSON, or not an object (the message has no file
            location: callers add it).
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"invalid UTF-8 at byte {e.start}") from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """The JSON objects of a JSON-lines file, in file order (blank lines skipped), at most ``limit``.

    Raises:
        DataError: the file is missing or unreadable, or a line is not a JSON object
            (``<path>:<line>: <reason>``).
    """
    p = Path(path)
    out: list[dict] = []
    for lineno, raw in jsonl_lines(file_bytes(p)):
        if limit is not None and len(out) >= limit:
            break
        try:
            out.append(json_object(raw))
        except DataError as e:
            raise DataError(f"{p}:{lineno}: {e}") from None
    return out


def write_jsonl(records: Iterable[dict], path: str | os.PathLike) -> int:
    """Write one JSON object a line (UTF-8, non-ASCII kept), creating parent folders.

    Args:
        records: the objects (a ``datasets.Dataset`` iterates as dicts too).
        path: the file, replaced if it exists.

    Returns:
        The number of lines written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n
