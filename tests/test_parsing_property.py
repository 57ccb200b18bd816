"""Property test: ≥ 10,000 mutated / truncated model outputs per task reach the parser
without a single exception (the unguarded parser is called, so a crash cannot hide behind
the safety net `Task.parse` adds for production)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgc import tasks
from kgc.parsing import ParseResult

EXAMPLES = 10_000

GOOD = {
    "NER": {"人物": ["张三", "李四"], "地点": [], "组织机构": ["星辰公司"]},
    "RE": {"创始人": [{"subject": "张三", "object": "星辰公司"}], "作者": []},
    "SPO": {"位于": [{"subject": "星辰公司", "object": "北京"}], "作者": []},
    "EE": {
        "组织关系-裁员": [{"trigger": "裁员", "arguments": {"时间": "NAN", "人数": ["200人", "3"]}}]
    },
    "EET": {"组织关系-裁员": ["裁员", "裁掉"], "人生-死亡": []},
    "EEA": {"组织关系-裁员": [{"trigger": "裁员", "arguments": {"裁员方": "星辰公司"}}]},
    "KG": {"人物": {"张三": {"配偶": ["李四"], "出生日期": "1990年"}}},
}
NOISE = list("{}[]:,\"'`\\ \n") + ["NAN", "null", "```json", "，", "：", "\\u4e", "true", "-1e9"]


@st.composite
def mutated(draw, task):
    text = json.dumps(GOOD[task], ensure_ascii=False)
    if draw(st.booleans()):
        text = text.replace('"', "'")
    ops = draw(
        st.lists(
            st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.sampled_from(NOISE)), max_size=6
        )
    )
    for op, pos, piece in ops:
        pos %= len(text) + 1
        if op == 0:
            text = text[:pos] + piece + text[pos:]
        elif op == 1:
            text = text[:pos] + text[pos + len(piece) :]
        elif op == 2:
            text = text[:pos]  # truncation, as when max_new_tokens is hit
        else:
            text = (
                draw(st.sampled_from(["", "Answer: ", "```json\n"]))
                + text
                + draw(st.sampled_from(["", "\n```", " hope this helps"]))
            )
        if not text:
            text = piece
    return text


@pytest.mark.slow
@pytest.mark.parametrize("task", list(GOOD))
def test_parsers_never_raise(task):
    t = tasks.get(task)
    calls: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(mutated(task), st.text(max_size=200)))
    def run(text):
        calls.append(1)
        result = t.parse_unguarded(text)
        assert isinstance(result, ParseResult)
        assert all(isinstance(r, dict) for r in result.records)
        t.tuples(result.records)  # what scoring does next must not raise either

    run()
    assert len(calls) >= EXAMPLES, len(calls)  # the bar: at least 10,000 outputs per task


@pytest.mark.parametrize("task", list(GOOD))
def test_every_prefix_of_a_good_output(task):
    text = json.dumps(GOOD[task], ensure_ascii=False)
    t = tasks.get(task)
    full = t.parse_unguarded(text)
    assert full.ok and full.records
    full_items = t.tuples(full.records)
    for i in range(len(text)):
        part = t.parse_unguarded(text[:i])
        assert isinstance(part, ParseResult)
        # a prefix never invents items: what it finds is part of the full answer (an EEA
        # event cut inside its arguments is kept, and counts as a wrong event)
        for group, items in t.tuples(part.records).items():
            if group != "event":
                assert not Counter(items) - Counter(full_items[group]), (text[:i], group)
