"""Serve and batch extraction build the same prompts and merge the same records: a text sent
to `/v1/extract` gets exactly the instructions (and answer schemas) a `kgc extract` chunk with
the same text gets (`kgc.schema_splits`). No Ray, no model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import IEPILE, read_jsonl

from kgc.chunking import regex_offsets
from kgc.config import ExtractConfig, load_config
from kgc.extract import document_rows, merge_documents
from kgc.schema import read_schema
from kgc.serving import (
    ExtractRequest,
    ServeSettings,
    build_instructions,
    engine_config,
    merge_outputs,
    request_schema,
)

CASES = [
    ("NER", "zh", 2),
    ("RE", "en", 2),
    ("EE", "zh", 1),
    ("EET", "en", -1),
    ("EEA", "zh", 2),
    ("KG", "en", 1),
]


def _both(task: str, language: str, split_num: int, constrained: bool = False):
    """The extract config and the serve request for the same text and schema."""
    schema = read_schema(IEPILE / task / "schema.json")
    text = read_jsonl(IEPILE / task / "sample.json")[0]["text"]
    cfg = load_config(
        None,
        [],
        schema=ExtractConfig,
        data={
            "input": {"path": "unused.jsonl"},
            "task": task,
            "schema": str(IEPILE / task / "schema.json"),
            "language": language,
            "split_num": split_num,
            "chunk": {"max_tokens": 100_000},  # the text is one chunk
            "generation": {"constrained": constrained, "max_text_chars": 9, "max_list_items": 3},
            "output": {"path": "unused"},
        },
    )
    if task in ("EE", "EEA", "KG"):
        labels = {k: list(v) for k, v in schema.type_roles.items()}
    else:
        labels = list(schema.roles if task == "RE" else schema.types)
    req = ExtractRequest.model_validate(
        {
            "task": task,
            "schema": labels,
            "text": text,
            "language": language,
            "split_num": split_num,
            "constrained": constrained,
        }
    )
    return cfg, schema, req, text


@pytest.mark.parametrize("task, language, split_num", CASES)
def test_extract_and_serve_build_identical_instructions(task, language, split_num):
    cfg, schema, req, text = _both(task, language, split_num)
    rows = document_rows({"doc_id": "d", "text": text}, cfg, schema, regex_offsets)
    served = build_instructions(req, text, request_schema(req))
    assert [i for i, _ in served] == [r["instruction"] for r in rows]
    assert len(rows) > 1 or split_num == -1 or task == "KG"  # the schema really is split
    assert all(a is None for _, a in served)


@pytest.mark.parametrize("task", ["NER", "EE"])
def test_extract_and_serve_build_identical_answer_schemas(task):
    from kgc.runtime.extract import ExtractUDF  # the actor's module; Ray is not imported
    from kgc.tasks import get

    cfg, schema, req, text = _both(task, "zh", 2, constrained=True)
    rows = document_rows({"doc_id": "d", "text": text}, cfg, schema, regex_offsets)
    udf = ExtractUDF.__new__(ExtractUDF)  # no engine: only the answer schemas are built
    udf.cfg, udf.task = cfg, get(task)
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    settings = ServeSettings(constrained_max_text_chars=9, constrained_max_list_items=3)
    served = build_instructions(req, text, request_schema(req), settings)
    assert [a for _, a in served] == udf._schemas(batch)


def test_extract_and_serve_merge_records_alike():
    cfg, schema, req, text = _both("NER", "zh", 1)
    rows = document_rows({"doc_id": "d", "text": text}, cfg, schema, regex_offsets)
    outputs = ['{"人物": ["张三"]}', '{"人物": ["张三"], "地点": ["北京"]}', "garbage"]
    task = rows[0]["task"]
    parsed = merge_outputs(task, outputs)
    done = [
        {**r, "records": json.dumps(recs, ensure_ascii=False)}
        for r, recs in zip(
            rows,
            [
                [{"entity": "张三", "entity_type": "人物"}],
                [
                    {"entity": "张三", "entity_type": "人物"},
                    {"entity": "北京", "entity_type": "地点"},
                ],
                [],
            ],
        )
    ]
    (doc,) = merge_documents(done)
    assert [x["record"] for x in doc["records"]] == parsed["records"]
    assert parsed["records"] == [
        {"entity": "张三", "entity_type": "人物"},
        {"entity": "北京", "entity_type": "地点"},
    ]


def test_engine_config_of_serve_settings():
    s = ServeSettings(model="m", adapter="a", batch_size=3, trust_remote_code=True)
    e = engine_config(s)
    assert (e.type, e.model, e.adapter, e.checkpoint, e.batch_size, e.trust_remote_code) == (
        "hf",
        "m",
        "a",
        None,
        3,
        True,
    )
    assert engine_config(ServeSettings(engine="vllm", checkpoint="c")).type == "vllm"
    assert e.dtype == "fp32"  # no dtype set: the engine default
    v = engine_config(
        ServeSettings(
            engine="vllm",
            model="m",
            dtype="bf16",
            tensor_parallel_size=2,
            gpu_memory_utilization=0.5,
            max_model_len=4096,
        )
    )  # Serve's vLLM replicas take the same engine options as batch extraction
    assert (v.dtype, v.tensor_parallel_size, v.gpu_memory_utilization, v.max_model_len) == (
        "bf16",
        2,
        0.5,
        4096,
    )


def test_serve_settings_build_the_engine_through_the_one_factory(tiny_llama):
    from kgc.modeling.engines import build_engine

    s = ServeSettings(model=str(tiny_llama), batch_size=3, max_loaded_adapters=2)
    engine = build_engine(engine_config(s), max_loaded_adapters=s.max_loaded_adapters)
    assert (engine.batch_size, engine.max_loaded) == (3, 2)
    assert engine.model_id
