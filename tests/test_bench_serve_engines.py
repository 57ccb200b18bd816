"""bench/serve_load.py --engines without vLLM: its client against a replaying OpenAI server
(answers kept in request order, a failed request kept with its status, `usage` read), and
the summary it prints (identical share against the reference, schema fit, ratios, the
prompt-token warning) on fakes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "array", "items": {"type": "string"}, "maxItems": 1}},
    "required": ["a"],
    "additionalProperties": False,
}


def _bench():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import serve_load
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return serve_load


def _result(text, status=200, prompt_tokens=10, finish="stop", seconds=0.5):
    return {"status": status, "text": text, "prompt_tokens": prompt_tokens,
            "completion_tokens": 4 if status == 200 else 0, "finish_reason": finish,
            "seconds": seconds, "error": None}  # fmt: skip


def test_drive_keeps_request_order_statuses_and_usage():
    from tests.support.replay import ReplayServer

    sl = _bench()
    prompts = [f"prompt {i}" for i in range(6)]
    bodies = sl.chat_bodies(prompts, 8, [SCHEMA] * 6)
    sent = json.loads(bodies[3])
    assert sent["max_tokens"] == 8 and sent["temperature"] == 0
    assert sent["messages"] == [{"role": "user", "content": "prompt 3"}]
    assert sent["response_format"]["json_schema"]["schema"] == SCHEMA
    assert "response_format" not in json.loads(sl.chat_bodies(prompts, 8)[3])
    rules = [{"match": p, "reply": f"answer {i}"} for i, p in enumerate(prompts)]
    with ReplayServer(rules, api_key=sl.KEY) as srv:
        srv.stall(0.5)  # the first request to arrive answers last
        srv.fail(500)  # the second fails
        wall, out = asyncio.run(sl.drive(srv.base_url[: -len("/v1")], bodies, 3))
    assert wall > 0 and len(out) == 6
    failed = [r for r in out if r["status"] != 200]
    assert len(failed) == 1 and failed[0]["status"] == 500 and failed[0]["text"] is None
    for i, r in enumerate(out):
        if r["status"] == 200:
            assert r["text"] == f"answer {i}"  # each answer at its request's place
            assert (r["prompt_tokens"], r["completion_tokens"]) == (10, 5)
            assert r["finish_reason"] == "stop" and r["seconds"] > 0


def test_summary_shares_fit_and_ratios():
    sl = _bench()
    ref = ['{"a": ["x"]}', '{"a": []}', '{"a": ["y"]}', '{"a": ["z"]}']
    results = [
        _result('{"a": ["x"]}'),  # identical, fits
        _result('{"a": ["q", "r"]}', finish="length"),  # parses, breaks maxItems, cut
        _result('{"a": ["y"'),  # cut JSON: does not parse
        _result(None, status=500),  # failed: neither identical nor fitting
    ]
    s = sl.pass_summary(2.0, results, ref, [SCHEMA] * 4)
    assert s["rps"] == 1.5  # answered requests per second
    assert s["tps"] == 6.0
    assert s["statuses"] == {200: 3, 500: 1}
    assert s["same"] == 0.25 and s["fit"] == 0.25 and s["cut"] == 1
    spaced = [_result('{"a":["x"]}'), _result('{"a" : [ ]}'), _result("{"), _result("{")]
    t = sl.pass_summary(2.0, spaced, ref, [SCHEMA] * 4)
    assert t["same"] == 0 and t["same_json"] == 0.5  # the same JSON, other whitespace
    assert s["p50"] == 0.5
    assert sl.pass_summary(1.0, results, ref)["fit"] is None
    assert "parse+fit  25.0 %" in sl.summary_line("A", "constrained", s)
    line = sl.ratio_line("free", {"A": 3.0, "B": 1.0, "C": 2.0})
    assert "A/C = 1.50" in line and "B/C = 0.50" in line and "A/B = 3.00" in line
    assert "A/C = n/a" in sl.ratio_line("free", {"A": 3.0, "B": 1.0, "C": 0.0})


def test_prompt_token_mismatches_name_the_requests():
    sl = _bench()
    runs = {
        "A": [_result("x", prompt_tokens=10), _result("x", prompt_tokens=12)],
        "B": [_result("x", prompt_tokens=10), _result(None, status=500, prompt_tokens=None)],
        "C": [_result("x", prompt_tokens=10), _result("x", prompt_tokens=14)],
    }
    assert sl.prompt_token_mismatches(runs) == [1]
    runs["C"][1]["prompt_tokens"] = 12  # B's failure does not count as a difference
    assert sl.prompt_token_mismatches(runs) == []
