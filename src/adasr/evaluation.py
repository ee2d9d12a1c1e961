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
item is simply recomputed. Ctrl-C keeps what was written and raises
:class:`~adasr.errors.EvalInterrupted`. A rerun whose configuration differs from
``<mode>/config.json`` in a setting that changes results (anything but
:data:`adasr.storage.INFORMATIONAL_KEYS`) is refused with a :class:`ConfigError` naming the
differing keys, so records of two configurations never mix.

This module is the loop (:func:`evaluate`: plan, run each mode, grade with
:func:`adasr.metrics.grade_record`, summarize; :func:`evaluate_budgets`: a budget sweep;
:func:`rescale_read_then_think`: a pinned-clock read-then-think run moved to another operating
point without the model); the files are :mod:`adasr.storage`'s.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from adasr.errors import ConfigError, DataError, EvalInterrupted
from adasr.metrics import grade_record, summarize, summary_table
from adasr.proactive_metrics import proactive_fields, summarize_proactive
from adasr.storage import (
    RESULTS_FILE,
    SUMMARY_FILE,
    TRANSCRIPTS_FILE,
    ResultsWriter,
    check_config,
    json_default,
    normalized,
    prior_elapsed,
    provenance,
    write_config,
    write_text,
)
from adasr.stream import StreamSpec
from adasr.tasks.base import Item

__all__ = ["EvalInterrupted", "evaluate", "evaluate_budgets", "budget_dir", "rescale_read_then_think", "RESCALED_FIELDS"]

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
    configs = {m: normalized({**base_config, "mode": m}) for m in modes}
    for m in modes:  # refuse before anything runs
        check_config(out_dir / m, configs[m])
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
    record is graded (:func:`adasr.metrics.grade_record` with ``task_for(item).grade``, see
    :mod:`adasr.tasks.registry`: math-verify for GSM8K, the task's scorer for procedural and
    proactive streams) and appended at once, and what the model wrote beside it in
    ``<out_dir>/<mode>/transcripts.jsonl`` (``id``, ``thoughts``: the streaming thought after each
    chunk as text, ``None`` where no assistant turn followed it, and ``deep``: the deep stage). Then ``summary.json``/``summary.md`` are written for
    the records of ``items``; with several modes also ``<out_dir>/summary.md`` side by side. The engine is only
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
    ``align_eoi`` and :func:`adasr.storage.provenance`, and written to
    ``<out_dir>/<mode>/config.json`` before the mode runs. A directory that already holds results
    of a configuration differing in any key outside :data:`adasr.storage.INFORMATIONAL_KEYS` is
    refused (checked for every mode before anything runs); the same configuration resumes.

    Returns:
        ``{mode: summary}`` in the order of ``modes``.

    Raises:
        EvalInterrupted: on Ctrl-C; records written so far are kept (rerun to resume).
        ConfigError: empty/duplicate modes, a mode unusable as a directory name, a bad batch size,
            an unknown clock, an item of an unknown task, or a resume with a different
            configuration (``run_config``).
        DataError: duplicate item ids, an unreadable ``config.json``.
    """
    plan = _plan(items, modes=modes, out_dir=out_dir, batch_size=batch_size, stream=stream, clock=clock,
                 step_s=step_s, align_eoi=align_eoi, run_config=run_config)
    out_dir = Path(out_dir)
    summaries: dict[str, dict] = {}
    n_written = 0  # records written by this call, all modes
    with _progress(progress) as bar, _sigint_flag() as ctrl_c:
        for mode in plan.modes:
            mode_dir = out_dir / mode
            write_config(mode_dir, plan.configs[mode])
            writer = ResultsWriter(mode_dir)
            tally = _Tally(bar, mode, len(items), [r for r in writer.records() if r["id"] in plan.by_id])
            n_prior = len(tally.done)
            prior_s = prior_elapsed(mode_dir, n_prior)
            todo = [it for it in items if it.id not in tally.done]
            n_new, elapsed, interrupted = _run_mode(engine_factory, mode, todo, plan, writer,
                                                    ResultsWriter(mode_dir, TRANSCRIPTS_FILE), tally, ctrl_c,
                                                    batch_size=batch_size, clock=clock, step_s=step_s)
            n_written += n_new
            records = [r for r in writer.records() if r["id"] in plan.by_id]
            elapsed_s = _total_elapsed(prior_s, elapsed, n_new, n_prior + n_new)
            summaries[mode] = _write_summary(mode_dir, mode, records, elapsed_s, complete=len(records) == len(items),
                                             clock=clock, batch_size=batch_size, align_eoi=plan.align)
            if interrupted:
                raise EvalInterrupted(
                    f"interrupted after {n_written} records ({mode}: {len(records)}/{len(items)} "
                    f"done, saved in {writer.path}); rerun the same command to resume"
                ) from None

    if len(plan.modes) > 1:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text(out_dir / "summary.md", "# adasr evaluation\n\n" + summary_table(summaries))
    return summaries


class _Tally:
    """The records of one mode done so far (earlier runs' and this run's) and their accuracy, shown
    on the mode's progress bar."""

    def __init__(self, bar, mode: str, total: int, prior: list[dict]):
        self.bar = bar
        self.done = {r["id"] for r in prior}
        self.n_correct = sum(1 for r in prior if r.get("correct") is True)
        self.task = bar.add_task(mode, total=total, completed=len(self.done), acc="")
        bar.update(self.task, acc=self._acc())

    def _acc(self) -> str:
        n = len(self.done)
        return f"acc {100 * self.n_correct / n:.1f}%" if n else ""

    def add(self, record: dict) -> None:
        """Count a record just written."""
        self.done.add(record["id"])
        self.n_correct += record["correct"]
        self.bar.update(self.task, advance=1, acc=self._acc())


def _run_mode(engine_factory: Callable[[str], object], mode: str, todo: list[Item], plan: _Plan,
              writer: ResultsWriter, transcripts: ResultsWriter, tally: _Tally, ctrl_c: threading.Event, *,
              batch_size: int, clock: str, step_s: float | None) -> tuple[int, float, bool]:
    """Run ``todo`` through ``engine_factory(mode)`` (built only when there is work), grading each
    finished episode (:func:`adasr.metrics.grade_record`, plus
    :func:`adasr.proactive_metrics.proactive_fields`) and appending it to ``writer`` at once, and
    what the model wrote (``id``, ``thoughts``: one text or ``None`` per chunk, ``deep``) to
    ``transcripts``.

    Returns:
        ``(records written, real seconds of the engine.run loop, interrupted by Ctrl-C)``.
    """
    from adasr.engine import EpisodeInput  # engine (and torch) only when evaluating
    from adasr.stream import VirtualClock

    n_new, t0, interrupted = 0, None, False
    try:
        if todo:
            engine = engine_factory(mode)
            tokenizer = getattr(engine, "tokenizer", None)
            inputs = (EpisodeInput(id=it.id, source=plan.stream.for_item(it, tokenizer=tokenizer),
                                   reference=it.reference, evidence_chunk=it.evidence_chunk) for it in todo)
            t0 = time.perf_counter()
            run_clock = VirtualClock(fixed_step_s=step_s) if step_s is not None else clock
            results = engine.run(inputs, batch_size=batch_size, clock=run_clock, align_eoi=plan.align)
            try:
                for result in results:
                    item = plan.by_id.get(result.id)
                    if item is None or item.id in tally.done:
                        raise RuntimeError(f"engine returned an unexpected episode id {result.id!r}")
                    record = dict(result.record)
                    record["id"] = item.id
                    record.setdefault("mode", mode)
                    grade_record(record, plan.tasks[item.id].grade, item.reference)
                    record.update(proactive_fields(record))
                    writer.write(record)
                    transcripts.write({"id": item.id, "thoughts": list(result.thoughts), "deep": result.deep})
                    n_new += 1
                    tally.add(record)
                    if ctrl_c.is_set():  # a Ctrl-C that library code swallowed
                        raise KeyboardInterrupt
            finally:
                close = getattr(results, "close", None)
                if close is not None:
                    close()
            missing = len(todo) - n_new
            if missing:
                warnings.warn(f"{mode}: the engine returned no result for {missing} item(s); rerun to retry them",
                              UserWarning, stacklevel=3)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        writer.close()
        transcripts.close()
    return n_new, (time.perf_counter() - t0 if t0 is not None else 0.0), interrupted


def _total_elapsed(prior_s: float | None, elapsed: float, n_new: int, n_done: int) -> float | None:
    """Real seconds of every run on a mode's records: this run's, plus the earlier runs' (``prior_s``;
    ``None`` when unknown: estimated at this run's pace)."""
    if prior_s is None:
        return elapsed * n_done / n_new if n_new else None
    return prior_s + elapsed if (n_new or prior_s) else None


def _write_summary(mode_dir: Path, mode: str, records: list[dict], elapsed_s: float | None, *, complete: bool,
                   clock: str, batch_size: int, align_eoi: bool) -> dict:
    """Summarize one mode's records (:func:`adasr.metrics.summarize`, with a ``proactive`` block when
    a stream has an evidence chunk) into ``summary.json`` and ``summary.md``; returns the summary."""
    summary = summarize(records, elapsed_s=elapsed_s)
    if any(r.get("evidence_chunk") is not None for r in records):
        summary["proactive"] = summarize_proactive(records)
    summary["mode"] = mode
    summary.update(clock=clock, batch_size=batch_size, align_eoi=align_eoi)
    summary["complete"] = complete
    mode_dir.mkdir(parents=True, exist_ok=True)
    write_text(mode_dir / SUMMARY_FILE, json.dumps(summary, indent=2, default=json_default) + "\n")
    write_text(mode_dir / "summary.md", f"# {mode}\n\n" + summary_table({mode: summary}))
    return summary


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
    write_text(Path(out_dir) / "summary.md", "# adasr evaluation: thought-budget sweep\n\n" + summary_table(out))
    return out


RESCALED_FIELDS = ("post_input_ttft_s", "post_input_latency_s", "max_backlog_s")
"""Record fields (s) that :func:`rescale_read_then_think` multiplies by the ratio of step times."""
_POINT_KEYS = ("chunker", "wps", "cps", "max_chunk_tokens", "tokens_per_chunk", "step_s", "decode_rate")


def rescale_read_then_think(source: str | Path, items: Sequence[Item], *, out_dir: str | Path, stream: StreamSpec,
                            step_s: float, decode_rate: float | None = None, tokenizer=None,
                            data: str | Path | None = None) -> dict:
    """Read-then-think's records at another operating point, from one pinned-clock run, without
    running the model again (issue "Think while they type", point 4).

    In batch mode (read-then-think) the model writes nothing before end of input, and on a pinned
    clock (one stream at a time, or EOI-aligned waves) every deep stage starts at end of input, so
    each post-input time is a number of engine steps times the step time. The records of
    ``source`` (its ``batch/`` directory) give those of another point once :data:`RESCALED_FIELDS`
    are multiplied by ``step_s / source step_s`` and ``eoi_s`` (and ``answer_s = eoi_s +
    post_input_latency_s``) are recomputed from the new arrival schedule (``stream.for_item``).
    Tokens, predictions and grades are copied, and so is ``wall_s`` (the source run's real time:
    the summary's problems/hour is the source run's pace). This assumes that the model's tokens
    do not depend on the chunking, which holds when the deep stage sees the same prompt tokens:
    check it on a few problems by running the point for real (RESULTS §47 did, on 8 held-out
    problems: 8 of 8 identical).

    Writes ``<out_dir>/batch/`` (``config.json``: the source run's model settings with the new
    point's stream keys, ``step_s`` and ``decode_rate``, and ``rescaled_from``/``rescale_factor``;
    ``results.jsonl``; ``summary.json``/``summary.md``). Rerunning into the same directory with
    the same arguments rewrites it; another configuration there is refused.

    Args:
        source: the source run's ``--out`` directory (holding ``batch/config.json``).
        items: the items to rescale (each must have a source record).
        out_dir: where to write.
        stream: the new point's arrival (chunker, words/s or characters/s).
        step_s: the new point's pinned step time (s, > 0).
        decode_rate: the new point's decode rate (tokens/s), recorded (batch mode has no budgets).
        tokenizer: the source model's tokenizer, for chunkers or chunk caps that count tokens; when
            None, loaded from the source run's recorded ``model_path`` (if it recorded one).
        data: the file ``items`` came from; when given, it must be the source run's recorded data.

    Returns:
        The summary (:func:`adasr.metrics.summarize`) of the rescaled records.

    Raises:
        ConfigError: ``source`` is not a batch-mode run on the pinned virtual clock (one stream at
            a time or EOI-aligned waves), ``data`` is not its data, an item has no source record, a
            bad ``step_s``, or ``out_dir`` holds another configuration.
        DataError: an unreadable source ``config.json`` or ``results.jsonl``, or a recorded
            ``model_path`` whose tokenizer cannot be loaded.
    """
    src = Path(source) / "batch"
    try:
        config = json.loads((src / "config.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"{src}/config.json not found: rescale the --out directory of an `adasr eval --mode "
                          f"batch` run") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {src}/config.json: {e}") from None
    align = bool(config.get("align_eoi"))
    if config.get("clock") != "virtual" or not config.get("step_s") or not (align or config.get("batch_size") == 1):
        raise ConfigError(f"{src} was not run on the pinned virtual clock with EOI-aligned waves (clock "
                          f"{config.get('clock')!r}, step_s {config.get('step_s')!r}, align_eoi "
                          f"{config.get('align_eoi')!r}): only then is its latency steps x step time")
    if isinstance(step_s, bool) or not isinstance(step_s, (int, float)) or not step_s > 0:
        raise ConfigError(f"step_s must be a positive number of seconds, got {step_s!r}")
    if data is not None and config.get("data") != str(Path(data).expanduser().resolve()):
        raise ConfigError(f"data {data} is not the data of the run in {source} ({config.get('data')})")
    if tokenizer is None and config.get("model_path"):
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(config["model_path"])
        except OSError as e:
            raise DataError(f"cannot load the tokenizer of the run in {source} from {config['model_path']}: {e}; "
                            f"load that model once (e.g. `adasr run --model ...`) to rebuild its cache, or pass tokenizer=") from None
    by_id = {r["id"]: r for r in ResultsWriter(src).records()}
    missing = [it.id for it in items if it.id not in by_id]
    if missing:
        raise ConfigError(f"{len(missing)} of {len(items)} items have no record in {src} (first: {missing[0]}): "
                          f"extend the source run (the same `adasr eval` with a larger --limit) first")
    factor = float(step_s) / float(config["step_s"])
    kept = {k: v for k, v in config.items() if k not in _POINT_KEYS and k not in provenance() and k != "mode"
            and k not in ("batch_size", "clock", "align_eoi")}
    run_config = {**kept, "limit": len(items), "decode_rate": decode_rate,
                  "rescaled_from": str(Path(source).resolve()), "rescale_factor": factor}
    plan = _plan(items, modes=["batch"], out_dir=out_dir, batch_size=config.get("batch_size", 1), stream=stream,
                 step_s=float(step_s), align_eoi=align, run_config=run_config)
    records = []
    for it in items:
        rec = dict(by_id[it.id])
        for key in RESCALED_FIELDS:
            if rec.get(key) is not None:
                rec[key] = rec[key] * factor
        rec["eoi_s"] = plan.stream.for_item(it, tokenizer=tokenizer).chunks[-1].arrival_s
        rec["answer_s"] = rec["eoi_s"] + rec["post_input_latency_s"]
        records.append(rec)
    mode_dir = Path(out_dir) / "batch"
    write_config(mode_dir, plan.configs["batch"])
    write_text(mode_dir / RESULTS_FILE, "".join(json.dumps(r, default=json_default) + "\n" for r in records))
    return _write_summary(mode_dir, "batch", records, None, complete=True, clock="virtual",
                          batch_size=config.get("batch_size", 1), align_eoi=align)
