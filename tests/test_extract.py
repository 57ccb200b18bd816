"""Batch extraction: chunking, the HF engine, the actor UDF, and the Ray Data job end to end
(2,000 chunks on 2 actors, a killed actor, a killed driver, scoring, bad input)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import IEPILE, read_jsonl, write_jsonl

from kgc.chunking import chunk_text, regex_offsets, tokenizer_offsets
from kgc.config import ExtractConfig, load_config
from kgc.errors import KgcError

pytestmark = pytest.mark.timeout(600)
TEXTS = [r["text"] for t in ("NER", "RE", "EE") for r in read_jsonl(IEPILE / t / "sample.json")]
LONG = "".join(TEXTS) * 2


def test_chunks_map_back_to_the_document():
    chunks = chunk_text(LONG, max_tokens=100, overlap=20)
    assert len(chunks) > 3
    assert all(LONG[c.start : c.end] == c.text for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(LONG)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start < a.end  # overlap
        assert len(regex_offsets(LONG[b.start : a.end])) >= 15
    assert chunk_text("短文本", 100) == [chunk_text("短文本", 100)[0]]
    assert chunk_text("短文本", 100)[0].text == "短文本"


def test_tokenizer_chunks(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    chunks = chunk_text(LONG, 64, 8, tokenizer_offsets(tok))
    assert all(LONG[c.start : c.end] == c.text for c in chunks)
    # A chunk is a window of 64 of the document's tokens, widened to whole characters: a
    # byte-level BPE token can be part of a character (up to 4 bytes), so each edge may add
    # the rest of one split character (≤ 3 tokens); tokenized alone the same holds.
    spans = tokenizer_offsets(tok)(LONG)
    for c in chunks:
        inside = [s for s in spans if s[0] >= c.start and s[1] <= c.end]
        assert len(inside) <= 64 + 6
        assert len(tok(c.text, add_special_tokens=False)["input_ids"]) <= 64 + 6


def _prompts():
    from kgc.convert import convert_file

    rows = []
    for t in ("NER", "RE"):
        out = Path(os.environ.get("TMPDIR", "/tmp")) / f"kgc-test-prompts-{t}.jsonl"
        convert_file(t, IEPILE / t / "sample.json", IEPILE / t / "schema.json", out, split="test")
        rows += [r["instruction"] for r in read_jsonl(out)]
    return rows[:30]


def test_hf_engine_batched_equals_unbatched(tiny_llama, tiny_qwen2):
    from kgc.engine import GenerationSettings
    from kgc.modeling.hf_engine import HFEngine

    prompts = _prompts()
    gen = GenerationSettings(max_new_tokens=12)
    for path in (tiny_llama, tiny_qwen2):
        one = HFEngine(str(path), batch_size=1).generate(prompts, gen)
        many = HFEngine(str(path), batch_size=8).generate(prompts, gen)
        assert one == many
        assert len(set(one)) > 1  # the prompts really produce different texts


def test_hf_engine_adapter_equals_merged(tiny_llama, ner_train_file, tmp_path):
    import torch

    from kgc.engine import GenerationSettings
    from kgc.modeling.export import export_model
    from kgc.modeling.hf_engine import HFEngine
    from kgc.modeling.loading import load_model, resolve_family
    from kgc.modeling.tuning import apply_method

    torch.manual_seed(0)
    cfg = load_config(
        None,
        ["method.lora.r=4"],
        data={"model": {"path": str(tiny_llama)}, "data": {"train_file": str(ner_train_file)}},
    )
    model = apply_method(load_model(cfg.model), cfg.method, resolve_family(cfg.model))
    with torch.no_grad():  # a visibly non-zero adapter
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "adapter")
    merged = export_model(str(tmp_path / "adapter"), str(tmp_path / "merged"), base=str(tiny_llama))
    prompts, gen = _prompts()[:12], GenerationSettings(max_new_tokens=10)
    a = HFEngine(str(tiny_llama), adapter=str(tmp_path / "adapter"), batch_size=4).generate(
        prompts, gen
    )
    m = HFEngine(str(merged), batch_size=4).generate(prompts, gen)
    base = HFEngine(str(tiny_llama), batch_size=4).generate(prompts, gen)
    assert a == m
    assert a != base


def corpus(tmp_path: Path, n: int) -> Path:
    rows = [{"id": f"d{i}", "text": TEXTS[i % len(TEXTS)]} for i in range(n)]
    rows.append({"id": "long", "text": LONG})
    return write_jsonl(tmp_path / "corpus.jsonl", rows)


def ex_cfg(tmp_path, model, src, *overrides, out="out"):
    data = {
        "input": {"path": str(src), "id_field": "id"},
        "task": "NER",
        "schema": str(IEPILE / "NER" / "schema.json"),
        "chunk": {"max_tokens": 96, "overlap": 16},
        "engine": {"type": "hf", "model": str(model), "batch_size": 32},
        "generation": {"max_new_tokens": 4},
        "workers": {"num_actors": 2, "cpus_per_actor": 0.5},
        "output": {"path": str(tmp_path / out)},
    }
    return load_config(None, list(overrides), data=data, schema=ExtractConfig)


def test_udf_runs_without_a_cluster(tiny_llama, tmp_path):
    import numpy as np

    from kgc.extract import document_rows
    from kgc.runtime.extract import ExtractUDF
    from kgc.schema import read_schema
    from kgc.shards import read_rows

    cfg = ex_cfg(tmp_path, tiny_llama, corpus(tmp_path, 2))
    schema = read_schema(cfg.schema_path)
    rows = document_rows({"doc_id": "x", "text": LONG}, cfg, schema, regex_offsets)
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    udf = ExtractUDF(cfg.model_dump(mode="json", by_alias=True), str(tmp_path / "out"))
    result = udf(batch)
    assert list(result["id"]) == [r["id"] for r in rows]
    written = read_rows(tmp_path / "out")
    assert sorted(r["id"] for r in written) == sorted(r["id"] for r in rows)
    assert all(isinstance(r["output"], str) and r["model_id"] for r in written)


@pytest.mark.parametrize("bits, layer", [(4, "Linear4bit"), (8, "Linear8bitLt")])
def test_quantized_engine_in_the_extract_udf(bits, layer, tiny_llama, tmp_path):
    """`engine.quantization`: the extract actor's engine holds bitsandbytes layers on CPU,
    writes every row, and constrained answers parse (DeepKE's `--bits 4` inference)."""
    import numpy as np

    from kgc.extract import document_rows
    from kgc.runtime.extract import ExtractUDF
    from kgc.schema import read_schema
    from kgc.shards import read_rows
    from kgc.tasks import get

    cfg = ex_cfg(
        tmp_path,
        tiny_llama,
        corpus(tmp_path, 2),
        f"engine.quantization.bits={bits}",
        "generation.constrained=true",
        "generation.max_text_chars=8",  # a random model's answers, bounded to fit the budget
        "generation.max_list_items=2",
        "generation.max_new_tokens=200",
    )
    schema = read_schema(cfg.schema_path)
    rows = document_rows({"doc_id": "x", "text": TEXTS[0]}, cfg, schema, regex_offsets)
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    udf = ExtractUDF(cfg.model_dump(mode="json", by_alias=True), str(tmp_path / "out"))
    assert {type(m).__name__ for m in udf.engine.model.modules()} >= {layer}
    udf(batch)
    written = read_rows(tmp_path / "out")
    assert sorted(r["id"] for r in written) == sorted(r["id"] for r in rows)
    assert all(get(cfg.task).parse(r["output"]).errors == [] for r in written), [
        r["output"] for r in written
    ]


def test_quantization_is_for_the_hf_engine(tiny_llama, tmp_path):
    with pytest.raises(KgcError, match="engine.quantization .bitsandbytes. is for engine.type=hf"):
        ex_cfg(
            tmp_path,
            tiny_llama,
            corpus(tmp_path, 1),
            "engine.type=vllm",
            "workers.gpus_per_actor=1",
            "engine.quantization.bits=4",
        )


def _ids_once(out_dir: Path) -> Counter:
    from kgc.shards import read_rows

    return Counter(r["id"] for r in read_rows(out_dir, ["id"]))


def test_two_thousand_chunks_on_two_actors(local_ray, tiny_llama, tmp_path):
    from kgc.extract import document_rows, iter_documents
    from kgc.modeling.engines import offsets_fn
    from kgc.runtime.extract import run_extract
    from kgc.schema import read_schema
    from kgc.shards import read_rows

    src = corpus(tmp_path, 2000)
    cfg = ex_cfg(tmp_path, tiny_llama, src)
    summary = run_extract(cfg, progress=False)
    # NER: 3 types with split-num 4 → one schema split per chunk
    schema = read_schema(cfg.schema_path)
    expected = [
        r["id"]
        for d in read_jsonl(src)
        for r in document_rows(
            {"doc_id": d["id"], "text": d["text"]}, cfg, schema, offsets_fn(cfg.engine)
        )
    ]
    assert len(expected) >= 2000
    counts = _ids_once(tmp_path / "out")
    assert sorted(counts) == sorted(expected) and set(counts.values()) == {1}
    assert summary["rows"] == len(expected) and summary["documents"] == 2001
    long_rows = [r for r in read_rows(tmp_path / "out") if r["doc_id"] == "long"]
    assert len(long_rows) > 1  # the long document was chunked
    for r in long_rows:
        assert json.loads(r["instruction"])["input"] == LONG[r["chunk_start"] : r["chunk_end"]]
    assert len(list(iter_documents(tmp_path / "out"))) == 2001


def test_killed_actor_loses_and_duplicates_nothing(local_ray, tiny_llama, tmp_path):
    from kgc.runtime.extract import run_extract
    from tests.support import faults

    marker = tmp_path / "killed"
    cfg = ex_cfg(tmp_path, tiny_llama, corpus(tmp_path, 600), "engine.batch_size=16")
    with faults.plan(kill_after=3, marker=marker):  # one actor dies after its 3rd batch
        summary = run_extract(cfg, progress=False)
    assert marker.exists(), "no actor was killed"
    # nothing written twice or damaged had to be set aside by the post-run check
    assert summary["rows_duplicate"] == 0 and summary["shards_corrupt"] == 0, summary
    counts = _ids_once(tmp_path / "out")
    assert len(counts) == summary["rows"] and set(counts.values()) == {1}


def test_killed_driver_then_rerun(tiny_llama, tmp_path):
    src = corpus(tmp_path, 1200)
    cfg_path = tmp_path / "extract.yaml"
    import yaml

    cfg = ex_cfg(
        tmp_path,
        tiny_llama,
        src,
        "engine.batch_size=16",
        "workers.num_actors=1",
        "workers.cpus_per_actor=1",
    )
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True)))
    shards = tmp_path / "out" / "rows"
    cmd = [sys.executable, "-m", "kgc", "extract", "--config", str(cfg_path), "--quiet"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(list(shards.glob("part-*"))) < 5:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(_ids_once(tmp_path / "out"))
    assert n_before > 0, "the first run wrote nothing before it was killed"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[0])
    assert summary["rows_skipped_resume"] >= n_before
    assert summary["rows_duplicate"] == 0 and summary["shards_corrupt"] == 0, summary
    counts = _ids_once(tmp_path / "out")
    assert len(counts) == summary["rows"] and set(counts.values()) == {1}


def test_iepile_test_file_is_scored(local_ray, tiny_llama, tmp_path):
    from kgc.convert import convert_file
    from kgc.extract import SCORES
    from kgc.runtime.extract import run_extract

    test = tmp_path / "ner.test.jsonl"
    convert_file(
        "NER", IEPILE / "NER" / "sample.json", IEPILE / "NER" / "schema.json", test, split="test"
    )
    cfg = ex_cfg(tmp_path, tiny_llama, test, "input.format=iepile", "workers.num_actors=1")
    summary = run_extract(cfg, progress=False)
    scores = summary["scores"]
    assert scores["task"] == "NER" and scores["records"] == 6
    assert scores["scores"]["entity"]["gold"] == 3  # the sample's 3 gold entities
    assert (tmp_path / "out" / SCORES).exists()
    # DeepKE's shape: the input records, in order, with their own ids, plus `output`
    from kgc.evaluate import evaluate_file
    from kgc.extract import PREDICTIONS

    pred = [json.loads(x) for x in (tmp_path / "out" / PREDICTIONS).read_text().splitlines()]
    given = [json.loads(x) for x in test.read_text().splitlines()]
    assert [{k: v for k, v in p.items() if k != "output"} for p in pred] == given
    assert all(isinstance(p["output"], str) for p in pred)
    assert summary["predictions"] == str(tmp_path / "out" / PREDICTIONS)
    rescored = evaluate_file("NER", tmp_path / "out" / PREDICTIONS)
    assert rescored["records"] == 6 and rescored["scores"] == scores["scores"]


@pytest.mark.parametrize(
    "rows, overrides, needle",
    [
        ([{"id": "a", "body": "x"}], [], "field 'text'"),
        ([], [], "corpus is empty"),
        ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], [], "not unique"),
        ([{"id": "a", "text": "x"}], ["task=RE"], "no labels for task RE"),
    ],
)
def test_bad_inputs(rows, overrides, needle, tiny_llama, tmp_path):
    from kgc.runtime.extract import run_extract

    src = write_jsonl(tmp_path / "c.jsonl", rows)
    cfg = ex_cfg(tmp_path, tiny_llama, src, *overrides)
    with pytest.raises(KgcError, match=needle):
        run_extract(cfg, progress=False)
    cfg = ex_cfg(tmp_path, tiny_llama, tmp_path / "missing.jsonl")
    with pytest.raises(KgcError, match="does not exist"):
        run_extract(cfg, progress=False)


def test_uri_inputs_read_through_pyarrow_filesystems(tiny_llama, tmp_path):
    """input.path as a URI (file:// here; s3://, gs://, hdfs:// take the same pyarrow path)
    for a JSONL file, a folder of .txt and a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kgc.extract import read_documents

    src = corpus(tmp_path, 3)
    want = [r["text"] for r in read_jsonl(src)]
    cfg = ex_cfg(tmp_path, tiny_llama, f"file://{src}")
    assert [d["text"] for d in read_documents(cfg)] == want
    folder = tmp_path / "txt"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(want[0], encoding="utf-8")
    (folder / "sub" / "b.txt").write_text(want[1], encoding="utf-8")
    cfg = ex_cfg(tmp_path, tiny_llama, f"file://{folder}", "input.format=txt")
    docs = read_documents(cfg)
    assert sorted(d["text"] for d in docs) == sorted(want[:2])
    pq.write_table(pa.Table.from_pylist(read_jsonl(src)), tmp_path / "c.parquet")
    cfg = ex_cfg(tmp_path, tiny_llama, f"file://{tmp_path / 'c.parquet'}", "input.id_field=id")
    assert [d["doc_id"] for d in read_documents(cfg)] == [r["id"] for r in read_jsonl(src)]
    with pytest.raises(KgcError, match="does not exist"):
        read_documents(ex_cfg(tmp_path, tiny_llama, f"file://{tmp_path / 'nope.jsonl'}"))
    with pytest.raises(KgcError, match="cannot open this URI"):
        read_documents(ex_cfg(tmp_path, tiny_llama, "nosuchscheme://bucket/x.jsonl"))


def test_full_finetune_checkpoint_loads_its_trained_weights(tiny_llama, tmp_path):
    """A full/freeze checkpoint stores the trained weights (model/trainable.pt), not an
    adapter: the engine must load them (it once silently served the base model)."""
    import torch
    import yaml
    from transformers import AutoModelForCausalLM

    from kgc.checkpoint import CONFIG_FILE, TRAINABLE_FILE, WEIGHTS_DIR
    from kgc.engine import GenerationSettings
    from kgc.modeling.export import export_model
    from kgc.modeling.hf_engine import HFEngine

    ckpt = tmp_path / "checkpoint_000001"
    (ckpt / WEIGHTS_DIR).mkdir(parents=True)
    (ckpt / CONFIG_FILE).write_text(yaml.safe_dump({"model": {"path": str(tiny_llama)}}))
    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_pretrained(tiny_llama)
    state = {n: p.detach() + 0.5 * torch.randn_like(p) for n, p in net.named_parameters()}
    torch.save(
        {n: v for n, v in state.items() if "layers.1." in n}, ckpt / WEIGHTS_DIR / TRAINABLE_FILE
    )
    prompts, gen = _prompts()[:8], GenerationSettings(max_new_tokens=10)
    tuned = HFEngine(checkpoint=str(ckpt), batch_size=4).generate(prompts, gen)
    base = HFEngine(str(tiny_llama), batch_size=4).generate(prompts, gen)
    merged = export_model(str(ckpt), str(tmp_path / "merged"))
    assert tuned != base
    assert tuned == HFEngine(str(merged), batch_size=4).generate(prompts, gen)


def test_answers_for_records_match_by_input_and_schema(tmp_path):
    """An extraction's rows matched back to IEPile records (the demo's "tuned constrained"
    row, bench case (d)): by input text and schema, in the records' order; a chunked
    document or a record without its row is a KgcError naming the fix."""
    from kgc.extract import answers_for_records
    from kgc.rows import ROW_FIELDS
    from kgc.shards import SHARDS, write_shard

    def inst(text: str, schema: list) -> str:
        return json.dumps({"instruction": "…", "schema": schema, "input": text})

    asks = [("Ann was born in Rome.", ["born_in"]), ("Ann was born in Rome.", ["works_for"])]
    asks.append(("Bo works for Acme.", ["works_for"]))
    records = [{"instruction": inst(t, s)} for t, s in reversed(asks)]
    rows = []
    for i, (t, s) in enumerate(asks):
        row = dict.fromkeys(ROW_FIELDS, "")
        row.update(id=f"r{i}", doc_id=f"d{i}", chunk_index=0, output=f"answer {i}")
        rows.append({**row, "instruction": inst(t, s)})
    (tmp_path / SHARDS).mkdir()
    write_shard(tmp_path / SHARDS, rows, "jsonl")
    assert answers_for_records(tmp_path, records) == ["answer 2", "answer 1", "answer 0"]
    with pytest.raises(KgcError, match=r"1 of 2 records .*no row .*same input text and schema"):
        answers_for_records(tmp_path, [records[0], {"instruction": inst("Cy", ["born_in"])}])
    write_shard(tmp_path / SHARDS, [{**rows[0], "id": "r9", "chunk_index": 1}], "jsonl")
    with pytest.raises(KgcError, match=r"document d0 .*split into chunks.*chunk\.max_tokens"):
        answers_for_records(tmp_path, records)
