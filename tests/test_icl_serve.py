"""End to end against a real OpenAI-compatible server: the kgc Serve app with a tiny model on
a local Ray at 127.0.0.1 (the session's `serve_app`, tests/conftest.py, shared with
tests/test_serve.py). The tiny model writes nonsense, so this checks the plumbing — auth,
multi-turn prompts, every row kept with its parse errors, the cache — not extraction
quality (the replay-server tests check parsing and scoring)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("openai")

from conftest import SERVE_KEY as KEY  # noqa: E402

from kgc.icl.config import load_icl_config  # noqa: E402
from kgc.icl.runner import run_icl  # noqa: E402

pytestmark = pytest.mark.timeout(300)
EX = Path(__file__).resolve().parent.parent / "examples" / "icl"


@pytest.fixture(scope="module")
def served(serve_app):
    return serve_app["url"] + "/v1"


def _cfg(base_url, tmp_path, mode, input_file, section):
    return load_icl_config(
        None,
        data={
            "mode": mode,
            "input": str(input_file),
            "output": str(tmp_path / mode),
            "client": {
                "base_url": base_url,
                "model": "kgc",
                "api_key_env": "KGC_ICL_SERVE_CLIENT_KEY",
                "cache_dir": str(tmp_path / "cache"),
                "max_retries": 2,
            },
            "generation": {"max_tokens": 12},
            mode: section,
        },
    )


def test_llmicl_and_codekgc_against_the_serve_app(served, tmp_path, monkeypatch):
    monkeypatch.setenv("KGC_ICL_SERVE_CLIENT_KEY", KEY)
    ner = _cfg(
        served,
        tmp_path,
        "llmicl",
        EX / "llmicl" / "ner_input.jsonl",
        {"task": "ner", "demos": str(EX / "llmicl"), "labels": ["person", "location"]},
    )
    res = run_icl(ner)
    s = res.summary
    assert [r["id"] for r in res.rows] == ["n1", "n2", "n3"]
    assert s["failed_requests"] == 0 and s["http_attempts"] == 3  # authenticated, answered
    for row in res.rows:  # nonsense from the tiny model: kept as a row, with its errors
        assert isinstance(row["output"], str) and row["output"]
        assert row["records"] or row["errors"]
    assert "scores" in s and s["scores"]["entity"]["gold"] == 7
    again = run_icl(ner)  # the rerun is served from the cache
    assert again.summary["cache_hits"] == 3 and again.summary["http_attempts"] == 0
    assert [r["output"] for r in again.rows] == [r["output"] for r in res.rows]

    code = _cfg(
        served,
        tmp_path,
        "codekgc",
        EX / "conll04_test.json",
        {"demos": str(EX / "codekgc_demos.json"), "num_demos": 1},
    )
    res = run_icl(code)
    assert len(res.rows) == 6 and res.summary["failed_requests"] == 0
    assert res.summary["scores"]["triple"]["gold"] == 9
    assert all(isinstance(r["triples"], list) for r in res.rows)
    assert (tmp_path / "codekgc" / "predictions.jsonl").read_text().count("\n") == 6


def test_a_wrong_key_stops_the_run(served, tmp_path, monkeypatch):
    from kgc.errors import KgcError

    monkeypatch.setenv("KGC_ICL_SERVE_CLIENT_KEY", "sk-wrong")
    cfg = _cfg(served, tmp_path, "llmicl", EX / "llmicl" / "ner_input.jsonl", {"task": "ner"})
    cfg.client.cache_dir = None
    with pytest.raises(KgcError, match="HTTP 401"):
        run_icl(cfg)
