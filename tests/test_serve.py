"""The Serve app end to end: on local Ray at 127.0.0.1 with a tiny model, over real HTTP
(httpx) and with the `openai` client; and a P-Tuning model served in this process. The
endpoints' behaviour (auth, limits, validation, shapes) is tested without Ray or a model in
tests/test_serve_fake.py."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")

from conftest import SERVE_KEY as KEY  # noqa: E402
from conftest import local_serve_api  # noqa: E402
from conftest import serve_client as client  # noqa: E402

from kgc.serving import merge_outputs  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def test_merge_outputs_dedupes_and_reports_errors():
    out = merge_outputs(
        "NER", ['{"人物": ["张三"]}', '```json\n{"人物": ["张三"], "地点": ["北京"]}```', "garbage"]
    )
    assert out["records"] == [
        {"entity": "张三", "entity_type": "人物"},
        {"entity": "北京", "entity_type": "地点"},
    ]
    assert out["errors"] == ["no JSON object in output"]


def test_chat_completions_match_the_engine(serve_app):
    from openai import OpenAI

    from kgc.engine import GenerationSettings
    from kgc.modeling.hf_engine import HFEngine

    prompt = '{"instruction": "抽取实体", "schema": ["人物"], "input": "张三在北京。"}'
    api = OpenAI(base_url=serve_app["url"] + "/v1", api_key=KEY)
    got = api.chat.completions.create(
        model="kgc", max_tokens=12, messages=[{"role": "user", "content": prompt}]
    )
    direct = HFEngine(serve_app["model"]).generate([prompt], GenerationSettings(max_new_tokens=12))
    assert got.choices[0].message.content == direct[0]
    a = api.chat.completions.create(
        model="kgc:ner", max_tokens=12, messages=[{"role": "user", "content": prompt}]
    )
    b = api.chat.completions.create(
        model="kgc:re", max_tokens=12, messages=[{"role": "user", "content": prompt}]
    )
    assert a.choices[0].message.content != b.choices[0].message.content
    with_adapter = HFEngine(serve_app["model"], adapter=serve_app["adapters"]["ner"]).generate(
        [prompt], GenerationSettings(max_new_tokens=12)
    )
    assert a.choices[0].message.content == with_adapter[0]
    # stream: true through Serve's streaming handle, token by token from the HF engine
    chunks = list(
        api.chat.completions.create(
            model="kgc:ner", max_tokens=12, messages=[{"role": "user", "content": prompt}],
            stream=True,
        )
    )  # fmt: skip
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(pieces) == with_adapter[0]
    assert len(pieces) > 2  # several pieces, not the whole answer at once
    # usage: the prompt as the model read it, the token ids the answer generated
    engine = HFEngine(serve_app["model"])
    engine.generate([prompt], GenerationSettings(max_new_tokens=12))
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (
        engine.prompt_tokens(prompt),
        engine.last_token_counts[0],
    )
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens
    # /v1/completions: the raw text continued, no chat template
    raw = "张三出生于北京。张三的出生地是"
    done = api.completions.create(model="kgc", prompt=raw, max_tokens=12, temperature=0)
    direct = engine.generate([{"raw": raw}], GenerationSettings(max_new_tokens=12))
    assert done.choices[0].text == direct[0] and done.usage.prompt_tokens == len(engine.tok(raw)[
        "input_ids"])  # fmt: skip


def test_quantized_replica_usage_and_constrained_budgets(tiny_llama):
    """A 4-bit replica (quantization: {bits: 4}, bitsandbytes on CPU) in this process: it
    answers; a constrained request below its schema's shortest answer is a 422 naming the
    minimum; at small budgets above it every constrained answer still closes and parses."""
    from fastapi.testclient import TestClient

    from serve.app import resolved_settings

    settings = resolved_settings(
        {"model": str(tiny_llama), "quantization": {"bits": 4}, "auth_disabled": True}
    )
    api = local_serve_api(settings)
    texts = ["张三在北京工作。", "李四是上海人。"]
    req = {"task": "NER", "schema": ["人物", "地点"], "texts": texts, "constrained": True}
    with TestClient(api) as c:
        r = c.post("/v1/extract", json={**req, "max_new_tokens": 3})
        assert r.status_code == 422, r.text
        need = int(r.json()["detail"].split("at least ")[1].split()[0])
        assert need > 3
        for budget in (need, need + 5, need + 20):
            r = c.post("/v1/extract", json={**req, "max_new_tokens": budget})
            assert r.status_code == 200, r.text
            assert all(x["errors"] == [] for x in r.json()["results"]), (budget, r.text)
            assert r.json()["usage"]["completion_tokens"] > 0


def test_ptuning_model_is_served(tiny_llama, ptuning_adapter):
    """A P-Tuning v2 (prefix) model behind the same API, decoding like the engine does (the
    app in this process: the engine the settings describe, no Ray)."""
    from fastapi.testclient import TestClient
    from openai import OpenAI

    from kgc.engine import GenerationSettings
    from kgc.modeling.hf_engine import HFEngine
    from serve.app import resolved_settings

    settings = resolved_settings(
        {"model": str(tiny_llama), "adapter": ptuning_adapter, "auth_disabled": True}
    )
    prompt = '{"instruction": "抽取实体", "schema": ["人物"], "input": "李四在上海。"}'
    with TestClient(local_serve_api(settings)) as http:
        api = OpenAI(base_url=f"{http.base_url}/v1", api_key="none", http_client=http)
        got = api.chat.completions.create(
            model="kgc", max_tokens=12, messages=[{"role": "user", "content": prompt}]
        )
    gen = GenerationSettings(max_new_tokens=12)
    direct = HFEngine(str(tiny_llama), adapter=ptuning_adapter).generate([prompt], gen)
    base = HFEngine(str(tiny_llama)).generate([prompt], gen)
    assert got.choices[0].message.content == direct[0]
    assert direct[0] != base[0]


def test_constrained_extract_always_parses(serve_app):
    """The task API end to end, free and schema-constrained: a random model's constrained
    answers parse."""
    texts = ["张三在北京工作。", "李四是上海人。", "王五去了广州。"]
    req = {"task": "NER", "schema": ["人物", "地点"], "texts": texts, "max_new_tokens": 300}
    with client(serve_app) as c:
        r = c.post("/v1/extract", json=req)
        assert r.status_code == 200, r.text
        free = r.json()["results"]
        constrained = c.post("/v1/extract", json={**req, "constrained": True}).json()["results"]
    assert [x["text"] for x in free] == [x["text"] for x in constrained] == texts
    assert any(x["errors"] for x in free)  # a random model rarely writes the JSON shape
    assert all(x["errors"] == [] for x in constrained)
    assert all(r["entity_type"] in ("人物", "地点") for x in constrained for r in x["records"])


def test_chat_response_format_json_schema(serve_app):
    from openai import OpenAI

    from kgc.engine import bounded
    from kgc.tasks import get

    schema = bounded(get("RE").output_schema(["作者", "导演"]), 8, 2)  # closes within 300
    api = OpenAI(base_url=serve_app["url"] + "/v1", api_key=KEY)
    got = api.chat.completions.create(
        model="kgc",
        max_tokens=300,
        messages=[{"role": "user", "content": "《长夜》的导演是谁？"}],
        response_format={"type": "json_schema", "json_schema": {"name": "re", "schema": schema}},
    )
    value = json.loads(got.choices[0].message.content, strict=False)
    assert list(value) == ["作者", "导演"]


def test_overload_gives_429_with_retry_after(serve_app):
    """More concurrent requests than the model deployment can run + queue: the excess gets
    429 with Retry-After (no 5xx), the rest succeed."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"messages": [{"role": "user", "content": "写一段很长的话"}], "max_tokens": 48}

    def call(_):
        with client(serve_app) as c:
            r = c.post("/small/v1/chat/completions", json=body)
            return r.status_code, r.headers.get("retry-after")

    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(call, range(12)))
    codes = [c for c, _ in got]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) >= 1 and codes.count(429) >= 1, codes
    assert all(ra == "3" for c, ra in got if c == 429)


def test_autoscaling_settings_reach_the_deployment():
    from serve.app import build_app

    app = build_app(
        {
            "model": "/models/x",
            "auth_disabled": True,
            "autoscaling": {"min_replicas": 0, "max_replicas": 3, "target_ongoing_requests": 8},
        }
    )
    gen = app._bound_deployment.init_args[0]._bound_deployment  # Ingress(ModelDeployment, settings)
    cfg = gen._deployment_config.autoscaling_config
    assert (cfg.min_replicas, cfg.max_replicas, cfg.target_ongoing_requests) == (0, 3, 8)


def test_engine_settings_are_checked_before_replicas_start():
    from kgc.errors import KgcError
    from serve.app import build_app

    base = {"model": "/models/x", "auth_disabled": True}
    with pytest.raises(KgcError, match="whole GPUs"):
        build_app({**base, "engine": "vllm", "replica_gpus": 0.5})
    with pytest.raises(KgcError, match="tensor_parallel_size: 2 with replica_gpus: 0"):
        build_app({**base, "engine": "vllm", "tensor_parallel_size": 2})
    with pytest.raises(KgcError, match="one LoRA per request"):
        build_app({**base, "engine": "vllm", "adapter": "/a", "adapters": {"b": "/x"}})
    app = build_app({**base, "engine": "vllm", "replica_gpus": 1})
    gen = app._bound_deployment.init_args[0]._bound_deployment
    assert gen.ray_actor_options["num_gpus"] == 1
    # replica_gpus: 0 is vLLM's CPU build (.venv-vllm), with named adapters
    app = build_app({**base, "engine": "vllm", "adapters": {"a": "/x"}})
    gen = app._bound_deployment.init_args[0]._bound_deployment
    assert "num_gpus" not in gen.ray_actor_options


def test_concurrent_requests_join_the_running_decode(tiny_llama):
    """The model replica on the HF engine's continuous path (no Ray): concurrent requests
    with different budgets, plain, constrained and streamed, each get the engine's own
    answer; a request that fails alone does not fail the others."""
    import asyncio

    from kgc.engine import GenerationSettings, bounded
    from kgc.modeling.hf_engine import HFEngine
    from kgc.tasks import get
    from serve.app import resolved_settings
    from serve.model import ModelServer

    settings = resolved_settings({"model": str(tiny_llama), "auth_disabled": True})
    server = ModelServer(settings)
    assert server.continuous
    schema = bounded(get("NER").output_schema(["人物", "地点"]), 8, 2)
    # budgets 4..22 tokens; the constrained ones above their schema's shortest answer
    asks = [(f"抽取实体：张三在北京{i}。", 4 + 3 * i + (20 if i % 3 == 0 else 0),
             schema if i % 3 == 0 else None) for i in range(7)]  # fmt: skip

    async def go():
        calls = [server.generate(None, p, n, s) for p, n, s in asks]
        calls.append(server.generate(None, {"raw": 5}, 8, None))  # not a valid prompt
        pieces = []

        async def streamed():
            async for item in server.stream(None, asks[2][0], asks[2][1], None):
                pieces.append(item["text"])

        results = await asyncio.gather(*calls, streamed())
        return results[: len(calls)], pieces

    results, pieces = asyncio.run(go())
    engine = HFEngine(str(tiny_llama))
    for (prompt, n, s), r in zip(asks, results):
        alone = engine.generate([prompt], GenerationSettings(max_new_tokens=n), [s] if s else None)
        assert r.get("text") == alone[0], r
        assert r["completion_tokens"] == engine.last_token_counts[0] <= n
    assert "error" in results[-1] and results[-1]["status"] in (422, 500)
    assert "".join(pieces) == results[2]["text"] and len(pieces) > 1
