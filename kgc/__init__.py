"""kgc — text to knowledge graphs with large language models, on Ray.

The core package is pure Python: importing it must not import torch, transformers or ray
(tests/test_lazy_imports.py checks this in a subprocess), so it can run inside Ray Data
UDFs, Serve replicas and notebooks cheaply. Heavy back ends live in `kgc.modeling`
(torch/transformers/peft) and in the `jobs/` and `serve/` entry points (Ray).
"""

__version__ = "0.1.0"
