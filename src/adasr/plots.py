"""Pictures of evaluations and episodes: ``adasr plot frontier | cdf | timeline``.

Three figures, each written to a file (PNG, or any format matplotlib infers from the suffix:
``.svg``, ``.pdf``, ...) with matplotlib's Agg canvas: no display, no pyplot, no change to the
caller's matplotlib backend.

* :func:`plot_frontier` — the accuracy vs post-input latency trade-off: one point per
  (evaluation directory, mode) at x = p50 ``post_input_latency_s``, y = accuracy with its 95%
  Wilson interval (:func:`adasr.metrics.wilson_interval`) as error bars; the points no other
  point beats on both axes (the Pareto front) are joined by a dashed line.
* :func:`plot_latency_cdf` — the empirical CDF of ``post_input_latency_s``, one line per
  (evaluation directory, mode).
* :func:`plot_timeline` — one episode from ``adasr run --json`` (``record``, ``thoughts``,
  ``deep``, ``events``): one row per chunk with its arrival, its wait (backlog) and ingestion,
  the streaming thought as a bar from ingestion to the thought's end (skips marked), end of
  input (EOI) as a vertical line, and the deep stage as a bar up to the answer.

Evaluation directories are those ``adasr eval --out DIR`` writes (:mod:`adasr.evaluation`):
``DIR/<mode>/results.jsonl`` (a budget sweep: ``DIR/budget-<N>/<mode>/results.jsonl``, one
series per budget and mode); a ``<mode>`` directory itself is accepted too. Points and curves
are computed from the records in ``results.jsonl`` (all of them, even items outside the
``--limit`` of the last run), with :func:`adasr.metrics.summarize`, so that the frontier and the
CDF always describe the same records. A last line cut short by a killed run is skipped, as the
evaluation loop does; any other malformed line is an error.

Errors a user can cause raise :class:`~adasr.errors.InputError` (a path that does not exist),
:class:`~adasr.errors.DataError` (no results, malformed JSON or records) or
:class:`~adasr.errors.ConfigError` (an output path that cannot be written).
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from adasr.errors import ConfigError, DataError, InputError
from adasr.jsonl import jsonl_lines
from adasr.metrics import summarize, wilson_interval
from adasr.policy import MODES
from adasr.storage import CONFIG_FILE, RESULTS_FILE

__all__ = [
    "EvalSeries",
    "load_eval_dirs",
    "load_run_json",
    "plot_frontier",
    "plot_latency_cdf",
    "plot_timeline",
]


@dataclass
class EvalSeries:
    """The records of one mode of one evaluation directory.

    Attributes:
        label: ``"<dir name>/<mode>"`` (``"<dir name>/budget-<N>/<mode>"`` in a budget sweep;
            ``"<dir as given>/..."`` when two different evaluation directories share a name).
        path: the ``<mode>`` directory.
        mode: the mode (the directory's name).
        records: the episode records of ``results.jsonl`` (the last one per id).
        summary: :func:`adasr.metrics.summarize` of ``records``.
        clock: how its latencies were timed, from its ``config.json`` (:func:`clock_text`).
    """

    label: str
    path: Path
    mode: str
    records: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    clock: str = "clock not recorded"

    def latencies(self) -> list[float]:
        """The finite ``post_input_latency_s`` values of the records, sorted (seconds)."""
        return sorted(
            float(v)
            for r in self.records
            if isinstance(v := r.get("post_input_latency_s"), (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
        )


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _read_results(path: Path) -> list[dict]:
    """Records of one ``results.jsonl`` (read only; never repaired, unlike ResultsWriter)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    unterminated = data.count(b"\n") + 1  # the line after the last newline
    by_id: dict[str, dict] = {}
    for lineno, raw in jsonl_lines(data):
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            if lineno == unterminated:  # no newline after it: a write cut short by a kill
                continue
            raise DataError(f"{path}:{lineno}: malformed JSON line (not an `adasr eval` record)") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
            raise DataError(f"{path}:{lineno}: not an `adasr eval` record (a JSON object with an 'id')")
        by_id.pop(rec["id"], None)
        by_id[rec["id"]] = rec
    return list(by_id.values())


def _mode_order(mode: str) -> tuple[int, str]:
    return (MODES.index(mode) if mode in MODES else len(MODES), mode)


def _natural(path: Path) -> tuple:
    """Sort key that orders ``budget-8`` before ``budget-16`` (numbers compared as numbers)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path.name) if t)


def _mode_dirs(d: Path) -> list[Path]:
    """The ``<mode>`` directories of one evaluation directory (those with results), in mode order."""
    return sorted((p for p in d.iterdir() if (p / RESULTS_FILE).is_file()), key=lambda p: _mode_order(p.name))


def load_eval_dirs(dirs: Sequence[str | Path]) -> list[EvalSeries]:
    """Read evaluation directories into one :class:`EvalSeries` per (directory, mode).

    Args:
        dirs: directories written by ``adasr eval --out`` (a thought-budget sweep's too:
            ``DIR/budget-<N>/<mode>/``), or ``<mode>`` directories in them.

    Returns:
        The series, directory by directory, modes in the order batch, interleaved, adaptive,
        then others by name.

    Raises:
        InputError: no directory given, or a path that does not exist or is not a directory.
        DataError: a directory with no ``results.jsonl`` or no records, or a malformed line.
    """
    if not dirs:
        raise InputError("give at least one evaluation directory (written by `adasr eval --out`)")
    found: list[tuple[Path, list[Path]]] = []
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise InputError(f"no such evaluation directory: {d}")
        if not d.is_dir():
            raise InputError(f"{d} is not a directory (give the --out directory of `adasr eval`)")
        if (d / RESULTS_FILE).is_file():
            mode_dirs = [d]
        else:
            mode_dirs = _mode_dirs(d)
            if not mode_dirs:  # a thought-budget sweep: DIR/budget-<N>/<mode>/
                mode_dirs = [md for sub in sorted((p for p in d.iterdir() if p.is_dir()), key=_natural)
                             for md in _mode_dirs(sub)]
        if not mode_dirs:
            raise DataError(f"{d} holds no results: expected <mode>/{RESULTS_FILE} written by `adasr eval --out {d}`")
        found.append((d, mode_dirs))

    # label "<eval dir name>/<mode>"; the eval dir as given where two different ones share a name
    roots = [d if mode_dirs != [d] else d.parent for d, mode_dirs in found]
    names = {}
    for root in roots:
        names.setdefault(root.resolve().name, set()).add(root.resolve())
    out: list[EvalSeries] = []
    for root, (d, mode_dirs) in zip(roots, found):
        short = root.resolve().name
        prefix = short if len(names[short]) == 1 else (str(root).rstrip("/\\") or short)
        for md in mode_dirs:
            records = _read_results(md / RESULTS_FILE)
            if not records:
                raise DataError(f"{md / RESULTS_FILE} has no records yet")
            rel = md.relative_to(root).as_posix() if md != root else md.name
            out.append(EvalSeries(f"{prefix}/{rel}", md, md.name, records, summarize(records), clock_text(md)))
    return out


def clock_text(mode_dir: Path) -> str:
    """How an evaluation's latencies were timed, from ``<mode_dir>/config.json``: ``"simulated pinned
    clock, S s a step, R tokens/s"`` when ``adasr eval --step-s`` pinned it (a simulated rate, always
    named beside its figures), else ``"<clock> clock, measured on <device>"``; ``"clock not
    recorded"`` without a readable config."""
    try:
        cfg = json.loads((Path(mode_dir) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return "clock not recorded"
    if cfg.get("step_s"):
        rate = f", {cfg['decode_rate']:g} tokens/s" if isinstance(cfg.get("decode_rate"), (int, float)) else ""
        return f"simulated pinned clock, {cfg['step_s']:g} s a step{rate}"
    return f"{cfg.get('clock', 'virtual')} clock, measured on {cfg.get('device', 'an unrecorded device')}"


def _clock_labels(series: Sequence[EvalSeries]) -> tuple[list[str], str]:
    """Legend labels and an axis note naming the clock: one note when every series shares it,
    else the clock beside each label."""
    clocks = {s.clock for s in series}
    if len(clocks) == 1:
        return [s.label for s in series], f"\n{clocks.pop()}"
    return [f"{s.label} [{s.clock}]" for s in series], ""


def load_run_json(path: str | Path) -> dict:
    """Read the output of ``adasr run --json`` (``"-"``: standard input).

    Returns:
        The object, with ``events`` checked: a list of dicts, each with a string ``type`` and
        a finite number ``t`` (seconds since the stream started).

    Raises:
        InputError: the file does not exist or cannot be read.
        DataError: not JSON, not an object with ``events``, or a malformed event.
    """
    where = "standard input" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not the JSON output of `adasr run --json`") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {where}: {getattr(e, 'strerror', None) or e}") from None
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise DataError(f"{where} is not valid JSON ({e.msg} at line {e.lineno}); "
                        "expected the output of `adasr run --json`") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("events"), list):
        raise DataError(f"{where}: expected the JSON object of `adasr run --json` (with an 'events' list)")
    for i, ev in enumerate(obj["events"]):
        t = ev.get("t") if isinstance(ev, dict) else None
        if (not isinstance(ev, dict) or not isinstance(ev.get("type"), str)
                or not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t)):
            raise DataError(f"{where}: event {i} is malformed (need an object with 'type' and a number 't')")
    if not any(ev["type"] == "arrive" for ev in obj["events"]):
        raise DataError(f"{where}: the episode has no 'arrive' events: nothing to draw")
    return obj


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out: str | Path) -> Path:
    """Write ``fig`` to ``out`` (format from its suffix), creating parent directories.

    Raises:
        ConfigError: an unsupported suffix, or a path that cannot be written.
    """
    out = Path(out)
    supported = fig.canvas.get_supported_filetypes()
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in supported:
        raise ConfigError(
            f"cannot tell the image format of {out}: end it in one of "
            + ", ".join(f".{s}" for s in ("png", "svg", "pdf") if s in supported)
        )
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory: give a file name such as {out / 'plot.png'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=150)
    except OSError as e:
        raise ConfigError(f"cannot write {out}: {e.strerror or e}") from None
    return out


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_frontier(dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Accuracy vs p50 post-input latency, one point per (evaluation directory, mode).

    Error bars: the 95% Wilson interval of the accuracy (``n_correct`` of ``n_graded``). A
    series without graded records or without latencies has no point (it is listed in the
    figure's note); if no series has one the call fails.

    Returns:
        The path written.

    Raises:
        InputError, DataError: see :func:`load_eval_dirs`; DataError also when no series can be
            placed. ConfigError: ``out`` cannot be written.
    """
    series = load_eval_dirs(dirs)
    placed, skipped = [], []
    for s in series:
        acc, x = s.summary.get("accuracy"), s.summary.get("p50_post_input_latency_s")
        (placed if acc is not None and x is not None else skipped).append(s)
    if not placed:
        raise DataError(
            "no point to draw: the records have no reference answers to grade or no post-input latencies"
        )
    fig = _figure(7.5, 5.0)
    ax = fig.add_subplot()
    points = []
    labels, note = _clock_labels(placed)
    for s, label, color in zip(placed, labels, _colors(len(placed))):
        k, n = s.summary["n_correct"], s.summary["n_graded"]
        acc, x = s.summary["accuracy"], s.summary["p50_post_input_latency_s"]
        lo, hi = wilson_interval(k, n)
        points.append((x, acc))
        ax.errorbar([x], [100 * acc], yerr=[[100 * (acc - lo)], [100 * (hi - acc)]], fmt="o", color=color,
                    capsize=4, markersize=7, label=f"{label}  {100 * acc:.1f}% ({k}/{n}), p50 {x:.2f} s")
    front = _pareto(points)
    if len(front) > 1:
        ax.plot([points[i][0] for i in front], [100 * points[i][1] for i in front], "--", color="0.6",
                zorder=0, label="Pareto front")
    ax.set_xlabel("post-input latency p50 (s): end of input → answer complete" + note)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy vs post-input latency (bars: 95% Wilson interval)")
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]), top=max(100.0, ax.get_ylim()[1]))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    if skipped:
        fig.text(0.01, 0.005, "no point (ungraded or no latencies): " + ", ".join(s.label for s in skipped),
                 fontsize="x-small", color="0.4")
    return _save(fig, out)


def plot_latency_cdf(dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Empirical CDF of ``post_input_latency_s``, one step line per (evaluation directory, mode).

    Returns:
        The path written.

    Raises:
        InputError, DataError: see :func:`load_eval_dirs`; DataError also when no record has a
            latency. ConfigError: ``out`` cannot be written.
    """
    curves = [(s, s.latencies()) for s in load_eval_dirs(dirs)]
    if not any(lat for _, lat in curves):
        raise DataError("no record has a post_input_latency_s: nothing to draw")
    fig = _figure(7.5, 5.0)
    ax = fig.add_subplot()
    labels, note = _clock_labels([s for s, _ in curves])
    for (s, lat), label, color in zip(curves, labels, _colors(len(curves))):
        if not lat:
            continue
        n = len(lat)
        ys = [100 * (i + 1) / n for i in range(n)]
        p50 = s.summary.get("p50_post_input_latency_s")
        ax.step([lat[0], *lat], [0.0, *ys], where="post", color=color, linewidth=1.8,
                label=f"{label} (n={n}, p50 {p50:.2f} s)")
    ax.axhline(50, color="0.7", linewidth=0.8, linestyle=":")
    ax.set_xlabel("post-input latency (s): end of input → answer complete" + note)
    ax.set_ylabel("episodes answered (%)")
    ax.set_ylim(0, 101)
    ax.set_title("post-input latency, empirical CDF")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, out)


def _short(text: str, n: int = 28) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def plot_timeline(run: str | Path | dict, out: str | Path) -> Path:
    """The timeline of one episode (the output of ``adasr run --json``).

    Rows, top to bottom: one per chunk (arrival ▼, the wait until its ingestion as a thin line,
    ingestion |, the streaming thought after it as a bar from ingestion to the thought's end; an
    empty thought, a skip, is an ×), then the deep stage (a bar from its start to the answer ★).
    A dashed vertical line marks end of input (EOI); the title gives the post-input latency.

    Args:
        run: a path to the JSON (``"-"``: standard input) or the object itself.

    Returns:
        The path written.

    Raises:
        InputError, DataError: see :func:`load_run_json`. ConfigError: ``out`` cannot be written.
    """
    obj = load_run_json(run) if not isinstance(run, dict) else run
    events = obj["events"]
    record = obj.get("record") if isinstance(obj.get("record"), dict) else {}
    arrive = {ev.get("chunk", i): ev for i, ev in enumerate(e for e in events if e["type"] == "arrive")}
    ingest = {ev.get("chunk"): ev["t"] for ev in events if ev["type"] == "ingest"}
    thoughts = {ev.get("chunk"): ev for ev in events if ev["type"] == "thought"}
    first = lambda kind: next((ev for ev in events if ev["type"] == kind), None)  # noqa: E731
    eoi, deep_start, answer = first("eoi"), first("deep_start"), first("answer")

    chunks = sorted(arrive, key=lambda c: (arrive[c]["t"], str(c)))
    n = len(chunks)
    fig = _figure(9.0, 1.6 + 0.42 * (n + 1))
    ax = fig.add_subplot()
    c_arrive, c_think, c_deep, c_eoi = "tab:blue", "tab:green", "tab:orange", "tab:red"
    h = 0.55
    for row, c in enumerate(chunks):
        y = n - row  # chunk rows top to bottom, the deep stage below them at y = 0
        ta = float(arrive[c]["t"])
        ax.plot([ta], [y], "v", color=c_arrive, markersize=7)
        ti = ingest.get(c)
        if ti is not None:
            if ti > ta:
                ax.plot([ta, ti], [y, y], color="0.55", linewidth=1)
            ax.plot([ti], [y], "|", color="black", markersize=12)
        th = thoughts.get(c)
        if th is not None and ti is not None:
            if th.get("text") or th.get("tokens", 0) > 1:  # else a skip: only the end-of-turn token
                ax.broken_barh([(ti, max(th["t"] - ti, 1e-9))], (y - h / 2, h), color=c_think, alpha=0.8)
                ax.text(th["t"], y, f" {th.get('tokens', '?')} tok", va="center", fontsize="x-small")
            else:
                ax.plot([th["t"]], [y], "x", color="0.35", markersize=7)
    if deep_start is not None:
        end = answer["t"] if answer is not None else deep_start["t"]
        ax.broken_barh([(deep_start["t"], max(end - deep_start["t"], 1e-9))], (-h / 2, h), color=c_deep, alpha=0.85)
    if answer is not None:
        ax.plot([answer["t"]], [0], "*", color="black", markersize=11)
        pred = answer.get("prediction")
        ax.text(answer["t"], 0.45, f" answer: {_short(pred, 20) if pred is not None else '(none)'}",
                fontsize="small", va="center")
    if eoi is not None:
        ax.axvline(eoi["t"], color=c_eoi, linestyle="--", linewidth=1.2)
        ax.text(eoi["t"], n + 0.6, " EOI", color=c_eoi, fontsize="small", va="center")

    labels = [f"{c}: {_short(arrive[c].get('text', ''))}" for c in chunks]
    ax.set_yticks([n - r for r in range(n)] + [0], labels + ["deep stage"], fontsize="small")
    ax.set_ylim(-0.8, n + 1.0)
    ax.set_xlim(left=min(0.0, min(ev["t"] for ev in events)))
    ax.set_xlabel("time since the stream started (s)")
    ax.grid(True, axis="x", alpha=0.3)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax.legend(handles=[
        Line2D([], [], marker="v", color=c_arrive, linestyle="", label="chunk arrives"),
        Line2D([], [], marker="|", color="black", linestyle="", markersize=10, label="ingested"),
        Patch(color=c_think, alpha=0.8, label="streaming thought"),
        Line2D([], [], marker="x", color="0.35", linestyle="", label="skip"),
        Patch(color=c_deep, alpha=0.85, label="deep stage"),
        Line2D([], [], marker="*", color="black", linestyle="", label="answer"),
    ], fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    title = f"episode {record.get('id', obj.get('id', ''))!s}".strip()
    if record.get("mode"):
        title += f", {record['mode']} mode"
    lat = record.get("post_input_latency_s")
    if lat is None and eoi is not None and answer is not None:
        lat = answer["t"] - eoi["t"]
    if isinstance(lat, (int, float)):
        title += f": post-input latency {lat:.2f} s"
    if record.get("correct") is not None:
        title += " (correct)" if record["correct"] else " (wrong)"
    ax.set_title(title)
    return _save(fig, out)

