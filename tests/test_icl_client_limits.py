"""What one ICL request may cost, against hostile servers on 127.0.0.1: an answer's size is
capped (`client.max_response_bytes`, read in chunks), one deadline bounds a whole attempt
(`client.timeout_s`, however slowly the bytes come), and a null answer is an error, not "".
"""

from __future__ import annotations

import time
import tracemalloc

import pytest
from test_icl_client import make as make_client

from kgc.icl.client import ChatClient, ChatParams
from tests.support.replay import ReplayServer

pytestmark = pytest.mark.timeout(60)
MSGS = [{"role": "user", "content": "Text: Ada went to Paris."}]


@pytest.fixture
def srv():
    with ReplayServer([{"match": "Ada", "reply": '{"person": ["Ada"]}'}]) as s:
        yield s


def make(srv, tmp_path=None, **kw) -> ChatClient:
    """test_icl_client's client, its sleeps recorded instead of slept."""
    return make_client(srv, tmp_path, sleeps=[], **kw)


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
def test_huge_answer_is_refused_fast_without_reading_it(srv, length):
    srv.huge(64 << 20, length=length)  # 64 MB; the cap is 1 MB
    client = make(srv, max_response_bytes=1 << 20, max_retries=3)
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        c = client.chat(MSGS, ChatParams())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    took = time.monotonic() - t0
    assert "over client.max_response_bytes (1048576 bytes)" in c.error, c.error
    assert "raise client.max_response_bytes" in c.error
    assert c.attempts == 1 and srv.count() == 1  # as large again on a retry: not retried
    assert took < 10, took
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MB held for a 1 MB cap"
    assert make(srv, max_response_bytes=1 << 20).chat(MSGS, ChatParams()).error is None


@pytest.mark.parametrize("headers", [False, True], ids=["body", "headers"])
def test_a_trickling_server_cannot_stretch_an_attempt(srv, headers):
    srv.trickle(0.5, headers=headers)  # a byte every 0.5 s: each read is quick, the sum is not
    t0 = time.monotonic()
    c = make(srv, timeout_s=2, max_retries=0).chat(MSGS, ChatParams())
    took = time.monotonic() - t0
    assert c.error is not None and c.error.startswith("timed out after 2.0 s (client.timeout_s")
    assert 1.5 < took < 6, took


def test_null_content_is_an_error_and_not_cached(srv, tmp_path):
    srv.fail(
        200,
        body={
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": None, "refusal": "no"},
                }
            ]
        },
    )
    c = make(srv, tmp_path).chat(MSGS, ChatParams())
    assert c.text == "" and c.attempts == 1
    assert c.error == (
        "the response's choices[0].message.content is null, not text "
        "(finish_reason 'stop', refusal 'no')"
    )
    assert not list((tmp_path / "cache").rglob("*.json"))  # nothing cached
    again = make(srv, tmp_path).chat(MSGS, ChatParams())  # asked again, answered this time
    assert again.error is None and again.text == '{"person": ["Ada"]}' and not again.cached
    assert srv.count() == 2
