"""Training configs: TRL/transformers config subclasses parsed by TRL's parser (YAML or JSON, then
`--key value` overrides), adasr's field groups, the earlier key names, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import TrainingArguments
from trl import GRPOConfig

from adasr.errors import ConfigError
from adasr.train.config import (LEGACY_KEYS, RLConfig, SFTConfig, field_groups, infer_kind, load_config,
                                 read_config_file)

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_configs_are_the_ecosystem_argument_classes():
    """An SFTConfig is a TrainingArguments and an RLConfig a TRL GRPOConfig: every field of theirs
    (optimizer, deepspeed, fsdp, run name, hub, reporting, precision) is a config key."""
    from adasr.train.config import ConfigParser

    cfg = load_config(None, "sft", ["--task", "chain_sum", "--optim", "adafactor", "--run_name", "r1",
                                    "--push_to_hub", "--hub_model_id", "me/streamer", "--weight_decay", "0.1"])
    assert isinstance(cfg, TrainingArguments)
    assert cfg.optim == "adafactor" and cfg.run_name == "r1" and cfg.push_to_hub and cfg.hub_model_id == "me/streamer"
    assert cfg.weight_decay == 0.1
    assert {"deepspeed", "fsdp", "fsdp_config", "gradient_checkpointing_kwargs"} <= set(ConfigParser(SFTConfig).keys())
    with pytest.raises(ConfigError, match="deepspeed"):  # not installed here: a one-line error, not a traceback
        import importlib.util

        if importlib.util.find_spec("deepspeed") is not None:
            raise ConfigError("deepspeed is installed")
        load_config(None, "sft", ["--task", "chain_sum", "--deepspeed", "ds.json"])
    rl = load_config(None, "hrpo", ["--task", "chain_sum", "--beta", "0.05", "--loss_type", "dr_grpo"])
    assert isinstance(rl, GRPOConfig) and rl.beta == 0.05 and rl.loss_type == "dr_grpo" and rl.advantage == "hrpo"


def test_adasr_defaults_are_kept():
    """adasr's earlier defaults win over the parents' (seed 0, one epoch, no bf16 or activation
    checkpointing, columns kept), so a config that sets nothing trains as before."""
    sft = SFTConfig(task="chain_sum")
    rl = RLConfig(task="chain_sum")
    for cfg in (sft, rl):
        assert cfg.seed == 0 and cfg.num_train_epochs == 1.0 and cfg.save_steps == 100 and cfg.save_total_limit == 3
        assert cfg.logging_steps == 10 and cfg.bf16 is False and cfg.activation_checkpointing is False
        assert cfg.remove_unused_columns is False and cfg.report_to in ([], "none", ["none"])
    assert sft.per_device_train_batch_size == sft.per_device_eval_batch_size == 4 and sft.learning_rate == 1e-5
    assert sft.prediction_loss_only and sft.label_names == ["labels"] and sft.output_dir == "runs/sft"
    assert rl.num_generations == 4 and rl.prompts_per_step == 2 and rl.learning_rate == 1e-6
    assert rl.max_completion_length == rl.max_seq_len == 1024 and rl.train_size == 500


def test_field_groups():
    sft, rl = field_groups(SFTConfig), field_groups(RLConfig)
    assert set(sft) == {"model", "data", "loss"} and set(rl) == {"model", "data", "stream", "engine", "rewards"}
    assert "layout" in sft["data"] and "cb_beta" in sft["loss"] and "init" in rl["model"]
    assert rl["engine"] == ["mode", "thought_budget", "revisions", "max_deep_tokens", "decode_rate"] and rl["stream"] == ["wps", "cps", "chunker", "max_chunk_tokens"]
    assert {"lam_deep", "advantage", "adv_eps"} <= set(rl["rewards"])


def test_command_line_overrides_win_over_the_file(tmp_path):
    p = _write(tmp_path, "task: chain_sum\nlearning_rate: 1.0e-5\nrewards:\n  lam_deep: 0.5\n  w_fmt: 0.1\n"
                         "engine: {mode: interleaved}\nlora: true\n")
    cfg = load_config(p, "hrpo", ["--learning_rate", "1e-4", "--lam_deep", "0.2", "--lora", "false", "--task_options",
                                  '{"terms": 4}', "--lora_target_modules", "q_proj", "v_proj"])
    assert cfg.learning_rate == 1e-4 and cfg.lam_deep == 0.2 and cfg.w_fmt == 0.1 and cfg.mode == "interleaved"
    assert cfg.lora is False and cfg.task_options == {"terms": 4} and cfg.lora_target_modules == ["q_proj", "v_proj"]
    assert load_config(p, "hrpo").lam_deep == 0.5  # the file alone
    assert load_config(p, "hrpo", ["--lora_target_modules", "all-linear"]).lora_target_modules == "all-linear"


def test_earlier_key_names_still_load(tmp_path):
    """Files written for the earlier adasr names load to the same run (RL batch_size counted prompts)."""
    old = _write(tmp_path, "task: chain_sum\nbatch_size: 2\ngroup_size: 4\ngrad_accum: 2\nnum_epochs: 2\n"
                           "lr_scheduler: cosine\nkl_beta: 0.02\nadv_scale: std\n", "old.yaml")
    new = _write(tmp_path, "task: chain_sum\nper_device_train_batch_size: 4\nnum_generations: 4\n"
                           "gradient_accumulation_steps: 2\nnum_train_epochs: 2\nlr_scheduler_type: cosine\n"
                           "beta: 0.02\nscale_rewards: group\n", "new.yaml")
    a, b = load_config(old, "rl"), load_config(new, "rl")
    assert a.to_dict() == b.to_dict() and a.prompts_per_step == 2
    sft = load_config(_write(tmp_path, "task: chain_sum\nbatch_size: 3\ngrad_accum: 2\n", "s.yaml"), "sft")
    assert sft.per_device_train_batch_size == 3 and sft.gradient_accumulation_steps == 2
    assert set(LEGACY_KEYS.values()) <= set(RLConfig.__dataclass_fields__)
    with pytest.raises(ConfigError, match="renamed: 'num_generations'"):
        load_config(None, "grpo", ["--task", "chain_sum", "--group_size", "4"])


def test_load_config_valid(tmp_path):
    p = _write(tmp_path, "task: chain_sum\nlearning_rate: 1e-5\nper_device_train_batch_size: 4\ntask_options: {terms: 3}\n")
    cfg = load_config(p, "sft")
    assert isinstance(cfg, SFTConfig) and cfg.learning_rate == 1e-5 and cfg.task_options == {"terms": 3}
    rl = load_config(_write(tmp_path, json.dumps({"task": "chain_sum", "num_generations": 2}), "r.json"), "grpo")
    assert isinstance(rl, RLConfig) and rl.advantage == "grpo" and rl.num_generations == 2


def test_report_to_takes_a_name_or_a_list(tmp_path):
    from adasr.train.sft import sft_arguments

    cfg = load_config(_write(tmp_path, "task: chain_sum\nreport_to: [tensorboard, wandb]\n"), "sft")
    assert cfg.report_to == ["tensorboard", "wandb"]
    assert sft_arguments(cfg, has_eval=False).report_to == ["tensorboard", "wandb"]
    assert load_config(_write(tmp_path, "task: chain_sum\nreport_to: tensorboard\n"), "sft").report_to == ["tensorboard"]


def test_sft_arguments_evaluate_only_with_a_held_out_set():
    from adasr.train.sft import sft_arguments

    cfg = SFTConfig(task="chain_sum", save_steps=40)
    assert sft_arguments(cfg, has_eval=False) is cfg and cfg.eval_strategy == "no"
    with_eval = sft_arguments(cfg, has_eval=True)
    assert with_eval.eval_strategy == "steps" and with_eval.eval_steps == 40 and with_eval.learning_rate == 1e-5


@pytest.mark.parametrize(
    "text, overrides, match",
    [
        ("task: chain_sum\nbatch_sise: 4\n", [], "unknown key 'batch_sise'.*did you mean 'per_device_train_batch_size'"),
        ("task: chain_sum\nlam_deep: 0.1\n", [], "unknown key 'lam_deep' for SFT training"),
        ("task: chain_sum\nper_device_train_batch_size: four\n", [], "'per_device_train_batch_size': invalid int"),
        ("task: chain_sum\nlora: maybe\n", [], "'lora': Truthy value expected"),
        ("task: chain_sum\nper_device_train_batch_size: [4]\n", [], "takes one value"),
        ("task: chain_sum\n", ["--learning_rat", "1e-4"], "unknown option '--learning_rat'.*'learning_rate'"),
        ("task: chain_sum\n", ["--learning_rate", "fast"], "'learning_rate': invalid float"),
        ("task: chain_sum\nloss:\n  cb_betta: 0.5\n", [], "cb_betta' in section 'loss'.*'cb_beta'"),
        ("task: chain_sum\nper_device_train_batch_size: [4\n", [], "not valid YAML"),
        ("- task\n", [], "must be a mapping"),
        ("task: chain_sums\n", [], "unknown task 'chain_sums'"),
        ("task: chain_sum\ncb_beta: 1.5\n", [], "cb_beta"),
        ("task: gsm8k\n", [], "needs data_path"),
        ("task: chain_sum\nlr_scheduler_type: sideways\n", [], "sideways is not a valid SchedulerType"),
        ("task: chain_sum\nfp16: true\nbf16: true\n", [], "fp16 and bf16"),
    ],
)
def test_load_config_errors(tmp_path, text, overrides, match):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as err:
        load_config(p, "sft", overrides)
    assert "\n" not in str(err.value)
    if not overrides:
        assert str(p) in str(err.value)


def test_load_config_missing_file_and_kind(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", "sft")
    with pytest.raises(ConfigError, match="kind"):
        load_config(_write(tmp_path, "task: chain_sum\n"), "ppo")
    with pytest.raises(ConfigError, match="at least 2 generations"):  # TRL's own check
        load_config(_write(tmp_path, "task: chain_sum\nnum_generations: 1\n"), "hrpo")
    with pytest.raises(ConfigError, match="scale_rewards"):
        load_config(_write(tmp_path, "task: chain_sum\nscale_rewards: batch\n"), "hrpo")


def test_a_config_states_only_what_it_changes_from_its_base(tmp_path):
    """``base:`` reads another config first (relative to the file); the file wins, group sections
    key by key, lists whole; chains follow; a run from the short file equals one from the long file."""
    (tmp_path / "sub").mkdir()
    _write(tmp_path, "task: chain_sum\nlearning_rate: 1.0e-5\nlora_target_modules: [q_proj, v_proj]\n"
                     "rewards: {lam_deep: 0.5, w_fmt: 0.1}\nengine: {mode: interleaved, thought_budget: 24}\n", "a.yaml")
    _write(tmp_path, "base: ../a.yaml\nlora_target_modules: [o_proj]\nrewards: {w_fmt: 0.3}\n", "sub/b.yaml")
    child = _write(tmp_path, "base: b.yaml\nengine: {thought_budget: 32}\nseed: 3\n", "sub/c.yaml")
    merged = read_config_file(child)
    assert read_config_file(str(child)) == merged  # a path given as a string too
    assert merged == {"task": "chain_sum", "learning_rate": 1.0e-5, "lora_target_modules": ["o_proj"], "seed": 3,
                      "rewards": {"lam_deep": 0.5, "w_fmt": 0.3}, "engine": {"mode": "interleaved", "thought_budget": 32}}
    long = _write(tmp_path, yaml.safe_dump(merged), "long.yaml")
    assert load_config(child, "hrpo").to_dict() == load_config(long, "hrpo").to_dict()
    assert infer_kind(_write(tmp_path, "base: a.yaml\nrewards: {advantage: grpo}\n", "g.yaml")) == "grpo"


@pytest.mark.parametrize(
    "text, match",
    [
        ("base: nope.yaml\n", "base config not found"),
        ("base: [a.yaml]\n", "base must be the path of another config file"),
        ("base: loop.yaml\ntask: chain_sum\n", "makes a cycle"),
    ],
)
def test_base_config_errors(tmp_path, text, match):
    p = _write(tmp_path, text, "loop.yaml")
    with pytest.raises(ConfigError, match=match) as err:
        load_config(p, "sft")
    assert "\n" not in str(err.value) and str(p) in str(err.value)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path, tmp_path, monkeypatch):
    """Each file in configs/ loads (run from a scratch directory holding empty stand-ins for the data
    files it names, so the check does not depend on the GSM8K download)."""
    kind = "sft" if path.name.startswith("sft") else path.name.split("_")[0]
    data = read_config_file(path)  # with its base config merged in
    data.update(data.pop("data", None) or {})  # a nested data section
    work = tmp_path / "repo"
    work.mkdir()
    for rel in [data.get("data_path"), *data.get("exclude", [])]:
        if rel:
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).touch()
    monkeypatch.chdir(work)
    cfg = load_config(path, kind)
    assert cfg.output_dir.startswith("runs/") and cfg.task == data["task"]
    assert infer_kind(path) == kind  # `adasr train FILE` picks the trainer the file is named for
    if kind != "sft":  # the file's advantage is kept, never replaced by the stage's name
        assert cfg.advantage == (data.get("rewards") or {}).get("advantage", kind)
    assert cfg.learning_rate == float(data["learning_rate"]) and cfg.lora == data.get("lora", False)


def test_cli_train_errors_are_one_line(tmp_path):
    cfg = _write(tmp_path, "task: chain_sum\n")
    for args, needle in [
        (["--config", str(cfg), "--lam_deeep", "0.2"], "did you mean 'lam_deep'"),
        (["--config", str(cfg), "--learning_rate", "fast"], "invalid float value"),
        (["--config", str(tmp_path / "nope.yaml")], "config file not found"),
    ]:
        proc = subprocess.run([sys.executable, "-m", "adasr.cli", "train", "hrpo", *args], capture_output=True,
                              timeout=120)
        err = proc.stderr.decode()
        assert proc.returncode != 0 and "Traceback" not in err and err.strip().startswith("error:"), err
        assert needle in err and len(err.strip().splitlines()) == 1, err


def test_cli_train_applies_overrides(tmp_path):
    """`adasr train FILE --key value`: the override reaches the run (recorded in
    final/adasr_meta.json), the file's other keys too."""
    from conftest import make_tiny_model, make_tiny_tokenizer

    model_dir = tmp_path / "tiny"
    tok = make_tiny_tokenizer()
    make_tiny_model(len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    cfg = _write(tmp_path, f"model: {model_dir}\ntask: chain_sum\ntrain_size: 4\nbatch_size: 2\nmax_steps: 3\n"
                           "layout: streaming\ndata:\n  task_options: {terms: 3, digits: 1}\n")
    out = tmp_path / "run"  # `adasr train FILE`: the stage (sft) is read from the file's keys
    proc = subprocess.run([sys.executable, "-m", "adasr.cli", "train", str(cfg), "--max_steps", "1",
                           "--learning_rate", "2e-4", "--output_dir", str(out), "--lora", "--lora_r", "2"],
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    meta = json.loads((out / "final" / "adasr_meta.json").read_text())
    c = meta["config"]
    assert meta["global_step"] == 1 and meta["kind"] == "lora"
    assert c["learning_rate"] == 2e-4 and c["lora_r"] == 2 and c["per_device_train_batch_size"] == 2
    assert c["task_options"] == {"terms": 3, "digits": 1} and c["max_steps"] == 1


def test_infer_kind_and_advantage_conflicts(tmp_path):
    assert infer_kind(_write(tmp_path, "task: chain_sum\nlayout: batch\n")) == "sft"
    assert infer_kind(_write(tmp_path, "task: chain_sum\nrewards: {lam_deep: 0.2}\n")) == "hrpo"
    assert infer_kind(_write(tmp_path, "task: chain_sum\nrewards: {advantage: grpo}\n")) == "grpo"
    assert infer_kind(_write(tmp_path, "task: chain_sum\nadvantage: proactive\n")) == "grpo"
    with pytest.raises(ConfigError, match="cannot tell which trainer"):
        infer_kind(_write(tmp_path, "task: chain_sum\nlearning_rate: 1e-4\n"))
    with pytest.raises(ConfigError, match="advantage must be one of"):
        infer_kind(_write(tmp_path, "task: chain_sum\nadvantage: ppo\n"))
    # the stage named on the command line must not silently replace the file's advantage
    grpo = _write(tmp_path, "task: chain_sum\nrewards: {advantage: grpo}\n")
    with pytest.raises(ConfigError, match="contradicts `adasr train hrpo`"):
        load_config(grpo, "hrpo")
    assert load_config(grpo, "grpo").advantage == "grpo"
    assert load_config(grpo, "hrpo", overrides=["--advantage", "hrpo"]).advantage == "hrpo"


def test_cli_train_reads_the_stage_from_the_file(tmp_path):
    cfg = _write(tmp_path, "task: chain_sum\nlearning_rate: 1e-4\n")
    for args, needle in [
        ([str(cfg)], "cannot tell which trainer"),
        ([str(cfg), "--config", str(cfg)], "two configs given"),
        (["ppo"], "unknown training stage 'ppo'"),
    ]:
        proc = subprocess.run([sys.executable, "-m", "adasr.cli", "train", *args], capture_output=True, timeout=120)
        err = proc.stderr.decode()
        assert proc.returncode != 0 and "Traceback" not in err and needle in err, err


def test_protocol_follows_the_starting_model(tmp_path):
    """Unset, ``protocol`` is the one the starting model (RL ``init``, else ``model``) was trained
    with; a contradicting one is refused; a model adasr did not train defaults to v1. (A GSM8K
    GRPO config once rolled a v2-trained SFT adapter out in v1 and scored 0 of 64 rollouts.)"""
    sft = tmp_path / "sft_final"
    sft.mkdir()
    (sft / "adasr_meta.json").write_text(json.dumps({"base": "smollm2-135m-instruct", "protocol": "v2"}))
    rl = load_config(_write(tmp_path, f"task: chain_sum\ninit: {sft}\n"), "grpo")
    assert rl.protocol == "v2"
    assert load_config(_write(tmp_path, f"task: chain_sum\ninit: {sft}\nprotocol: v2\n"), "hrpo").protocol == "v2"
    with pytest.raises(ConfigError, match=r"trained with protocol v2, but protocol is v1: set protocol: v2"):
        load_config(_write(tmp_path, f"task: chain_sum\ninit: {sft}\nprotocol: v1\n"), "grpo")
    # SFT that continues an adapter (model = its directory) follows it too
    assert load_config(_write(tmp_path, f"task: chain_sum\nmodel: {sft}\n"), "sft").protocol == "v2"
    # no adasr_meta.json (a base model, a hub id): v1 unless set
    assert load_config(_write(tmp_path, "task: chain_sum\n"), "grpo").protocol == "v1"
    assert load_config(_write(tmp_path, "task: chain_sum\nprotocol: v2\n"), "sft").protocol == "v2"
    # a bundled adapter name is read from the package
    from adasr.models import trained_protocol

    assert trained_protocol("smollm2-135m-chain-sum") in ("v1", "v2")
    assert trained_protocol("smollm2-135m-instruct") is None


@pytest.mark.parametrize("protocol", ["v3", "v3-prefix"])
@pytest.mark.parametrize("kind", ["sft", "grpo"])
def test_training_refuses_fresh_deep_protocols(tmp_path, kind, protocol):
    """The fresh-deep-context protocols (v3, v3-prefix) are evaluation-only: a training config
    naming one is refused by ``validate()`` with a one-line error naming the supported ones."""
    with pytest.raises(ConfigError, match=r"protocol .*v3.* training supports v1, v1-restate, v2, proactive-v1$") as err:
        load_config(_write(tmp_path, f"task: chain_sum\nprotocol: {protocol}\n"), kind)
    assert "\n" not in str(err.value) and repr(protocol) in str(err.value)
