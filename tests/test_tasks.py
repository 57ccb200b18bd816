"""Per-task tables: targets built from annotations, outputs parsed back, hand-computed scores."""

from __future__ import annotations

import json

import pytest

from kgc import tasks
from kgc.evaluate import evaluate_rows
from kgc.sampling import SamplingOptions, record_rng
from kgc.schema import Schema

TEXT = "张三在北京创办了星辰公司，2020年星辰公司裁员200人。"


def score(task, label, outputs, **kw):
    """Evaluate one record whose chunks produced `outputs`."""
    rows = [
        (
            i,
            {
                "id": "r1",
                "instruction": json.dumps({"schema": [f"chunk {i}"], "input": TEXT}),
                "label": json.dumps(label),
                "output": out,
            },
        )
        for i, out in enumerate(outputs, 1)
    ]
    return evaluate_rows(task, rows, **kw)["scores"]


def prf(s):
    return round(s["precision"], 4), round(s["recall"], 4), round(s["f1"], 4)


def test_registry_has_seven_tasks_and_rejects_duplicates():
    assert tasks.names() == ["NER", "RE", "SPO", "EE", "EET", "EEA", "KG"]
    assert tasks.get("ner") is tasks.get("NER")
    with pytest.raises(ValueError, match="already registered"):
        tasks.register(type(tasks.get("NER")))


# ---------------------------------------------------------------- NER
NER_GOLD = [{"entity": "北京", "entity_type": "地点"}, {"entity": "张三", "entity_type": "人物"}]


def test_ner_target_orders_by_text_position():
    t = tasks.get("NER")
    assert t.target(NER_GOLD, ["人物", "地点", "组织"], TEXT) == {
        "人物": ["张三"],
        "地点": ["北京"],
        "组织": [],
    }


def test_ner_partial_score():
    out = '{"人物": ["张三", "李四"], "地点": [], "组织": ["星辰公司"]}'
    s = score("NER", NER_GOLD, [out])["entity"]
    # pred 3 (张三 ok, 李四 wrong, 星辰公司 wrong), gold 2, tp 1
    assert (s["tp"], s["pred"], s["gold"]) == (1, 3, 2)
    assert prf(s) == (0.3333, 0.5, 0.4)


# ---------------------------------------------------------------- RE / SPO
RE_GOLD = [
    {"head": "张三", "relation": "创始人", "tail": "星辰公司"},
    {"head": "星辰公司", "relation": "所在城市", "tail": "北京"},
]


def test_re_target_uses_subject_object():
    t = tasks.get("RE")
    assert t.target(RE_GOLD, ["创始人", "作者"], TEXT) == {
        "创始人": [{"subject": "张三", "object": "星辰公司"}],
        "作者": [],
    }


@pytest.mark.parametrize("keys", [("subject", "object"), ("head", "tail")])
def test_re_partial_score_same_for_subject_object_and_head_tail(keys):
    s_, o_ = keys
    chunk1 = json.dumps({"创始人": [{s_: "张三", o_: "星辰公司"}], "作者": []}, ensure_ascii=False)
    chunk2 = json.dumps({"所在城市": [{s_: "星辰公司", o_: "上海"}]}, ensure_ascii=False)
    s = score("RE", RE_GOLD, [chunk1, chunk2])["triple"]  # predictions pooled over chunks
    assert (s["tp"], s["pred"], s["gold"]) == (1, 2, 2)
    assert prf(s) == (0.5, 0.5, 0.5)


def test_spo_target_merges_same_predicate_from_two_typed_schemas():
    t = tasks.get("SPO")
    gold = [
        {
            "head": "张三",
            "head_type": "人物",
            "relation": "位于",
            "tail": "北京",
            "tail_type": "城市",
        },
        {
            "head": "星辰公司",
            "head_type": "企业",
            "relation": "位于",
            "tail": "北京",
            "tail_type": "城市",
        },
    ]
    chunk = [t.element("人物_位于_城市"), t.element("企业_位于_城市"), t.element("人物_作者_作品")]
    assert t.target(gold, chunk, TEXT) == {
        "位于": [{"subject": "张三", "object": "北京"}, {"subject": "星辰公司", "object": "北京"}],
        "作者": [],
    }
    out = '{"位于": [{"subject": "张三", "object": "北京"}, {"subject": "星辰公司", "object": "上海"}]}'
    s = score("SPO", gold, [out])["triple"]
    assert prf(s) == (0.5, 0.5, 0.5)


def test_spo_predicate_with_underscore():
    t = tasks.get("SPO")
    assert t.element("人物_毕业_院校_学校") == {
        "subject_type": "人物",
        "predicate": "毕业_院校",
        "object_type": "学校",
    }


# ---------------------------------------------------------------- EE / EET / EEA
EVENTS = [
    {
        "event_type": "组织关系-裁员",
        "event_trigger": "裁员",
        "arguments": [
            {"argument": "200人", "role": "裁员人数"},
            {"argument": "2020年", "role": "时间"},
            {"argument": "星辰公司", "role": "裁员方"},
        ],
    },
    {
        "event_type": "组织关系-创办",
        "event_trigger": "创办",
        "arguments": [{"argument": "张三", "role": "创办者"}],
    },
]


def test_ee_target_fills_nan_and_lists():
    t = tasks.get("EE")
    chunk = [
        {"event_type": "组织关系-裁员", "trigger": True, "arguments": ["时间", "裁员人数", "地点"]},
        {"event_type": "人生-死亡", "trigger": True, "arguments": ["死者"]},
    ]
    assert t.target(EVENTS, chunk, TEXT) == {
        "组织关系-裁员": [
            {"trigger": "裁员", "arguments": {"时间": "2020年", "裁员人数": "200人", "地点": "NAN"}}
        ],
        "人生-死亡": [],
    }
    multi = [
        {
            "event_type": "组织关系-创办",
            "event_trigger": "创办",
            "arguments": [
                {"argument": "星辰公司", "role": "创办者"},
                {"argument": "张三", "role": "创办者"},
            ],
        }
    ]
    chunk = [{"event_type": "组织关系-创办", "trigger": True, "arguments": ["创办者"]}]
    # several values → a list in text order
    assert t.target(multi, chunk, TEXT)["组织关系-创办"][0]["arguments"] == {
        "创办者": ["张三", "星辰公司"]
    }


def test_ee_partial_score():
    out = json.dumps(
        {
            "组织关系-裁员": [
                {
                    "trigger": "裁员",
                    "arguments": {"裁员人数": "200人", "时间": "2021年", "裁员方": "NAN"},
                }
            ],
            "组织关系-创办": [{"trigger": "创立", "arguments": {"创办者": ["张三"]}}],
        },
        ensure_ascii=False,
    )
    s = score("EE", EVENTS, [out])
    # triggers: 裁员 ok, 创立 wrong → tp 1 / pred 2 / gold 2
    assert prf(s["trigger"]) == (0.5, 0.5, 0.5)
    # arguments (type, role, arg): 200人 ok, 2021年 wrong, 张三 ok → tp 2 / pred 3 / gold 4
    assert (s["argument"]["tp"], s["argument"]["pred"], s["argument"]["gold"]) == (2, 3, 4)
    assert prf(s["argument"]) == (0.6667, 0.5, 0.5714)


def test_eet_partial_score():
    out = '{"组织关系-裁员": ["裁员"], "组织关系-创办": [], "财经/交易-融资": ["创办"]}'
    s = score("EET", EVENTS, [out])["trigger"]
    assert (s["tp"], s["pred"], s["gold"]) == (1, 2, 2)


def test_eea_event_and_argument_scores():
    out = json.dumps(
        {
            "组织关系-裁员": [
                {
                    "trigger": "裁员",
                    "arguments": {"裁员人数": "200人", "时间": "2020年", "裁员方": "星辰公司"},
                }
            ],
            "组织关系-创办": [{"trigger": "创办", "arguments": {"创办者": "NAN"}}],
        },
        ensure_ascii=False,
    )
    s = score("EEA", EVENTS, [out])
    # event level needs type, trigger and the full argument set: 1 of 2
    assert (s["event"]["tp"], s["event"]["pred"], s["event"]["gold"]) == (1, 2, 2)
    # arguments: 3 of 3 predicted are right, 3 of 4 gold found
    assert prf(s["argument"]) == (1.0, 0.75, 0.8571)


def test_eea_test_schema_carries_gold_triggers():
    t = tasks.get("EEA")
    schema = Schema.from_lists(
        type_roles={
            "组织关系-裁员": ["时间", "裁员人数", "裁员方"],
            "组织关系-创办": ["创办者"],
            "人生-死亡": ["死者"],
        }
    )
    chunks = t.test_chunks(EVENTS, schema, record_rng(0, 0, TEXT), SamplingOptions(), TEXT)
    els = [e for c in chunks for e in c]
    assert [e["event_type"] for e in els] == ["组织关系-创办", "组织关系-裁员"]  # gold types only
    assert els[1]["trigger"] == ["裁员"]
    label_less = t.test_chunks(None, schema, record_rng(0, 0, TEXT), SamplingOptions(), TEXT)
    assert sum(len(c) for c in label_less) == 3
    assert all("trigger" not in e for c in label_less for e in c)


# ---------------------------------------------------------------- KG
KG_GOLD = [
    {"head": "张三", "relation": "出生地点", "tail": "北京"},
    {"head": "张三", "relation": "所属组织", "tail": "星辰公司"},
    {"head": "星辰公司", "relation": "成立日期", "tail": "2020年"},
]


def test_kg_target_and_partial_score():
    t = tasks.get("KG")
    schema = Schema.from_lists(type_roles={"人物": ["出生地点", "所属组织"], "组织": ["成立日期"]})
    prepared = t.prepare(KG_GOLD, schema)
    chunk = [{"entity_type": "人物", "attributes": ["所属组织", "出生地点", "职业"]}]
    assert t.target(prepared, chunk, TEXT) == {
        "人物": {"张三": {"所属组织": "星辰公司", "出生地点": "北京"}}
    }
    out = json.dumps(
        {
            "人物": {"张三": {"出生地点": "北京", "所属组织": ["星辰公司", "北京大学"]}},
            "组织": {"星辰公司": {}},
        },
        ensure_ascii=False,
    )
    s = score("KG", KG_GOLD, [out])["attribute"]
    assert (s["tp"], s["pred"], s["gold"]) == (2, 3, 3)
    assert prf(s) == (0.6667, 0.6667, 0.6667)


# ---------------------------------------------------------------- scoring rules
def test_set_vs_multiset_and_normalisation():
    out = '{"人物": ["张三", "张三", "ＺＨＡＮＧ san "], "地点": []}'
    gold = NER_GOLD + [{"entity": "zhang San", "entity_type": "人物"}]
    multi = score("NER", gold, [out])["entity"]
    assert (multi["tp"], multi["pred"], multi["gold"]) == (2, 3, 3)
    as_set = score(
        "NER", gold, [out], opts=__import__("kgc.evaluate").evaluate.EvalOptions(match="set")
    )["entity"]
    assert (as_set["tp"], as_set["pred"], as_set["gold"]) == (2, 2, 3)
    strict = score(
        "NER", gold, [out], opts=__import__("kgc.evaluate").evaluate.EvalOptions(normalize=False)
    )["entity"]
    assert strict["tp"] == 1


def test_records_with_identical_text_are_not_merged():
    inst_a = json.dumps({"schema": ["人物"], "input": TEXT}, ensure_ascii=False)
    rows = [
        (
            1,
            {
                "id": "x",
                "instruction": inst_a,
                "label": json.dumps(NER_GOLD[1:]),
                "output": '{"人物": ["张三"]}',
            },
        ),
        (2, {"id": "x", "instruction": inst_a, "label": "[]", "output": '{"人物": []}'}),
    ]
    rep = evaluate_rows("NER", rows)
    assert rep["records"] == 2
    s = rep["scores"]["entity"]
    assert (s["tp"], s["pred"], s["gold"]) == (1, 1, 1)


def test_parse_errors_and_by_source():
    rows = [
        (
            1,
            {
                "id": "a",
                "source": "s1",
                "instruction": "{}",
                "label": json.dumps(NER_GOLD),
                "output": "I cannot answer.",
            },
        ),
        (
            2,
            {
                "id": "b",
                "source": "s2",
                "instruction": "{}",
                "label": json.dumps(NER_GOLD),
                "output": '```json\n{"人物": ["张三"], "地点": ["北京"]}\n```',
            },
        ),
        (
            3,
            {
                "id": "c",
                "source": "s2",
                "instruction": "{}",
                "label": "[]",
                "output": '{"人物": ["张',
            },
        ),
    ]
    rep = evaluate_rows("NER", rows)
    assert rep["records"] == 3 and rep["parse_errors"] == 2 and rep["unparseable"] == 1
    assert rep["by_source"]["s1"]["scores"]["entity"]["gold"] == 2
    assert rep["by_source"]["s1"]["scores"]["entity"]["tp"] == 0
    assert rep["by_source"]["s2"]["scores"]["entity"]["f1"] == 1.0
    assert rep["scores"]["entity"]["recall"] == 0.5
