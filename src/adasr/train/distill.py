"""Self-distillation by rejection sampling: the model's own correct read-then-think solutions.

For every problem, ``samples`` read-then-think solutions are sampled from the model with the
streaming engine (batch layout, whole question as one chunk, batched rows, continuous batching)
and graded with the task's checker (math-verify for GSM8K). Every sample is appended to
``<out>/samples.jsonl`` as soon as it finishes (flushed and fsync'ed), so a killed run loses at
most the episodes in flight and a rerun of the same command resumes where it stopped. Only the
samples marked ``correct`` are later converted into streaming episodes
(:func:`adasr.tasks.streamify.streamify_solution`).

This is rejection-sampling fine-tuning / self-training (STaR: Zelikman et al., NeurIPS 2022;
RFT: Yuan et al., arXiv 2308.01825): the training targets are in the model's own style, so SFT
on them teaches the streaming protocol without spending the model's skill on an unfamiliar
solution style. Any Hugging Face causal LM works as the sampler (e.g. a stronger teacher on a
GPU) through the same function.

Layout of ``<out>``::

    samples.jsonl   one record per sample: id ("<item id>#<k>"), item_id, sample, question,
                    reference, solution (generated text), prediction, correct, tokens
    config.json     the settings of the run (a rerun with other settings is refused)
    episodes.jsonl  the streaming episodes converted from the correct samples
    report.json     counts: problems tried, samples, kept, episodes, reasoning-token shares
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from functools import partial
from typing import TYPE_CHECKING, Callable, Sequence

from adasr.defaults import DEFAULT_THOUGHT_BUDGET
from adasr.errors import ConfigError, EvalInterrupted
from adasr.storage import ResultsWriter
from adasr.tasks.base import Item

if TYPE_CHECKING:
    from adasr.engine import EngineConfig, StreamingEngine

__all__ = ["ConversionReport", "DistillConfig", "distill", "point_of", "sample_counts", "sample_id", "write_episodes"]

SAMPLES_FILE = "samples.jsonl"
CONFIG_FILE = "config.json"


@dataclass
class DistillConfig:
    """Settings of one distillation run (all recorded in ``config.json``).

    Attributes:
        model: the sampler's name (bundled name, HF id or path), for provenance.
        samples: solutions sampled per problem (K).
        temperature: sampling temperature (> 0).
        top_p: nucleus sampling mass.
        max_tokens: cap on a solution, tokens (longer ones are truncated and rejected).
        batch_size: rows decoded together in the engine.
        seed: base seed; sample ``k`` of item ``i`` is seeded from ``(seed, crc32(i), k)``.
        dtype: weight/compute dtype of the sampler (recorded; the caller loads the model).
        device: where the sampler runs (recorded; the caller loads the model there).
        backend: what generates the tokens (``torch`` | ``vllm``, :data:`adasr.engine.BACKENDS`;
            recorded, the caller builds the engine). Neither changes the distribution sampled
            from, so a run may resume on another device or backend; the draws themselves differ.
    """

    model: str = "qwen2.5-coder-0.5b-instruct"
    samples: int = 2
    temperature: float = 0.3
    top_p: float = 0.95
    max_tokens: int = 400
    batch_size: int = 16
    seed: int = 0
    dtype: str = "bfloat16"
    device: str = "cpu"
    backend: str = "torch"

    def validate(self) -> None:
        """Raises :class:`ConfigError` for out-of-range values."""
        from adasr.engine import EngineConfig

        EngineConfig(backend=self.backend).validate()  # the engine's own check of the backend name
        if self.samples < 1:
            raise ConfigError(f"--samples must be >= 1, got {self.samples}")
        if not self.temperature > 0:
            raise ConfigError("distillation samples: --temperature must be > 0")
        if not 0 < self.top_p <= 1:
            raise ConfigError("need 0 < top_p <= 1")
        if self.max_tokens < 16:
            raise ConfigError("--max-tokens must be >= 16")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be >= 1")


def read_samples(out_dir: str | Path) -> list[dict]:
    """Every sample record of a distillation directory, in the order drawn (``[]`` if none)."""
    return ResultsWriter(out_dir, SAMPLES_FILE).records()


def sample_id(item_id: str, k: int) -> str:
    """Id of sample ``k`` of an item: ``"<item id>#<k>"``."""
    return f"{item_id}#{k}"


def _check_config(out_dir: Path, cfg: DistillConfig) -> None:
    """Write ``config.json`` on first use; refuse to mix samples drawn with other settings.

    Raises:
        ConfigError: ``out_dir`` holds samples drawn with different settings.
    """
    path = out_dir / CONFIG_FILE
    mine = asdict(cfg)
    mine.pop("batch_size")  # does not change what is sampled (beyond float rounding)
    mine.pop("samples")  # sample k of an item is the same draw whatever K: a larger K extends the run
    for where in ("device", "backend"):  # the same distribution (class docstring); recorded on first use
        mine.pop(where)
    if path.exists():
        prev = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in mine if mine[k] != prev.get(k))
        if diff:
            detail = ", ".join(f"{k}: {prev.get(k)!r} there, {mine.get(k)!r} now" for k in diff)
            raise ConfigError(f"{out_dir} holds samples drawn with other settings ({detail}): "
                              "use another --out or the same settings")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**mine, "device": cfg.device, "backend": cfg.backend}, indent=2) + "\n",
                    encoding="utf-8")


def distill(
    model,
    tokenizer,
    items: Sequence[Item],
    out_dir: str | Path,
    cfg: DistillConfig,
    *,
    progress: bool = True,
    on_record: Callable[[dict], None] | None = None,
    engine_factory: Callable[[EngineConfig], StreamingEngine] | None = None,
) -> list[dict]:
    """Sample ``cfg.samples`` read-then-think solutions per item; append every graded sample.

    Args:
        model, tokenizer: the sampler (a Hugging Face causal LM with a chat template).
        items: the problems (GSM8K-format items, graded by their task, :func:`adasr.tasks.registry.task_for`).
        out_dir: the distillation directory (see the module docstring); resumable.
        cfg: :class:`DistillConfig`.
        progress: show a progress bar (kept/seen counts, ETA).
        on_record: called with each new sample record.
        engine_factory: builds the sampling engine from its :class:`~adasr.engine.EngineConfig`
            (batch mode; ``cfg.backend`` set), e.g. ``lambda c: adasr.backends.make_engine(loaded, c)``
            for the vLLM backend; default: the in-process engine on ``model`` (``cfg.backend``
            must then be ``torch``). The engine is closed at the end.

    Returns:
        All sample records of ``items`` in the directory (earlier runs' included).

    Raises:
        ConfigError: invalid settings, or a directory drawn with other settings.
        EvalInterrupted: on Ctrl-C (samples written so far are kept; rerun to resume).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from adasr.engine import EngineConfig, EpisodeInput, StreamingEngine
    from adasr.metrics import grade_record
    from adasr.stream import Chunk, ScheduledStream
    from adasr.tasks.registry import task_for

    cfg.validate()
    tasks = {it.id: task_for(it) for it in items}  # an unknown task fails before any sampling
    out_dir = Path(out_dir)
    _check_config(out_dir, cfg)
    writer = ResultsWriter(out_dir, SAMPLES_FILE)
    wanted = {sample_id(it.id, k): (it, k) for it in items for k in range(cfg.samples)}
    prior = [r for r in writer.records() if r["id"] in wanted]
    done = {r["id"] for r in prior}
    todo = [(it, k) for sid, (it, k) in wanted.items() if sid not in done]
    seen, kept = len(prior), sum(1 for r in prior if r.get("correct"))
    if engine_factory is None:
        if cfg.backend != "torch":
            raise ConfigError(f"backend {cfg.backend!r}: pass an engine_factory that builds it")
        engine_factory = partial(StreamingEngine, model, tokenizer)
    engine = engine_factory(EngineConfig(
        policy="batch", max_deep_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
        seed=cfg.seed, decode_rate=1.0, backend=cfg.backend))  # batch mode has no thought budgets: no calibration
    inputs = (EpisodeInput(id=sample_id(it.id, k), source=ScheduledStream([Chunk(0, it.question, 0.0)]),
                           reference=it.reference, seed=zlib.crc32(it.id.encode()) * 64 + k)
              for it, k in todo)
    bar = Progress(TextColumn("[bold]distill"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[kept]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress)
    new: list[dict] = []
    try:
        with bar:
            task = bar.add_task("distill", total=len(wanted), completed=seen, kept=f"kept {kept}/{seen}")
            results = engine.run(inputs, batch_size=cfg.batch_size, clock="virtual")
            for res in results:
                it, k = wanted[res.id]
                rec = {"id": res.id, "item_id": it.id, "sample": k, "question": it.question,
                       "reference": it.reference, "solution": res.deep,
                       "prediction": res.record["prediction"], "tokens": res.record["deep_tokens"],
                       "format_ok": res.record["format_ok"]}
                grade_record(rec, tasks[it.id].grade, it.reference, need_format=True)
                writer.write(rec)
                new.append(rec)
                seen += 1
                kept += rec["correct"]
                bar.update(task, advance=1, kept=f"kept {kept}/{seen}")
                if on_record is not None:
                    on_record(rec)
    except KeyboardInterrupt:
        raise EvalInterrupted(f"interrupted: {seen} samples saved in {writer.path}; rerun the same command "
                              "to resume") from None
    finally:
        writer.close()
        engine.close()
    return prior + new


EPISODES_FILE = "episodes.jsonl"
REPORT_FILE = "report.json"


@dataclass
class ConversionReport:
    """What :func:`write_episodes` made of a distillation directory.

    Attributes:
        problems: problems tried (with at least one sample).
        problems_solved: problems with at least one kept (correct) sample.
        samples: samples drawn.
        kept: samples math-verify accepted.
        excluded: kept samples not converted, by reason (``"code"``: the solution runs Python
            and quotes an output the model imagined; ``"unparsable"``: no steps).
        episodes: streaming episodes written.
        stream_token_share: reasoning tokens in streaming thoughts / all reasoning tokens
            (thoughts + deep stage), pooled over episodes: the share moved before end of input.
        skip_rate: non-final chunks whose thought is empty / all non-final chunks.
        mean_thought_tokens: mean tokens of the non-empty streaming thoughts.
        mean_deep_tokens: mean tokens of the deep stage.
        mean_solution_tokens: mean tokens of the converted samples' solutions (what reading then
            thinking writes after end of input).
        notes: the thought style the episodes were written with.
        tokens_per_word: the arrival room thoughts were fitted to (``None``: not fitted; a list:
            mixed operating points, one per episode, :func:`write_episodes`).
        deep_style: how the deep stage was written (``"terse"`` or ``"verbatim"``).
        by_point: with mixed operating points, per ``tokens_per_word`` (as a string): its
            ``episodes`` and ``stream_token_share``.
        chunker: how the questions were cut into chunks (``"sentence"`` | ``"clause"``).
        goal_steps: where the opening plan and the step computing the answer went
            (``"anticipate"`` | ``"after-question"``: :func:`adasr.tasks.align.align_steps`).
    """

    problems: int = 0
    problems_solved: int = 0
    samples: int = 0
    kept: int = 0
    excluded: dict | None = None
    episodes: int = 0
    stream_token_share: float = 0.0
    skip_rate: float = 0.0
    mean_thought_tokens: float = 0.0
    mean_deep_tokens: float = 0.0
    mean_solution_tokens: float = 0.0
    notes: str = ""
    tokens_per_word: float | list[float] | None = None
    deep_style: str = ""
    by_point: dict | None = None
    chunker: str = "sentence"
    goal_steps: str = "anticipate"

    @property
    def keep_rate(self) -> float:
        """Kept samples / samples drawn."""
        return self.kept / self.samples if self.samples else 0.0

    def summary_line(self) -> str:
        return (f"{self.samples} samples of {self.problems} problems: kept {self.kept} "
                f"({self.kept / max(self.samples, 1):.1%}; {self.problems_solved} problems solved), "
                f"{self.episodes} streaming episodes ({self.stream_token_share:.1%} of reasoning tokens before "
                f"end of input, skip rate {self.skip_rate:.1%})")


def sample_counts(records: Sequence[dict]) -> ConversionReport:
    """The sample counts of a distillation (problems tried and solved, samples, kept) as a
    :class:`ConversionReport` with nothing converted yet."""
    solved = {r["item_id"] for r in records if r.get("correct")}
    return ConversionReport(problems=len({r["item_id"] for r in records}), problems_solved=len(solved),
                            samples=len(records), kept=sum(1 for r in records if r.get("correct")), excluded={})


def check_episodes_file(name: str) -> None:
    """Refuse an episodes file name that is not a plain ``*.jsonl`` name (it is written inside the
    distillation directory, never elsewhere).

    Raises:
        ConfigError: a path or another extension.
    """
    if Path(name).name != name or not name.endswith(".jsonl"):
        raise ConfigError(f"the episodes file (--episodes) takes a file name ending in .jsonl, written in the "
                          f"distillation directory; got {name!r}")


def point_of(sample: str, points: Sequence[float]) -> float:
    """The operating point (tokens per input word) a sample's episode is fitted to when episodes
    are converted at mixed points: ``points[crc32(sample id) % len(points)]`` (fixed by the id, so
    a rerun over more samples keeps every earlier episode's point)."""
    return points[zlib.crc32(sample.encode()) % len(points)]


def write_episodes(records: Sequence[dict], out_dir: str | Path, tokenizer, *, notes: str = "terse",
                   tokens_per_word: float | Sequence[float] | None = 2.8,
                   max_thought_tokens: int = DEFAULT_THOUGHT_BUDGET,
                   deep_style: str = "terse", episodes_file: str = EPISODES_FILE,
                   chunker: str = "sentence", goal_steps: str = "anticipate") -> ConversionReport:
    """Convert the correct samples into streaming episodes: ``<out>/episodes.jsonl`` (the
    shared streaming-episode schema, one per kept sample, in sample order) and
    ``<out>/report.json`` (:class:`ConversionReport`). Rewritten whole on every call.

    Episodes come from :func:`adasr.tasks.streamify.streamify_solution` with one-line thoughts
    (the thought format of ``Protocol.one_line_thoughts``: a thought ends at its first line break).

    Args:
        records: sample records (from :func:`distill`).
        out_dir: the distillation directory.
        tokenizer: counts tokens for the report.
        notes: the thought style (``streamify_solution``'s ``notes``); default ``"terse"``: the
            model's own computations without their prose, short enough for the adaptive
            budgets (the ``"steps"`` style's thoughts were ~3x the slack between chunks).
        tokens_per_word: thoughts are fitted to the room the input's arrival leaves
            (:class:`adasr.tasks.notes.ThoughtFit`): decode tokens/s over words/s (default
            2.8 = 7 tokens/s at 2.5 words/s, the evaluations' pinned rates); ``None``: no fitting.
            Several values: mixed operating points, each episode fitted to one of them
            (:func:`point_of`), so that one adapter learns how much to think early from the room
            its adaptive budgets give it (the report's ``by_point`` has each point's share).
        max_thought_tokens: the thought budget's cap, tokens.
        deep_style: ``"terse"`` (default): the deep stage's computing steps as short notes, the
            boxed conclusion verbatim; ``"verbatim"``: the solution's own slice.
        episodes_file: file name of the episodes in ``out_dir``; another name than
            ``episodes.jsonl`` (e.g. ``episodes_verbatim.jsonl``) keeps several conversions of the
            same samples side by side, its report in ``<stem>.report.json``.
        chunker: how each question is cut into chunks, ``"sentence"`` (default) or ``"clause"``
            (:func:`adasr.stream.split_clauses`: a final question clause on its own chunk); the
            episodes are to be run with the same ``--chunker``.
        goal_steps: ``"anticipate"`` (default) or ``"after-question"``: the solution's opening
            plan and the step computing the answer wait for the question, in the deep stage
            (:func:`adasr.tasks.align.align_steps`, "Goal steps"; benchmarks/RESULTS.md §45).

    Raises:
        ConfigError: an ``episodes_file`` that is not a plain ``*.jsonl`` file name; a point that
            is not > 0 among mixed points; an unknown chunker or ``goal_steps``.
    """
    check_episodes_file(episodes_file)
    from adasr.tasks.align import GOAL_STEPS
    from adasr.tasks.streamify import EPISODE_CHUNKERS

    if chunker not in EPISODE_CHUNKERS:
        raise ConfigError(f"episodes are cut with --chunker {' or '.join(EPISODE_CHUNKERS)}, got {chunker!r}")
    if goal_steps not in GOAL_STEPS:
        raise ConfigError(f"--goal-steps takes {' or '.join(GOAL_STEPS)}, got {goal_steps!r}")
    points = None
    if tokens_per_word is not None and not isinstance(tokens_per_word, (int, float)):
        points = [float(t) for t in tokens_per_word]
        if not points or any(not t > 0 for t in points):
            raise ConfigError(f"mixed operating points need tokens per word > 0, got {points}")
        if len(points) == 1:
            tokens_per_word, points = points[0], None
    from adasr.jsonl import write_jsonl
    from adasr.tasks.notes import ThoughtFit
    from adasr.tasks.solutions import ParseFailure
    from adasr.tasks.streamify import streamify_solution

    out_dir = Path(out_dir)
    rep = sample_counts(records)
    episodes: list[dict] = []
    n_stream = n_deep = n_nonfinal = n_skip = n_solution = 0
    thought_lens: list[int] = []

    def n_tok(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False)) if text else 0

    fits = {t: ThoughtFit(t, max_thought_tokens, n_tok) for t in points or [tokens_per_word] if t}
    per_point: dict[float, list[int]] = {t: [0, 0, 0] for t in points or []}  # episodes, stream, deep tokens

    for r in records:
        if not r.get("correct"):
            continue
        if "```" in r["solution"]:
            rep.excluded["code"] = rep.excluded.get("code", 0) + 1
            continue
        point = point_of(r["id"], points) if points else tokens_per_word
        try:
            ep = streamify_solution(r["question"], r["solution"], r["reference"], id=r["id"], notes=notes,
                                    one_line=True, fit=fits.get(point), deep_style=deep_style,
                                    chunker=chunker, goal_steps=goal_steps).record
        except ParseFailure:
            rep.excluded["unparsable"] = rep.excluded.get("unparsable", 0) + 1
            continue
        episodes.append(ep)
        lens = [n_tok(t) for t in ep["thoughts"]]
        thought_lens += [n for n in lens if n]
        deep = n_tok(ep["deep"])
        n_stream += sum(lens)
        n_deep += deep
        if points:
            per_point[point] = [a + b for a, b in zip(per_point[point], (1, sum(lens), deep))]
        n_solution += n_tok(r["solution"])
        n_nonfinal += len(lens)
        n_skip += sum(1 for n in lens if n == 0)
    rep.episodes = len(episodes)
    if episodes:
        rep.stream_token_share = n_stream / max(n_stream + n_deep, 1)
        rep.skip_rate = n_skip / n_nonfinal if n_nonfinal else 1.0
        rep.mean_thought_tokens = sum(thought_lens) / len(thought_lens) if thought_lens else 0.0
        rep.mean_deep_tokens = n_deep / len(episodes)
        rep.mean_solution_tokens = n_solution / len(episodes)
    rep.notes = notes
    rep.tokens_per_word = points or tokens_per_word
    rep.deep_style = deep_style
    rep.chunker = chunker
    rep.goal_steps = goal_steps
    if points:
        rep.by_point = {f"{t:g}": {"episodes": e, "stream_token_share": st / max(st + d, 1)}
                        for t, (e, st, d) in per_point.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(episodes, out_dir / episodes_file)
    report = REPORT_FILE if episodes_file == EPISODES_FILE else f"{Path(episodes_file).stem}.report.json"
    (out_dir / report).write_text(json.dumps(asdict(rep), indent=2) + "\n", encoding="utf-8")
    return rep


def alignment_report(records: Sequence[dict], tokenizer, chunker: str = "sentence",
                     goal_steps: str = "anticipate") -> dict:
    """How much of the kept samples' reasoning the aligner can place before the last chunk, and
    why the rest cannot be placed (:func:`adasr.tasks.align.align_steps`, no fitting to an
    operating point's room: the upper bound any conversion reaches).

    Every correct sample's solution is parsed into steps (:func:`~adasr.tasks.solutions.parse_free_solution`)
    and aligned to its question's chunks; a step's tokens (``tokenizer``) count as placeable when
    it lands on a chunk before the last, else under its :attr:`~adasr.tasks.solutions.Step.deep_reason`.
    A solution with no step counts all its tokens under ``"parse failure"``. ``chunker``: how
    the questions are cut (``"sentence"`` | ``"clause"``, as in :func:`write_episodes`);
    ``goal_steps``: where the opening plan and the answer's step go (as in :func:`write_episodes`).

    Returns:
        ``{"samples", "reasoning_tokens", "placeable_share", "unplaced": {reason: share of all
        reasoning tokens}, "chunker", "goal_steps"}`` (shares in [0, 1]).
    """
    from adasr.tasks.align import align_steps
    from adasr.tasks.solutions import parse_free_solution
    from adasr.tasks.streamify import episode_chunks
    from adasr.tasks.text import parse_number

    counts: dict[str, int] = {}
    total = placed = n = 0

    def add(reason: str, k: int) -> None:
        counts[reason] = counts.get(reason, 0) + k

    for r in records:
        if not r.get("correct"):
            continue
        n += 1
        solution = r.get("solution") or ""
        steps = parse_free_solution(solution)
        if not steps:
            k = len(tokenizer.encode(solution, add_special_tokens=False))
            total += k
            add("parse failure", k)
            continue
        align_steps(episode_chunks(r["question"], chunker), steps, unannotated="attach", goal_steps=goal_steps,
                    answer=parse_number(str(r.get("reference", ""))))
        for st in steps:
            k = len(tokenizer.encode(st.text, add_special_tokens=False))
            total += k
            if st.chunk is not None:
                placed += k
            else:
                add(st.deep_reason or "answer", k)
    share = lambda k: k / total if total else 0.0  # noqa: E731
    return {"samples": n, "reasoning_tokens": total, "placeable_share": share(placed),
            "unplaced": {k: share(v) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}, "chunker": chunker,
            "goal_steps": goal_steps}
