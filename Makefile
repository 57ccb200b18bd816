# make test  — fresh virtualenv (.venv) with torch==2.13.0 pinned, then the test suite
# make demo  — today: the core pipeline (convert → score) on the bundled samples; the Ray
#              batch-extraction job with a tiny self-built model replaces it (issue 4)
# make lint  — ruff check + format check

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: test lint format venv clean-venv demo

$(STAMP): pyproject.toml constraints.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0 -e '.[dev,train,serve]'
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check kgc tests bench jobs serve
	$(VENV)/bin/ruff format --check kgc tests bench jobs serve

format: $(STAMP)
	$(VENV)/bin/ruff format kgc tests bench jobs serve
	$(VENV)/bin/ruff check --fix kgc tests bench jobs serve

DEMO := out/demo
demo: $(STAMP)
	@mkdir -p $(DEMO)
	@for t in NER RE SPO EE EET EEA KG; do \
	  for s in train test; do \
	    $(VENV)/bin/kgc convert --task $$t --split $$s --input examples/iepile/$$t/sample.json \
	      --schema examples/iepile/$$t/schema.json --output $(DEMO)/$$t.$$s.jsonl || exit 1; \
	  done; \
	done
	@echo "--- one NER train record:"; head -n 2 $(DEMO)/NER.train.jsonl | tail -n 1
	@echo "--- scoring hand-written model outputs (fences, single quotes, truncation):"
	$(VENV)/bin/kgc eval --task NER --input examples/predictions/NER.test.pred.jsonl --by source

clean-venv:
	rm -rf $(VENV)
