"""What real models emit, and what the parsers make of it."""

from __future__ import annotations

import pytest

from kgc import tasks
from kgc.parsing import as_values, extract_json


@pytest.mark.parametrize(
    "text, value",
    [
        ('{"人物": ["张三"]}', {"人物": ["张三"]}),
        ('```json\n{"人物": ["张三"]}\n```', {"人物": ["张三"]}),
        ('Sure! Here is the result:\n```\n{"a": []}\n```\nHope it helps.', {"a": []}),
        ('The answer is {"a": ["x"]} as requested.', {"a": ["x"]}),
        ("{'人物': ['张三', '李四']}", {"人物": ["张三", "李四"]}),
        ('{"a": ["x", "y",], "b": [],}', {"a": ["x", "y"], "b": []}),
        (
            '{"e": [{"trigger": "t", "arguments": {"r1": NAN, "r2": "v"}}]}',
            {"e": [{"trigger": "t", "arguments": {"r1": "NAN", "r2": "v"}}]},
        ),
        ("{'name': 'O'Brien', 'h': '5'11\"'}", {"name": "O'Brien", "h": "5'11\""}),
        ('{"a"： ["x"]，"b": None}', {"a": ["x"], "b": None}),
        ("{人物: [张三, 李四]}", {"人物": ["张三", "李四"]}),
        ('{"a": "line\\nbreak \\u4e2d"}', {"a": "line\nbreak 中"}),
    ],
)
def test_extract_json_repairs(text, value):
    got, errors = extract_json(text)
    assert got == value
    assert errors == []


@pytest.mark.parametrize(
    "text, value",
    [
        ('{"人物": ["张三", "李', {"人物": ["张三"]}),
        ('{"组织": ["A"], "人物": [', {"组织": ["A"], "人物": []}),
        ('{"组织": ["A"], "人', {"组织": ["A"]}),
        (
            '{"e": [{"trigger": "裁员", "arguments": {"时间": "5月", "人数": "9',
            {"e": [{"trigger": "裁员", "arguments": {"时间": "5月"}}]},
        ),
        ('```json\n{"a": ["x"], "b": ["y"', {"a": ["x"], "b": ["y"]}),
    ],
)
def test_truncated_output_keeps_complete_items(text, value):
    got, errors = extract_json(text)
    assert got == value
    assert errors and "truncated" in errors[0]


@pytest.mark.parametrize("text", ["", "   ", "I don't know.", None, 42])
def test_unusable_outputs_report_errors(text):
    value, errors = extract_json(text)
    assert value is None
    assert errors


@pytest.mark.parametrize(
    "text, value", [("{", {}), ('{"', {}), ("[[[", [[[]]]), ('{"a": [', {"a": []})]
)
def test_cut_containers_are_kept_empty_and_flagged(text, value):
    assert extract_json(text) == (value, ["output is truncated JSON; complete items were kept"])


def test_nan_answer_is_empty_not_an_error():
    assert extract_json("NAN") == (None, [])


def test_deep_nesting_is_reported_not_raised():
    value, errors = extract_json("[" * 5000 + "]" * 5000)
    assert value is None and "deeper" in errors[0]
    value, errors = extract_json("{" + '"a":[' * 3000)
    assert value is None and errors


def test_as_values_list_or_string():
    assert as_values("x") == ["x"]
    assert as_values(["x", "NAN", ["y"], 3]) == ["x", "3"]
    assert as_values("NAN") == as_values(None) == as_values(float("nan")) == []


def test_task_parsers_records_and_errors():
    ner = tasks.get("NER").parse('{"人物": "张三", "地点": ["北京", "NAN"], "组织": {"x": 1}}')
    assert ner.records == [
        {"entity": "张三", "entity_type": "人物"},
        {"entity": "北京", "entity_type": "地点"},
    ]
    assert len(ner.errors) == 1

    re_ = tasks.get("RE").parse(
        '{"r": [{"subject": "a", "object": "b"}, {"head": "c", "tail": "d"}, ["e", "f"], "bad"]}'
    )
    assert [(r["head"], r["tail"]) for r in re_.records] == [("a", "b"), ("c", "d"), ("e", "f")]
    assert len(re_.errors) == 1

    ee = tasks.get("EE").parse(
        '{"t": [{"trigger": "x", "arguments": {"r": ["a", "b"], "s": "NAN"}}]}'
    )
    assert ee.records == [
        {
            "event_type": "t",
            "event_trigger": "x",
            "arguments": [{"argument": "a", "role": "r"}, {"argument": "b", "role": "r"}],
        }
    ]

    kg = tasks.get("KG").parse('{"人物": {"张三": {"配偶": ["李四"], "别名": "小张"}}}')
    assert {(r["head"], r["relation"], r["tail"]) for r in kg.records} == {
        ("张三", "配偶", "李四"),
        ("张三", "别名", "小张"),
    }

    eet = tasks.get("EET").parse('{"t": ["x", {"trigger": "y"}], "u": "z"}')
    assert [(r["event_type"], r["event_trigger"]) for r in eet.records] == [
        ("t", "x"),
        ("t", "y"),
        ("u", "z"),
    ]


def test_parsers_accept_raw_annotation_lists():
    ner = tasks.get("NER").parse('[{"entity": "张三", "entity_type": "人物"}]')
    assert ner.records == [{"entity": "张三", "entity_type": "人物"}]
    re_ = tasks.get("RE").parse('[{"head": "a", "relation": "r", "tail": "b"}]')
    assert re_.records == [{"head": "a", "relation": "r", "tail": "b"}]
