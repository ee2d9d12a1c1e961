"""Per-rollout rewards for GRPO and HRPO.

Source: docs/DESIGN.md, section "Rewards, HRPO and CB-Stream (our definitions)" (our
definition; AdaSR arXiv 2606.14694 equations are not public).

Per rollout (one engine episode):

* ``r_fmt``   = 1 if the streaming protocol is well formed with exactly one boxed answer, else 0;
* ``r_acc``   = 1 if the answer verifies against the reference, else 0;
* ``r_adapt`` = ``-lam_post * post_input_tokens / L - lam_over * overrun_tokens / L``.

GRPO uses one reward per rollout, ``R = r_acc + w_fmt * r_fmt + r_adapt``. HRPO uses two stage
rewards, each later normalized within its group (:mod:`adasr.train.advantages`):

* ``R_S = r_acc + w_fmt * r_fmt + lam_stream * r_acc * share - lam_over * overrun_tokens / L``
  with ``share = stream_tokens / (stream_tokens + post_input_tokens)``, the part of the
  reasoning done while the input was still arriving (applied to streaming-thought tokens);
* ``R_D = r_acc + w_fmt * r_fmt - lam_deep * deep_tokens / L_D`` (applied to deep-stage tokens).

The per-note reward (``lam_note``, default 0: off) adds ``lam_note * r_note`` to ``R`` and to
``R_S``, with ``r_note`` (:func:`note_credit`) the share of the reference's reachable intermediate
results (``note_targets`` of a streamified GSM8K record) that the streaming notes compute. Unlike
``lam_stream * r_acc * share`` it does not hang on the final answer: a right note is paid for even
when the deep stage then goes wrong (benchmarks/RESULTS.md §48: the share term seldom paid,
because a note written on half a problem is rarely what makes a rollout right).

Why (revised; docs/DESIGN.md, "HRPO"): the first definition gave the streaming stage
``R_S = R`` and the deep stage ``R`` with ``deep_tokens`` for ``post_input_tokens``; both were
dominated by ``r_acc`` and their length terms differed by < 0.01, so after group normalization
``A_S`` and ``A_D`` were nearly the same and HRPO could not differ from GRPO. Now each stage is
credited for what it controls, on scales that move the group ranking: streaming thoughts for
moving the work of a *correct* answer before end of input (a share in [0, 1], scaled by
``lam_stream``) and for keeping pace with the input (overrun); the deep stage for reaching the
answer in few tokens after end of input (``L_D`` of the order of a deep stage, not of a whole
episode).
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import Mapping, Sequence

import torch

from adasr.errors import ConfigError, DataError
from adasr.proactive_metrics import proactive_score
from adasr.protocol import same_answer
from adasr.tasks.solutions import read_arithmetic
from adasr.tasks.text import numbers_close


def knob(default: float, text: str, key: str | None = None):
    """A reward knob: a dataclass field with its default and ``text``, the help string of its
    training-config key (``key``; default: the field's name). :class:`RewardConfig` and
    :class:`ProactiveRewardConfig` declare every knob once; the ``rewards`` group of
    :class:`adasr.train.config.RLConfig` is built from them (:func:`config_key`) and read back by
    :func:`from_config`."""
    return field(default=default, metadata={"help": text, **({"key": key} if key else {})})


def config_key(f: Field) -> str:
    """The training-config key of a reward knob (its name, unless :func:`knob` named another)."""
    return f.metadata.get("key", f.name)


def from_config(cls: type, config):
    """A :class:`RewardConfig` or :class:`ProactiveRewardConfig` (``cls``) with every knob read from
    ``config`` (any object with the knobs' config keys as attributes, e.g. an ``RLConfig``).

    Raises:
        ConfigError: a knob out of range (the class's own checks).
    """
    return cls(**{f.name: getattr(config, config_key(f)) for f in fields(cls)})


@dataclass
class RewardConfig:
    """Weights of the rollout rewards (all dimensionless except ``length_norm``).

    Attributes:
        w_fmt: weight of the format reward ``r_fmt`` in the total and in both stage rewards.
        lam_post: penalty per ``length_norm`` tokens generated after the end of input
            (``post_input_tokens`` in GRPO / ``R_S``; ``deep_tokens`` in ``R_D``).
        lam_over: penalty per ``length_norm`` streaming-thought tokens beyond the slack budget
            (``overrun_tokens``): thinking slower than the input arrives.
        length_norm: ``L``, the token-count normalizer of the length penalties; with the
            defaults, 256 post-input tokens cost 0.5, i.e. half a correct answer.
        lam_stream: HRPO ``R_S``: credit for the share of a correct answer's reasoning tokens
            generated before end of input.
        lam_deep: HRPO ``R_D``: penalty per ``deep_length_norm`` deep-stage tokens.
        deep_length_norm: ``L_D``, tokens (default 64: 64 deep tokens cost ``lam_deep``).
        lam_note: weight of the per-note reward ``r_note`` (:func:`note_credit`) in ``R`` and
            ``R_S`` (0: off).
    """

    w_fmt: float = knob(0.2, "format reward weight")
    lam_post: float = knob(0.5, "weight of the post-input-token penalty")
    lam_over: float = knob(0.25, "weight of the overrun-token penalty")
    length_norm: float = knob(256, "token count that normalizes the latency penalties")
    lam_stream: float = knob(0.5, "streaming-stage reward: weight of the latency term")
    lam_deep: float = knob(0.5, "deep-stage reward: weight of the length term")
    deep_length_norm: float = knob(64, "token count that normalizes the deep-stage length term")
    lam_note: float = knob(0.0, "weight of the per-note reward: the share of the reference's reachable "
                           "intermediate results the streaming notes compute (0: off)")

    def __post_init__(self) -> None:
        for name in ("length_norm", "deep_length_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"RewardConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("w_fmt", "lam_post", "lam_over", "lam_stream", "lam_deep", "lam_note"):
            if getattr(self, name) < 0:
                raise ConfigError(f"RewardConfig.{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass
class RolloutStats:
    """The fields of one episode record that the rewards read.

    Attributes:
        format_ok: the protocol was well formed with exactly one boxed answer.
        correct: the answer verified against the reference.
        stream_tokens: tokens generated in streaming thoughts (before end of input).
        deep_tokens: tokens generated in the deep stage (after the end-of-input marker).
        post_input_tokens: tokens generated after the input closed (what the user waits for).
        overrun_tokens: streaming-thought tokens beyond the slack budget.
        note_credit: ``r_note`` in [0, 1] (:func:`note_credit`; 0.0 when the record has none).
    """

    format_ok: bool
    correct: bool
    stream_tokens: int
    deep_tokens: int
    post_input_tokens: int
    overrun_tokens: int
    note_credit: float = 0.0

    @classmethod
    def from_record(cls, record: Mapping) -> "RolloutStats":
        """Read an engine episode record (a flat dict; extra keys are ignored).

        ``None`` for ``correct``/``format_ok`` (e.g. no reference) counts as False; a missing
        ``note_credit`` is 0.0.

        Raises:
            DataError: a required key is missing, a token count is not an integer or the note
                credit is not a number in [0, 1].
        """
        names = [f.name for f in fields(cls) if f.name != "note_credit"]
        missing = [n for n in names if n not in record]
        if missing:
            raise DataError(f"episode record lacks reward fields {missing} (has {sorted(record)})")
        try:
            counts = {n: int(record[n]) for n in names[2:]}
        except (TypeError, ValueError) as err:
            raise DataError(f"episode record has a non-integer token count: {err}") from None
        try:
            credit = float(record.get("note_credit") or 0.0)
        except (TypeError, ValueError):
            credit = -1.0
        if not 0.0 <= credit <= 1.0:
            raise DataError(f"episode record has a note_credit outside [0, 1]: {record.get('note_credit')!r}")
        return cls(format_ok=bool(record["format_ok"]), correct=bool(record["correct"]), note_credit=credit, **counts)


def format_reward(stats: RolloutStats) -> float:
    """``r_fmt``: 1.0 if the episode is well formed with exactly one boxed answer, else 0.0."""
    return 1.0 if stats.format_ok else 0.0


def accuracy_reward(stats: RolloutStats) -> float:
    """``r_acc``: 1.0 if the answer verifies against the reference, else 0.0."""
    return 1.0 if stats.correct else 0.0


def adaptive_reward(stats: RolloutStats, cfg: RewardConfig) -> float:
    """``r_adapt = -lam_post * post_input_tokens / L - lam_over * overrun_tokens / L`` (<= 0)."""
    L = float(cfg.length_norm)
    return -cfg.lam_post * stats.post_input_tokens / L - cfg.lam_over * stats.overrun_tokens / L


def note_credit(thoughts: Sequence[str | None], targets: Sequence[float]) -> float:
    """``r_note``: the share of ``targets`` (the reference's intermediate results reachable before
    end of input, ``note_targets`` of :func:`adasr.tasks.streamify.streamify_problem`) that the
    streaming ``thoughts`` compute, i.e. write as the result of an arithmetic chain ``E0 = ... = En``
    (:func:`adasr.tasks.solutions.read_arithmetic`; GSM8K rounding accepted). A number merely
    mentioned, or a result that matches no target, earns nothing.

    Our definition (docs/DESIGN.md, "HRPO (ours)", "The per-note reward"): a per-note reward for
    correct intermediate results, checkable against GSM8K's calculator annotations.

    Returns:
        A float in [0, 1]; 0.0 when there is no target or no thought.
    """
    if not targets:
        return 0.0
    text = "\n".join(t for t in thoughts if t)
    if not text.strip():
        return 0.0
    _, results, _ = read_arithmetic(text)
    hit = sum(any(numbers_close(r, t) for r in results) for t in targets)
    return hit / len(targets)


def total_reward(stats: RolloutStats, cfg: RewardConfig) -> float:
    """GRPO reward ``R = r_acc + w_fmt * r_fmt + r_adapt + lam_note * r_note``."""
    return (accuracy_reward(stats) + cfg.w_fmt * format_reward(stats) + adaptive_reward(stats, cfg)
            + cfg.lam_note * stats.note_credit)


def stream_share(stats: RolloutStats) -> float:
    """Share of the reasoning generated before end of input:
    ``stream_tokens / (stream_tokens + post_input_tokens)`` (0 when nothing was generated)."""
    total = stats.stream_tokens + stats.post_input_tokens
    return stats.stream_tokens / total if total else 0.0


def stage_rewards(stats: RolloutStats, cfg: RewardConfig) -> tuple[float, float]:
    """HRPO stage rewards ``(R_S, R_D)`` (ours; see the module docstring for why).

    ``R_S = r_acc + w_fmt*r_fmt + lam_stream*r_acc*share + lam_note*r_note - lam_over*overrun_tokens/L``
    (streaming-thought tokens; ``share`` = :func:`stream_share`, ``r_note`` = :func:`note_credit`);
    ``R_D = r_acc + w_fmt*r_fmt - lam_deep*deep_tokens/L_D`` (deep-stage tokens).
    """
    acc = accuracy_reward(stats)
    base = acc + cfg.w_fmt * format_reward(stats)
    r_s = (base + cfg.lam_stream * acc * stream_share(stats) + cfg.lam_note * stats.note_credit
           - cfg.lam_over * stats.overrun_tokens / float(cfg.length_norm))
    r_d = base - cfg.lam_deep * stats.deep_tokens / float(cfg.deep_length_norm)
    return r_s, r_d


def reward_tensors(stats: Sequence[RolloutStats], cfg: RewardConfig) -> dict[str, torch.Tensor]:
    """Rewards of a batch of rollouts as float32 tensors of shape ``(B,)``.

    Returns ``{"total": R (GRPO), "stream": R_S, "deep": R_D, "accuracy": r_acc,
    "format": r_fmt, "note": r_note}``, in the order of ``stats`` (keep groups of G rollouts of one input
    consecutive for :func:`adasr.train.advantages.group_normalize`).
    """
    pairs = [stage_rewards(s, cfg) for s in stats]
    as_t = lambda xs: torch.tensor(list(xs), dtype=torch.float32)  # noqa: E731
    return {
        "total": as_t(total_reward(s, cfg) for s in stats),
        "stream": as_t(p[0] for p in pairs),
        "deep": as_t(p[1] for p in pairs),
        "accuracy": as_t(accuracy_reward(s) for s in stats),
        "format": as_t(format_reward(s) for s in stats),
        "note": as_t(s.note_credit for s in stats),
    }


# ---------------------------------------------------------------------------------------------
# Proactive streaming (ours): turn-level and trajectory-level rewards
# ---------------------------------------------------------------------------------------------


@dataclass
class ProactiveRewardConfig:
    """Weights of the proactive rewards (docs/DESIGN.md "Proactive GRPO (ours)"; all
    dimensionless). ``e`` is the evidence chunk, ``c`` the chunk a decision turn follows.

    Turn level (one reward per decision turn, :func:`turn_rewards`):
        turn_wait: ``+turn_wait`` for a turn without a response (silence or a note) before the
            evidence, ``c < e``.
        turn_late: ``-turn_late * (c - e + 1)`` for a turn without a response at or after the
            evidence (silence that grows costlier every chunk).
        turn_premature: ``-turn_premature`` for a response before the evidence.
        turn_respond: ``+turn_respond * proactive_score`` for a correct response at or after
            the evidence (1 within ``window`` chunks, decaying after).
        turn_wrong: ``-turn_wrong`` for a wrong response at or after the evidence.

    Trajectory level (one reward per rollout, :func:`trajectory_reward`):
        traj_acc: weight of ``r_acc`` (final answer correct, early or in the deep stage).
        traj_timing: weight of the episode's ``proactive_score``.
        traj_premature: penalty when the answer was committed before the evidence.
        w_fmt: weight of the format reward ``r_fmt``.

    Advantage mix (:func:`adasr.train.advantages.proactive_token_advantages`):
        w_turn: weight of a turn's normalized turn-level advantage on its tokens (``0``: the
            trajectory-only ablation).
        w_traj: weight of the normalized trajectory advantage on every generated token.
        window / half_life: of :func:`adasr.proactive_metrics.proactive_score` (chunks).
    """

    turn_wait: float = knob(0.1, "proactive turn reward: silence (or a note) before the evidence chunk")
    turn_late: float = knob(0.25, "proactive turn penalty per chunk of silence at/after the evidence chunk")
    turn_premature: float = knob(1.0, "proactive turn penalty: a response before the evidence chunk")
    turn_respond: float = knob(1.0, "proactive turn reward: a correct response (x proactive score)")
    turn_wrong: float = knob(0.5, "proactive turn penalty: a wrong response at/after the evidence")
    traj_acc: float = knob(1.0, "proactive trajectory reward: weight of correctness")
    traj_timing: float = knob(1.0, "proactive trajectory reward: weight of the proactive score")
    traj_premature: float = knob(1.0, "proactive trajectory penalty: answer committed before the evidence")
    w_fmt: float = knob(0.2, "format reward weight")
    w_turn: float = knob(1.0, "proactive advantage: weight of the turn-level advantage (0: trajectory only)")
    w_traj: float = knob(1.0, "proactive advantage: weight of the trajectory-level advantage")
    window: int = knob(1, "proactive score: chunks after the evidence that still count as timely",
                       key="proactive_window")
    half_life: float = knob(2.0, "proactive score: chunks of lateness that halve the credit",
                            key="proactive_half_life")

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "window":
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise ConfigError(f"ProactiveRewardConfig.window must be an integer >= 0 chunks, got {v!r}")
            elif f.name == "half_life":
                if not v > 0:
                    raise ConfigError(f"ProactiveRewardConfig.half_life must be > 0 chunks, got {v!r}")
            elif v < 0:
                raise ConfigError(f"ProactiveRewardConfig.{f.name} must be >= 0, got {v!r}")
        if self.w_turn == 0 and self.w_traj == 0:
            raise ConfigError("ProactiveRewardConfig: w_turn and w_traj are both 0 (no advantage at all)")


def turn_rewards(turn_chunks: Sequence[int], responds: Sequence[bool], evidence_chunk: int,
                 correct: bool | Sequence[bool], cfg: ProactiveRewardConfig,
                 predictions: Sequence[str | None] | None = None) -> list[float]:
    """Turn-level rewards of one rollout, one per decision turn (ours; see
    :class:`ProactiveRewardConfig`).

    Args:
        turn_chunks: for each generated streaming turn, the 0-based index ``c`` of the chunk it
            follows (in order).
        responds: for each turn, whether it is a response (:func:`adasr.protocol.is_response`).
        evidence_chunk: ``e``.
        correct: whether the episode's committed answer is right (read for its response turn),
            or one flag per turn: whether that turn's own answer is right (a rollout that revised
            its answer has several response turns, each graded on its answer).
        cfg: the weights.
        predictions: each turn's answer (``None`` for silence or a note); tells a confirmation
            (the committed answer repeated) from a revision. Only rollouts with revisions have
            turns after a response (docs/DESIGN.md "Revisions").

    Returns:
        A list of floats, one per turn: silence/note ``c < e`` -> ``+turn_wait``; silence/note
        ``c >= e`` -> ``-turn_late * (c - e + 1)``; response ``c < e`` -> ``-turn_premature``;
        response ``c >= e`` -> ``turn_respond * proactive_score(correct, c - e)`` if correct, else
        ``-turn_wrong``. Once an answer is committed (after the first response), silence, notes
        and confirmations get 0 (keeping the answer is judged by the trajectory reward) and a
        revision gets the response rules on its own answer.

    Raises:
        ValueError: the sequences differ in length, or ``evidence_chunk < 0``.
    """
    if len(turn_chunks) != len(responds):
        raise ValueError(f"{len(turn_chunks)} turn chunks but {len(responds)} response flags")
    if isinstance(correct, bool):
        correct = [correct] * len(turn_chunks)
    elif len(correct) != len(turn_chunks):
        raise ValueError(f"{len(turn_chunks)} turn chunks but {len(correct)} correctness flags")
    if predictions is None:
        predictions = [None] * len(turn_chunks)
    elif len(predictions) != len(turn_chunks):
        raise ValueError(f"{len(turn_chunks)} turn chunks but {len(predictions)} predictions")
    if evidence_chunk < 0:
        raise ValueError(f"evidence_chunk must be >= 0, got {evidence_chunk}")
    e = evidence_chunk
    out: list[float] = []
    committed, answer = False, None  # an answer was given in an earlier turn; the last one given
    for c, resp, ok, pred in zip(turn_chunks, responds, correct, predictions):
        if committed and (not resp or same_answer(pred, answer)):
            out.append(0.0)  # holding (or confirming) the committed answer
            continue
        if resp:
            committed, answer = True, pred
        if not resp:
            out.append(cfg.turn_wait if c < e else -cfg.turn_late * (c - e + 1))
        elif c < e:
            out.append(-cfg.turn_premature)
        elif ok:
            out.append(cfg.turn_respond * proactive_score(True, c - e, window=cfg.window, half_life=cfg.half_life))
        else:
            out.append(-cfg.turn_wrong)
    return out


def trajectory_reward(correct: bool, premature: bool, score: float, format_ok: bool,
                      cfg: ProactiveRewardConfig) -> float:
    """Trajectory-level reward of one rollout (ours):
    ``R_traj = traj_acc * r_acc + traj_timing * score - traj_premature * premature + w_fmt * r_fmt``
    with ``score`` the episode's :func:`adasr.proactive_metrics.proactive_score` (in ``[0, 1]``).
    """
    return (cfg.traj_acc * float(bool(correct)) + cfg.traj_timing * float(score)
            - cfg.traj_premature * float(bool(premature)) + cfg.w_fmt * float(bool(format_ok)))
