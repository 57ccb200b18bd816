"""The shared client layer against a replaying OpenAI-compatible server on 127.0.0.1 (real
HTTP, standard library): retries, Retry-After, fatal errors, timeouts, the disk cache, the API
key from the environment, rate limits, order under concurrency."""

from __future__ import annotations

import json
from email.utils import formatdate

import pytest

from kgc.errors import KgcError
from kgc.icl.client import (
    ChatClient,
    ChatParams,
    Pacer,
    estimate_tokens,
    request_key,
    retry_after,
)
from kgc.icl.config import ClientConfig
from tests.support.replay import ReplayServer

pytestmark = pytest.mark.timeout(60)
MSGS = [{"role": "user", "content": "Text: Ada went to Paris."}]


@pytest.fixture
def srv():
    with ReplayServer([{"match": "Ada", "reply": '{"person": ["Ada"]}'}], default="?") as s:
        yield s


def make(srv, tmp_path=None, sleeps=None, **kw) -> ChatClient:
    cfg = ClientConfig(
        base_url=srv.base_url,
        model="replay",
        allow_no_key=True,
        cache_dir=str(tmp_path / "cache") if tmp_path else None,
        backoff_s=0.01,
        max_backoff_s=5.0,
        **kw,
    )
    if sleeps is None:
        return ChatClient(cfg)
    return ChatClient(cfg, sleep=lambda s: sleeps.append(s))


def test_429_with_retry_after_then_200_gives_one_result(srv):
    srv.fail(429, {"Retry-After": "0.2"}, {"error": {"message": "slow down"}})
    sleeps: list[float] = []
    client = make(srv, sleeps=sleeps)
    [c] = client.chat_many([MSGS], ChatParams())
    assert c.text == '{"person": ["Ada"]}' and c.error is None
    assert c.attempts == 2 and srv.count() == 2  # one retry, one answer, no duplicate
    assert sleeps == [0.2]  # the server's Retry-After was honoured
    assert client.stats["retries"] == 1


def test_retry_after_is_capped_and_parsed():
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


def test_retry_after_http_date_and_header_case():
    now = 1_700_000_000.0
    date = formatdate(now + 30, usegmt=True)  # e.g. "Tue, 14 Nov 2023 22:13:50 GMT"
    assert retry_after({"Retry-After": date}, now=lambda: now) == pytest.approx(30.0)
    assert retry_after({"Retry-After": "7"}) == 7.0  # a plain dict with the header's own case
    assert retry_after({"Retry-After": "7", "retry-after-ms": "1500"}) == 1.5  # ms wins
    assert retry_after({"retry-after-ms": "x", "retry-after": "2"}) == 2.0
    assert retry_after({"retry-after": "-3"}) == 0.0
    assert retry_after(None) is None


def test_no_key_sends_no_authorization_header(srv):
    make(srv).chat(MSGS, ChatParams())
    assert srv.requests[0]["auth"] is None


def test_unexpected_answer_is_an_error_not_retried(srv):
    srv.fail(200, body={"choices": []})
    c = make(srv, sleeps=[]).chat(MSGS, ChatParams())
    assert c.error == "the response has no choices[0].message" and c.attempts == 1
    assert srv.count() == 1


def test_connection_refused_is_retried_then_reported():
    with ReplayServer() as s:
        url = s.base_url
    client = ChatClient(
        ClientConfig(base_url=url, model="m", allow_no_key=True, cache_dir=None, max_retries=2),
        sleep=lambda _s: None,
    )
    c = client.chat(MSGS, ChatParams())
    assert c.attempts == 3 and c.error.startswith(f"cannot reach {url}")


def test_response_format_is_sent_and_keyed(srv):
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {}}}
    client = make(srv)
    client.chat(MSGS, ChatParams(response_format=fmt))
    assert srv.requests[0]["body"]["response_format"] == fmt
    plain = ChatParams()
    assert client.chat_key(MSGS, plain) != client.chat_key(MSGS, ChatParams(response_format=fmt))
    hash(ChatParams(response_format=fmt))  # still usable as a dict key


def test_server_errors_back_off_then_succeed(srv):
    srv.fail(500)
    srv.fail(503)
    sleeps: list[float] = []
    c = make(srv, sleeps=sleeps, max_retries=3).chat(MSGS, ChatParams())
    assert c.text.startswith("{") and c.attempts == 3
    assert len(sleeps) == 2 and 0.005 <= sleeps[0] <= 0.01 and 0.01 <= sleeps[1] <= 0.02


def test_retries_exhausted_is_an_error_result_not_an_exception(srv):
    for _ in range(3):
        srv.fail(502)
    c = make(srv, sleeps=[], max_retries=2).chat(MSGS, ChatParams())
    assert c.text == "" and "HTTP 502" in c.error and c.attempts == 3
    assert srv.count() == 3


def test_client_error_is_not_retried(srv):
    srv.fail(400, body={"error": {"message": "context too long"}})
    c = make(srv, sleeps=[]).chat(MSGS, ChatParams())
    assert c.attempts == 1 and "HTTP 400" in c.error and "context too long" in c.error


def test_auth_failure_stops_the_run(srv):
    srv.fail(401, body={"error": {"message": "bad key"}})
    with pytest.raises(KgcError, match=r"HTTP 401.*refused the API key.*OPENAI_API_KEY"):
        make(srv, sleeps=[]).chat(MSGS, ChatParams())


def test_timeout_is_retried(srv):
    srv.stall(4.0)
    c = make(srv, sleeps=[], timeout_s=1.5, max_retries=1).chat(MSGS, ChatParams())
    assert c.error is None and c.attempts == 2 and c.text.startswith("{")


def test_cache_hit_makes_no_http_call(srv, tmp_path):
    first = make(srv, tmp_path).chat(MSGS, ChatParams(max_tokens=20))
    assert srv.count() == 1 and not first.cached
    again = make(srv, tmp_path).chat(MSGS, ChatParams(max_tokens=20))  # a new process, same disk
    assert again.cached and again.text == first.text and again.attempts == 0
    assert srv.count() == 1
    make(srv, tmp_path).chat(MSGS, ChatParams(max_tokens=21))  # other parameters: a miss
    assert srv.count() == 2


def test_cache_key_covers_endpoint_model_messages_and_params():
    base = request_key("http://a/v1", "m", "chat", {"messages": MSGS, "max_tokens": 5})
    assert base == request_key("http://a/v1/", "m", "chat", {"max_tokens": 5, "messages": MSGS})
    for other in (
        request_key("http://b/v1", "m", "chat", {"messages": MSGS, "max_tokens": 5}),
        request_key("http://a/v1", "m2", "chat", {"messages": MSGS, "max_tokens": 5}),
        request_key("http://a/v1", "m", "chat", {"messages": MSGS[:0], "max_tokens": 5}),
        request_key("http://a/v1", "m", "chat", {"messages": MSGS, "max_tokens": 6}),
    ):
        assert other != base


def test_failures_are_not_cached(srv, tmp_path):
    srv.fail(400)
    assert make(srv, tmp_path, sleeps=[]).chat(MSGS, ChatParams()).error
    assert make(srv, tmp_path).chat(MSGS, ChatParams()).error is None
    assert srv.count() == 2


def test_key_from_environment_and_never_cached(srv, tmp_path, monkeypatch):
    monkeypatch.setenv("KGC_ICL_TEST_KEY", "sk-secret-123")
    cfg = ClientConfig(
        base_url=srv.base_url,
        model="replay",
        api_key_env="KGC_ICL_TEST_KEY",
        cache_dir=str(tmp_path / "c"),
    )
    ChatClient(cfg).chat(MSGS, ChatParams())
    assert srv.requests[0]["auth"] == "Bearer sk-secret-123"
    blobs = [p.read_text() for p in (tmp_path / "c").rglob("*.json")]
    assert len(blobs) == 1 and "sk-secret-123" not in blobs[0]
    monkeypatch.delenv("KGC_ICL_TEST_KEY")
    with pytest.raises(KgcError, match="KGC_ICL_TEST_KEY.*is not set"):
        ChatClient(cfg)


def test_order_is_kept_under_concurrency():
    rules = [{"match": f"item {i} ", "reply": str(i)} for i in range(24)]
    with ReplayServer(rules, latency_s=0.02) as s:
        client = make(s, concurrency=8)
        prompts = [[{"role": "user", "content": f"item {i} please"}] for i in range(24)]
        out = client.chat_many(prompts, ChatParams())
    assert [c.text for c in out] == [str(i) for i in range(24)]
    assert s.count() == 24


def test_pacer_spaces_requests_and_tokens():
    now = [100.0]
    p = Pacer(60, clock=lambda: now[0])  # one per second
    assert [p.reserve() for _ in range(3)] == [0.0, 1.0, 2.0]
    now[0] = 110.0  # idle time is not banked as a burst
    assert p.reserve() == 0.0 and p.reserve() == 1.0
    t = Pacer(600, clock=lambda: 0.0)  # 10 tokens a second
    assert t.reserve(50) == 0.0 and t.reserve(10) == 5.0
    t.adjust(-20)  # the first request used 20 tokens fewer than reserved
    assert t.reserve(1) == 4.0


def test_rate_limit_waits_are_taken(srv):
    sleeps: list[float] = []
    cfg = ClientConfig(
        base_url=srv.base_url,
        model="replay",
        allow_no_key=True,
        cache_dir=None,
        requests_per_minute=600,
        concurrency=1,
    )
    client = ChatClient(cfg, sleep=sleeps.append, clock=lambda: 50.0)  # time stands still
    client.chat_many([MSGS] * 3, [ChatParams(salt=str(i)) for i in range(3)])
    assert sleeps == pytest.approx([0.1, 0.2]) and srv.count() == 3


def test_token_estimate_counts_cjk_per_character():
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("张三在北京") == 5


def test_embeddings_are_cached(srv, tmp_path):
    client = make(srv, tmp_path, embedding_model="emb")
    v1 = client.embed(["Ada went to Paris", "Bob stayed home"])
    v2 = make(srv, tmp_path, embedding_model="emb").embed(["Bob stayed home"])
    assert len(v1) == 2 and len(v1[0]) == 64 and v2[0] == v1[1]
    assert srv.count("/v1/embeddings") == 1
    body = next(r["body"] for r in srv.requests if r["path"] == "/v1/embeddings")
    assert body["model"] == "emb" and json.dumps(body["input"]) == json.dumps(
        ["Ada went to Paris", "Bob stayed home"]
    )
