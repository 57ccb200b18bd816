"""kgc — text to knowledge graphs with large language models, on Ray.

Four layers, each importing only the ones below it (`.importlinter`, checked by
`make lint` and `.ci/run`; docs/architecture.md draws them):

- entry: `kgc.cli` here, and `jobs/`, `serve/`, `bench/` in the checkout;
- `kgc.runtime`: everything that imports Ray (train driver and worker loop, the
  extraction and ICL actor pools, the graph's map/reduce);
- `kgc.modeling`: torch/transformers/peft (engines, training steps, model loading);
- the core, every other module: pure Python. Importing `kgc` or any core module imports no
  torch, transformers or ray (tests/test_lazy_imports.py checks this in a subprocess).
"""

__version__ = "0.1.0"
