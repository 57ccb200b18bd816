"""`kgc extract` against stale outputs and costly rows, without Ray: a rerun reuses a row only
when its fingerprint (text, task, schema split, language, model, generation settings) is
this run's; a prompt that cannot fit the model's context is a named, counted row error; a
grounded answer schema stays small whatever the chunk, and its compile has a time limit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import IEPILE, read_jsonl, write_jsonl

from kgc.config import ExtractConfig, load_config
from kgc.errors import KgcError

pytestmark = pytest.mark.timeout(300)


class EchoEngine:
    """Answers every NER instruction with the first word of its text, as the first label
    of its schema: a row's answer shows which text it was made from."""

    calls = 0

    def __init__(self, e):
        self.model_id = f"echo:{e.model}"

    def generate(self, prompts, config, schemas=None):
        EchoEngine.calls += len(prompts)
        out = []
        for p in prompts:
            inst = json.loads(p)
            out.append(json.dumps({inst["schema"][0]: [inst["input"].split()[0]]}))
        return out


def _in_process(cfg, todo, out_dir, progress):
    """`run_extract`'s pool, replaced by one ExtractUDF call in this process."""
    from kgc.runtime.extract import ExtractUDF

    udf = ExtractUDF(cfg.model_dump(mode="json", by_alias=True), str(out_dir))
    n = cfg.rows_per_call()
    for part in (todo[i : i + n] for i in range(0, len(todo), n)):
        udf({k: np.array([r[k] for r in part], dtype=object) for k in part[0]})


@pytest.fixture
def no_ray(monkeypatch):
    import kgc.modeling.engines
    import kgc.runtime.extract

    monkeypatch.setattr(kgc.runtime.extract, "_generate", _in_process)
    monkeypatch.setattr(kgc.modeling.engines, "build_engine", EchoEngine)
    EchoEngine.calls = 0


DOCS = [
    {"id": "a", "text": "alpha works at Acme in Paris."},
    {"id": "b", "text": "Bruno lives in Rome."},
    {"id": "c", "text": "Chen visited Oslo last May."},
]


def cfg_of(tmp_path, model, *overrides, docs=DOCS):
    src = write_jsonl(tmp_path / "corpus.jsonl", docs)
    data = {
        "input": {"path": str(src), "id_field": "id"},
        "task": "NER",
        "schema": str(IEPILE / "NER" / "schema.json"),
        "engine": {"type": "hf", "model": str(model)},
        "split_num": 1,  # three rows per document: one per label
        "output": {"path": str(tmp_path / "out"), "format": "jsonl"},
    }
    return load_config(None, list(overrides), data=data, schema=ExtractConfig)


def _entities(out: Path) -> dict[str, set[str]]:
    docs = [json.loads(x) for x in (out / "documents.jsonl").read_text().splitlines()]
    return {d["doc_id"]: {r["record"]["entity"] for r in d["records"]} for d in docs}


# ----------------------------------------------------------------------------- resume
def test_a_document_edited_in_place_is_extracted_again(no_ray, tiny_llama, tmp_path, capsys):
    from kgc.runtime.extract import run_extract
    from kgc.shards import read_rows

    first = run_extract(cfg_of(tmp_path, tiny_llama), progress=False)
    assert first["rows_this_run"] == 9 and _entities(tmp_path / "out")["a"] == {"alpha"}
    edited = [{**DOCS[0], "text": "delta works at Acme in Paris."}, *DOCS[1:]]
    assert len(edited[0]["text"]) == len(DOCS[0]["text"])  # same id, same length: same row ids
    second = run_extract(cfg_of(tmp_path, tiny_llama, docs=edited), progress=False)
    assert second["rows_this_run"] == 3  # document a's rows, the others reused
    assert second["rows_changed"] == 3 and second["rows_changed_why"] == {"text": 3}, second
    assert _entities(tmp_path / "out")["a"] == {"delta"}  # documents.jsonl: the new text
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 9 and all("alpha" not in r["instruction"] for r in rows)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "set aside" in x]
    assert len(lines) == 1, err  # one line for all, saying why
    assert "3 row(s) from an earlier run set aside" in lines[0]
    assert "their text changed" in lines[0]
    third = run_extract(cfg_of(tmp_path, tiny_llama, docs=edited), progress=False)
    assert third["rows_this_run"] == 0 and third["rows_changed"] == 0


def test_changed_generation_settings_redo_every_row(no_ray, tiny_llama, tmp_path):
    from kgc.runtime.extract import run_extract

    run_extract(cfg_of(tmp_path, tiny_llama), progress=False)
    again = run_extract(cfg_of(tmp_path, tiny_llama, "generation.max_new_tokens=7"), progress=False)
    assert again["rows_this_run"] == 9 and again["rows_changed_why"] == {"generation": 9}
    # a speed setting that keeps the answers reuses them
    same = run_extract(
        cfg_of(tmp_path, tiny_llama, "generation.max_new_tokens=7", "generation.lookup_drafts=0"),
        progress=False,
    )
    assert same["rows_this_run"] == 0


@pytest.mark.parametrize("change", ["model", "task"])
def test_another_model_or_task_is_an_error_naming_the_folder_and_fresh(
    change, no_ray, tiny_llama, tiny_qwen2, tmp_path, capsys
):
    from kgc.cli import main
    from kgc.runtime.extract import run_extract
    from kgc.shards import read_rows

    run_extract(cfg_of(tmp_path, tiny_llama), progress=False)
    before = sorted((tmp_path / "out" / "rows").iterdir())
    other = (
        cfg_of(tmp_path, tiny_qwen2)
        if change == "model"
        else cfg_of(tmp_path, tiny_llama, "task=EET")
    )
    assert {r["id"] for r in read_rows(tmp_path / "out")} == {
        r["id"] for r in _input_rows(other)
    }  # the same row ids: only the fingerprint tells them apart
    with pytest.raises(KgcError) as err:
        run_extract(other, progress=False)
    msg = str(err.value)
    assert f"output.path {tmp_path / 'out'} holds another run's results" in msg
    assert "--fresh" in msg and ("another model" if change == "model" else "task (NER") in msg
    assert sorted((tmp_path / "out" / "rows").iterdir()) == before  # nothing moved
    # --fresh, from the command line: the old results cleared, every row redone
    cfg_path = tmp_path / "extract.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(other.model_dump(mode="json", by_alias=True)))
    capsys.readouterr()
    assert main(["extract", "--config", str(cfg_path), "--quiet", "--fresh"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["rows_this_run"] == 9 and summary["rows_changed"] == 0
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 9
    if change == "model":
        assert {r["model_id"] for r in rows} == {f"echo:{tiny_qwen2}"}
    else:
        assert {r["task"] for r in rows} == {"EET"}


def test_a_model_retrained_in_place_is_another_model(no_ray, tiny_llama, tmp_path):
    """Same model path, weights rewritten (a retrain saved over the folder): its old rows are
    another model's, not reused."""
    import shutil

    from kgc.runtime.extract import run_extract

    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    assert run_extract(cfg_of(tmp_path, model), progress=False)["rows_this_run"] == 9
    assert run_extract(cfg_of(tmp_path, model), progress=False)["rows_this_run"] == 0
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b" ")  # rewritten: another size and time
    with pytest.raises(KgcError, match="another model"):
        run_extract(cfg_of(tmp_path, model), progress=False)


def _input_rows(cfg):
    from kgc.extract import input_rows
    from kgc.modeling.engines import offsets_fn

    return input_rows(cfg, lambda: offsets_fn(cfg.engine))[0]


@pytest.mark.parametrize("forge", ["no-fingerprint", "other-model"])
def test_a_forged_shard_is_not_accepted(forge, no_ray, tiny_llama, tmp_path):
    """A shard with the right ids and another model's answers: without a fingerprint (or an
    older kgc's rows), or with another model's, its rows are set aside and redone."""
    from kgc.rows import fingerprint_parts
    from kgc.runtime.extract import run_extract
    from kgc.shards import read_rows, shard_files

    cfg = cfg_of(tmp_path, tiny_llama, "workers.rows_per_call=3")  # a shard per document
    run_extract(cfg, progress=False)
    shard = shard_files(tmp_path / "out")[0]
    forged = []
    for r in read_jsonl(shard):
        r.update(output='{"人物": ["Mallory"]}', model_id="evil")
        if forge == "no-fingerprint":
            del r["fingerprint"]
        else:
            p = fingerprint_parts(r["fingerprint"])
            r["fingerprint"] = f"{p['input']}.{'0' * 16}.{p['generation']}"
        forged.append(r)
    write_jsonl(shard, forged)
    again = run_extract(cfg, progress=False)
    why = "unsigned" if forge == "no-fingerprint" else "model"
    assert again["rows_changed_why"] == {why: 3} and again["rows_this_run"] == 3
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 9 and not any("Mallory" in r["output"] for r in rows)
    assert {r["model_id"] for r in rows} == {f"echo:{tiny_llama}"}


# ----------------------------------------------------------------------------- prompt size
def test_a_prompt_beyond_the_context_is_a_counted_row_error(tiny_llama, tmp_path):
    """A row whose prompt + max_new_tokens exceeds the model's context is not generated (on
    a real model: out of memory, or garbage past the positions it knows) but kept with a
    named error; the rest of its batch runs, and the summary counts it."""
    from kgc.chunking import regex_offsets
    from kgc.extract import document_rows, finish
    from kgc.runtime.extract import ExtractUDF
    from kgc.schema import read_schema
    from kgc.shards import SetAside, read_rows

    long = " ".join(f"w{i}" for i in range(400))
    cfg = cfg_of(tmp_path, tiny_llama, "generation.max_new_tokens=4", "chunk.max_tokens=4096")
    schema = read_schema(cfg.schema_path)
    rows = [
        r
        for d in (
            {"doc_id": "short", "text": "Bruno lives in Rome."},
            {"doc_id": "long", "text": long},
        )
        for r in document_rows(d, cfg, schema, regex_offsets)
    ]
    udf = ExtractUDF(cfg.model_dump(mode="json", by_alias=True), str(tmp_path / "out"))
    short_tokens = max(udf.engine.prompt_tokens(r["instruction"]) for r in rows[:3])
    long_tokens = udf.engine.prompt_tokens(rows[3]["instruction"])
    assert short_tokens + 4 < 400 < long_tokens
    udf.engine.context_tokens = 400  # a small context (the tiny model's is 2,048)
    udf({k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]})
    written = {r["id"]: r for r in read_rows(tmp_path / "out")}
    assert len(written) == 6
    for r in rows:
        errors = json.loads(written[r["id"]]["errors"])
        if r["doc_id"] == "long":
            assert written[r["id"]]["output"] == ""
            assert errors[0].startswith(
                f"engine error: prompt too long: {udf.engine.prompt_tokens(r['instruction'])} "
                "prompt tokens + "
                "generation.max_new_tokens 4 > 400, the model's context ("
            ), errors
            assert "lower chunk.max_tokens" in errors[0]
        else:
            assert not any("too long" in e for e in errors)
    summary = finish(
        cfg,
        list(written.values()),
        set(written),
        SetAside(),
        documents=2,
        rows_this_run=6,
        seconds=1.0,
    )
    assert summary["rows_too_long"] == 3
    # a configured cap, below the context
    short = [r["instruction"] for r in rows[:3]]
    udf.cfg.engine.max_prompt_tokens = min(map(udf.engine.prompt_tokens, short)) - 1
    assert all(f and "> engine.max_prompt_tokens" in f for f in udf._too_long(short))


# ----------------------------------------------------------------------------- grounded grammars
# 800 distinct words
WORDS = [f"{a}{b}{c}" for a in "bcdfghjklmnprstvwxyz" for b in "aeiou" for c in "nprstvxz"]


def test_grounded_schema_is_bounded_and_compiles_fast(tiny_llama):
    """800 distinct words, grounded_max_words 16: every run of up to 16 words would be
    12,680 enum values; capped at grounded_max_spans (bytes bounded too), it compiles in
    well under a second and every value is still a span of the text."""
    from kgc.engine import GenerationSettings, grounded, text_spans
    from kgc.modeling.hf_engine import HFEngine
    from kgc.schema_splits import answer_schema
    from kgc.tasks import get

    words = WORDS
    text = " ".join(words)
    assert len(set(words)) == 800
    assert len(text_spans(text, 16)) > 12_000  # what the enum held before the cap
    g = GenerationSettings(grounded_max_words=16)
    schema = answer_schema(
        get("NER"),
        ["人物", "地理位置"],
        max_text_chars=g.max_text_chars,
        max_list_items=g.max_list_items,
        grounded_in=text,
        grounded_max_words=g.grounded_max_words,
        grounded_max_spans=g.grounded_max_spans,
    )
    enums = []

    def walk(node):
        if isinstance(node, dict):
            if "enum" in node:
                enums.append(node["enum"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    assert enums and all(len(e) <= g.grounded_max_spans for e in enums)
    assert all(f" {e} " in f" {text} " for values in enums for e in values)
    from kgc.engine import SPAN_CHARS

    assert all(sum(map(len, e)) <= SPAN_CHARS * g.grounded_max_spans for e in enums)
    assert len(json.dumps(schema, ensure_ascii=False)) < 200_000  # uncapped: 12,680 spans, 0.9 MB
    assert max(len(e.split()) for e in enums[0]) >= 2  # fewer words per span, not one
    engine = HFEngine(str(tiny_llama), batch_size=2)
    t0 = time.perf_counter()
    engine.compile_schema(schema)
    assert time.perf_counter() - t0 < 1.0
    # single words beyond the cap: the first ones of the text, still spans
    capped = grounded({"type": "string"}, text, 16, max_spans=100)["enum"]
    assert capped == words[:100]
    # answers on the tiny model are spans of the text (each list made to hold one at least)
    for label in ("人物", "地理位置"):
        schema["properties"][label]["minItems"] = 1
    prompts = [json.dumps({"instruction": "x", "schema": ["人物", "地理位置"], "input": text})]
    out = engine.generate(
        prompts,
        GenerationSettings(max_new_tokens=40, constrained=True),
        [schema],
    )
    parsed = get("NER").parse(out[0])
    assert not parsed.errors, out
    assert parsed.records, out
    assert all(f" {r['entity']} " in f" {text} " for r in parsed.records)


def test_a_grammar_that_does_not_compile_in_time_is_a_row_error(tiny_llama, tmp_path):
    from kgc.chunking import regex_offsets
    from kgc.extract import document_rows
    from kgc.runtime.extract import ExtractUDF
    from kgc.schema import read_schema
    from kgc.shards import read_rows

    cfg = cfg_of(
        tmp_path,
        tiny_llama,
        "generation.constrained=true",
        "generation.grounded=true",
        "generation.max_new_tokens=8",
        "grammar_timeout_s=0.2",
    )
    rows = document_rows(
        {"doc_id": "a", "text": DOCS[0]["text"]}, cfg, read_schema(cfg.schema_path), regex_offsets
    )
    udf = ExtractUDF(cfg.model_dump(mode="json", by_alias=True), str(tmp_path / "out"))
    slow = {"n": 0}
    compile_schema = udf.engine.compile_schema

    def slow_first(schema):
        slow["n"] += 1
        if slow["n"] == 1:
            time.sleep(1.0)  # as a 16-word grounded grammar of a long chunk did (> 150 s)
        return compile_schema(schema)

    udf.engine.compile_schema = slow_first
    udf({k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]})
    written = {r["id"]: json.loads(r["errors"]) for r in read_rows(tmp_path / "out")}
    assert len(written) == 3
    timed_out = [e for e in written.values() if e and "did not compile within 0.2 s" in e[0]]
    assert len(timed_out) == 1 and "grammar_timeout_s" in timed_out[0][0]
    assert "grounded_max_spans" in timed_out[0][0]
