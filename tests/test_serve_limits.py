"""Per-request costs on the model replica (issue 26): a prompt is counted in tokens before it
joins a decode (413 naming the numbers), schema labels are capped, a request whose client
left leaves the running decode, `usage` counts the token ids generated, and an adapter
folder without weights is a 4xx naming what is missing. The tiny model, in this process
(no Ray): the app over a ModelServer with the real HF engine."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("ray")  # serve.app imports ray.serve; no cluster is started
pytest.importorskip("httpx")

from conftest import LocalModelHandle  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

pytestmark = pytest.mark.timeout(300)
CHAT = "/v1/chat/completions"
# rare CJK characters (Extension B): four UTF-8 bytes, four tokens each in the tiny vocabulary
RARE_CJK = "".join(chr(0x20000 + i) for i in range(8000))


@pytest.fixture(scope="module")
def settings(tiny_llama):
    from serve.app import resolved_settings

    return resolved_settings({"model": str(tiny_llama), "auth_disabled": True})


@pytest.fixture(scope="module")
def server(settings):
    from serve.model import ModelServer

    return ModelServer(settings)


def _client(server, **extra) -> TestClient:
    """The app over `server`'s engine, with settings changed by `extra`."""
    from serve.ingress import IngressServer, create_api
    from serve.model import ModelServer

    settings = {**server.s.model_dump(mode="json"), **extra}
    model = server if not extra else ModelServer(settings, engine=server.engine)
    return TestClient(create_api(IngressServer(LocalModelHandle(model), settings)))


def _counting_serve(monkeypatch, engine) -> list[dict]:
    """Every continuous decode run's stats, appended as each run ends."""
    runs: list[dict] = []
    real = engine.serve

    def serve(take):
        try:
            real(take)
        finally:
            runs.append(dict(engine.last_stats))

    monkeypatch.setattr(engine, "serve", serve)
    return runs


# --------------------------------------------------------------- item 1: prompt size
def test_long_schema_labels_are_refused_at_the_ingress(server):
    """200 labels of ≈ 60 words (an ≈ 80 KB body, under the byte limit) is a 413 naming the
    first long label and the limit; labels each short but ≈ 15,000 characters in all name
    the schema's total; a normal extract still answers."""
    words = " ".join(f"word{k}" for k in range(60))
    labels = [f"{words} {i}" for i in range(200)]
    body = {"task": "NER", "schema": labels, "text": "张三在北京。", "split_num": -1}
    assert len(json.dumps(body)) < server.s.limits.max_body_bytes
    with _client(server) as c:
        r = c.post("/v1/extract", json=body)
        assert r.status_code == 413, r.text
        detail = r.json()["detail"]
        assert detail.startswith(f"schema[0] has {len(labels[0])} characters; at most 200")
        assert "limits.max_label_chars" in detail
        many = [f"{'类型' * 70}{i:03d}" for i in range(100)]  # 143 characters each
        r = c.post("/v1/extract", json={**body, "schema": many})
        assert r.status_code == 413, r.text
        assert r.json()["detail"].startswith("schema: its labels have 14300 characters")
        assert "limits.max_schema_chars" in r.json()["detail"]
        roles = {"出生": ["人物", "x" * 201]}  # EE: types → roles, each role a label
        r = c.post("/v1/extract", json={**body, "task": "EE", "schema": roles})
        assert r.status_code == 413 and "schema.出生[1] has 201" in r.json()["detail"], r.text
        ok = {
            "task": "NER",
            "schema": ["人物", "地点"],
            "text": "张三在北京。",
            "max_new_tokens": 8,
        }
        r = c.post("/v1/extract", json=ok)
        assert r.status_code == 200, r.text


def test_prompt_beyond_the_context_is_413_before_any_prefill(server, monkeypatch):
    """8,000 rare CJK characters (inside max_text_chars) are ≈ 32,000 tokens for a model of
    2,048: a 413 naming the prompt's tokens, the context and its setting, on chat (plain and
    streamed), /v1/completions and /v1/extract, and the model never ran."""
    engine = server.engine
    assert (engine.context_tokens, engine.context_source) == (2048, "max_position_embeddings")
    runs = _counting_serve(monkeypatch, engine)
    n = engine.prompt_tokens(RARE_CJK)
    assert n > 2048
    want = f"the prompt has {n} tokens; at most {2048 - 12} fit: the model's context of 2048"
    msg = {"messages": [{"role": "user", "content": RARE_CJK}], "max_tokens": 12}
    with _client(server) as c:
        r = c.post(CHAT, json=msg)
        assert r.status_code == 413, r.text
        assert want in r.json()["detail"] and "(max_position_embeddings)" in r.json()["detail"]
        assert "max_new_tokens 12" in r.json()["detail"]
        r = c.post(CHAT, json={**msg, "stream": True})
        assert r.status_code == 413 and want in r.json()["error"]["message"], r.text
        r = c.post("/v1/completions", json={"prompt": RARE_CJK[:1000], "max_tokens": 12})
        assert r.status_code == 413 and "fit: the model's context" in r.text, r.text
        assert runs == []  # refused before the engine's decode started
        body = {"task": "NER", "schema": ["人物"], "texts": [RARE_CJK, "张三。"]}
        r = c.post("/v1/extract", json={**body, "max_new_tokens": 12})
        assert r.status_code == 413 and "the prompt has" in r.text, r.text


def test_prompt_plus_budget_is_measured_against_the_context(server):
    """The exact edge: a prompt of n tokens with max_tokens 2048 - n answers; one more token
    of budget is a 413 naming both numbers. limits.max_prompt_tokens caps the prompt alone."""
    text = "张三在北京。" * 210
    n = server.engine.prompt_tokens(text)
    assert 1900 < n < 2040, n  # room for a short answer
    msg = {"messages": [{"role": "user", "content": text}]}
    with _client(server) as c:
        r = c.post(CHAT, json={**msg, "max_tokens": 2048 - n})
        assert r.status_code == 200, r.text
        r = c.post(CHAT, json={**msg, "max_tokens": 2048 - n + 1})
        assert r.status_code == 413, r.text
        detail = r.json()["detail"]
        assert f"the prompt has {n} tokens; at most {n - 1} fit" in detail, detail
        assert f"max_new_tokens {2048 - n + 1}" in detail
    with _client(server, limits={"max_prompt_tokens": 50}) as c:
        r = c.post(CHAT, json={"messages": [{"role": "user", "content": "你好"}], "max_tokens": 4})
        assert r.status_code == 413, r.text
        assert "at most 50 fit: limits.max_prompt_tokens 50" in r.json()["detail"]


@pytest.mark.parametrize("cap", [None, 50, 70, 80])
def test_serve_and_batch_extraction_refuse_the_same_prompts(cap):
    """One prompt-size check (`kgc.engine.prompt_room`) for both: for every prompt length,
    a Serve request and a batch-extraction row are refused alike, and name the same limit,
    the smaller one (a context of 100 less a budget of 30, against a cap of 50, 70 (a tie:
    the cap), 80, or none). Before, batch extraction named the cap whenever the prompt
    passed it, even where the context was the smaller limit (cap 80, 90 tokens)."""
    from types import SimpleNamespace

    from kgc.runtime.extract import ExtractUDF
    from serve.model import ModelServer

    class Counting:  # a token per character, a context of 100 tokens
        model_id, context_tokens, context_source = "counting", 100, "a test"

        def prompt_tokens(self, prompt: str) -> int:
            return len(prompt)

    server = ModelServer(
        {"auth_disabled": True, "limits": {"max_prompt_tokens": cap}}, engine=Counting()
    )
    udf = ExtractUDF.__new__(ExtractUDF)  # its engine check only: no model loaded
    udf.engine = Counting()
    udf.cfg = SimpleNamespace(engine=SimpleNamespace(max_prompt_tokens=cap))
    udf.gen = SimpleNamespace(max_new_tokens=30)
    for n in range(40, 101, 5):
        served = asyncio.run(server._prompt_problem("x" * n, 30))
        (row,) = udf._too_long(["x" * n])
        assert (served is None) == (row is None), (n, served, row)
        if served is not None:
            assert served["status"] == 413
            capped = "limits.max_prompt_tokens" in served["error"]
            assert capped == ("engine.max_prompt_tokens" in row), (n, served, row)
            assert capped != ("the model's context" in row), (n, row)
            assert n > (cap if capped else 70), (n, served)


# ------------------------------------------------------- item 4: a client that leaves
def test_a_cancelled_request_leaves_the_running_decode(server, monkeypatch):
    """Two requests with budgets of 1,000 tokens (the tiny model never ends them early), one
    streamed and closed after its first pieces, one whose call is cancelled, decode beside
    a request of 300 tokens: both leave the decode at once (the tokens decoded in all are
    far below their budgets), and the other request's answer is exactly its answer alone."""
    from kgc.engine import GenerationSettings

    engine = server.engine
    runs = _counting_serve(monkeypatch, engine)
    long_prompt, other = "张三在北京。", "抽取实体：张三在北京工作。"

    async def go():
        stream = server.stream(None, long_prompt, 1000, None)
        pieces = [await anext(stream)]  # decoding
        waiting = asyncio.create_task(server.generate(None, long_prompt, 1000))
        kept = asyncio.create_task(server.generate(None, other, 300))
        for _ in range(2):
            pieces.append(await anext(stream))
        await stream.aclose()  # the streaming client leaves
        await asyncio.sleep(0.05)
        waiting.cancel()  # the other client leaves
        result = await kept
        while server._draining:  # the engine thread has finished its run
            await asyncio.sleep(0.01)
        return pieces, result

    pieces, result = asyncio.run(go())
    assert len(pieces) == 3 and "error" not in result
    alone = engine.generate([other], GenerationSettings(max_new_tokens=300))[0]
    assert result["text"] == alone and result["completion_tokens"] == 300
    decoded = sum(r["tokens"] for r in runs)
    # the streamed one was decoding; the other, decoding or still waiting, left as well
    assert sum(r.get("cancelled", 0) for r in runs) >= 1, runs
    # the cancelled requests' tokens: before the fix each ran to its budget (≈ 2,000 in all)
    assert decoded - 300 < 600, runs


def test_a_streamed_answer_keeps_its_held_back_tail(server, monkeypatch):
    """A streamed answer that ends inside a character (budget 3 here) gets its last piece at
    its end, and the decode goes on: the piece used to be sent after the request was
    forgotten (KeyError in the decode loop, every open request decoded again alone)."""
    from kgc.engine import GenerationSettings

    engine = server.engine
    runs = _counting_serve(monkeypatch, engine)

    async def pieces(budget):
        return [x["text"] async for x in server.stream(None, "张三在北京。", budget, None)]

    for budget in (3, 6):
        got = asyncio.run(pieces(budget))
        alone = engine.generate(["张三在北京。"], GenerationSettings(max_new_tokens=budget))[0]
        assert "".join(got) == alone, (budget, got, alone)
    assert [r.get("tokens") for r in runs] == [3, 6], runs  # each run ended normally


# ---------------------------------------------------------------- item 8: usage
@pytest.mark.parametrize("continuous", [True, False])
def test_usage_counts_the_generated_token_ids(server, continuous):
    """max_tokens 5 → completion_tokens 5, the ids the model generated (the answer's text
    re-tokenized is ≈ 10 here), on the continuous path and on static batches; /v1/extract
    adds up its splits' ids."""
    from kgc.engine import GenerationSettings
    from kgc.modeling.hf_engine import HFEngine
    from serve.ingress import IngressServer, create_api
    from serve.model import ModelServer

    engine = server.engine if continuous else HFEngine(server.s.model, continuous=False)
    model = ModelServer(server.s.model_dump(mode="json"), engine=engine)
    assert model.continuous == continuous
    api = create_api(IngressServer(LocalModelHandle(model), server.s.model_dump(mode="json")))
    prompt = "张三在北京。"
    with TestClient(api) as c:
        for budget in (5, 12):
            r = c.post(CHAT, json={"messages": [{"role": "user", "content": prompt}],
                                   "max_tokens": budget})  # fmt: skip
            assert r.status_code == 200, r.text
            text, use = r.json()["choices"][0]["message"]["content"], r.json()["usage"]
            engine.generate([prompt], GenerationSettings(max_new_tokens=budget))
            assert use["completion_tokens"] == engine.last_token_counts[0] == budget, use
            assert engine.count_tokens(prompt, text)[1] > budget  # what was reported before
            assert use["prompt_tokens"] == engine.prompt_tokens(prompt)
            assert r.json()["choices"][0]["finish_reason"] == "length"
        body = {"task": "NER", "schema": ["人物", "地点"], "text": prompt, "split_num": 1}
        r = c.post("/v1/extract", json={**body, "max_new_tokens": 6})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2 * 6, r.text


# ------------------------------------------------------- near-miss: adapter without weights
def _weightless(tiny_llama, folder):
    """A LoRA adapter folder of the tiny model whose weights file is gone."""
    from conftest import _adapter

    _adapter(tiny_llama, folder, 1)
    for f in folder.glob("adapter_model.*"):
        f.unlink()
    assert (folder / "adapter_config.json").is_file()
    return folder


def test_an_adapter_without_weights_is_a_4xx_naming_it(server, tiny_llama, tmp_path):
    """adapter_dir: a folder with adapter_config.json and no weights is not listed, and a
    request for it is a 404 saying what is missing; a configured adapter (`adapters:`)
    without weights is that request's 422 naming it (peft's error was a 500)."""
    root = tmp_path / "adapters"
    _weightless(tiny_llama, root / "broken")
    half = _weightless(tiny_llama, tmp_path / "half")
    msg = {"messages": [{"role": "user", "content": "你好"}], "max_tokens": 4}
    with _client(server, adapter_dir=str(root), adapters={"half": str(half)}) as c:
        assert "kgc:broken" not in [m["id"] for m in c.get("/v1/models").json()["data"]]
        r = c.post(CHAT, json={**msg, "model": "kgc:broken"})
        assert r.status_code == 404, r.text
        message = r.json()["detail"]["message"]
        assert "'broken'" in message and "no weights file (adapter_model.safetensors" in message
        r = c.post(CHAT, json={**msg, "model": "kgc:half"})
        assert r.status_code == 422, r.text
        assert "'half'" in r.text and "no weights file" in r.text
        r = c.post(CHAT, json=msg)  # the base model is unharmed
        assert r.status_code == 200, r.text
