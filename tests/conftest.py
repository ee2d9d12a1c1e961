"""Shared fixtures: a tiny random-initialised model and an in-process ChatML tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests never touch the network: hub ids resolve from the local Hugging Face cache only (set
# before any test imports huggingface_hub, and inherited by the CLI subprocesses).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GSM8K_TRAIN = Path(os.environ.get(
    "ADASR_GSM8K_TRAIN", Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"
))

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "The answer is \\boxed{72}. 48 / 2 = 24 and 48 + 24 = 72. Add 5. Subtract 3. What is the result?",
    "You are a streaming reasoner. The user's problem arrives one piece at a time.",
    "[END OF INPUT] Finish the reasoning and give the final answer.",
]


def make_tiny_tokenizer():
    """A byte-level BPE tokenizer trained in-process (~400 tokens) with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    return fast


def make_tiny_model(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).eval()
    return model


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    return make_tiny_model(len(tiny_tokenizer))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> str:
    """A tiny random model + ChatML tokenizer saved as a local model directory."""
    path = tmp_path_factory.mktemp("tiny-model")
    tok = make_tiny_tokenizer()
    make_tiny_model(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def gsm8k_train() -> Path:
    """The shared GSM8K train file (../shared/data/gsm8k/train.jsonl beside the repo)."""
    assert GSM8K_TRAIN.is_file(), f"GSM8K train data missing: {GSM8K_TRAIN} (set ADASR_GSM8K_TRAIN)"
    return GSM8K_TRAIN


@pytest.fixture(scope="module")
def live_server(tiny_model, tiny_tokenizer):
    """A uvicorn server on a free loopback port, in a thread (module scope)."""
    import threading

    import uvicorn

    from adasr.serve import create_app
    from adasr.serve.wire import MAX_FRAME_BYTES
    from serve_helpers import free_port, make_engine, wait_for

    port = free_port()
    app = create_app(make_engine(tiny_model, tiny_tokenizer), model_name="tiny", max_sessions=4)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ws_max_size=MAX_FRAME_BYTES))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def rl_batches(monkeypatch):
    """Record every generation batch of :class:`adasr.train.rl.StreamGRPOTrainer`: a list that
    fills with ``(outputs, trainer.last_batch)`` pairs as training runs."""
    from adasr.train import rl

    seen: list = []
    original = rl.StreamGRPOTrainer._generate_and_score_completions

    def capture(self, inputs):
        out = original(self, inputs)
        seen.append((out, dict(self.last_batch)))
        return out

    monkeypatch.setattr(rl.StreamGRPOTrainer, "_generate_and_score_completions", capture)
    return seen

