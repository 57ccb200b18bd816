"""Shared helpers: DeepKE's IEPile format samples live in examples/iepile/<TASK>/."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from kgc.tasks import TASK_NAMES

ROOT = Path(__file__).resolve().parent.parent
IEPILE = ROOT / "examples" / "iepile"
TASKS = TASK_NAMES  # every built-in task (test_tasks.py pins the list itself)


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
def local_ray(tmp_path_factory):
    """A local Ray on loopback with 2 CPUs for the whole session. Its workers arm the test
    faults (tests/support/faults.py) at start; tests choose them with `faults.plan`."""
    import ray

    from tests.support import faults

    os.environ[faults.ENV] = str(tmp_path_factory.mktemp("faults") / "plan.json")
    if ray.is_initialized():  # an earlier test's library call started one without the hook
        ray.shutdown()
    ray.init(
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env=faults.runtime_env(os.environ[faults.ENV]),
    )
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is available, `vllm` tests only where vLLM is
    installed (.venv-vllm: make test-vllm); they skip (with the reason) elsewhere."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        no_vllm = pytest.mark.skip(reason="needs vLLM: make venv-vllm, then make test-vllm")
        for item in items:
            if item.get_closest_marker("vllm"):
                item.add_marker(no_vllm)
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


# ----------------------------------------------------------------------------- Serve
# One Serve app on real Ray for tests/test_serve.py, tests/test_serve_hostile.py and
# tests/test_icl_serve.py (started once), and the same app in this process without Ray
# (tests/test_serve_fake.py).
SERVE_KEY = "sk-kgc-test"


class LocalModelHandle:
    """Stands in for Serve's handle to the model deployment, without Ray:
    `.generate.remote(...)` runs `ModelServer.generate` as an asyncio task (awaitable and
    cancellable, like a DeploymentResponse); `.options(stream=True).stream.remote(...)`
    gives `ModelServer.stream`'s async generator."""

    def __init__(self, server):
        import types

        self.server = server
        self.generate = types.SimpleNamespace(remote=self._remote)

    def _remote(self, *args):
        import asyncio

        return asyncio.ensure_future(self.server.generate(*args))

    def options(self, stream: bool = False):
        """`.options(stream=True).stream.remote(...)`: the replica's async generator, as
        Serve's DeploymentResponseGenerator gives it."""
        import types

        assert stream
        return types.SimpleNamespace(stream=types.SimpleNamespace(remote=self.server.stream))


def local_serve_api(settings: dict, engine=None):
    """The Serve app's FastAPI app in this process: an IngressServer over a ModelServer with
    `engine` (None: the engine the settings describe)."""
    from serve.ingress import IngressServer, create_api
    from serve.model import ModelServer

    model = ModelServer(settings, engine=engine)
    return create_api(IngressServer(LocalModelHandle(model), settings))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _adapter(base, out, seed):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    m = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    )
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    m.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def ptuning_adapter(tiny_llama, tmp_path_factory):
    """A P-Tuning v2 (prefix) adapter of the tiny llama with random weights."""
    import torch
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapters") / "pt"
    torch.manual_seed(3)
    m = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama),
        PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8),
    )
    with torch.no_grad():
        for p in m.prompt_encoder.parameters():
            p.normal_(0, 1.0)
    m.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def serve_app(
    local_ray,
    tiny_llama,
    tmp_path_factory,
):
    import os

    from ray import serve

    from serve.app import build_app

    tmp = tmp_path_factory.mktemp("adapters")
    adapters = {
        "ner": _adapter(tiny_llama, tmp / "ner", 1),
        "re": _adapter(tiny_llama, tmp / "re", 2),
    }
    os.environ["KGC_TEST_API_KEYS"] = SERVE_KEY
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {
        "model": str(tiny_llama),
        "adapters": adapters,
        "api_keys_env": "KGC_TEST_API_KEYS",
        "max_new_tokens": 12,
        "replica_cpus": 0.25,
        "limits": {"max_body_bytes": 20_000, "max_text_chars": 2000, "max_schema_bytes": 4000},
        "constrained_max_text_chars": 8,
        "constrained_max_list_items": 2,
    }
    serve.run(build_app(args), name="kgc", route_prefix="/")
    # a deliberately small one: one request at a time, one waiting; the rest get 429
    small = {**args, "adapters": {}, "batch_size": 1, "max_ongoing_requests": 1}
    small.update(max_queued_requests=1, retry_after_s=3, max_new_tokens=48)
    serve.run(build_app(small), name="kgc-small", route_prefix="/small")
    yield {"url": f"http://127.0.0.1:{port}", "model": str(tiny_llama), "adapters": adapters}
    serve.shutdown()


def serve_client(server, key=SERVE_KEY):
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server["url"], headers=headers, timeout=120)
