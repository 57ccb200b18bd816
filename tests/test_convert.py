"""Conversion rules: chunking, sampling, ordering, determinism, label-less input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from conftest import IEPILE, TASKS, read_jsonl, write_jsonl

from kgc.convert import convert_file
from kgc.errors import KgcError
from kgc.sampling import SamplingOptions, split_chunks


@pytest.mark.parametrize(
    "n, k, sizes",
    [
        (49, 4, [4] * 11 + [5]),  # remainder 1 < max(1, 2) → joins the last chunk
        (10, 4, [4, 4, 2]),  # remainder 2 >= 2 → its own chunk
        (9, 6, [6, 3]),
        (8, 6, [8]),  # remainder 2 < 3
        (3, 4, [3]),
        (7, 1, [1] * 7),
        (7, -1, [7]),
        (0, 4, []),
    ],
)
def test_split_remainder_rule(n, k, sizes):
    chunks = split_chunks(list(range(n)), k)
    assert [len(c) for c in chunks] == sizes
    assert [x for c in chunks for x in c] == list(range(n))


def conv(tmp_path, task, split="train", name="o.jsonl", src=None, **opts):
    out = tmp_path / name
    convert_file(
        task,
        src or IEPILE / task / "sample.json",
        IEPILE / task / "schema.json",
        out,
        split=split,
        opts=SamplingOptions(**opts),
    )
    return read_jsonl(out)


def schemas(rows):
    return [json.loads(r["instruction"])["schema"] for r in rows]


def test_sorted_order_by_default(tmp_path):
    for s in schemas(conv(tmp_path, "RE", "test")):
        assert s == sorted(s)


def test_random_order_is_seeded(tmp_path):
    a = conv(tmp_path, "RE", name="a", random_order=True, seed=1)
    b = conv(tmp_path, "RE", name="b", random_order=True, seed=1)
    c = conv(tmp_path, "RE", name="c", random_order=True, seed=2)
    assert a == b
    assert schemas(a) != schemas(c)
    assert any(s != sorted(s) for s in schemas(a))


def test_deterministic_across_hash_seeds(tmp_path):
    outputs = []
    for seed in ("0", "1", "12345"):
        out = tmp_path / f"out{seed}.jsonl"
        code = (
            "from kgc.convert import convert_file; from kgc.sampling import SamplingOptions\n"
            f"convert_file('EE', {str(IEPILE / 'EE' / 'sample.json')!r}, "
            f"{str(IEPILE / 'EE' / 'schema.json')!r}, {str(out)!r}, "
            "opts=SamplingOptions(neg_prob=0.3, random_order=True))\n"
        )
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_negative_sampling_probability(tmp_path):
    # RE has 49 relations; with p = 0.2 about 10 negatives per record are drawn
    rows = conv(tmp_path, "RE", neg_prob=0.2, split_num=-1)
    sample = read_jsonl(IEPILE / "RE" / "sample.json")
    assert len(rows) == len(sample)  # split-num -1 → one instruction per record
    sizes = [len(s) for s in schemas(rows)]
    assert all(3 <= n <= 25 for n in sizes), sizes
    for rec, s in zip(sample, schemas(rows)):
        gold = {r["relation"] for r in rec["relation"]}
        assert gold <= set(s)  # positives always asked
    p0 = conv(tmp_path, "RE", name="p0", neg_prob=0.0, split_num=-1)
    for rec, s in zip(sample, schemas(p0)):
        assert sorted(s) == sorted({r["relation"] for r in rec["relation"]})


def test_record_without_positives_gets_at_least_one_negative(tmp_path):
    src = write_jsonl(tmp_path / "raw.json", [{"text": "无实体的句子。", "entity": []}] * 30)
    rows = conv(tmp_path, "NER", src=src, neg_prob=0.01)
    assert len(rows) == 30
    assert all(len(s) >= 1 for s in schemas(rows))
    # with p = 0 such a record yields no instruction — counted, not silently lost
    stats = convert_file(
        "NER",
        src,
        IEPILE / "NER" / "schema.json",
        tmp_path / "x",
        opts=SamplingOptions(neg_prob=0.0),
    )
    assert stats.records_out == 0 and sum(stats.skipped.values()) == 30


def test_kg_keeps_gold_attributes_when_sampling(tmp_path):
    rows = conv(tmp_path, "KG", neg_prob=0.1)
    sample = read_jsonl(IEPILE / "KG" / "sample.json")
    for rec, row in zip(sample, rows):
        attrs = json.loads(row["instruction"])["schema"][0]["attributes"]
        assert {r["relation"] for r in rec["relation"]} <= set(attrs)
        out = json.loads(row["output"])["人物"]
        n_out = sum(len(v) if isinstance(v, list) else 1 for f in out.values() for v in f.values())
        assert n_out == len({(r["head"], r["relation"], r["tail"]) for r in rec["relation"]})


def test_hard_negative_cluster_mode(tmp_path):
    hard = tmp_path / "hard.json"
    hard.write_text(json.dumps({"主演": ["导演", "编剧"], "目": ["号"]}, ensure_ascii=False))
    src = IEPILE / "RE" / "sample.json"
    out = tmp_path / "o.jsonl"
    convert_file(
        "RE",
        src,
        IEPILE / "RE" / "schema.json",
        out,
        hard_negatives=hard,
        opts=SamplingOptions(split_num=4),
    )
    rows = read_jsonl(out)
    by_text = Counter(json.loads(r["instruction"])["input"] for r in rows)
    first = read_jsonl(src)[0]  # gold relation 主演
    labels = [
        x
        for r in rows
        if json.loads(r["instruction"])["input"] == first["text"]
        for x in json.loads(r["instruction"])["schema"]
    ]
    assert {"主演", "导演", "编剧"} <= set(labels)
    assert len(labels) == 3 + 4  # positives + hard negatives + split_num random others
    assert by_text[first["text"]] == 2
    hard.write_text(json.dumps({"主演": ["不存在的关系"]}, ensure_ascii=False))
    with pytest.raises(KgcError, match="not in the schema"):
        convert_file("RE", src, IEPILE / "RE" / "schema.json", out, hard_negatives=hard)


@pytest.mark.parametrize("task", TASKS)
def test_label_less_test_conversion(task, tmp_path):
    key = {"NER": "entity", "RE": "relation", "SPO": "relation", "KG": "relation"}.get(
        task, "event"
    )
    raw = [
        {k: v for k, v in r.items() if k != key} for r in read_jsonl(IEPILE / task / "sample.json")
    ]
    src = write_jsonl(tmp_path / "raw.json", raw)
    out = tmp_path / "o.jsonl"
    stats = convert_file(task, src, IEPILE / task / "schema.json", out, split="test")
    rows = read_jsonl(out)
    assert stats.label_less == len(raw)
    assert rows and all("label" not in r for r in rows)
    assert {json.loads(r["instruction"])["input"] for r in rows} == {r["text"] for r in raw}


def test_source_field_precedence(tmp_path):
    (tmp_path / "mydata").mkdir()
    src = write_jsonl(
        tmp_path / "mydata" / "raw.json",
        [{"text": "张三", "entity": []}, {"text": "李四", "entity": [], "source": "own"}],
    )
    out = tmp_path / "o.jsonl"
    convert_file("NER", src, IEPILE / "NER" / "schema.json", out, split="test")
    assert [r["source"] for r in read_jsonl(out)] == ["mydata", "own"]
    convert_file("NER", src, IEPILE / "NER" / "schema.json", out, split="test", source="cli")
    assert {r["source"] for r in read_jsonl(out)} == {"cli"}


def test_eea_record_without_events_is_counted(tmp_path):
    src = write_jsonl(tmp_path / "raw.json", [{"text": "平静的一天。", "event": []}])
    stats = convert_file("EEA", src, IEPILE / "EEA" / "schema.json", tmp_path / "o", split="train")
    assert stats.records_out == 0
    assert "no event annotations" in stats.summary()
