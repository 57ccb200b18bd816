"""Conversion rules: chunking, sampling, ordering, determinism, label-less input."""

from __future__ import annotations

import json
import os
import re
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


# ------------------------------------------------ OneKE described and example instructions
def _oneke(tmp_path, task, records, types=(), roles=(), type_roles=None, info=None, **kw):
    """Convert `records` with a 3-line schema and a --schema-info file; the instructions."""
    schema = tmp_path / f"{task}.schema"
    schema.write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in (list(types), list(roles),
                                                               type_roles or {})) + "\n"
    )  # fmt: skip
    info_path = tmp_path / f"{task}.info.json"
    info_path.write_text(json.dumps(info, ensure_ascii=False))
    out = tmp_path / f"{task}.out.jsonl"
    convert_file(
        task,
        write_jsonl(tmp_path / f"{task}.raw.jsonl", records),
        schema,
        out,
        split=kw.pop("split", "test"),
        opts=SamplingOptions(split_num=-1, **kw),
        schema_info=info_path,
    )
    return [json.loads(r["instruction"]) for r in read_jsonl(out)]


NER_ZH = (
    "你是专门进行实体抽取的专家。请从input中抽取出符合schema定义的实体，不存在的实体类型返回空列表。"
    "请按照JSON字符串的格式回答。"
)


def test_oneke_described_ner_schema(tmp_path):
    """OneKE.md's described NER instruction: the schema is {label: description}, in one
    instruction, the instruction text and key order unchanged."""
    text = "我很难想象在另外一个项目再做一个海渔广场，当时我们拿到这个项目的时候，我正好在三亚，"
    desc = {
        "景点": "景点实体类型包括建筑物、博物馆、纪念馆、美术馆、河流、山峰等。",
        "电影": "电影实体包括中文或英文电影名称，有时也包括电影人物角色名。",
    }
    (inst,) = _oneke(tmp_path, "NER", [{"text": text}], types=["电影", "景点"],
                     info={"descriptions": desc})  # fmt: skip
    assert list(inst) == ["instruction", "schema", "input"]
    assert inst == {"instruction": NER_ZH, "schema": {"景点": desc["景点"], "电影": desc["电影"]},
                    "input": text}  # fmt: skip


def test_oneke_described_ee_and_kg_schemas(tmp_path):
    """EE: {type: {type: description, "trigger": true, "arguments": {role: description}}};
    KG: [{"entity_type", "attributes": {attribute: description}}]; an undescribed role or
    attribute is described by its name (as OneKE's own example does: "民族": "民族")."""
    (ee,) = _oneke(
        tmp_path,
        "EE",
        [{"text": "蔚来位于美国硅谷的分公司已裁减100名员工。"}],
        type_roles={"组织关系-裁员": ["裁员方", "被裁员方"]},
        info={"descriptions": {"组织关系-裁员": {
            "description": "合同被取消或终止的情况。",
            "roles": {"裁员方": "发起裁员的一方。"},
        }}},
    )  # fmt: skip
    assert ee["schema"] == {
        "组织关系-裁员": {
            "组织关系-裁员": "合同被取消或终止的情况。",
            "trigger": True,
            "arguments": {"裁员方": "发起裁员的一方。", "被裁员方": "被裁员方"},
        }
    }
    (kg,) = _oneke(
        tmp_path,
        "KG",
        [{"text": "周杰伦，1979年1月18日出生于台湾省新北市。"}],
        type_roles={"人物": ["出生日期", "出生地点"]},
        info={"descriptions": {"人物": {"roles": {"出生日期": "生日、出生年月日"}}}},
    )
    assert kg["schema"] == [
        {
            "entity_type": "人物",
            "attributes": {"出生地点": "出生地点", "出生日期": "生日、出生年月日"},
        }
    ]


def test_oneke_example_instruction(tmp_path):
    """OneKE.md's example instruction: the suffix after the instruction text, `example`
    between `schema` and `input`, the schema list as usual; train records keep their output."""
    examples = [
        {"input": "DPP-4抑制剂在特殊人群中的应用", "output": {"检查指标": []}},
        {"input": "肾小球滤过率下降：eGFR≤60", "output": {"检查指标": ["肾小球滤过率", "eGFR"]}},
    ]
    text = "丙氨酸氨基转移酶(ALT)>3倍参考值上限可作为肝损害的指标。"
    rec = {"text": text, "entity": [{"entity": "ALT", "entity_type": "检查指标"}]}
    (inst,) = _oneke(tmp_path, "NER", [rec], types=["检查指标"], info={"examples": examples},
                     split="train")  # fmt: skip
    assert list(inst) == ["instruction", "schema", "example", "input"]
    assert inst["instruction"] == (
        "你是专门进行实体抽取的专家。请从input中抽取出符合schema定义的实体，不存在的实体类型返回空列表。"
        "请按照JSON字符串的格式回答。你可以参考example进行抽取。"
    )  # OneKE.md's bytes
    assert inst["schema"] == ["检查指标"] and inst["example"] == examples
    out = read_jsonl(tmp_path / "NER.out.jsonl")
    assert json.loads(out[0]["output"]) == {"检查指标": ["ALT"]}


@pytest.mark.parametrize(
    "info, needle",
    [
        ({"descriptions": {"未知": "x"}}, "descriptions.未知: '未知' is not a label"),
        ({"describe": {}}, "unknown key 'describe'"),
        ({"descriptions": {"人物": ""}}, "descriptions.人物: must be a non-empty text"),
        ({"examples": [{"input": "x"}]}, "examples[0]: must be"),
        ({"examples": {"input": "x"}}, "'examples' must be a list"),
        ([], "must be a JSON object"),
    ],
)
def test_schema_info_problems_name_the_field(tmp_path, info, needle):
    with pytest.raises(KgcError, match=re.escape(needle)):
        _oneke(tmp_path, "NER", [{"text": "张三"}], types=["人物"], info=info)


def test_schema_info_roles_and_tasks_are_checked(tmp_path):
    with pytest.raises(
        KgcError, match=re.escape("descriptions.人物.roles: ['身高'] are not roles")
    ):
        _oneke(tmp_path, "KG", [{"text": "张三"}], type_roles={"人物": ["出生地"]},
               info={"descriptions": {"人物": {"roles": {"身高": "x"}}}})  # fmt: skip
    with pytest.raises(KgcError, match="not SPO"):
        _oneke(tmp_path, "SPO", [{"text": "张三"}], types=["人物_出生地_地点"],
               info={"descriptions": {"人物_出生地_地点": "x"}})  # fmt: skip


def test_schema_info_on_the_command_line(tmp_path):
    info = tmp_path / "info.json"
    info.write_text(json.dumps({"descriptions": {"人物": "人的名字"}}, ensure_ascii=False))
    out = tmp_path / "out.jsonl"
    args = ["convert", "--task", "NER", "--input", str(IEPILE / "NER" / "sample.json"),
            "--schema", str(IEPILE / "NER" / "schema.json"), "--output", str(out),
            "--split", "test", "--split-num", "-1", "--schema-info", str(info)]  # fmt: skip
    from kgc.cli import main

    assert main(args) == 0
    schema = json.loads(read_jsonl(out)[0]["instruction"])["schema"]
    assert isinstance(schema, dict) and schema["人物"] == "人的名字"
    assert all(v == k for k, v in schema.items() if k != "人物")
