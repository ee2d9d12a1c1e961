"""Training loops on a tiny random model: SFT collator and loss, checkpoints/resume, LoRA final
save, HRPO/GRPO steps on engine rollouts, and config loading errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adasr.errors import ConfigError
from adasr.protocol import STAGE_INPUT, StreamingFormat
from adasr.train.config import RLConfig, SFTConfig, load_config
from conftest import make_tiny_model

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
REPO = Path(__file__).resolve().parents[1]

ROW = {
    "id": "x",
    "task": "chain_sum",
    "chunks": ["Start with 12.", "Add 7.", "What is the result?"],
    "thoughts": ["", "12 + 7 = 19."],
    "deep": "The result is 19. \\boxed{19}",
    "answer": "19",
}


@pytest.fixture(scope="module")
def episodes():
    import datasets

    from adasr.tasks.procedural import build_procedural

    return datasets.Dataset.from_list(build_procedural("chain_sum", 8, seed=0, terms=3, digits=1))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_tokenizer):
    """The tiny model saved as a local model directory (loads through adasr.models.load_model)."""
    d = tmp_path_factory.mktemp("tiny") / "model"
    make_tiny_model(len(tiny_tokenizer)).save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


def _sft_cfg(out: Path, **kw) -> SFTConfig:
    base = dict(model="tiny", task="chain_sum", output_dir=str(out), max_steps=4, per_device_train_batch_size=2,
                save_steps=2, logging_steps=1, learning_rate=1e-3)
    base.update(kw)
    return SFTConfig(**base)


def _weights(path: Path) -> dict:
    return load_file(str(path / "model.safetensors"))


# ---------------------------------------------------------------------------------- SFT


def test_collator_masks_labels_and_decisions(tiny_tokenizer):
    from adasr.train.sft_data import IGNORE, StreamingCollator

    fmt = StreamingFormat(tiny_tokenizer)
    short = dict(ROW, chunks=["Add 5.", "What is the result?"], thoughts=["5."], deep="\\boxed{5}")
    batch = StreamingCollator(tiny_tokenizer, fmt)([ROW, short])
    ids, lab, dec, st, att = (batch[k] for k in ("input_ids", "labels", "decision_mask", "stage", "attention_mask"))
    assert ids.shape == lab.shape == dec.shape == st.shape == att.shape and ids.shape[0] == 2
    # labels exactly on generated tokens (stage > 0), -100 elsewhere (prompt, chunks, headers, padding)
    assert torch.equal(lab != IGNORE, st > STAGE_INPUT)
    assert torch.equal(lab[st > 0], ids[st > 0])
    # one decision token per streaming thought: a skip's is the end-of-turn id, a think's the
    # first token of the thought; each directly follows an assistant header
    pos = dec[0].nonzero().squeeze(1).tolist()
    assert len(pos) == len(ROW["thoughts"])
    assert ids[0, pos[0]].item() == fmt.end_of_turn_id
    assert ids[0, pos[1]].item() == fmt.encode(ROW["thoughts"][1])[0]
    h = fmt.assistant_header
    for p in pos:
        assert ids[0, p - len(h): p].tolist() == h and st[0, p].item() == 1
    assert (st[0] == 2).any() and not (dec & (st != 1)).any()
    # padding of the shorter row: no attention, no label, no decision
    n = int(att[1].sum())
    assert n < ids.shape[1] and not att[1, n:].any() and (lab[1, n:] == IGNORE).all() and not dec[1, n:].any()


def test_batch_layout_is_the_read_then_think_twin(tiny_tokenizer):
    """layout=batch: the same steps, written after end of input as one deep stage; no decisions."""
    from adasr.train.sft_data import StreamingCollator, row_episode

    fmt = StreamingFormat(tiny_tokenizer)
    ep = row_episode(ROW, "batch")
    assert ep.layout == "batch" and ep.thoughts == [None] * len(ROW["chunks"])
    assert ep.deep == "12 + 7 = 19. The result is 19. \\boxed{19}"
    batch = StreamingCollator(tiny_tokenizer, fmt, layout="batch")([ROW])
    st, dec, ids = batch["stage"][0], batch["decision_mask"][0], batch["input_ids"][0]
    assert not dec.any() and not (st == 1).any()
    assert tiny_tokenizer.decode(ids[st == 2]).startswith("12 + 7 = 19.")
    with pytest.raises(ConfigError, match="layout must be one of streaming, batch"):
        _sft_cfg(Path("runs/x"), layout="sideways").validate()


def test_sft_loss_reads_logits_only_where_it_trains(tiny_tokenizer):
    """The trainer asks the model for the trained positions' logits only (logits_to_keep) and
    gets the loss and gradients of the full-logits computation."""
    from adasr.train.cb_stream import cb_stream_loss, cb_stream_token_weights
    from adasr.train.sft import StreamSFTTrainer
    from adasr.train.sft_data import IGNORE, StreamingCollator

    fmt = StreamingFormat(tiny_tokenizer)
    short = dict(ROW, chunks=["Add 5.", "What is the result?"], thoughts=["5."], deep="\\boxed{5}")
    batch = StreamingCollator(tiny_tokenizer, fmt)([ROW, short])
    torch.manual_seed(0)
    model = make_tiny_model(len(tiny_tokenizer))
    seen = {}
    hook = model.lm_head.register_forward_hook(lambda m, i, o: seen.update(T=o.shape[1]))
    trainer = StreamSFTTrainer.__new__(StreamSFTTrainer)  # compute_loss needs no Trainer state
    trainer.cb_beta, trainer.class_counts, trainer.end_of_turn_id = 0.9, None, fmt.end_of_turn_id
    loss = trainer.compute_loss(model, batch)
    hook.remove()
    (g,) = torch.autograd.grad(loss, model.lm_head.weight)
    ids = batch["input_ids"]
    assert seen["T"] < ids.shape[1] - 1  # the head ran on fewer positions than the sequence
    w = cb_stream_token_weights(ids, batch["labels"] != IGNORE, batch["decision_mask"], fmt.end_of_turn_id, 0.9)
    full = cb_stream_loss(model(input_ids=ids, attention_mask=batch["attention_mask"]).logits, ids, w)
    (g_full,) = torch.autograd.grad(full, model.lm_head.weight)
    torch.testing.assert_close(loss, full)
    torch.testing.assert_close(g, g_full)


def test_accelerate_cpu_launch_sets_use_cpu(monkeypatch):
    """`accelerate launch --cpu` exports ACCELERATE_USE_CPU; the Trainer must then put batches on the CPU."""
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert _sft_cfg(Path("runs/x")).use_cpu is False
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    assert _sft_cfg(Path("runs/x")).use_cpu is True


def test_bf16_without_a_gpu_trains_on_the_cpu(monkeypatch):
    """TrainingArguments refuses bf16 without a GPU unless use_cpu: the config sets it (CPU autocast)."""
    from adasr.train.config import configs as config

    monkeypatch.setattr(config, "_has_accelerator", lambda: False)
    cfg = _sft_cfg(Path("runs/x"), bf16=True)
    assert cfg.bf16 is True and cfg.use_cpu is True
    monkeypatch.setattr(config, "_has_accelerator", lambda: True)
    assert _sft_cfg(Path("runs/x"), bf16=False).use_cpu is False


class _Killed(Exception):
    pass


def _kill_after_checkpoint(step: int):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == step:
                raise _Killed(step)

    return Kill()


def test_sft_smoke_checkpoint_and_resume(tmp_path, tiny_tokenizer, episodes):
    from adasr.train.sft import train_sft

    def run(out, **kw):
        return train_sft(_sft_cfg(out, **kw.pop("cfg", {})), model=make_tiny_model(len(tiny_tokenizer)),
                         tokenizer=tiny_tokenizer, train_dataset=episodes, **kw)

    full = run(tmp_path / "a")
    state = json.loads((tmp_path / "a" / "checkpoint-4" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    meta = json.loads((full / "adasr_meta.json").read_text())
    assert meta["stage"] == "sft" and meta["kind"] == "full" and meta["decision_counts"]["think"] > 0
    assert (full / "tokenizer_config.json").is_file()

    # killed right after checkpoint-2 is written, then resumed: nothing lost
    with pytest.raises(_Killed):
        run(tmp_path / "b", callbacks=[_kill_after_checkpoint(2)])
    assert (tmp_path / "b" / "checkpoint-2").is_dir() and not (tmp_path / "b" / "final").exists()
    with pytest.raises(ConfigError, match="resume"):
        run(tmp_path / "b")  # a fresh run would mix with the checkpoints
    resumed = run(tmp_path / "b", cfg={"resume": True})
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_sft_lora_final_adapter_loads(tmp_path, tiny_dir, episodes, monkeypatch):
    from adasr.models import load_model
    from adasr.train.sft import train_sft

    cfg = _sft_cfg(tmp_path / "lora", model=str(tiny_dir), lora=True, lora_r=4, lora_alpha=8, max_steps=1,
                   save_steps=1, learning_rate=1e-2, cb_beta=0.9)
    final = train_sft(cfg, train_dataset=episodes)
    adapter = json.loads((final / "adapter_config.json").read_text())
    meta = json.loads((final / "adasr_meta.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_dir) == meta["base"]
    assert meta["kind"] == "lora" and meta["stage"] == "sft" and meta["config"]["lora_r"] == 4
    merged = load_model(str(final)).model
    base = load_model(str(tiny_dir)).model
    # a checkpoint carries the same metadata, so it loads as final/ does (the base adasr named, not the hub's)
    ckpt = json.loads((tmp_path / "lora" / "checkpoint-1" / "adasr_meta.json").read_text())
    assert ckpt["checkpoint"] is True and ckpt["global_step"] == 1 and ckpt["base"] == meta["base"]
    assert ckpt["stage"] == "sft" and ckpt["protocol"] == meta["protocol"]
    from adasr.models import adapter_info

    assert adapter_info(tmp_path / "lora" / "checkpoint-1")[0] == str(tiny_dir)
    assert all(torch.equal(x, y) for x, y in zip(load_model(str(tmp_path / "lora" / "checkpoint-1")).model.state_dict().values(),
                                                  merged.state_dict().values()))
    assert any(not torch.equal(x, y) for x, y in zip(merged.state_dict().values(), base.state_dict().values()))
    # the adapter as the start of a further stage: LoRA keeps training it, full FT trains every weight
    from adasr.train.common import load_policy

    lora = load_policy(RLConfig(task="chain_sum", lora=True), str(final))
    assert lora.kind == "lora" and 0 < sum(p.requires_grad for p in lora.model.parameters()) < len(
        list(lora.model.parameters()))
    full = load_policy(RLConfig(task="chain_sum", lora=False), str(final))
    assert full.kind == "full" and all(p.requires_grad for p in full.model.parameters())
    # a bundled adapter's name (`init: qwen2.5-coder-0.5b-proactive`) continues that adapter, as its directory does
    import shutil

    import adasr.models.adapters as adapters

    bundled = tmp_path / "bundled"
    shutil.copytree(final, bundled / "tiny-proactive")
    monkeypatch.setattr(adapters, "_ADAPTERS_DIR", bundled)
    assert adapters.adapter_dir("tiny-proactive") == bundled / "tiny-proactive"
    assert adapters.adapter_dir(str(tiny_dir)) is None and adapters.adapter_dir("no-such-adapter") is None
    by_name = load_policy(RLConfig(task="chain_sum", lora=True), "tiny-proactive")
    assert by_name.kind == "lora" and by_name.base == str(tiny_dir)
    lora_w = {k: v for k, v in lora.model.state_dict().items() if "lora_" in k}
    named_w = {k: v for k, v in by_name.model.state_dict().items() if "lora_" in k}
    assert lora_w and lora_w.keys() == named_w.keys() and all(torch.equal(lora_w[k], named_w[k]) for k in lora_w)
    assert any(v.abs().sum() > 0 for k, v in named_w.items() if "lora_B" in k)  # the trained adapter, not a fresh one


def test_adapter_on_a_bundled_base_publishes_its_upstream_id(tmp_path, tiny_tokenizer, episodes):
    """A LoRA trained on a bundled base names the upstream hub id in adapter_config.json (for PEFT
    and the hub) while adasr_meta.json keeps the bundled name that adasr loads (offline)."""
    from adasr.models import BUNDLED, adapter_info
    from adasr.train.sft import train_sft

    name = "smollm2-135m-instruct"
    cfg = _sft_cfg(tmp_path / "lora", model=name, lora=True, lora_r=4, lora_alpha=8, max_steps=1, save_steps=1)
    final = train_sft(cfg, model=make_tiny_model(len(tiny_tokenizer)), tokenizer=tiny_tokenizer,
                      train_dataset=episodes)
    adapter = json.loads((final / "adapter_config.json").read_text())
    meta = json.loads((final / "adasr_meta.json").read_text())
    upstream = BUNDLED[name].upstream
    assert upstream == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert adapter["base_model_name_or_path"] == upstream == meta["base_model_name_or_path"]
    assert meta["base"] == name
    assert adapter_info(final) == (name, meta)  # what load_model merges the adapter into
    card = (final / "README.md").read_text()
    assert card.startswith("---\n") and f"base_model: {upstream}" in card and "library_name: peft" in card
    # the shipped adapter follows the same convention
    from adasr.models.adapters import _bundled_adapters

    shipped = _bundled_adapters()["smollm2-135m-chain-sum"]
    assert json.loads((shipped / "adapter_config.json").read_text())["base_model_name_or_path"] == upstream
    assert adapter_info(shipped)[0] == name


# ---------------------------------------------------------------------------------- RL


@pytest.mark.parametrize("advantage", ["hrpo", "grpo"])
def test_rl_smoke(advantage, tmp_path, tiny_tokenizer, episodes, monkeypatch, rl_batches):
    from adasr.train import rl

    seen = rl_batches
    from adasr.runner import TorchModelRunner

    calibrations = []
    measure = TorchModelRunner.measure_decode_rate
    monkeypatch.setattr(TorchModelRunner, "measure_decode_rate",
                        lambda *a, **k: calibrations.append(1) or measure(*a, **k))
    credited = []  # the per-note reward reads each rollout's thoughts and its row's note targets
    monkeypatch.setattr(rl, "note_credit", lambda thoughts, targets: credited.append((thoughts, targets)) or 0.25)
    out = tmp_path / advantage
    cfg = RLConfig(model="tiny", task="chain_sum", output_dir=str(out), advantage=advantage, max_steps=2,
                   per_device_train_batch_size=4, num_generations=2, save_steps=1, logging_steps=1,
                   learning_rate=1e-3, thought_budget=4, max_deep_tokens=8, lam_over=1.0, lam_note=0.5)
    assert cfg.prompts_per_step == 2
    final = rl.train_rl(cfg, model=make_tiny_model(len(tiny_tokenizer)), tokenizer=tiny_tokenizer,
                        train_dataset=episodes)

    assert len(seen) == 2
    assert len(credited) == 2 * cfg.prompts_per_step * cfg.num_generations and all(t == () for _, t in credited)
    assert len(calibrations) == 1  # the first rollout batch measures the decode rate; the next one carries it
    for batch, last in seen:
        adv, stage, env = batch["advantages"], last["stage"], batch["tool_mask"]
        assert adv.shape == batch["completion_ids"].shape == stage.shape == env.shape and adv.dim() == 2
        assert adv.shape[0] == cfg.prompts_per_step * cfg.num_generations
        assert torch.equal(env.bool(), stage > 0)  # loss only on generated tokens
        assert (adv[stage == 0] == 0).all() and (stage == 0).any()  # chunks inside the completion
        for b in range(adv.shape[0]):  # one advantage per stage (HRPO) or per rollout (GRPO)
            vals = {s: adv[b][stage[b] == s].unique() for s in (1, 2) if (stage[b] == s).any()}
            assert all(v.numel() == 1 for v in vals.values())
            if advantage == "grpo" and len(vals) == 2:
                assert torch.equal(vals[1], vals[2])
        assert len(last["records"]) == adv.shape[0] and all(r["correct"] is not None for r in last["records"])

    log = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    steps = [h for h in log if "rewards/r_acc/mean" in h]
    assert len(steps) == 2
    for key in ("rewards/r_acc/mean", "rewards/r_fmt/mean", "rewards/r_adapt/mean", "accuracy", "format_rate",
                "tokens/stream_tokens", "tokens/deep_tokens", "tokens/post_input_tokens", "advantages/stream/mean",
                "advantages/deep/std", "step_time", "loss", "rewards/r_note/mean"):
        assert all(key in h and h[key] is not None for h in steps), key
    assert all(h["rewards/r_note/mean"] == pytest.approx(0.25) for h in steps)
    assert (out / "checkpoint-1").is_dir()
    assert json.loads((final / "adasr_meta.json").read_text())["stage"] == advantage
    ckpt = json.loads((out / "checkpoint-1" / "adasr_meta.json").read_text())
    assert (ckpt["stage"], ckpt["global_step"], ckpt["checkpoint"]) == (advantage, 1, True)


def test_rl_decode_rate_is_pinned_or_measured():
    with pytest.raises(ConfigError, match="decode_rate"):
        RLConfig(task="chain_sum", decode_rate=0.0).validate()
    RLConfig(task="chain_sum", decode_rate=3.0).validate()
    assert RLConfig(task="chain_sum").decode_rate is None


