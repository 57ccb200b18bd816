"""Shared helpers: DeepKE's IEPile format samples live in examples/iepile/<TASK>/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

IEPILE = Path(__file__).resolve().parent.parent / "examples" / "iepile"
TASKS = ("NER", "RE", "SPO", "EE", "EET", "EEA", "KG")


def read_jsonl(path) -> list:
    return [
        json.loads(line)
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def write_jsonl(path, rows) -> Path:
    path = Path(path)
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture
def sample_dir():
    return IEPILE


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    from kgc.modeling.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory):
    from kgc.modeling.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2")


@pytest.fixture(scope="session")
def ner_train_file(tmp_path_factory):
    """IEPile NER train records converted from the bundled sample (6 records)."""
    from kgc.convert import convert_file

    out = tmp_path_factory.mktemp("data") / "ner.train.jsonl"
    convert_file("NER", IEPILE / "NER" / "sample.json", IEPILE / "NER" / "schema.json", out)
    return out


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray on loopback with 2 CPUs for the whole session."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is available; they skip (with the reason) elsewhere."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
