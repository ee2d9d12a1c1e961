"""Group-relative advantages for GRPO and HRPO.

Source: docs/DESIGN.md, section "Rewards, HRPO and CB-Stream (our definitions)" (our
definition; AdaSR arXiv 2606.14694 equations are not public). Group normalization follows TRL's
``GRPOTrainer``: ``A = (R - mean_G) / (std_G + eps)`` with the unbiased (Bessel-corrected,
``torch.std`` default) standard deviation over the G rollouts of one input.

Batch layout: the B rollouts are ordered so that each consecutive block of ``group_size`` rows
holds the G rollouts of one input (``B % G == 0``). Token stages are
:class:`adasr.protocol.Stage` (shared with the engine and the protocol renderer): 0 = not
generated (prompt, chunks, role headers), 1 = streaming-thought token, 2 = deep-stage token.
"""

from __future__ import annotations

import torch

from adasr.protocol import Stage


def group_normalize(
    rewards: torch.Tensor, group_size: int, eps: float = 1e-4, scale: str = "std"
) -> torch.Tensor:
    """Normalize rewards within consecutive groups of ``group_size`` rollouts.

    Args:
        rewards: ``(B,)`` one reward per rollout, groups of G consecutive rows.
        group_size: G, rollouts per input.
        eps: added to the group std (TRL's default 1e-4).
        scale: ``"std"`` -> ``(R - mean_G) / (std_G + eps)``; ``"none"`` -> ``R - mean_G``
            (Dr. GRPO style, no std scaling).

    Returns:
        ``(B,)`` float advantages. ``std_G`` is the **unbiased** std (``torch.std`` default, as
        in TRL GRPOTrainer). A group whose rewards are all equal (e.g. all wrong with the same
        lengths) gets exactly zero advantage, never NaN; so does any group when G == 1.

    Raises:
        ValueError: ``rewards`` is not 1-D, ``group_size < 1``, ``B % group_size != 0``, or
            ``scale`` is unknown.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"batch of {rewards.numel()} rollouts is not a multiple of group_size={group_size}")
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    r = rewards.float().view(-1, group_size)  # (B/G, G)
    centered = r - r.mean(dim=1, keepdim=True)
    if scale == "std" and group_size > 1:
        centered = centered / (r.std(dim=1, keepdim=True) + eps)
    flat = (r.amax(dim=1, keepdim=True) == r.amin(dim=1, keepdim=True))  # (B/G, 1) zero variance
    centered = torch.where(flat, torch.zeros_like(centered), centered)
    return centered.reshape(-1)


def grpo_token_advantages(rewards: torch.Tensor, stage: torch.Tensor, group_size: int, **kw) -> torch.Tensor:
    """GRPO: the sequence advantage broadcast to every generated token.

    Args:
        rewards: ``(B,)`` GRPO reward per rollout (:func:`adasr.train.rewards.total_reward`).
        stage: ``(B, T)`` long token stages; generated tokens have ``stage > 0``.
        group_size: G. ``**kw`` goes to :func:`group_normalize` (``eps``, ``scale``).

    Returns:
        ``(B, T)`` float32: ``A_b`` where ``stage[b, t] > 0``, else 0.
    """
    _check_stage(stage, rewards)
    adv = group_normalize(rewards, group_size, **kw)  # (B,)
    return adv[:, None] * (stage > Stage.INPUT).float()


def hrpo_token_advantages(
    stream_rewards: torch.Tensor, deep_rewards: torch.Tensor, stage: torch.Tensor, group_size: int, **kw
) -> torch.Tensor:
    """HRPO: stage-wise advantages, each normalized within its group and applied to its stage.

    Args:
        stream_rewards: ``(B,)`` ``R_S`` per rollout (:func:`adasr.train.rewards.stage_rewards`).
        deep_rewards: ``(B,)`` ``R_D`` per rollout.
        stage: ``(B, T)`` long token stages (0 prompt, 1 streaming thought, 2 deep stage).
        group_size: G. ``**kw`` goes to :func:`group_normalize` (``eps``, ``scale``).

    Returns:
        ``(B, T)`` float32: ``A_S`` on stage-1 tokens, ``A_D`` on stage-2 tokens, 0 on stage 0.
    """
    _check_stage(stage, stream_rewards)
    _check_stage(stage, deep_rewards)
    a_s = group_normalize(stream_rewards, group_size, **kw)[:, None]  # (B, 1)
    a_d = group_normalize(deep_rewards, group_size, **kw)[:, None]
    return a_s * (stage == Stage.STREAM).float() + a_d * (stage == Stage.DEEP).float()


def group_normalize_turns(
    turn_rewards: torch.Tensor, turn_mask: torch.Tensor, group_size: int, eps: float = 1e-4, scale: str = "std"
) -> torch.Tensor:
    """Normalize turn-level rewards within each group, over all the turns of its G rollouts.

    Args:
        turn_rewards: ``(B, K)`` reward of turn ``k`` of rollout ``b`` (padding anywhere
            ``turn_mask`` is False; its value is ignored).
        turn_mask: ``(B, K)`` bool, True where rollout ``b`` has a ``k``-th turn.
        group_size: G (consecutive rows of one input).
        eps / scale: as :func:`group_normalize` (``scale="none"``: subtract the group mean only).

    Returns:
        ``(B, K)`` float32: ``(r - mean) / (std + eps)`` with mean and unbiased std over the
        group's valid turns; 0 on padding, and 0 for a group whose turns all have one reward (or
        that has fewer than 2 turns).

    Raises:
        ValueError: shapes differ, ``B % G != 0`` or an unknown ``scale``.
    """
    if turn_rewards.shape != turn_mask.shape or turn_rewards.dim() != 2:
        raise ValueError(f"turn_rewards and turn_mask must both be (B, K), got {tuple(turn_rewards.shape)} "
                         f"and {tuple(turn_mask.shape)}")
    B, K = turn_rewards.shape
    if group_size < 1 or B % group_size != 0:
        raise ValueError(f"batch of {B} rollouts is not a multiple of group_size={group_size}")
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    r = turn_rewards.float().reshape(-1, group_size * K)  # (B/G, G*K)
    m = turn_mask.bool().reshape(-1, group_size * K)
    out = torch.zeros_like(r)
    for g in range(r.shape[0]):
        v = r[g][m[g]]
        if v.numel() < 2 or bool(v.max() == v.min()):
            continue
        a = v - v.mean()
        if scale == "std":
            a = a / (v.std() + eps)
        out[g][m[g]] = a
    return out.reshape(B, K)


def proactive_token_advantages(
    traj_rewards: torch.Tensor,
    turn_rewards: torch.Tensor,
    turn_mask: torch.Tensor,
    turn_index: torch.Tensor,
    stage: torch.Tensor,
    group_size: int,
    *,
    w_turn: float = 1.0,
    w_traj: float = 1.0,
    **kw,
) -> torch.Tensor:
    """Proactive GRPO (ours): turn-level plus trajectory-level advantages per token.

    ``A[b, t] = w_traj * Â_traj[b] * [stage[b, t] > 0] + w_turn * Â_turn[b, k]`` where ``k =
    turn_index[b, t]`` (the decision turn token ``t`` belongs to; ``-1``: none, e.g. deep-stage
    or input tokens), ``Â_traj`` = :func:`group_normalize` of ``traj_rewards`` and ``Â_turn`` =
    :func:`group_normalize_turns` of ``turn_rewards``.

    Args:
        traj_rewards: ``(B,)`` trajectory-level rewards.
        turn_rewards: ``(B, K)`` turn-level rewards; ``turn_mask`` ``(B, K)`` bool marks real turns.
        turn_index: ``(B, T)`` long, the turn of each token or -1.
        stage: ``(B, T)`` long token stages.
        group_size: G. ``w_turn`` / ``w_traj``: the mix (``w_turn=0``: trajectory only).
        **kw: ``eps``, ``scale`` of the normalizations.

    Returns:
        ``(B, T)`` float32, 0 wherever ``stage == 0``.

    Raises:
        ValueError: shape mismatches, or a turn index outside ``0..K-1`` / on a padded turn.
    """
    _check_stage(stage, traj_rewards)
    if turn_index.shape != stage.shape or turn_rewards.shape[0] != stage.shape[0]:
        raise ValueError(f"turn_index {tuple(turn_index.shape)} must match stage {tuple(stage.shape)} and "
                         f"turn_rewards {tuple(turn_rewards.shape)} have B rows")
    K = turn_rewards.shape[1]
    if bool((turn_index >= K).any()) or bool((turn_index < -1).any()):
        raise ValueError(f"turn_index must be -1 or in 0..{K - 1}")
    gen = (stage > Stage.INPUT).float()
    a_traj = group_normalize(traj_rewards, group_size, **kw)[:, None] * gen  # (B, T)
    if K == 0:  # no rollout of the batch generated a streaming turn
        return w_traj * a_traj
    a_turn_k = group_normalize_turns(turn_rewards, turn_mask, group_size, **kw)  # (B, K)
    idx = turn_index.clamp(min=0)
    in_turn = (turn_index >= 0)
    if bool((in_turn & ~torch.gather(turn_mask.bool(), 1, idx)).any()):
        raise ValueError("turn_index points at a padded turn")
    a_turn = torch.where(in_turn, torch.gather(a_turn_k, 1, idx), torch.zeros_like(a_traj)) * gen
    return w_traj * a_traj + w_turn * a_turn


def advantage_stats(adv: torch.Tensor, stage: torch.Tensor) -> dict[str, float]:
    """Per-stage summary of token advantages for logging.

    Args:
        adv: ``(B, T)`` token advantages.
        stage: ``(B, T)`` token stages.

    Returns:
        ``{"stream/mean", "stream/std", "stream/min", "stream/max", "stream/count", and the same
        for "deep/..."}`` as Python floats; a stage with no tokens reports count 0 and zeros
        elsewhere; std is the unbiased std (0 for a single token).
    """
    out: dict[str, float] = {}
    for name, s in (("stream", Stage.STREAM), ("deep", Stage.DEEP)):
        v = adv[stage == s].detach().float()
        n = v.numel()
        out[f"{name}/count"] = float(n)
        out[f"{name}/mean"] = v.mean().item() if n else 0.0
        out[f"{name}/std"] = v.std().item() if n > 1 else 0.0
        out[f"{name}/min"] = v.min().item() if n else 0.0
        out[f"{name}/max"] = v.max().item() if n else 0.0
    return out


def _check_stage(stage: torch.Tensor, rewards: torch.Tensor) -> None:
    if stage.dim() != 2 or rewards.dim() != 1 or stage.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"stage must be (B, T) and rewards (B,), got {tuple(stage.shape)} and {tuple(rewards.shape)}"
        )
