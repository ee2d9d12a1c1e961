"""Resumable evaluation loop: items -> engine episodes -> graded records -> summaries.

Layout of an evaluation directory ``out_dir``::

    out_dir/
      <mode>/config.json     the run's full configuration (model, mode, budget, max_deep_tokens,
                             words/s, dtype, batch size, clock, temperature, seed, ...) and
                             provenance (adasr/torch/transformers versions, git commit)
      <mode>/results.jsonl   one graded record per line (metrics.RECORD_FIELDS), appended and
                             fsync'ed as each episode finishes
      <mode>/summary.json    metrics.summarize() of the records of the requested items
      <mode>/summary.md      the same as a one-column markdown table
      summary.md             all modes side by side (when several modes were run)

Resuming: rerunning the same command skips every item whose id is already in
``<mode>/results.jsonl``; a line truncated by a kill is dropped (and the file rewritten) so the
item is simply recomputed. Ctrl-C keeps what was written and raises :class:`EvalInterrupted`.
A rerun whose configuration differs from ``<mode>/config.json`` in a setting that changes results
(anything but :data:`INFORMATIONAL_KEYS`) is refused with a :class:`ConfigError` naming the
differing keys, so records of two configurations never mix.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from adasr.errors import AdasrError, ConfigError, DataError
from adasr.jsonl import json_object, jsonl_lines
from adasr.metrics import summarize, summary_table
from adasr.proactive_metrics import proactive_fields, summarize_proactive
from adasr.stream import StreamSpec
from adasr.tasks.base import Item

__all__ = ["EvalInterrupted", "ResultsWriter", "evaluate", "evaluate_budgets", "budget_dir", "provenance"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.json"
INFORMATIONAL_KEYS = frozenset({
    "adasr_version", "torch_version", "transformers_version", "git_commit", "git_dirty", "limit", "model_path",
})
"""Keys of ``config.json`` recorded for provenance but not compared on resume: versions and the
git commit (an upgrade does not by itself invalidate records), ``limit`` (a rerun may add items)
and ``model_path`` (where the same model was read from). Every other key (model, mode, budget,
max_deep_tokens, wps, dtype, device, batch_size, clock, align_eoi, temperature, seed, data...)
changes results, latencies included, and must match."""


class EvalInterrupted(AdasrError):
    """The evaluation was interrupted (Ctrl-C); the records written so far are kept."""

    exit_code = 130


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
        """Append ``record`` as one JSON line; flushed and fsync'ed before returning."""
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
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _json_default(obj):
    """Serialize numpy/torch scalars (``.item()``) and paths; anything else as ``str``."""
    item = getattr(obj, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return str(obj)


def _dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, default=_json_default)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_config(mode_dir: Path, config: dict) -> None:
    """Write ``config.json`` unless the directory's first run already recorded it (kept as the
    record of how its results were made; :func:`_check_config` has vouched that they match)."""
    path = mode_dir / CONFIG_FILE
    has_results = (mode_dir / RESULTS_FILE).is_file() and (mode_dir / RESULTS_FILE).stat().st_size > 0
    if path.is_file() and has_results:
        return
    try:
        mode_dir.mkdir(parents=True, exist_ok=True)
        _write_text(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise DataError(f"cannot write {path}: {e.strerror or e}") from None


def _prior_elapsed(mode_dir: Path, n_prior: int) -> float | None:
    """Real seconds spent on the ``n_prior`` already-done records, from the last summary.json
    (written at the end of a run and on Ctrl-C), if it describes exactly those records."""
    if n_prior == 0:
        return 0.0
    try:
        prev = json.loads((mode_dir / "summary.json").read_text(encoding="utf-8"))
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
    """Versions of adasr, torch and transformers, and the git commit adasr runs from (if any)."""
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


def _normalized(config: dict) -> dict:
    return json.loads(json.dumps(config, default=_json_default))


def _short(value) -> str:
    text = json.dumps(value, default=_json_default, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_config(mode_dir: Path, config: dict) -> None:
    """Refuse to resume ``mode_dir`` if its results were made with a different configuration.

    Raises:
        ConfigError: one line naming the differing keys (old -> new values).
        DataError: an unreadable ``config.json``.
    """
    path = mode_dir / CONFIG_FILE
    has_results = (mode_dir / RESULTS_FILE).is_file() and (mode_dir / RESULTS_FILE).stat().st_size > 0
    if not path.is_file():
        if has_results:
            logger.warning("%s has results but no %s (written by an older adasr): resuming without a "
                           "configuration check", mode_dir, CONFIG_FILE)
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
            f"{mode_dir} holds results of another configuration ({what}): rerun with the same settings to "
            "resume, or choose another --out"
        )
    changed = [k for k in sorted(INFORMATIONAL_KEYS & (set(old) | set(config))) if k != "limit"
               and old.get(k) != config.get(k)]
    if changed:
        logger.warning("resuming %s with different %s than its first run (recorded in %s)",
                       mode_dir, ", ".join(changed), path)


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[acc]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


@contextlib.contextmanager
def _sigint_flag():
    """Yield an event set by every Ctrl-C (SIGINT) while the block runs.

    The handler still raises :class:`KeyboardInterrupt` at once; the event lets the evaluation
    loop stop at the next record even if that exception was caught inside library code (a broad
    ``except`` in a dependency). Outside the main thread, no handler is installed.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Plan:
    """What :func:`evaluate` runs, validated, with each mode's ``config.json`` checked."""

    modes: list[str]
    by_id: dict
    tasks: dict
    stream: StreamSpec
    align: bool
    configs: dict[str, dict]


def _plan(items: Sequence[Item], *, modes: Sequence[str], out_dir: str | Path, batch_size: int = 1,
          stream: StreamSpec | None = None, clock: str = "virtual", step_s: float | None = None,
          align_eoi: bool | None = None, run_config: dict | None = None) -> _Plan:
    """Validate :func:`evaluate`'s arguments and refuse a directory of another configuration
    (raises as :func:`evaluate` documents)."""
    from adasr.stream import CLOCKS, PER_STREAM
    from adasr.tasks.registry import task_for

    if clock not in CLOCKS:
        raise ConfigError(f"unknown clock {clock!r}: use one of {', '.join(CLOCKS)}")
    if step_s is not None and (clock != "virtual" or not step_s > 0):
        raise ConfigError(f"step_s needs the virtual clock and a positive number of seconds, got {step_s!r} with "
                          f"clock {clock!r}")
    align = (batch_size > 1 and clock != PER_STREAM) if align_eoi is None else align_eoi

    modes = list(modes)
    if not modes:
        raise ConfigError("give at least one mode to evaluate")
    if len(set(modes)) != len(modes):
        raise ConfigError(f"modes must be distinct, got {modes}")
    for m in modes:
        if not isinstance(m, str) or not m or m in (".", "..") or "/" in m or "\\" in m:
            raise ConfigError(f"invalid mode name {m!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    by_id: dict[str, Item] = {}
    for it in items:
        if it.id in by_id:
            raise DataError(
                f"duplicate item id {it.id!r} (lines {by_id[it.id].line} and {it.line})"
            )
        by_id[it.id] = it
    tasks = {it.id: task_for(it) for it in items}  # an unknown task fails before anything runs
    stream = stream or StreamSpec()

    out_dir = Path(out_dir)
    base_config = {**(run_config or {}), **provenance(), "batch_size": batch_size, **stream.as_config(),
                   "clock": clock, "align_eoi": align, **({"step_s": step_s} if step_s is not None else {})}
    configs = {m: _normalized({**base_config, "mode": m}) for m in modes}
    for m in modes:  # refuse before anything runs
        _check_config(out_dir / m, configs[m])
    return _Plan(modes, by_id, tasks, stream, align, configs)


def evaluate(
    engine_factory: Callable[[str], object],
    items: Sequence[Item],
    *,
    modes: Sequence[str],
    out_dir: str | Path,
    batch_size: int = 1,
    stream: StreamSpec | None = None,
    clock: str = "virtual",
    step_s: float | None = None,
    progress: bool = True,
    align_eoi: bool | None = None,
    run_config: dict | None = None,
) -> dict[str, dict]:
    """Run ``items`` through the engine in each mode, grade, store and summarize (resumable).

    For each mode: items already in ``<out_dir>/<mode>/results.jsonl`` are skipped; the rest are
    streamed (``stream.for_item(item, tokenizer=engine.tokenizer)``: an item's chunks as given,
    else its question chunked; default :class:`~adasr.stream.StreamSpec()`, the spec ``adasr run``
    and RL rollouts use too) through
    ``engine_factory(mode).run(inputs, batch_size=batch_size, clock=clock)``; each finished
    record gets ``reference`` and ``correct`` (``task_for(item).grade``, see
    :mod:`adasr.tasks.registry`: math-verify for GSM8K, the task's scorer for procedural and
    proactive streams) and is appended at once. Then ``summary.json``/``summary.md`` are written for the records of
    ``items``; with several modes also ``<out_dir>/summary.md`` side by side. The engine is only
    built for a mode that has work left. ``elapsed_s``/``problems_per_hour`` count the real time
    of the ``engine.run`` loops (not model loading), accumulated across resumed runs.

    ``clock`` (default ``"virtual"``) and ``"real"`` put every stream on one shared timeline;
    then ``align_eoi`` (default: ``batch_size > 1``) runs waves of ``batch_size`` streams whose
    ends of input coincide (see :meth:`adasr.engine.StreamingEngine.run`): post-input latencies
    are those of N streams ending together; ``False`` starts all streams at once. With
    ``"per-stream"`` clocks each stream is charged the measured duration of every batched step
    it takes part in, and a row whose stream waits for its next chunk jumps to it instead of
    sitting steps out: full batches, and the latencies of a server at full load (N rows always
    busy; thoughts get less time between chunks, so adaptive accuracy can drop). The summary
    records the ``clock``, ``batch_size`` and ``align_eoi`` used.

    ``step_s`` (virtual clock only): charge every step this many seconds instead of its measured
    duration (:class:`adasr.stream.VirtualClock`'s ``fixed_step_s``). Together with a pinned
    decode rate the results then do not depend on the machine or its load (thoughts cut by
    arrivals, budgets): use it to compare variants measured at different times; latencies are
    then in units of that step model, not this machine's seconds.

    Streams with an ``evidence_chunk`` (proactive items) get the fields of
    :func:`adasr.proactive_metrics.proactive_fields` in their records and a ``proactive`` block
    (:func:`adasr.proactive_metrics.summarize_proactive`) in the summary.

    ``run_config`` (what the caller knows: model, dtype, device, budget, max_deep_tokens,
    temperature, seed, data...) is merged with this call's ``mode``, ``batch_size``, the stream
    spec (``chunker``, ``wps``, ``max_chunk_tokens``, ``tokens_per_chunk``), ``clock``,
    ``align_eoi`` and :func:`provenance`, and written to ``<out_dir>/<mode>/config.json``
    before the mode runs. A directory that already holds results of a configuration differing in
    any key outside :data:`INFORMATIONAL_KEYS` is refused (checked for every mode before anything
    runs); the same configuration resumes.

    Returns:
        ``{mode: summary}`` in the order of ``modes``.

    Raises:
        EvalInterrupted: on Ctrl-C; records written so far are kept (rerun to resume).
        ConfigError: empty/duplicate modes, a mode unusable as a directory name, a bad batch size,
            an unknown clock, an item of an unknown task, or a resume with a different
            configuration (``run_config``).
        DataError: duplicate item ids, an unreadable ``config.json``.
    """
    from adasr.engine import EpisodeInput  # engine (and torch) only when evaluating

    from adasr.stream import VirtualClock

    plan = _plan(items, modes=modes, out_dir=out_dir, batch_size=batch_size, stream=stream, clock=clock,
                 step_s=step_s, align_eoi=align_eoi, run_config=run_config)
    modes, by_id, tasks, stream, align, configs = (plan.modes, plan.by_id, plan.tasks, plan.stream, plan.align,
                                                   plan.configs)
    out_dir = Path(out_dir)

    summaries: dict[str, dict] = {}
    n_written = 0  # records written by this call, all modes
    with _progress(progress) as bar, _sigint_flag() as ctrl_c:
        for mode in modes:
            mode_dir = out_dir / mode
            _write_config(mode_dir, configs[mode])
            writer = ResultsWriter(mode_dir)
            prior = [r for r in writer.records() if r["id"] in by_id]
            done = {r["id"] for r in prior}
            todo = [it for it in items if it.id not in done]
            prior_elapsed = _prior_elapsed(mode_dir, len(done))
            n_correct = sum(1 for r in prior if r.get("correct") is True)
            task = bar.add_task(mode, total=len(items), completed=len(done), acc="")
            n_new, elapsed = 0, 0.0

            def acc_text() -> str:
                n = len(done)  # prior and new records alike (new ids are added to `done`)
                return f"acc {100 * n_correct / n:.1f}%" if n else ""

            bar.update(task, acc=acc_text())
            interrupted = False
            t0 = None
            try:
                if todo:
                    engine = engine_factory(mode)
                    inputs = (
                        EpisodeInput(
                            id=it.id,
                            source=stream.for_item(it, tokenizer=getattr(engine, "tokenizer", None)),
                            reference=it.reference,
                            evidence_chunk=it.evidence_chunk,
                        )
                        for it in todo
                    )
                    t0 = time.perf_counter()
                    run_clock = VirtualClock(fixed_step_s=step_s) if step_s is not None else clock
                    results = engine.run(inputs, batch_size=batch_size, clock=run_clock, align_eoi=align)
                    try:
                        for result in results:
                            item = by_id.get(result.id)
                            if item is None or item.id in done:
                                raise RuntimeError(
                                    f"engine returned an unexpected episode id {result.id!r}"
                                )
                            record = dict(result.record)
                            record["id"] = item.id
                            record.setdefault("mode", mode)
                            record["reference"] = item.reference
                            record["correct"] = tasks[item.id].grade(record.get("prediction"), item.reference)
                            if record.get("n_revisions"):  # the first response's answer, graded too
                                record["first_correct"] = tasks[item.id].grade(record.get("first_prediction"),
                                                                               item.reference)
                            record.update(proactive_fields(record))
                            writer.write(record)
                            done.add(item.id)
                            n_new += 1
                            n_written += 1
                            n_correct += record["correct"]
                            bar.update(task, advance=1, acc=acc_text())
                            if ctrl_c.is_set():  # a Ctrl-C that library code swallowed
                                raise KeyboardInterrupt
                    finally:
                        close = getattr(results, "close", None)
                        if close is not None:
                            close()
                    missing = len(todo) - n_new
                    if missing:
                        warnings.warn(
                            f"{mode}: the engine returned no result for {missing} item(s); "
                            "rerun to retry them",
                            UserWarning,
                            stacklevel=2,
                        )
            except KeyboardInterrupt:
                interrupted = True
            finally:
                writer.close()
                if t0 is not None:
                    elapsed = time.perf_counter() - t0

            # time of this run, plus earlier runs' (estimated at this run's pace if unknown)
            if prior_elapsed is None:
                total_elapsed = elapsed * len(done) / n_new if n_new else None
            else:
                total_elapsed = prior_elapsed + elapsed if (n_new or prior_elapsed) else None
            records = [r for r in writer.records() if r["id"] in by_id]
            summary = summarize(records, elapsed_s=total_elapsed)
            if any(r.get("evidence_chunk") is not None for r in records):
                summary["proactive"] = summarize_proactive(records)
            summary["mode"] = mode
            summary.update(clock=clock, batch_size=batch_size, align_eoi=align)
            summary["complete"] = len(records) == len(items)
            mode_dir.mkdir(parents=True, exist_ok=True)
            summary_json = json.dumps(summary, indent=2, default=_json_default)
            _write_text(mode_dir / "summary.json", summary_json + "\n")
            _write_text(mode_dir / "summary.md", f"# {mode}\n\n" + summary_table({mode: summary}))
            summaries[mode] = summary
            if interrupted:
                raise EvalInterrupted(
                    f"interrupted after {n_written} records ({mode}: {len(records)}/{len(items)} "
                    f"done, saved in {writer.path}); rerun the same command to resume"
                ) from None

    if len(modes) > 1:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_text(out_dir / "summary.md", "# adasr evaluation\n\n" + summary_table(summaries))
    return summaries


def budget_dir(out_dir: str | Path, budget: int) -> Path:
    """The directory of one thought budget of a sweep: ``<out_dir>/budget-<budget>``."""
    return Path(out_dir) / f"budget-{budget}"


def evaluate_budgets(
    engine_factory: Callable[[str, int], object],
    items: Sequence[Item],
    *,
    budgets: Sequence[int],
    modes: Sequence[str],
    out_dir: str | Path,
    run_config: dict | None = None,
    **kwargs,
) -> dict[str, dict]:
    """A thought-budget sweep: :func:`evaluate` once per budget, into :func:`budget_dir`
    (``<out_dir>/budget-<B>/<mode>/``, each with its own ``config.json`` whose ``budget`` is B).

    Every budget's directories are checked against their ``config.json`` before any budget runs,
    so a sweep into a directory of another configuration is refused before it spends compute.
    ``<out_dir>/summary.md`` then holds every (budget, mode) side by side; ``adasr plot
    frontier <out_dir>`` draws one point per (budget, mode).

    Args:
        engine_factory: ``engine_factory(mode, budget)`` builds the engine of one mode and budget
            (thought budget in tokens).
        items, modes, out_dir: as for :func:`evaluate`.
        budgets: distinct thought budgets (tokens, >= 1), run in the order given.
        run_config: as for :func:`evaluate`; its ``budget`` is set per budget.
        **kwargs: the other options of :func:`evaluate` (``batch_size``, ``stream``, ``clock``,
            ``step_s``, ``align_eoi``, ``progress``).

    Returns:
        ``{"budget-<B>/<mode>": summary}`` in budget order, then mode order.

    Raises:
        ConfigError: no budget, a duplicate budget or one that is not a positive integer, and
            everything :func:`evaluate` raises. EvalInterrupted, DataError: see :func:`evaluate`.
    """
    budgets = list(budgets)
    if not budgets:
        raise ConfigError("give at least one thought budget")
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"a thought budget must be a positive integer (tokens), got {b!r}")
    if len(set(budgets)) != len(budgets):
        raise ConfigError(f"thought budgets must be distinct, got {budgets}")
    # the options that shape config.json: every keyword of _plan (which builds it) but those set here
    plan_keys = [k for k, p in inspect.signature(_plan).parameters.items()
                 if p.kind is p.KEYWORD_ONLY and k not in ("modes", "out_dir", "run_config")]
    configs = {b: {**(run_config or {}), "budget": b} for b in budgets}
    for b in budgets:  # refuse before any budget runs
        _plan(items, modes=modes, out_dir=budget_dir(out_dir, b), run_config=configs[b],
              **{k: kwargs[k] for k in plan_keys if k in kwargs})
    out: dict[str, dict] = {}
    for b in budgets:
        sums = evaluate(lambda mode, b=b: engine_factory(mode, b), items, modes=modes, out_dir=budget_dir(out_dir, b),
                        run_config=configs[b], **kwargs)
        out.update({f"{budget_dir(out_dir, b).name}/{m}": s for m, s in sums.items()})
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    _write_text(Path(out_dir) / "summary.md", "# adasr evaluation: thought-budget sweep\n\n" + summary_table(out))
    return out
