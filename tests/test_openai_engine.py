"""The OpenAI-compatible engine against a local fake server on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kgc.engine import GenerationSettings
from kgc.openai_engine import EngineRequestError, OpenAIEngine


class FakeOpenAI(BaseHTTPRequestHandler):
    calls: list[dict] = []
    fail_first = 0

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.calls.append({"body": body, "auth": self.headers.get("Authorization")})
        if FakeOpenAI.fail_first > 0:
            FakeOpenAI.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"busy")
            return
        user = body["messages"][-1]["content"]
        if user == "bad":
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b'{"error": "context too long"}')
            return
        text = json.dumps({"echo": user}, ensure_ascii=False) + "\nSTOP trailing"
        payload = {"choices": [{"message": {"role": "assistant", "content": text}}]}
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    FakeOpenAI.calls = []
    FakeOpenAI.fail_first = 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_generate_in_order_with_stop_and_key(server, monkeypatch):
    monkeypatch.setenv("KGC_TEST_KEY", "sk-test")
    eng = OpenAIEngine(server, "served-model", api_key_env="KGC_TEST_KEY", concurrency=4)
    prompts = [f"文本{i}" for i in range(10)]
    out = eng.generate(prompts, GenerationSettings(max_new_tokens=20, stop=("STOP",)))
    assert [json.loads(o)["echo"] for o in out] == prompts  # order kept under concurrency
    assert all("trailing" not in o for o in out)
    call = FakeOpenAI.calls[0]
    assert call["auth"] == "Bearer sk-test"
    assert call["body"]["model"] == "served-model" and call["body"]["temperature"] == 0.0
    assert call["body"]["max_tokens"] == 20


def test_retries_then_succeeds(server):
    FakeOpenAI.fail_first = 2
    eng = OpenAIEngine(server, "m", concurrency=1, max_retries=3)
    eng_out = eng.generate(["x"], GenerationSettings())
    assert json.loads(eng_out[0].splitlines()[0])["echo"] == "x"
    assert len(FakeOpenAI.calls) == 3


def test_client_error_is_raised_with_detail(server):
    eng = OpenAIEngine(server, "m", max_retries=1)
    with pytest.raises(EngineRequestError, match="HTTP 400.*context too long"):
        eng.generate(["bad"], GenerationSettings())


def test_extraction_udf_marks_failed_rows(server, tmp_path):
    import numpy as np
    from conftest import IEPILE, write_jsonl

    from kgc.config import ExtractConfig, load_config
    from kgc.runtime.extract import ExtractUDF
    from kgc.shards import read_rows

    cfg = load_config(
        None,
        [],
        schema=ExtractConfig,
        data={
            "input": {"path": str(write_jsonl(tmp_path / "c.jsonl", [{"text": "x"}]))},
            "task": "NER",
            "schema": str(IEPILE / "NER" / "schema.json"),
            "engine": {"type": "openai", "model": "m", "base_url": server, "batch_size": 2},
            "output": {"path": str(tmp_path / "out")},
        },
    )
    udf = ExtractUDF(cfg.model_dump(mode="json", by_alias=True), str(tmp_path / "out"))
    udf.engine.max_retries = 0
    batch = {  # the columns `kgc extract` rows carry (read_rows checks them)
        "id": np.array(["a", "b"], dtype=object),
        "doc_id": np.array(["d", "d"], dtype=object),
        "chunk_index": np.array([0, 1]),
        "chunk_start": np.array([0, 1]),
        "task": np.array(["NER", "NER"], dtype=object),
        "instruction": np.array(['{"人物": []}', "bad"], dtype=object),
        "label": np.array([None, None], dtype=object),
    }
    udf(batch)
    rows = {r["id"]: r for r in read_rows(tmp_path / "out")}
    assert set(rows) == {"a", "b"}  # the failed prompt is kept, with its error
    assert json.loads(rows["b"]["errors"])[0].startswith("engine error: EngineRequestError")
    assert rows["b"]["output"] == ""
    assert not any("engine error" in e for e in json.loads(rows["a"]["errors"]))


class HangingServer(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        import time

        time.sleep(60)  # an engine that never answers in time

    def log_message(self, *args):
        pass


def _stalling_config(tmp_path, port: int) -> dict:
    from conftest import IEPILE, write_jsonl

    return {
        "input": {"path": str(write_jsonl(tmp_path / "c.jsonl", [{"text": "张三在北京。"}]))},
        "task": "NER",
        "schema": str(IEPILE / "NER" / "schema.json"),
        # the request gives up after 10 s (so the actor is free again soon after)
        "engine": {
            "type": "openai",
            "model": "m",
            "batch_size": 1,
            "timeout_s": 10,
            "max_retries": 0,
            "base_url": f"http://127.0.0.1:{port}/v1",
        },
        "workers": {"num_actors": 1, "cpus_per_actor": 0.5},
        "output": {"path": str(tmp_path / "out")},
        "stall_timeout_s": 3,
    }


@pytest.fixture
def hanging_port():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), HangingServer)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


def test_stalled_extraction_fails_loudly(local_ray, tmp_path, hanging_port):
    from kgc.config import ExtractConfig, load_config
    from kgc.errors import KgcError
    from kgc.runtime.extract import run_extract

    cfg = load_config(None, [], schema=ExtractConfig, data=_stalling_config(tmp_path, hanging_port))
    stalled = "extraction stalled: no batch finished and no token was generated in 3 s"
    with pytest.raises(KgcError, match=stalled):
        run_extract(cfg, progress=False)


@pytest.mark.timeout(240)
def test_a_stalled_kgc_extract_prints_nothing_after_its_error(tmp_path, hanging_port):
    """`kgc extract` ending on a stall: its error is the last thing it prints (the abandoned
    Ray Data pipeline and Ray's shutdown at exit printed tracebacks after it)."""
    import os
    import subprocess
    import sys

    import yaml

    cfg = tmp_path / "stall.yaml"
    cfg.write_text(yaml.safe_dump(_stalling_config(tmp_path, hanging_port)), encoding="utf-8")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "KGC_PROGRESS": "plain"}
    r = subprocess.run(
        [sys.executable, "-m", "kgc", "extract", "--config", str(cfg), "--quiet"],
        capture_output=True,
        text=True,
        timeout=200,
        env=env,
    )
    assert r.returncode == 2, r.stderr[-3000:]
    err = r.stderr.rstrip()
    at = err.find("kgc extract: error:")
    assert at >= 0, err[-3000:]
    tail = err[at:]
    assert "extraction stalled" in tail, tail
    assert "Traceback" not in tail and "ERROR" not in tail, tail[-3000:]
    # the error's own lines are all that follow: the message, its advice
    assert len(tail.splitlines()) <= 6, tail[-3000:]


def test_answer_schemas_go_out_as_response_format(server):
    """Constrained decoding through an OpenAI-compatible server: a schema per prompt is sent
    as `response_format` json_schema; a prompt without one sends none."""
    from kgc.tasks import get

    eng = OpenAIEngine(server, "m", concurrency=1)
    schema = get("NER").output_schema(["人物"])
    eng.generate(["a", "b"], GenerationSettings(max_new_tokens=8), [schema, None])
    by_prompt = {c["body"]["messages"][-1]["content"]: c["body"] for c in FakeOpenAI.calls}
    fmt = by_prompt["a"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema
    assert "response_format" not in by_prompt["b"]


def test_engine_and_icl_honour_an_http_date_retry_after_through_one_parser(monkeypatch):
    """A 429/503 whose Retry-After is an HTTP date: the engine and the ICL client both wait
    until that date (not their own backoff), and both read it with `kgc.icl.client.retry_after`."""
    import time
    from email.utils import formatdate

    import kgc.icl.client as shared
    from kgc.icl.config import ClientConfig
    from tests.support.replay import ReplayServer

    parsed: list[float | None] = []
    real = shared.retry_after

    def spy(headers, *args, **kw):
        parsed.append(real(headers, *args, **kw))
        return parsed[-1]

    monkeypatch.setattr(shared, "retry_after", spy)
    with ReplayServer([{"match": "Ada", "reply": "ok"}]) as srv:
        srv.fail(429, {"Retry-After": formatdate(time.time() + 30, usegmt=True)})
        eng = OpenAIEngine(srv.base_url, "replay", concurrency=1)
        eng_sleeps: list[float] = []
        eng.client.sleep = eng_sleeps.append
        assert eng.generate(["Ada"], GenerationSettings()) == ["ok"]

        srv.fail(503, {"Retry-After": formatdate(time.time() + 30, usegmt=True)})
        cfg = ClientConfig(
            base_url=srv.base_url,
            model="replay",
            allow_no_key=True,
            cache_dir=None,
            max_backoff_s=120.0,
        )
        icl_sleeps: list[float] = []
        icl = shared.ChatClient(cfg, sleep=icl_sleeps.append)
        c = icl.chat([{"role": "user", "content": "Ada"}], shared.ChatParams())
        assert c.text == "ok" and c.attempts == 2
        assert srv.count() == 4
    for sleeps in (eng_sleeps, icl_sleeps):  # the date (30 s away, 1 s resolution), not 1 s
        assert len(sleeps) == 1 and 28.0 <= sleeps[0] <= 30.0, sleeps
    assert len(parsed) == 2 and all(p is not None and 28.0 <= p <= 30.0 for p in parsed)


def test_engine_auth_failure_is_an_engine_error(monkeypatch):
    from tests.support.replay import ReplayServer

    with ReplayServer(api_key="right") as srv:
        monkeypatch.setenv("KGC_TEST_KEY", "wrong")
        eng = OpenAIEngine(srv.base_url, "m", api_key_env="KGC_TEST_KEY", max_retries=3)
        with pytest.raises(EngineRequestError, match=r"HTTP 401.*engine\.base_url"):
            eng.generate(["x"], GenerationSettings())
        assert srv.count() == 1  # not retried
