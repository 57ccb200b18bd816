"""The Serve app's endpoints without Ray or a model: the ingress (`create_api` over an
`IngressServer`) in this process, its model a `ModelServer` with a fake engine, driven by
FastAPI's TestClient (and httpx's ASGI transport for concurrent requests). Auth, limits,
validation, shapes, batch isolation, replica loss. The same app on real Ray with a tiny
model: tests/test_serve.py, tests/test_serve_hostile.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time

import pytest

pytest.importorskip("ray")  # serve.app imports ray.serve; no cluster is started
httpx = pytest.importorskip("httpx")

from conftest import local_serve_api  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from kgc.errors import KgcError  # noqa: E402
from kgc.serving import key_hash, merge_outputs  # noqa: E402

pytestmark = pytest.mark.timeout(120)
KEY = "sk-kgc-fake"
CHAT = "/v1/chat/completions"
VALID = {"messages": [{"role": "user", "content": "张三在北京。"}], "max_tokens": 6}
# as the real-Ray fixture (tests/conftest.py `serve_app`), keys as build_app passes them
SETTINGS = {
    "adapters": {"ner": "/adapters/ner", "re": "/adapters/re"},
    "api_key_sha256": [key_hash(KEY)],
    "max_new_tokens": 12,
    "limits": {"max_body_bytes": 20_000, "max_text_chars": 2000, "max_schema_bytes": 4000},
}
JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def _text(prompt) -> str:
    """A prompt's text: the prompt itself, a raw prompt's text, or the last message of a
    conversation."""
    if isinstance(prompt, dict):
        return prompt["raw"]
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def _schema_problem(schema) -> str | None:
    """What a grammar compiler would refuse: an unknown type or a pattern that is no regex."""
    if isinstance(schema, list):
        return next(filter(None, map(_schema_problem, schema)), None)
    if not isinstance(schema, dict):
        return None
    if isinstance(schema.get("type"), str) and schema["type"] not in JSON_TYPES:
        return f"invalid JSON Schema: unknown type {schema['type']!r}"
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except re.error as exc:
            return f"invalid JSON Schema: pattern {schema['pattern']!r}: {exc}"
    return next(filter(None, map(_schema_problem, schema.values())), None)


class FakeEngine:
    """Stands in for HFEngine: deterministic answers, a record of every call, failures and
    delays on request. Like the HF engine it must not be called twice at once: `overlaps`
    counts calls that found another one running."""

    def __init__(self, answer=None, fail_on=None, delay_s=0.0, compile_delay_s=0.0):
        self.answer = answer or (lambda prompt: f"答：{_text(prompt)}")
        self.fail_on, self.delay_s, self.compile_delay_s = fail_on, delay_s, compile_delay_s
        self.calls: list[dict] = []  # one per engine call
        self.compiled: list[dict] = []
        self.threads: set[str] = set()
        self.overlaps = 0
        self._adapter: str | None = None
        self._busy = threading.Lock()

    @property
    def prompts(self) -> list:
        return [p for c in self.calls for p in c["prompts"]]

    def use_adapter(self, name, path=None):
        self._adapter = name
        return contextlib.nullcontext()

    def generate(self, prompts, config, schemas=None):
        if not self._busy.acquire(blocking=False):
            self.overlaps += 1
            self._busy.acquire()
        try:
            self.threads.add(threading.current_thread().name)
            call = {"adapter": self._adapter, "prompts": list(prompts), "schemas": schemas}
            self.calls.append({**call, "max_new_tokens": config.max_new_tokens})
            time.sleep(self.delay_s)
            if self.fail_on and any(self.fail_on in _text(p) for p in prompts):
                raise RuntimeError(f"the engine failed on {self.fail_on!r}")
            return [self.answer(p) for p in prompts]
        finally:
            self._busy.release()

    def count_tokens(self, prompt, text):
        """A character is a token here."""
        return len(_text(prompt)), len(text)

    def compile_schema(self, schema):
        self.compiled.append(schema)
        time.sleep(self.compile_delay_s)
        problem = _schema_problem(schema)
        if problem:
            raise KgcError(problem)
        return schema


def _client(engine=None, key=KEY, **settings) -> TestClient:
    api = local_serve_api({**SETTINGS, **settings}, engine if engine is not None else FakeEngine())
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return TestClient(api, headers=headers)


def _post(c, path, body):
    """A body as given: a str is sent as its bytes (escapes and all)."""
    if isinstance(body, (str, bytes)):
        content = body.encode() if isinstance(body, str) else body
        return c.post(path, content=content, headers={"Content-Type": "application/json"})
    return c.post(path, json=body)


def _async_client(engine, **settings) -> httpx.AsyncClient:
    """A client for concurrent requests (TestClient sends one at a time)."""
    api = local_serve_api({**SETTINGS, **settings}, engine)
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://t", headers=headers
    )


async def _concurrently(engine, requests: list[tuple[str, object]]) -> list:
    """Send (path, body) requests all at once; the responses in order."""
    async with _async_client(engine) as c:

        async def one(path, body):
            if isinstance(body, str):
                return await c.post(
                    path, content=body.encode(), headers={"Content-Type": "application/json"}
                )
            return await c.post(path, json=body)

        return await asyncio.gather(*(one(p, b) for p, b in requests))


def _schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


# ----------------------------------------------------------------------------- auth
def test_health_models_and_auth(monkeypatch):
    with _client(key=None) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/v1/models").status_code == 401
    with _client(key="wrong") as c:
        assert c.post("/v1/extract", json={}).status_code == 401
        r = c.post(CHAT, json=VALID)
        assert r.status_code == 401 and "API key" in r.text
    with _client() as c:
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert ids == ["kgc", "kgc:ner", "kgc:re"]
    # keys set in the replica's own environment count too
    monkeypatch.setenv("KGC_FAKE_KEYS", "sk-env-one, sk-env-two")
    with _client(key="sk-env-two", api_key_sha256=[], api_keys_env="KGC_FAKE_KEYS") as c:
        assert c.get("/v1/models").status_code == 200
    with _client(key=None, api_key_sha256=[], auth_disabled=True) as c:
        assert c.get("/v1/models").status_code == 200


def test_no_keys_and_auth_on_is_refused_at_start(monkeypatch):
    from serve.ingress import IngressServer

    monkeypatch.delenv("KGC_API_KEYS", raising=False)
    with pytest.raises(KgcError, match="KGC_API_KEYS"):
        IngressServer(None, {})


def test_auth_is_checked_before_the_body():
    """401 wins over 413 and 422: a stranger learns nothing about the limits or the schema."""
    with _client(key="wrong") as c:
        assert c.post("/v1/extract", content=b"x" * 30_000).status_code == 401
        assert _post(c, CHAT, "{not json").status_code == 401


# ----------------------------------------------------------------------------- /v1/extract
def _labels_answer(prompt) -> str:
    """Each label of the instruction's schema split, with one entity."""
    instruction = json.loads(_text(prompt))
    return json.dumps({label: ["张三"] for label in instruction["schema"]}, ensure_ascii=False)


@pytest.mark.parametrize(
    "task, schema",
    [("NER", ["人物", "地点", "组织"]), ("RE", ["创始人", "作者", "主演", "导演", "妻子"])],
)
def test_extract_endpoint(task, schema):
    """Every schema split of every text goes to the model in one go, on the requested
    adapter; one result per text, in order, with its records and errors."""
    from kgc.serving import (
        ExtractRequest,
        ServeSettings,
        build_instructions,
        request_schema,
        request_texts,
    )

    texts = ["张三在北京创办了星辰公司。", "《喜剧之王》由周星驰主演。"]
    body = {"task": task, "schema": schema, "texts": texts, "model": "kgc:ner", "split_num": 2}
    engine = FakeEngine()
    with _client(engine) as c:
        r = c.post("/v1/extract", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["task"] == task and got["model"] == "kgc:ner"
    assert [x["text"] for x in got["results"]] == texts
    for x in got["results"]:
        assert isinstance(x["records"], list) and isinstance(x["errors"], list)
    req = ExtractRequest.model_validate(body)
    s = ServeSettings.model_validate(SETTINGS)
    want = [
        p
        for t in request_texts(req, s.limits)
        for p, _ in build_instructions(req, t, request_schema(req), s)
    ]
    assert sorted(engine.prompts) == sorted(want) and len(want) > len(texts)  # split
    assert {c["adapter"] for c in engine.calls} == {"ner"}
    assert all(c["max_new_tokens"] == 12 and c["schemas"] is None for c in engine.calls)


def test_extract_merges_the_splits_of_each_text():
    """split_num 1: one model call per label; the answers merged per text as merge_outputs
    merges them (duplicates dropped), a garbled answer kept as that text's error."""

    def answer(prompt):
        label = json.loads(_text(prompt))["schema"][0]
        if label == "组织":
            return "garbage"
        return '{"人物": ["张三"], "地点": ["北京"]}'

    engine = FakeEngine(answer=answer)
    body = {
        "task": "NER",
        "schema": ["人物", "地点", "组织"],
        "text": "张三在北京。",
        "split_num": 1,
    }
    with _client(engine) as c:
        r = c.post("/v1/extract", json=body)
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    outputs = [answer(p) for p in engine.prompts]
    assert len(outputs) == 3
    assert {k: result[k] for k in ("records", "errors")} == merge_outputs("NER", outputs)
    assert len(result["records"]) == 2 and result["errors"]


def test_constrained_extract_sends_each_splits_answer_schema():
    engine = FakeEngine(answer=_labels_answer)
    body = {"task": "NER", "schema": ["人物", "地点"], "text": "张三在北京。", "constrained": True}
    with _client(engine) as c:
        r = c.post("/v1/extract", json=body)
    assert r.status_code == 200 and r.json()["results"][0]["errors"] == [], r.text
    schemas = [s for call in engine.calls for s in call["schemas"]]
    assert schemas and all(isinstance(s, dict) for s in schemas)
    assert engine.compiled == schemas  # compiled on its own before joining a batch


def test_errors():
    engine = FakeEngine()
    with _client(engine) as c:
        r = c.post(CHAT, json={"model": "kgc:nope", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 404
        assert "kgc:ner" in json.dumps(r.json())
        r = c.post(
            "/v1/extract",
            json={"task": "NER", "schema": ["人物"], "text": "x", "model": "../../etc"},
        )
        assert r.status_code == 404
        r = c.post("/v1/extract", json={"schema": ["人物"], "text": "x"})
        assert r.status_code == 422 and "task" in r.text
        r = _post(c, "/v1/extract", b"{not json")
        assert r.status_code == 422
        r = c.post("/v1/extract", json={"task": "NER", "schema": ["人物"], "text": "长" * 3000})
        assert r.status_code == 413 and "2000" in r.text
        r = c.post("/v1/extract", json={"task": "NER", "schema": ["人物"], "text": "x" * 30_000})
        assert r.status_code == 413
        r = c.post("/v1/extract", json={"task": "NER", "schema": ["人物"], "texts": []})
        assert r.status_code == 422 and "empty" in r.text
        r = c.post("/v1/extract", json={"task": "EE", "schema": ["人物"], "text": "x"})
        assert r.status_code == 422 and "schema" in r.text
    assert engine.calls == []


# ----------------------------------------------------------------------------- chat
def _openai(c: TestClient):
    from openai import OpenAI

    return OpenAI(base_url=f"{c.base_url}/v1", api_key=KEY, http_client=c)


def test_chat_completions_shape_and_adapters():
    """The openai client reads the answers; the model name picks the adapter; a single
    message is sent as its text, a conversation as messages; max_tokens is capped."""
    pytest.importorskip("openai")
    engine = FakeEngine()
    with _client(engine) as c:
        api = _openai(c)
        got = api.chat.completions.create(
            model="kgc", max_tokens=5000, messages=[{"role": "user", "content": "你好"}]
        )
        assert got.object == "chat.completion" and got.model == "kgc"
        assert got.id.startswith("chatcmpl-") and got.choices[0].finish_reason == "stop"
        assert got.choices[0].message.role == "assistant"
        assert got.choices[0].message.content == "答：你好"
        turns = [
            {"role": "system", "content": "抽取实体"},
            {"role": "user", "content": "王五在广州。"},
        ]
        got = api.chat.completions.create(model="kgc:re", messages=turns)
        assert got.model == "kgc:re" and got.choices[0].message.content == "答：王五在广州。"
    base, re_call = engine.calls
    assert base["adapter"] is None and base["prompts"] == ["你好"]
    assert base["max_new_tokens"] == 1024  # limits.max_new_tokens
    assert re_call["adapter"] == "re" and re_call["prompts"] == [turns]
    assert re_call["max_new_tokens"] == 12  # the settings' max_new_tokens


def test_chat_stream_and_stop_string():
    """`stream: true` (the openai client's streaming API) gets the same text as a plain call,
    as chunks; `stop` may be a string or a list."""
    pytest.importorskip("openai")
    with _client() as c:
        api = _openai(c)
        msgs = [{"role": "user", "content": "抽取实体：王五在广州。"}]
        plain = api.chat.completions.create(model="kgc", max_tokens=12, messages=msgs)
        text = plain.choices[0].message.content
        chunks = list(
            api.chat.completions.create(model="kgc", max_tokens=12, messages=msgs, stream=True)
        )
        assert chunks[0].choices[0].delta.role == "assistant"
        assert all(ch.object == "chat.completion.chunk" for ch in chunks)
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == text
        assert chunks[-1].choices[0].finish_reason == "stop"
        raw = c.post(CHAT, json={**VALID, "stream": True})
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.text.rstrip().endswith("data: [DONE]")
        cut = text[2]
        for stop in (cut, [cut]):
            got = api.chat.completions.create(model="kgc", max_tokens=12, messages=msgs, stop=stop)
            assert got.choices[0].message.content == text[: text.index(cut)]


def test_chat_response_format_reaches_the_engine():
    """A response schema is compiled on its own, then sent with the prompt; one that does not
    compile is a 422, one that compiles too slowly a 413 naming the limit."""
    schema = {"type": "object", "properties": {"人物": {"type": "array"}}}
    engine = FakeEngine()
    with _client(engine) as c:
        r = c.post(CHAT, json={**VALID, "response_format": _schema_format(schema)})
        assert r.status_code == 200, r.text
        r = c.post(CHAT, json={**VALID, "response_format": {"type": "text"}})
        assert r.status_code == 200, r.text
        bad = _schema_format({"type": "string", "pattern": "("})
        r = c.post(CHAT, json={**VALID, "response_format": bad})
        assert r.status_code == 422 and "response schema" in r.text, r.text
    assert engine.compiled[0] == schema
    assert [call["schemas"] for call in engine.calls] == [[schema], None]
    slow = FakeEngine(compile_delay_s=1.0)
    with _client(slow, limits={**SETTINGS["limits"], "grammar_timeout_s": 0.1}) as c:
        r = c.post(CHAT, json={**VALID, "response_format": _schema_format(schema)})
        assert r.status_code == 413 and "grammar_timeout_s" in r.text, r.text
    assert slow.calls == []


# ----------------------------------------------------------------------------- hostile input
BAD_BODIES = {
    "invalid schema": {
        **VALID,
        "response_format": _schema_format({"type": "object", "properties": {"a": {"type": "?"}}}),
    },
    "bad pattern": {**VALID, "response_format": _schema_format({"type": "string", "pattern": "("})},
    # a lone surrogate, as the JSON escape a client can send
    "lone surrogate": '{"messages": [{"role": "user", "content": "a\\ud800b"}], "max_tokens": 6}',
}


@pytest.mark.parametrize("kind", sorted(BAD_BODIES))
def test_one_bad_request_among_many_fails_alone(kind):
    """S1: 15 valid chat requests sent together with a bad one: every valid one gets 200,
    the bad one a 422 saying why."""
    bodies = [VALID] * 7 + [BAD_BODIES[kind]] + [VALID] * 8
    engine = FakeEngine()
    got = asyncio.run(_concurrently(engine, [(CHAT, b) for b in bodies]))
    assert [r.status_code for r, b in zip(got, bodies) if b is VALID] == [200] * 15
    assert got[7].status_code == 422, got[7].text
    want = "surrogate" if kind == "lone surrogate" else "schema"
    assert want in got[7].text, got[7].text
    assert len(engine.prompts) == 15


MALFORMED = [
    ({"messages": []}, "messages"),
    ({"messages": [1]}, "messages.0"),
    ({"messages": ["hi"]}, "messages.0"),
    ({"messages": [None]}, "messages.0"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({**VALID, "max_tokens": -5}, "max_tokens"),
    ({**VALID, "max_tokens": "abc"}, "max_tokens"),
    ({**VALID, "max_tokens": 1e400}, "max_tokens"),  # json.dumps writes Infinity
    ({**VALID, "max_tokens": [1]}, "max_tokens"),
    ({**VALID, "max_tokens": 2.5}, "max_tokens"),
    ({**VALID, "temperature": float("nan")}, "temperature"),
    ({**VALID, "temperature": float("inf")}, "temperature"),
    ({**VALID, "temperature": -1}, "temperature"),
    ({**VALID, "top_p": 0}, "top_p"),
    ({**VALID, "n": 1000}, "n"),
    ({**VALID, "stop": 5}, "stop"),
    ({**VALID, "stop": [1, 2]}, "stop"),
    ({**VALID, "model": 123}, "model"),
    ({**VALID, "model": ["kgc"]}, "model"),
    ({**VALID, "response_format": "json"}, "response_format"),
    ({**VALID, "tools": [{"type": "function"}]}, "tools"),
]


@pytest.fixture(scope="module")
def shared_client():
    with _client() as c:
        yield c


@pytest.mark.parametrize("body, field", MALFORMED, ids=[f for _, f in MALFORMED])
def test_malformed_chat_fields_are_422_naming_the_field(shared_client, body, field):
    """S6: every malformed field is a 422 whose error names it (never a 500)."""
    r = _post(shared_client, CHAT, json.dumps(body))
    assert r.status_code == 422, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["field"] == field, err


def test_malformed_bodies_and_extract_fields():
    with _client() as c:
        deep = "[" * 10_000 + "]" * 10_000
        r = _post(c, CHAT, deep)
        assert r.status_code == 422 and "nested deeper" in r.text, r.text
        r = c.post(
            "/v1/extract", json={"task": "NER", "schema": ["人物"], "text": "x", "split_num": 0}
        )
        assert r.status_code == 422 and "split_num" in r.text, r.text
        r = _post(c, "/v1/extract", '{"task": "NER", "schema": ["\\udc00"], "text": "x"}')
        assert r.status_code == 422 and "schema" in r.text and "surrogate" in r.text, r.text
        r = _post(c, CHAT, b"\xff\xfe{")
        assert r.status_code == 422, r.text
        r = c.post(CHAT, json={"messages": [{"role": "user", "content": "x"}] * 300})
        assert r.status_code == 413 and r.json()["error"]["field"] == "messages", r.text


def test_extract_model_calls_are_bounded_up_front():
    """S4: 64 texts × 200 labels (each within its limit) would need 3,200 model calls: a 413
    naming the limit, before any model call; a valid request after it is served."""
    engine = FakeEngine()
    body = {"task": "NER", "schema": [f"类型{i}" for i in range(200)], "texts": ["张三。"] * 64}
    with _client(engine) as c:
        r = c.post("/v1/extract", json=body)
        assert r.status_code == 413 and "max_model_calls" in r.text, r.text
        assert engine.calls == []
        ok = c.post("/v1/extract", json={"task": "NER", "schema": ["人物"], "text": "张三。"})
        assert ok.status_code == 200, ok.text


def test_body_limit_counts_bytes_read_chunked_or_not():
    """S5: a body sent with Transfer-Encoding: chunked (no Content-Length) is cut off at the
    limit with a 413 (the limit here is 20,000 bytes); a declared Content-Length over it is
    refused before the body is read."""

    async def chunks():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(400):
            yield b"x" * 1000
        yield b'"}]}'

    async def send() -> httpx.Response:
        async with _async_client(FakeEngine()) as c:
            headers = {"Content-Type": "application/json"}
            req = c.build_request("POST", CHAT, content=chunks(), headers=headers)
            assert "content-length" not in req.headers
            return await c.send(req)

    r = asyncio.run(send())
    assert r.status_code == 413 and "max_body_bytes" in r.text, r.text
    with _client() as c:
        r = c.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 30_000}]})
        assert r.status_code == 413 and "30" in r.text and "max_body_bytes" in r.text, r.text


def test_large_response_schema_is_refused_before_compiling():
    """S3: a schema beyond limits.max_schema_bytes (4,000 here) is a 413 and never reaches the
    grammar compiler; a valid request after it is served."""
    big = {"type": "object", "properties": {f"k{i}": {"type": "string"} for i in range(300)}}
    engine = FakeEngine()
    with _client(engine) as c:
        r = c.post(CHAT, json={**VALID, "response_format": _schema_format(big)})
        assert r.status_code == 413 and "max_schema_bytes" in r.text, r.text
        assert c.post(CHAT, json=VALID).status_code == 200
    assert engine.compiled == []


# ----------------------------------------------------------------------------- the model side
def _server(engine, **settings):
    from serve.model import ModelServer

    return ModelServer({**SETTINGS, **settings}, engine=engine)


class FakeContinuousEngine(FakeEngine):
    """The HF engine's continuous path (`serve(take)`), with steps of `step_s`: records how
    many requests each decode started with."""

    serves_continuously = True

    def __init__(self, step_s=0.01, **kw):
        super().__init__(**kw)
        self.step_s, self.starts = step_s, []

    def serve(self, take):
        running = take(16)
        self.starts.append(len(running))
        while running:
            time.sleep(self.step_s)
            for r in running:
                r.done(self.answer(r.prompt), None)
            running = take(16)


def _arrivals(server, n: int, spread_s: float) -> tuple[list[dict], float]:
    """`n` requests arriving `spread_s` apart: their results and the time to the last."""

    async def one(i):
        await asyncio.sleep(spread_s * i)
        return await server.generate(None, f"文本{i}", 8)

    async def go():
        t0 = time.monotonic()
        out = await asyncio.gather(*(one(i) for i in range(n)))
        return out, time.monotonic() - t0

    return asyncio.run(go())


def test_requests_arriving_together_start_together():
    """From idle, the model server gathers requests while they keep arriving (gaps under
    batch_wait_s): one decode starts with all of them, not one per arrival."""
    engine = FakeContinuousEngine()
    out, _ = _arrivals(_server(engine, batch_wait_s=0.05), 6, 0.005)
    assert engine.starts == [6]
    assert [o["text"] for o in out] == [f"答：文本{i}" for i in range(6)]
    # without a window the first arrival starts alone
    engine = FakeContinuousEngine()
    _arrivals(_server(engine, batch_wait_s=0.0), 6, 0.005)
    assert engine.starts[0] == 1
    # a full batch starts at once; a lone request waits one quiet gap at most
    engine = FakeContinuousEngine()
    _, took = _arrivals(_server(engine, batch_wait_s=0.5, batch_size=3), 3, 0.0)
    assert engine.starts[0] == 3 and took < 0.4
    engine = FakeContinuousEngine()
    _, took = _arrivals(_server(engine, batch_wait_s=0.1), 1, 0.0)
    assert engine.starts == [1] and 0.1 <= took < 0.4


def test_model_deployment_takes_an_injected_engine(monkeypatch):
    import serve.app as app
    import serve.model as model

    def no_build(s):
        raise AssertionError("the engine was given")

    monkeypatch.setattr(model, "engine_from_settings", no_build)
    engine = FakeEngine()
    assert model.ModelServer(SETTINGS, engine=engine).engine is engine
    assert issubclass(app.ModelDeployment.func_or_class, model.ModelServer)
    assert app.ModelDeployment.name == "ModelDeployment" and app.Ingress.name == "Ingress"


def test_a_failing_item_fails_alone_in_its_batch():
    """A group whose engine call fails is retried item by item: only the bad item fails (500
    for an engine error, 422 for a KgcError); groups are per (adapter, max_new_tokens)."""

    class Picky(FakeEngine):
        def generate(self, prompts, config, schemas=None):
            if any("refuse" in p for p in prompts):
                raise KgcError("this prompt is refused")
            return super().generate(prompts, config, schemas)

    engine = Picky(fail_on="boom")
    items = [
        (None, "a", 8, None),
        (None, "boom", 8, None),
        ("ner", "b", 8, None),
        (None, "c", 8, None),
        ("ner", "refuse", 8, None),
        (None, "d", 4, None),
    ]
    out = asyncio.run(_server(engine).run_batch(items))
    texts = [r.get("text") for r in out]
    assert texts[0] == "答：a" and texts[3] == "答：c" and texts[2] == "答：b"
    assert out[1]["status"] == 500 and "boom" in out[1]["error"]
    assert out[4] == {"error": "this prompt is refused", "status": 422}
    assert out[5] == {"text": "答：d", "prompt_tokens": 1, "completion_tokens": 3}
    groups = [(c["adapter"], c["prompts"], c["max_new_tokens"]) for c in engine.calls]
    assert groups[0] == (None, ["a", "boom", "c"], 8)  # one call per group, then one by one
    assert groups[1:4] == [(None, ["a"], 8), (None, ["boom"], 8), (None, ["c"], 8)]
    assert groups[4:] == [("ner", ["b"], 8), (None, ["d"], 4)]  # "refuse" never got this far


def test_engine_runs_off_the_event_loop_one_call_at_a_time():
    """The blocking engine call runs on the replica's engine thread: the event loop answers
    other requests while the model decodes, and concurrent requests reach the engine one at
    a time."""
    engine = FakeEngine(delay_s=0.6)

    async def go():
        async with _async_client(engine) as c:
            slow = [asyncio.create_task(c.post(CHAT, json=VALID)) for _ in range(2)]
            while not engine.calls:  # the first engine call has started
                await asyncio.sleep(0.01)
            health = await c.get("/healthz")
            decoding = not any(t.done() for t in slow)
            return health, decoding, await asyncio.gather(*slow)

    health, decoding, answers = asyncio.run(go())
    assert health.status_code == 200 and decoding  # answered while the engine was busy
    assert [r.status_code for r in answers] == [200] * 2
    assert len(engine.calls) == 2 and engine.overlaps == 0
    assert all(name.startswith("kgc-engine") for name in engine.threads)


def test_a_cancelled_batch_leaves_engine_calls_serialized():
    """A batch cancelled while its engine call runs does not let the next batch's call start
    beside it (the engine thread finishes the first call, then runs the next)."""
    engine = FakeEngine(delay_s=0.3)
    server = _server(engine)

    async def go():
        first = asyncio.create_task(server.run_batch([(None, "first", 8, None)]))
        await asyncio.sleep(0.05)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await server.run_batch([(None, "second", 8, None)])

    assert [r["text"] for r in asyncio.run(go())] == ["答：second"]
    assert engine.prompts == ["first", "second"] and engine.overlaps == 0


def test_lost_replica_is_503_and_failures_cancel_the_rest():
    """A request whose model replica dies gets 503 + Retry-After; when one of a request's
    model calls fails, the others are cancelled (no orphaned calls)."""
    from fastapi import HTTPException
    from ray.exceptions import ActorDiedError

    from serve.calls import call_model, gather_or_cancel
    from serve.ingress import IngressServer, create_api

    class Response:
        def __init__(self, fail=False, delay=0.0):
            self.fail, self.delay, self.cancelled = fail, delay, False

        def cancel(self):
            self.cancelled = True

        def __await__(self):
            async def run():
                await asyncio.sleep(self.delay)
                if self.fail:
                    raise ActorDiedError()
                return {"text": "ok"}

            return run().__await__()

    calls = [Response(delay=5), Response(fail=True), Response(delay=5)]
    with pytest.raises(ActorDiedError):
        asyncio.run(gather_or_cancel(calls))
    assert calls[0].cancelled and calls[2].cancelled

    class Lost:
        class generate:  # noqa: N801 — mimics a Serve handle's method
            @staticmethod
            def remote(*args):
                return Response(fail=True)

    with pytest.raises(HTTPException) as err:
        asyncio.run(call_model(Lost(), [(None, "x", 4, None)], retry_after_s=2))
    assert err.value.status_code == 503 and err.value.headers["Retry-After"] == "2"
    api = create_api(IngressServer(Lost(), {**SETTINGS, "retry_after_s": 2}))
    with TestClient(api, headers={"Authorization": f"Bearer {KEY}"}) as c:
        r = c.post(CHAT, json=VALID)
        assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
        r = c.post("/v1/extract", json={"task": "NER", "schema": ["人物"], "text": "张三。"})
        assert r.status_code == 503, r.text


class StreamingEngine(FakeEngine):
    """A FakeEngine that streams its answers a character at a time through `on_text`; with
    `wait_first`, it blocks after the first piece until the test has received it (so a
    server that sent nothing before the end would time out here)."""

    def __init__(self, wait_first=False):
        super().__init__()
        self.wait_first = wait_first
        self.first_seen = threading.Event()

    def generate(self, prompts, config, schemas=None, on_text=None):
        texts = super().generate(prompts, config, schemas)
        for i, text in enumerate(texts if on_text is not None else []):
            for k, ch in enumerate(text):
                on_text(i, ch)
                if k == 0 and self.wait_first and not self.first_seen.wait(10):
                    raise RuntimeError("the first piece did not reach the caller in time")
        return texts


def test_model_stream_sends_pieces_before_the_answer_ends():
    from serve.model import ModelServer

    engine = StreamingEngine(wait_first=True)

    async def collect():
        server = ModelServer(SETTINGS, engine=engine)
        got = []
        async for item in server.stream(None, "张三在北京。", 12, None):
            assert "text" in item, item
            got.append(item["text"])
            engine.first_seen.set()  # the engine goes on only once this piece arrived
        return got

    got = asyncio.run(collect())
    assert got == list("答：张三在北京。")


def test_chat_stream_chunks_are_the_engines_pieces():
    """With a streaming engine each piece is its own chunk; joined they are the plain
    answer; a stop string cuts the stream as it cuts a plain answer."""
    pytest.importorskip("openai")
    with _client(StreamingEngine()) as c:
        api = _openai(c)
        msgs = [{"role": "user", "content": "王五在广州。"}]
        text = api.chat.completions.create(model="kgc", messages=msgs).choices[0].message.content
        chunks = list(api.chat.completions.create(model="kgc", messages=msgs, stream=True))
        content = [ch.choices[0].delta.content for ch in chunks if ch.choices[0].delta.content]
        assert "".join(content) == text and len(content) == len(text)
        assert chunks[-1].choices[0].finish_reason == "stop"
        cut = list(api.chat.completions.create(model="kgc", messages=msgs, stream=True, stop="广"))
        assert "".join(ch.choices[0].delta.content or "" for ch in cut) == text[: text.index("广")]
        # a schema that cannot compile fails before any chunk: a plain 422
        bad = {"type": "object", "properties": {"x": {"type": "nonsense"}}}
        r = c.post(CHAT, json={**VALID, "stream": True, "response_format": _schema_format(bad)})
        assert r.status_code == 422 and "response schema" in r.json()["error"]["message"]


# ------------------------------------------------- usage, /v1/completions, SPO schema items
def test_usage_counts_and_finish_reason():
    """`usage` adds up the engine's token counts (here one token per character): the chat
    answer, every schema split of /v1/extract; an answer that fills the budget ends with
    finish_reason "length"."""
    pytest.importorskip("openai")
    with _client() as c:
        api = _openai(c)
        got = api.chat.completions.create(
            model="kgc", max_tokens=50, messages=[{"role": "user", "content": "你好"}]
        )
        assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (2, 4)  # "答：你好"
        assert got.usage.total_tokens == 6 and got.choices[0].finish_reason == "stop"
        got = api.chat.completions.create(
            model="kgc", max_tokens=4, messages=[{"role": "user", "content": "你好"}]
        )
        assert got.choices[0].finish_reason == "length"
        body = {"task": "NER", "schema": ["人物", "地点"], "text": "张三在北京。", "split_num": 1}
        r = c.post("/v1/extract", json=body)
    assert r.status_code == 200, r.text
    u = r.json()["usage"]
    assert u["completion_tokens"] > 0 and u["prompt_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_completions_take_raw_prompts():
    """/v1/completions with the official client: the prompt reaches the engine as raw text
    (no chat template), a list gives one choice per prompt in order, `stop` cuts, usage is
    counted, streaming gives the same text."""
    pytest.importorskip("openai")
    engine = FakeEngine()
    oneke = "[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n{}[/INST]"
    with _client(engine) as c:
        api = _openai(c)
        got = api.completions.create(model="kgc", prompt=oneke, max_tokens=100, temperature=0)
        assert got.object == "text_completion" and got.id.startswith("cmpl-")
        assert got.choices[0].text == "答：" + oneke and got.choices[0].finish_reason == "stop"
        assert got.usage.prompt_tokens == len(oneke)
        assert got.usage.completion_tokens == len(oneke) + 2
        two = api.completions.create(model="kgc:ner", prompt=["甲", "乙乙"], max_tokens=100)
        assert [(ch.index, ch.text) for ch in two.choices] == [(0, "答：甲"), (1, "答：乙乙")]
        cut = api.completions.create(model="kgc", prompt="甲乙丙", stop="乙", max_tokens=100)
        assert cut.choices[0].text == "答：甲"
        chunks = list(api.completions.create(model="kgc", prompt="甲乙丙", stream=True))
        assert "".join(ch.choices[0].text for ch in chunks) == "答：甲乙丙"
    assert engine.calls[0]["prompts"] == [{"raw": oneke}]
    listed = [c for c in engine.calls if c["adapter"] == "ner"]
    assert sorted(_text(p) for c in listed for p in c["prompts"]) == ["乙乙", "甲"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"prompt": "x", "n": 2}, "n"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x", "logprobs": 2}, "logprobs"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": []}, "prompt"),
        ({"prompt": ["a", ""]}, "prompt[1]"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": ["a", "b"], "stream": True}, "stream"),
    ],
)
def test_completions_refuse_what_they_would_get_wrong(shared_client, body, field):
    r = shared_client.post("/v1/completions", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_completions_limits():
    with _client() as c:
        r = c.post("/v1/completions", json={"prompt": "x" * 2001})
        assert r.status_code == 413 and r.json()["error"]["field"] == "prompt"
        r = c.post("/v1/completions", json={"prompt": ["x"] * 65})
        assert r.status_code == 413 and "at most 64" in r.text


def test_spo_schema_items_as_objects():
    """An SPO schema item may be IEPile's object form; it builds the same instructions as
    the joined label. A malformed object is a 422 naming the item."""
    engine = FakeEngine()
    text = "张三出生于北京。"
    obj = {"subject_type": "人物", "predicate": "出生地", "object_type": "地点"}
    with _client(engine) as c:
        a = c.post("/v1/extract", json={"task": "SPO", "schema": [obj], "text": text})
        b = c.post(
            "/v1/extract", json={"task": "SPO", "schema": ["人物_出生地_地点"], "text": text}
        )
        assert a.status_code == b.status_code == 200, a.text
        bad = [
            (
                {"task": "SPO", "schema": [{"subject_type": "人物", "predicate": "x"}]},
                "object_type",
            ),
            ({"task": "SPO", "schema": [{**obj, "object_type": "城_市"}]}, "schema[0]"),
            ({"task": "NER", "schema": ["人物", obj]}, "schema[1]"),
        ]
        for body, needle in bad:
            r = c.post("/v1/extract", json={**body, "text": text})
            assert r.status_code == 422 and needle in r.text, r.text
    first, second = engine.calls
    assert first["prompts"] == second["prompts"]
    assert '"subject_type": "人物"' in first["prompts"][0]


def test_constrained_budget_below_the_shortest_answer_is_422():
    """A constrained request whose token budget cannot hold even the shortest answer of its
    schema is refused before it reaches a batch, naming the minimum."""

    class Measured(FakeEngine):
        def min_answer_tokens(self, schema):
            return 12

    engine = Measured(answer=_labels_answer)
    body = {"task": "NER", "schema": ["人物"], "text": "张三在北京。", "constrained": True}
    with _client(engine) as c:
        r = c.post("/v1/extract", json={**body, "max_new_tokens": 11})
        assert r.status_code == 422 and "at least 12" in r.text, r.text
        r = c.post("/v1/extract", json={**body, "max_new_tokens": 12})
        assert r.status_code == 200, r.text
        fmt = _schema_format({"type": "object"})
        r = c.post(CHAT, json={**VALID, "max_tokens": 3, "response_format": fmt})
        assert r.status_code == 422 and "at least 12" in r.text
    assert len(engine.calls) == 1


# ------------------------------------------------------------- an async engine (vLLM's)
class AsyncFakeEngine:
    """Stands in for AsyncVLLMEngine: one awaitable call per request, its pieces reported
    as they are made; no batch `generate` (the replica must not use it). Records the
    requests running at once, the adapters (name, path) it was given, and cancellations."""

    serves_async = True

    def __init__(self):
        self.running = self.most = 0
        self.adapters: list = []
        self.cancelled = 0

    def generate(self, *_a, **_k):
        raise AssertionError("an async engine is not called in batches")

    async def generate_async(self, prompt, config, schema=None, adapter=None, on_text=None):
        self.running += 1
        self.most = max(self.most, self.running)
        self.adapters.append(adapter)
        try:
            text = _text(prompt)
            if "坏" in text:
                raise KgcError("a request the engine refuses")
            answer = f"答：{text}"
            for ch in answer:
                await asyncio.sleep(0.01 if "慢" not in text else 0.5)
                if on_text is not None:
                    on_text(ch)
            return answer, 7, len(answer)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


def test_an_async_engine_serves_each_request_as_its_own_call():
    """On an async engine (vLLM's) the replica awaits one engine call per request, all at
    once (neither the engine thread nor batches), with the named adapter's (name, path);
    the engine's counts are `usage`; a refused request fails alone; a stream is the
    engine's pieces; a stream whose consumer leaves cancels its engine call."""
    from serve.model import ModelServer

    engine = AsyncFakeEngine()
    msgs = [f"张{i}在北京。" for i in range(4)] + ["坏"]
    reqs = [
        (CHAT, {**VALID, "model": "kgc:ner" if i % 2 else "kgc", "messages": [
            {"role": "user", "content": m}]}) for i, m in enumerate(msgs)
    ]  # fmt: skip
    got = asyncio.run(_concurrently(engine, reqs))
    assert [r.status_code for r in got] == [200] * 4 + [422], [r.text for r in got]
    assert engine.most == 5  # all in the engine at once
    assert got[1].json()["choices"][0]["message"]["content"] == "答：张1在北京。"
    assert got[0].json()["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 8,
        "total_tokens": 15,
    }
    assert ("ner", "/adapters/ner") in engine.adapters and None in engine.adapters

    async def stream(text, leave_after=None):
        server = ModelServer(SETTINGS, engine=engine)
        pieces = []
        gen = server.stream(None, text, 12, None)
        async for item in gen:
            pieces.append(item["text"])
            if leave_after and len(pieces) == leave_after:
                await gen.aclose()  # the client left
                break
        await asyncio.sleep(0.05)
        return pieces

    assert asyncio.run(stream("王五。")) == list("答：王五。")
    assert asyncio.run(stream("慢慢来。", leave_after=1)) == ["答"]
    assert engine.cancelled == 1 and engine.running == 0
