"""CB-Stream loss: token cross-entropy with class-balanced weights on decision tokens.

Source: docs/DESIGN.md, section "Rewards, HRPO and CB-Stream (our definitions)" — our
definition of StreamPro's CB-Stream loss (AdaSR arXiv 2606.14694 equations are not public). The
class weights are the "effective number of samples" weights of Cui et al., "Class-Balanced Loss
Based on Effective Number of Samples", CVPR 2019: ``w_c = (1 - beta) / (1 - beta**n_c)``.

A *decision token* is the first generated token of a streaming-thought assistant turn. It decides
between two classes: **skip** (the token is the end-of-turn id: an empty thought) and **think**
(any other token). Skips usually dominate the SFT data, so an unweighted loss teaches the model to
always skip; the class-balanced weights up-weight the rare class.

Proactive streams (ours; docs/DESIGN.md "Proactive SFT"): the decision reads **stay silent**
(skip: end-of-turn first) vs **respond**, a third class: a *response decision* is the decision
token of a turn whose text holds a non-empty ``\boxed{...}`` (the turn that commits the answer,
:meth:`adasr.policy.ProactivePolicy.commits_answer`); any other non-empty turn is a note
(**think**). The class of a turn is given by its text, not by its first token, so a response is
never counted as a note whatever it starts with. Callers that render the turns mark the response
decisions in a ``respond_mask``; without one there are two classes, as before. Classes with no
decision token get weight 0, so two-class data weighs exactly as it did.

Weights are normalized so that the mean weight over decision tokens is 1
(``sum_c n_c w_c / sum_c n_c == 1``); every other generated token has weight 1, and tokens that
were not generated (stage 0: prompt, chunks, role headers) weight 0.
"""

from __future__ import annotations

from typing import Mapping, Sequence, Union

import torch
import torch.nn.functional as F

SKIP, THINK, RESPOND, NOT_DECISION = 0, 1, 2, -1
CLASS_NAMES = ("skip", "think", "respond")

Counts = Union[Mapping[Union[int, str], int], torch.Tensor]


def class_balanced_weights(counts: Counts, beta: float) -> Union[dict, torch.Tensor]:
    """Normalized class-balanced weights ``w_c ∝ (1 - beta) / (1 - beta**n_c)``.

    Args:
        counts: per-class sample counts ``n_c``: a mapping (any keys, e.g. ``{0: n_skip,
            1: n_think}`` or ``{"skip": .., "think": ..}``) or a ``(C,)`` tensor.
        beta: in ``[0, 1)``. ``beta = 0`` gives equal weights (plain CE); ``beta -> 1`` gives
            inverse-frequency weights.

    Returns:
        The same container type (dict with the same keys, or a ``(C,)`` float32 tensor) of
        weights normalized so that ``sum_c n_c w_c / sum_c n_c == 1``. Classes with
        ``n_c = 0`` get weight 0 (they contribute nothing); all-zero counts give all zeros.

    Raises:
        ValueError: ``beta`` outside ``[0, 1)`` or a negative count.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    if isinstance(counts, torch.Tensor):
        keys, n = None, counts.detach().to(torch.float64).reshape(-1)
    else:
        keys = list(counts)
        n = torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64)
    if (n < 0).any():
        raise ValueError(f"class counts must be >= 0, got {n.tolist()}")
    present = n > 0
    # 1 - beta**n_c is 0 only for n_c = 0; guard it (also 0**0 = 1 when beta = 0).
    denom = torch.where(present, 1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n), torch.ones_like(n))
    w = torch.where(present, (1.0 - beta) / denom, torch.zeros_like(n))
    total = (n * w).sum()
    if total > 0:
        w = w * n.sum() / total
    if keys is None:
        return w.to(torch.float32).reshape(counts.shape)
    return {k: float(v) for k, v in zip(keys, w.tolist())}


def decision_classes(input_ids: torch.Tensor, decision_mask: torch.Tensor, end_of_turn_id: int,
                     respond_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Class of every decision token.

    Args:
        input_ids: ``(B, T)`` token ids.
        decision_mask: ``(B, T)`` bool, True at the first generated token of each
            streaming-thought (or proactive) assistant turn.
        end_of_turn_id: the id that closes an assistant turn (a skip / stay-silent turn starts
            with it).
        respond_mask: optional ``(B, T)`` bool, True at the decision tokens of response turns
            (proactive: the turn commits ``\\boxed{answer}``).

    Returns:
        ``(B, T)`` long: 0 = skip (decision token == end_of_turn_id), 1 = think (a note),
        2 = respond (``respond_mask``), -1 elsewhere.

    Raises:
        ValueError: the shapes differ.
    """
    if input_ids.shape != decision_mask.shape or (respond_mask is not None and respond_mask.shape != input_ids.shape):
        raise ValueError(f"input_ids {tuple(input_ids.shape)}, decision_mask {tuple(decision_mask.shape)} and "
                         f"respond_mask must have one shape")
    cls = torch.where(input_ids == end_of_turn_id, SKIP, THINK).long()
    if respond_mask is not None:
        cls = torch.where(respond_mask.bool(), torch.full_like(cls, RESPOND), cls)
    return torch.where(decision_mask.bool(), cls, torch.full_like(cls, NOT_DECISION))


def decision_counts(rendered, respond: Sequence[bool], end_of_turn_id: int) -> dict[str, int]:
    """The decision classes of one rendered episode, counted (:func:`decision_classes`).

    Args:
        rendered: its ``input_ids`` and ``decision`` flags, lists of length T (an
            :class:`adasr.protocol.Rendered`).
        respond: length T, True at the decision tokens of response turns
            (:func:`adasr.train.sft_data.render_row`).
        end_of_turn_id: the id that closes an assistant turn (a skip's decision token).

    Returns:
        ``{"skip": n, "think": n, "respond": n}``.
    """
    ids = torch.tensor(rendered.input_ids, dtype=torch.long)[None]
    cls = decision_classes(ids, torch.tensor(rendered.decision)[None], end_of_turn_id, torch.tensor(respond)[None])
    return {name: int((cls == c).sum()) for c, name in enumerate(CLASS_NAMES)}


def _counts_vector(class_counts: Counts) -> torch.Tensor:
    """``{0|"skip": n, 1|"think": n, 2|"respond": n}`` (missing classes: 0) or a ``(2,)``/``(3,)``
    tensor -> ``(3,)`` float64 ``[n_skip, n_think, n_respond]``."""
    n = len(CLASS_NAMES)
    if isinstance(class_counts, torch.Tensor):
        if class_counts.numel() not in (2, n):
            raise ValueError(f"class_counts tensor must have 2 or 3 entries (skip, think[, respond]), "
                             f"got {class_counts.numel()}")
        v = class_counts.detach().reshape(-1).to(torch.float64)
        return torch.cat([v, torch.zeros(n - v.numel(), dtype=torch.float64)])
    out = [0.0] * n
    for k, v in class_counts.items():
        idx = CLASS_NAMES.index(k) if isinstance(k, str) and k in CLASS_NAMES else k
        if idx not in (SKIP, THINK, RESPOND):
            raise ValueError(f"unknown decision class {k!r}; use 0/'skip', 1/'think' or 2/'respond'")
        out[idx] = float(v)
    return torch.tensor(out, dtype=torch.float64)


def cb_stream_token_weights(
    input_ids: torch.Tensor,
    labels_mask: torch.Tensor,
    decision_mask: torch.Tensor,
    end_of_turn_id: int,
    beta: float,
    class_counts: Counts | None = None,
    respond_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token CB-Stream loss weights.

    Args:
        input_ids: ``(B, T)`` token ids.
        labels_mask: ``(B, T)`` bool, True for generated tokens (``stage > 0``).
        decision_mask: ``(B, T)`` bool, True at decision tokens (only counted where also
            generated).
        end_of_turn_id: id of the end-of-turn token (skip class).
        beta: class-balancing strength in ``[0, 1)``; 0 reproduces plain masked CE.
        class_counts: optional dataset-level counts ``{0|"skip": n, 1|"think": n[, 2|"respond":
            n]}`` or a ``(2,)``/``(3,)`` tensor; by default the counts of the decision tokens in
            this batch. With dataset-level counts the mean decision weight is 1 over the
            dataset, not per batch.
        respond_mask: optional ``(B, T)`` bool marking response decisions (class ``respond``,
            :func:`decision_classes`).

    Returns:
        ``(B, T)`` float32: 0 for non-generated tokens, 1 for generated non-decision tokens, the
        normalized class weight ``w_skip`` / ``w_think`` / ``w_respond`` at decision tokens.
    """
    if not (input_ids.shape == labels_mask.shape == decision_mask.shape):
        raise ValueError("input_ids, labels_mask and decision_mask must all have shape (B, T)")
    gen = labels_mask.bool()
    cls = decision_classes(input_ids, decision_mask.bool() & gen, end_of_turn_id, respond_mask)  # (B, T)
    if class_counts is None:
        counts = torch.stack([(cls == c).sum() for c in range(len(CLASS_NAMES))]).to(torch.float64)
    else:
        counts = _counts_vector(class_counts)
    w_cls = class_balanced_weights(counts, beta).to(input_ids.device)  # (3,)
    weights = gen.float()
    is_dec = cls >= 0
    return torch.where(is_dec, w_cls[cls.clamp(min=0)], weights)


def cb_stream_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted next-token cross-entropy.

    Logits at position ``t`` predict ``input_ids[:, t + 1]``, weighted by the weight of that
    *target* token: ``sum_t w[t+1] * CE(logits[t], ids[t+1]) / sum_t w[t+1]`` over ``t < T-1``.

    Args:
        logits: ``(B, T, V)`` model outputs (any float dtype; CE is computed in float32), or
            ``(B, P, V)`` logits at ``positions`` only (see :func:`trained_positions`).
        input_ids: ``(B, T)`` token ids.
        weights: ``(B, T)`` from :func:`cb_stream_token_weights` (weight 0 = ignored).
        positions: ``(P,)`` increasing sequence positions ``< T - 1`` whose logits ``logits``
            holds; ``None`` = every position (``logits`` is ``(B, T, V)``). Positions left out
            must have weight-0 targets, so the loss is the same either way.

    Returns:
        Scalar loss; 0 (still differentiable) when every target weight is 0. With ``beta = 0``
        it equals ``F.cross_entropy(..., ignore_index=-100)`` on the generated tokens.

    Raises:
        ValueError: shapes that do not match.
    """
    B, T = input_ids.shape
    n = T if positions is None else len(positions)
    if logits.dim() != 3 or logits.shape[:2] != (B, n) or input_ids.shape != weights.shape:
        raise ValueError(
            f"expected logits (B,T,V) or (B,P,V) at P positions, input_ids and weights (B,T); got "
            f"{tuple(logits.shape)}, {tuple(input_ids.shape)}, {tuple(weights.shape)}, P={n}"
        )
    if positions is None:  # logits at t predict ids[t + 1]: the last position predicts nothing
        logits, positions = logits[:, :-1], torch.arange(T - 1, device=input_ids.device)
    pred = logits.float().reshape(-1, logits.shape[-1])  # (B*P, V)
    target = input_ids[:, positions + 1].reshape(-1)
    w = weights[:, positions + 1].reshape(-1).to(pred.dtype)
    keep = w != 0  # weight-0 targets (prompt, padding: any id, even -100) are never evaluated
    denom = w[keep].sum()
    if not keep.any() or denom <= 0:
        return pred.sum() * 0.0
    ce = F.cross_entropy(pred[keep], target[keep], reduction="none")
    return (ce * w[keep]).sum() / denom


def trained_positions(weights: torch.Tensor) -> torch.Tensor:
    """The sequence positions whose logits the loss reads: ``t`` with a non-zero target weight
    ``weights[b, t + 1]`` in any row ``b``.

    Computing the LM head only there (``model(..., logits_to_keep=positions)``) skips the
    ``(B, T, V)`` logits of the prompt and chunk tokens: in the streaming layout about half the
    tokens, and the vocabulary projection is the largest single matmul of a small model (Qwen2.5
    0.5B: 136M of 494M parameters), so this saves memory and time without changing the loss.

    Args:
        weights: ``(B, T)`` target weights from :func:`cb_stream_token_weights`.

    Returns:
        ``(P,)`` long tensor of increasing positions in ``[0, T - 1)``; at least one position
        (the last but one) when ``T >= 2``, so that the LM head still runs when nothing is trained.
    """
    pos = (weights[:, 1:] != 0).any(dim=0).nonzero().flatten()
    if pos.numel() == 0 and weights.shape[1] >= 2:
        pos = torch.tensor([weights.shape[1] - 2], device=weights.device)
    return pos
