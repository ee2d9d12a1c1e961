"""Proactive training (issue 11 §3, ours): SFT data in the proactive layout with the silent /
note / respond decision classes, turn-level and trajectory rewards, per-token advantages, the
rollout-turn matching, and 2-step SFT and GRPO smoke runs on the tiny model."""

from __future__ import annotations

import json
import os
import statistics

import pytest
import torch

from adasr.errors import ConfigError, DataError
from adasr.protocol import Stage, StreamingFormat
from adasr.train.advantages import group_normalize_turns, proactive_token_advantages
from adasr.train.cb_stream import RESPOND, SKIP, THINK, decision_classes
from adasr.train.config import RLConfig, SFTConfig
from adasr.train.rewards import ProactiveRewardConfig, trajectory_reward, turn_rewards
from conftest import make_tiny_model

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

# A hand-made proactive record: the answer is settled by chunk 2 ("Add 5." makes 12 > 10).
RECORD = {
    "id": "p0", "task": "proactive_threshold",
    "chunks": ["The total starts at 0; tell me the running total as soon as it exceeds 10.", "Add 7.", "Add 5.",
               "Add 1."],
    "thoughts": ["", "", "\\boxed{12}"], "deep": "", "answer": "12", "evidence_chunk": 2, "response": "\\boxed{12}",
}


@pytest.fixture(scope="module")
def proactive_rows():
    from adasr.tasks.proactive import build_proactive

    return build_proactive("proactive_threshold", 8, seed=0, steps=4)


# ------------------------------------------------------------------------------- SFT data


def test_proactive_layout_stops_at_the_response(tiny_tokenizer):
    from adasr.train.sft_data import StreamingCollator, row_episode

    fmt = StreamingFormat(tiny_tokenizer, "proactive-v1")
    ep = row_episode(RECORD, "proactive")
    assert ep.chunks == RECORD["chunks"][:3] and ep.thoughts == ["", "", "\\boxed{12}"] and not ep.end_of_input
    batch = StreamingCollator(tiny_tokenizer, fmt, layout="proactive")([RECORD])
    ids, dec, resp = batch["input_ids"][0], batch["decision_mask"][0], batch["respond_mask"][0]
    text = tiny_tokenizer.decode(ids)
    assert "Add 1." not in text and "END OF INPUT" not in text  # no later chunk, no end-of-input turn
    assert text.rstrip().endswith("\\boxed{12}<|im_end|>")
    assert int(dec.sum()) == 3 and int(resp.sum()) == 1
    pos = dec.nonzero().flatten().tolist()
    assert resp[pos[-1]] and not resp[pos[0]] and not resp[pos[1]]  # the last decision is the response
    cls = decision_classes(batch["input_ids"], batch["decision_mask"], fmt.end_of_turn_id, batch["respond_mask"])
    assert cls[0, pos].tolist() == [SKIP, SKIP, RESPOND]
    # labels: the silent end-of-turn tokens and the response are trained, the chunks are not
    assert (batch["labels"][0][pos] != -100).all()
    with pytest.raises(DataError, match="not a proactive record"):
        row_episode({**RECORD, "evidence_chunk": None}, "proactive")


def test_response_class_is_distinct_from_a_note(tiny_tokenizer):
    from adasr.train.cb_stream import decision_counts
    from adasr.train.sft_data import render_row

    fmt = StreamingFormat(tiny_tokenizer, "proactive-v1")
    # a note that starts like a response, and a response that starts like a note
    row = {**RECORD, "thoughts": ["\\boxed{} is not yet known", "7 so far", "The total is \\boxed{12}"]}
    r, respond = render_row(fmt, row, "proactive")
    counts = decision_counts(r, respond, fmt.end_of_turn_id)
    assert counts == {"skip": 0, "think": 2, "respond": 1}
    counts = decision_counts(r, [False] * len(r.input_ids), fmt.end_of_turn_id)
    assert counts == {"skip": 0, "think": 3, "respond": 0}  # without the mask: two classes, as before


def test_cb_weights_up_weight_the_rare_response(tiny_tokenizer, proactive_rows):
    import datasets

    from adasr.train.cb_stream import cb_stream_token_weights
    from adasr.train.sft_data import StreamingCollator, prepare_episodes

    fmt = StreamingFormat(tiny_tokenizer, "proactive-v1")
    ds, stats = prepare_episodes(datasets.Dataset.from_list(proactive_rows), fmt, 4096, "proactive")
    n = len(proactive_rows)
    assert stats.class_counts["respond"] == n and stats.class_counts["think"] == 0
    assert stats.class_counts["skip"] == sum(r["evidence_chunk"] for r in proactive_rows)
    b = StreamingCollator(tiny_tokenizer, fmt, layout="proactive")(proactive_rows)
    gen = b["labels"] != -100
    args = (b["input_ids"], gen, b["decision_mask"], fmt.end_of_turn_id)
    w = cb_stream_token_weights(*args, 0.999, stats.class_counts, respond_mask=b["respond_mask"])
    w_ce = cb_stream_token_weights(*args, 0.0, stats.class_counts, respond_mask=b["respond_mask"])
    resp, silent = b["respond_mask"], b["decision_mask"] & ~b["respond_mask"]
    assert (w_ce[b["decision_mask"]] == 1).all()  # cb_beta 0: plain cross-entropy
    assert w[resp].min() > 1.0 > w[silent].max()  # the rare response weighs more than silence
    mean = (w[resp].sum() + w[silent].sum()) / (resp.sum() + silent.sum())
    assert mean.item() == pytest.approx(1.0, abs=1e-4)


# ------------------------------------------------------------------------------- rewards


def test_turn_rewards_hand_checked():
    cfg = ProactiveRewardConfig(turn_wait=0.1, turn_late=0.25, turn_premature=1.0, turn_respond=1.0,
                                turn_wrong=0.5, window=1, half_life=2.0)
    # e = 2: silent after chunks 0, 1 (before), 2 (at), 3 (one later), then a correct response at 5
    r = turn_rewards([0, 1, 2, 3, 5], [False, False, False, False, True], 2, True, cfg)
    assert r == pytest.approx([0.1, 0.1, -0.25, -0.5, 0.5 ** ((3 - 1) / 2)])
    # respond in the window: full credit; at the evidence chunk: full credit
    assert turn_rewards([2], [True], 2, True, cfg) == pytest.approx([1.0])
    assert turn_rewards([0, 3], [False, True], 2, True, cfg) == pytest.approx([0.1, 1.0])
    # premature (even if right), and wrong after the evidence
    assert turn_rewards([0, 1], [False, True], 2, True, cfg) == pytest.approx([0.1, -1.0])
    assert turn_rewards([2], [True], 2, False, cfg) == pytest.approx([-0.5])
    with pytest.raises(ValueError):
        turn_rewards([0], [True, False], 2, True, cfg)


def test_rl_revisions_need_proactive_mode():
    with pytest.raises(ConfigError, match="proactive only"):
        RLConfig(model="tiny", task="proactive_threshold", revisions=1).validate()
    with pytest.raises(ConfigError, match="revisions"):
        RLConfig(model="tiny", task="proactive_threshold", advantage="proactive", mode="proactive",
                 revisions=-1).validate()


def test_trajectory_reward_and_config_checks():
    cfg = ProactiveRewardConfig(traj_acc=1.0, traj_timing=1.0, traj_premature=1.0, w_fmt=0.2)
    assert trajectory_reward(True, False, 1.0, True, cfg) == pytest.approx(2.2)
    assert trajectory_reward(True, True, 0.0, True, cfg) == pytest.approx(0.2)  # a premature lucky guess
    assert trajectory_reward(False, False, 0.0, False, cfg) == 0.0
    with pytest.raises(ConfigError):
        ProactiveRewardConfig(turn_late=-1.0)
    with pytest.raises(ConfigError):
        ProactiveRewardConfig(w_turn=0.0, w_traj=0.0)
    with pytest.raises(ConfigError, match="go together"):
        RLConfig(task="proactive_threshold", advantage="proactive", mode="adaptive").validate()
    RLConfig(task="proactive_threshold", advantage="proactive", mode="proactive").validate()


def test_proactive_token_advantages_hand_checked():
    stage = torch.tensor([[0, 1, 1, 0, 1, 2],
                          [0, 1, 0, 1, 1, 0]])
    turn_index = torch.tensor([[-1, 0, 0, -1, 1, -1],
                               [-1, 0, -1, 1, 1, -1]])
    turn_r = torch.tensor([[0.1, -1.0], [0.1, 0.5]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    traj = torch.tensor([1.0, 0.0])
    adv = proactive_token_advantages(traj, turn_r, mask, turn_index, stage, 2, w_turn=1.0, w_traj=0.5, eps=0.0)
    vals = [0.1, -1.0, 0.1, 0.5]
    mu, sd = statistics.mean(vals), statistics.stdev(vals)
    a_turn = [[(0.1 - mu) / sd, (-1.0 - mu) / sd], [(0.1 - mu) / sd, (0.5 - mu) / sd]]
    a_traj = [1 / statistics.stdev([1.0, 0.0]) * 0.5, -0.5 / statistics.stdev([1.0, 0.0])]
    expected = torch.tensor([
        [0, a_turn[0][0], a_turn[0][0], 0, a_turn[0][1], 0],
        [0, a_turn[1][0], 0, a_turn[1][1], a_turn[1][1], 0],
    ]) + torch.tensor([[a_traj[0]], [a_traj[1]]]) * 0.5 * (stage > 0)
    torch.testing.assert_close(adv, expected.float())
    # trajectory only (the ablation): one value on every generated token of a rollout
    only = proactive_token_advantages(traj, turn_r, mask, turn_index, stage, 2, w_turn=0.0, w_traj=1.0, eps=0.0)
    assert (only[0][stage[0] > 0] == only[0][1]).all() and (only[stage == 0] == 0).all()
    # padded turns are ignored by the normalization; a group with one reward gets 0
    pad = torch.tensor([[True, False], [True, True]])
    g = group_normalize_turns(torch.tensor([[1.0, 99.0], [1.0, 1.0]]), pad, 2)
    assert torch.equal(g, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="padded"):
        proactive_token_advantages(traj, turn_r, pad, turn_index, stage, 2)


def test_rollout_turns_match_stage_runs():
    from adasr.engine import EpisodeResult
    from adasr.protocol import Episode
    from adasr.train.rl import rollout_turns

    S, D, I = Stage.STREAM, Stage.DEEP, Stage.INPUT
    stage = [I, I, S, I, I, I, S, S, S, I, I, D, D]
    events = [{"type": "thought", "chunk": 0, "text": "", "tokens": 1},
              {"type": "thought", "chunk": 1, "text": "", "tokens": 0},  # closed on arrival: no token
              {"type": "thought", "chunk": 2, "text": "\\boxed{12}", "tokens": 3}]
    res = EpisodeResult("r", {}, Episode(["a"]), list(range(len(stage))), stage, [], "", events)
    turns = rollout_turns(res)
    assert [(t.start, t.end, t.chunk, t.responds) for t in turns] == [(2, 3, 0, False), (6, 9, 2, True)]
    assert [t.prediction for t in turns] == [None, "12"]  # each response graded on its own answer
    with pytest.raises(RuntimeError):
        rollout_turns(EpisodeResult("r", {}, Episode(["a"]), [0], [S], [], "", []))


# ------------------------------------------------------------------------------- smoke runs


def test_proactive_sft_two_steps(tmp_path, tiny_tokenizer, proactive_rows):
    from adasr.train.sft import train_sft

    cfg = SFTConfig(model="tiny", task="proactive_threshold", output_dir=str(tmp_path / "sft"), max_steps=2,
                    per_device_train_batch_size=2, save_steps=2, logging_steps=1, learning_rate=1e-3,
                    layout="proactive", protocol="proactive-v1", cb_beta=0.999, max_seq_len=4096)
    final = train_sft(cfg, model=make_tiny_model(len(tiny_tokenizer)), tokenizer=tiny_tokenizer,
                      train_dataset=proactive_rows)
    meta = json.loads((final / "adasr_meta.json").read_text())
    assert meta["decision_counts"]["respond"] == len(proactive_rows) and meta["protocol"] == "proactive-v1"
    log = json.loads((tmp_path / "sft" / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    assert len([h for h in log if "loss" in h]) == 2
    with pytest.raises(ConfigError, match="layout"):
        SFTConfig(task="proactive_threshold", layout="sideways").validate()


@pytest.mark.parametrize("w_turn, revisions", [(1.0, 1), (0.0, 0)])
def test_proactive_grpo_two_steps(w_turn, revisions, tmp_path, tiny_tokenizer, proactive_rows, monkeypatch, rl_batches):
    from adasr.train import rl

    seen = rl_batches
    out = tmp_path / "grpo"
    cfg = RLConfig(model="tiny", task="proactive_threshold", output_dir=str(out), advantage="proactive",
                   mode="proactive", protocol="proactive-v1", max_steps=2, per_device_train_batch_size=4,
                   num_generations=2, save_steps=2, logging_steps=1, learning_rate=1e-3, thought_budget=4,
                   max_deep_tokens=6, decode_rate=50.0, w_turn=w_turn, max_seq_len=4096, revisions=revisions)
    assert rl.StreamGRPOTrainer._engine_config(type("T", (), {"cfg": cfg, "rollout_decode_rate": None})()
                                               ).make_policy().revisions == revisions
    final = rl.train_rl(cfg, model=make_tiny_model(len(tiny_tokenizer)), tokenizer=tiny_tokenizer,
                        train_dataset=proactive_rows)
    assert len(seen) == 2
    for batch, last in seen:
        adv, stage = batch["advantages"], last["stage"]
        assert adv.shape == stage.shape and (adv[stage == 0] == 0).all()
        assert last["rewards"]["trajectory"].shape == (adv.shape[0],)
        assert all(r["evidence_chunk"] is not None for r in last["records"])
        if w_turn == 0.0:  # trajectory only: one advantage per rollout
            assert all(adv[b][stage[b] > 0].unique().numel() <= 1 for b in range(adv.shape[0]))
    log = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    steps = [h for h in log if "proactive/score" in h]
    assert len(steps) == 2 and all(0.0 <= h["proactive/premature_rate"] <= 1.0 for h in steps)
    assert all(0.0 <= h["proactive/revised_rate"] <= 1.0 for h in steps)
    assert json.loads((final / "adasr_meta.json").read_text())["stage"] == "proactive"
