"""Unit tests of the pure training math: rewards, GRPO/HRPO advantages, CB-Stream loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adasr.errors import ConfigError, DataError
from adasr.train.advantages import advantage_stats, group_normalize, grpo_token_advantages, hrpo_token_advantages
from adasr.train.cb_stream import (
    cb_stream_loss,
    cb_stream_token_weights,
    class_balanced_weights,
    decision_classes,
    trained_positions,
)
from adasr.train.rewards import (
    RewardConfig,
    RolloutStats,
    accuracy_reward,
    adaptive_reward,
    format_reward,
    note_credit,
    reward_tensors,
    stage_rewards,
    total_reward,
)

EOT = 9


def _stats(fmt=True, ok=True, stream=100, deep=64, post=128, over=32):
    return RolloutStats(fmt, ok, stream, deep, post, over)


# ---------------------------------------------------------------- rewards


def test_rewards_hand_computed():
    cfg = RewardConfig()  # w_fmt .2, lam_post .5, lam_over .25, L 256
    s = _stats()
    assert format_reward(s) == 1.0 and accuracy_reward(s) == 1.0
    assert adaptive_reward(s, cfg) == pytest.approx(-0.5 * 128 / 256 - 0.25 * 32 / 256)  # -0.28125
    assert total_reward(s, cfg) == pytest.approx(1 + 0.2 - 0.28125)
    r_s, r_d = stage_rewards(s, cfg)  # lam_stream .5, lam_deep .5, L_D 64
    assert r_s == pytest.approx(1.2 + 0.5 * 100 / (100 + 128) - 0.25 * 32 / 256)  # share of reasoning before EOI
    assert r_d == pytest.approx(1.2 - 0.5 * 64 / 64)  # 0.7


def test_rewards_wrong_and_malformed():
    cfg = RewardConfig(w_fmt=0.1, lam_post=1.0, lam_over=0.5, length_norm=100)
    s = _stats(fmt=False, ok=False, stream=10, deep=50, post=200, over=20)
    assert format_reward(s) == 0.0 and accuracy_reward(s) == 0.0
    assert total_reward(s, cfg) == pytest.approx(-2.0 - 0.1)
    assert stage_rewards(s, cfg) == pytest.approx((-0.5 * 20 / 100, -0.5 * 50 / 64))  # no share credit when wrong
    t = reward_tensors([s, _stats()], cfg)
    assert t["total"].shape == (2,) and t["total"][0].item() == pytest.approx(-2.1)
    assert t["deep"][0].item() == pytest.approx(-0.5 * 50 / 64)


def test_stage_rewards_give_the_stages_distinct_credit():
    """In a group of correct rollouts, the streaming stage is ranked by how much of the work it
    did before end of input, the deep stage by its own length: the rankings can disagree, so
    HRPO's stage advantages differ from GRPO's single one (the first definition made them equal
    up to < 0.01)."""
    from adasr.train.advantages import group_normalize

    cfg = RewardConfig()
    group = [_stats(stream=s, deep=d, post=d, over=0) for s, d in ((120, 40), (0, 30), (60, 90), (10, 20))]
    t = reward_tensors(group, cfg)
    a_s, a_d = group_normalize(t["stream"], 4), group_normalize(t["deep"], 4)
    assert a_s.argmax() == 0 and a_d.argmax() == 3  # most work while listening vs shortest deep stage
    assert torch.corrcoef(torch.stack([a_s, a_d]))[0, 1] < 0.5


def test_rollout_stats_from_record():
    rec = dict(format_ok=True, correct=None, stream_tokens=3, deep_tokens=4, post_input_tokens=5,
               overrun_tokens=0, id="x", wall_s=1.0)
    s = RolloutStats.from_record(rec)
    assert s == RolloutStats(True, False, 3, 4, 5, 0)
    del rec["overrun_tokens"]
    with pytest.raises(DataError, match="overrun_tokens"):
        RolloutStats.from_record(rec)


def test_note_credit_pays_for_reference_results_the_notes_compute():
    targets = [24.0, 72.0]  # GSM8K's first problem: 48/2 = 24 in May, 48+24 = 72 altogether
    assert note_credit(["Natalia sold 48/2 = 24 clips in May."], targets) == 0.5
    assert note_credit([None, "May: 48 / 2 = 24", "", "total 48 + 24 = 72"], targets) == 1.0
    assert note_credit(["In May she sold 24 clips."], targets) == 0.0  # mentioned, not computed
    assert note_credit(["48/2 = 23"], targets) == 0.0  # a wrong result earns nothing
    assert note_credit(["10 \\times 2 = 20, and 20/3 = 6.67"], [6.666667]) == 1.0  # GSM8K rounding, LaTeX
    assert note_credit([None, ""], targets) == 0.0 and note_credit(["48/2 = 24"], []) == 0.0


def test_note_reward_goes_to_the_total_and_the_streaming_stage_only():
    cfg, on = RewardConfig(), RewardConfig(lam_note=0.8)
    s = RolloutStats(True, False, 100, 64, 128, 0, note_credit=0.5)
    assert total_reward(s, on) == pytest.approx(total_reward(s, cfg) + 0.4)
    (rs0, rd0), (rs1, rd1) = stage_rewards(s, cfg), stage_rewards(s, on)
    assert rs1 == pytest.approx(rs0 + 0.4) and rd1 == rd0  # paid although the answer is wrong
    assert reward_tensors([s], on)["note"].tolist() == [0.5]
    rec = dict(format_ok=True, correct=True, stream_tokens=3, deep_tokens=4, post_input_tokens=5, overrun_tokens=0)
    assert RolloutStats.from_record({**rec, "note_credit": 0.25}).note_credit == 0.25
    with pytest.raises(DataError, match="note_credit"):
        RolloutStats.from_record({**rec, "note_credit": 1.5})
    with pytest.raises(ConfigError, match="lam_note"):
        RewardConfig(lam_note=-1)


def test_reward_config_validation():
    with pytest.raises(ConfigError):
        RewardConfig(length_norm=0)


# ---------------------------------------------------------------- advantages


def test_group_normalize_matches_trl_formula():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.2, 0.9, 0.3, -0.5])
    a = group_normalize(r, 4)
    g = r.view(2, 4)
    ref = (g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)  # unbiased std, as TRL
    torch.testing.assert_close(a, ref.reshape(-1))
    # first group by hand: mean .25, unbiased std .5
    assert a[0].item() == pytest.approx(0.75 / 0.5001, rel=1e-5)
    assert a[1].item() == pytest.approx(-0.25 / 0.5001, rel=1e-5)
    assert a.view(2, 4).sum(1).abs().max().item() < 1e-5


def test_group_normalize_zero_variance_groups_are_zero():
    r = torch.tensor([0.1, 0.1, 0.1, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0])  # equal, all-wrong, mixed
    a = group_normalize(r, 3)
    assert torch.equal(a[:6], torch.zeros(6))
    assert not torch.isnan(a).any()
    assert a[6].item() > 0 and a[7].item() < 0
    assert torch.equal(group_normalize(torch.tensor([0.3, 0.7]), 1), torch.zeros(2))  # G=1


def test_group_normalize_scale_none_and_errors():
    torch.testing.assert_close(group_normalize(torch.tensor([1.0, 0.0, 0.5, 0.5]), 2, scale="none"),
                               torch.tensor([0.5, -0.5, 0.0, 0.0]))
    with pytest.raises(ValueError, match="multiple"):
        group_normalize(torch.zeros(6), 4)
    with pytest.raises(ValueError):
        group_normalize(torch.zeros(4), 2, scale="mad")


STAGE = torch.tensor([[0, 0, 1, 1, 0, 2, 2],
                      [0, 1, 0, 0, 2, 2, 0]])


def test_grpo_broadcast_to_generated_tokens():
    r = torch.tensor([1.0, 0.0])
    adv = grpo_token_advantages(r, STAGE, group_size=2)
    a = group_normalize(r, 2)
    assert adv.shape == STAGE.shape
    torch.testing.assert_close(adv, a[:, None] * (STAGE > 0).float())
    assert torch.equal(adv[STAGE == 0], torch.zeros(int((STAGE == 0).sum())))
    with pytest.raises(ValueError):
        grpo_token_advantages(torch.zeros(3), STAGE, group_size=1)


def test_hrpo_stage_masking():
    r_s = torch.tensor([1.0, 0.0])
    r_d = torch.tensor([0.2, 0.8])
    adv = hrpo_token_advantages(r_s, r_d, STAGE, group_size=2)
    a_s, a_d = group_normalize(r_s, 2), group_normalize(r_d, 2)
    for b in range(2):
        assert torch.allclose(adv[b][STAGE[b] == 1], a_s[b].expand(int((STAGE[b] == 1).sum())))
        assert torch.allclose(adv[b][STAGE[b] == 2], a_d[b].expand(int((STAGE[b] == 2).sum())))
        assert torch.equal(adv[b][STAGE[b] == 0], torch.zeros(int((STAGE[b] == 0).sum())))
    # row 0 is better on stream but worse on deep: signs differ per stage
    assert adv[0, 2] > 0 and adv[0, 5] < 0
    st = advantage_stats(adv, STAGE)
    assert st["stream/count"] == 3 and st["deep/count"] == 4
    assert st["stream/max"] == pytest.approx(a_s[0].item()) and st["deep/min"] == pytest.approx(a_d[0].item())
    assert set(st) == {f"{p}/{k}" for p in ("stream", "deep") for k in ("mean", "std", "min", "max", "count")}


# ---------------------------------------------------------------- CB-Stream


def test_class_balanced_weights_hand_formula():
    beta = 0.9
    w = class_balanced_weights({"skip": 8, "think": 2}, beta)
    raw_s, raw_t = (1 - beta) / (1 - beta**8), (1 - beta) / (1 - beta**2)
    z = 10 / (8 * raw_s + 2 * raw_t)
    assert w["skip"] == pytest.approx(raw_s * z) and w["think"] == pytest.approx(raw_t * z)
    assert w["skip"] == pytest.approx(0.714537, abs=1e-6) and w["think"] == pytest.approx(2.141853, abs=1e-6)
    assert (8 * w["skip"] + 2 * w["think"]) / 10 == pytest.approx(1.0)  # mean over decisions is 1
    assert w["think"] > w["skip"]


def test_class_balanced_weights_edge_cases():
    assert class_balanced_weights({0: 8, 1: 2}, 0.0) == {0: 1.0, 1: 1.0}
    t = class_balanced_weights(torch.tensor([5, 0]), 0.99)
    assert t.tolist() == pytest.approx([1.0, 0.0])
    assert class_balanced_weights(torch.tensor([0, 0]), 0.5).tolist() == [0.0, 0.0]
    assert class_balanced_weights({0: 0, 1: 3}, 0.0) == {0: 0.0, 1: 1.0}
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            class_balanced_weights({0: 1}, bad)


# ids:     0    1    2    3    4    5    6    7
IDS = torch.tensor([[5, 6, EOT, 3, 7, 4, EOT, 2],
                    [5, 3, 4, 8, EOT, 6, EOT, 1]])
GEN = torch.tensor([[0, 0, 1, 0, 1, 1, 1, 0],
                    [0, 0, 1, 1, 1, 0, 1, 1]], dtype=torch.bool)
DEC = torch.tensor([[0, 0, 1, 0, 1, 0, 0, 0],
                    [0, 0, 1, 0, 0, 0, 1, 0]], dtype=torch.bool)


def test_decision_classes():
    cls = decision_classes(IDS, DEC, EOT)
    expected = torch.full_like(IDS, -1)
    expected[0, 2], expected[0, 4], expected[1, 2], expected[1, 6] = 0, 1, 1, 0
    assert torch.equal(cls, expected) and cls.dtype == torch.long


def test_cb_token_weights_and_normalization():
    beta = 0.9
    w = cb_stream_token_weights(IDS, GEN, DEC, EOT, beta)
    assert w.dtype == torch.float32 and w.shape == IDS.shape
    assert torch.equal(w[~GEN], torch.zeros(int((~GEN).sum())))
    assert torch.equal(w[GEN & ~DEC], torch.ones(int((GEN & ~DEC).sum())))
    assert w[DEC].mean().item() == pytest.approx(1.0)
    # counts in this batch: skip 2, think 2 -> equal weights 1
    assert torch.allclose(w[DEC], torch.ones(4))
    # dataset-level counts: skip 8, think 2
    ref = class_balanced_weights({"skip": 8, "think": 2}, beta)
    w2 = cb_stream_token_weights(IDS, GEN, DEC, EOT, beta, class_counts={"skip": 8, "think": 2})
    assert w2[0, 2].item() == pytest.approx(ref["skip"]) and w2[0, 4].item() == pytest.approx(ref["think"])
    w3 = cb_stream_token_weights(IDS, GEN, DEC, EOT, beta, class_counts=torch.tensor([8, 2]))
    assert torch.equal(w2, w3)
    # imbalanced batch: 3 skips, 1 think -> mean over decision tokens still 1
    dec = DEC.clone()
    dec[0, 4], dec[0, 6] = False, True
    w4 = cb_stream_token_weights(IDS, GEN, dec, EOT, beta)
    assert w4[dec].mean().item() == pytest.approx(1.0)
    assert w4[1, 2].item() > w4[0, 2].item()  # the rare "think" class weighs more


def test_cb_loss_beta0_equals_plain_masked_ce():
    torch.manual_seed(0)
    logits = torch.randn(2, 8, 12, requires_grad=True)
    w = cb_stream_token_weights(IDS, GEN, DEC, EOT, beta=0.0)
    loss = cb_stream_loss(logits, IDS, w)
    labels = IDS.masked_fill(~GEN, -100)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 12), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_cb_loss_weighted_hand_check_and_empty():
    torch.manual_seed(1)
    logits = torch.randn(2, 8, 12)
    w = cb_stream_token_weights(IDS, GEN, DEC, EOT, 0.9, class_counts={0: 8, 1: 2})
    loss = cb_stream_loss(logits, IDS, w)
    num = den = 0.0
    for b in range(2):
        for t in range(7):
            wt = w[b, t + 1].item()
            num += wt * F.cross_entropy(logits[b, t][None], IDS[b, t + 1][None]).item()
            den += wt
    assert loss.item() == pytest.approx(num / den, rel=1e-5)
    zero = cb_stream_loss(logits.requires_grad_(), IDS, torch.zeros(2, 8))
    assert zero.item() == 0.0 and not math.isnan(zero.item())
    zero.backward()


def test_cb_loss_on_trained_positions_only_equals_the_full_loss():
    torch.manual_seed(2)
    logits = torch.randn(2, 8, 12, requires_grad=True)
    w = cb_stream_token_weights(IDS, GEN, DEC, EOT, 0.9, class_counts={0: 8, 1: 2})
    pos = trained_positions(w)
    # exactly the positions t whose target t+1 has a weight in some row
    assert pos.tolist() == [t for t in range(7) if (w[:, t + 1] != 0).any()]
    assert len(pos) < 7  # the prompt's positions are left out
    full = cb_stream_loss(logits, IDS, w)
    part = cb_stream_loss(logits[:, pos], IDS, w, pos)
    torch.testing.assert_close(part, full)
    (g_full,) = torch.autograd.grad(full, logits)
    (g_part,) = torch.autograd.grad(part, logits)
    torch.testing.assert_close(g_part, g_full)
    # nothing trained: one position is kept so the head runs, and the loss is a differentiable 0
    none = torch.zeros(2, 8)
    assert trained_positions(none).tolist() == [6]
    assert cb_stream_loss(logits[:, [6]], IDS, none, torch.tensor([6])).item() == 0.0
    with pytest.raises(ValueError, match="P positions"):
        cb_stream_loss(logits, IDS, w, pos)
