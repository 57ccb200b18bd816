"""CCKS2023 / kg2instruction text format for NER, EE, EET and EEA: DeepKE's instruction
templates, its four output formats per task and language, NAN lines for negatives, and
scoring that reads every format back (kgc/legacy_tasks.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import read_jsonl, write_jsonl

from kgc import legacy_tasks as lt
from kgc.cli import main
from kgc.errors import KgcError
from kgc.legacy import ccks_options
from kgc.schema import Schema

DATA = Path(__file__).parent / "data" / "deepke"

# DeepKE's InstructKGC README, "指定候选标签列表的模版" (template 0 of each task's file)
README_T0 = {
    (
        "EE",
        "zh",
    ): "你是专门进行事件提取的专家。已知候选的事件字典：{s_schema}，请你根据事件字典，从以下输入中抽取出可能存在的事件，如果不存在某事件就输出NAN。请按照{s_format}的格式回答。",
    (
        "EE",
        "en",
    ): "You are a specialist in event extraction. Given the candidate event dictionary: {s_schema}, please extract any possible events from the input below. If an event does not exist, output NAN. Please answer in the format of {s_format}.",
    (
        "EET",
        "zh",
    ): "作为事件分析专员，你需要查看输入并根据事件类型名录：{s_schema}，来确定可能发生的事件。所有回答都应该基于{s_format}格式。如果事件类型不匹配，请用NAN标记。",
    (
        "EET",
        "en",
    ): "As an event analysis specialist, you need to review the input and determine possible events based on the event type directory: {s_schema}. All answers should be based on the {s_format} format. If the event type does not match, please mark with NAN.",
    (
        "NER",
        "en",
    ): "You are an expert specialized in entity extraction. With the candidate entity types list: {s_schema}, please extract possible entities from the input below, outputting NAN if a certain entity does not exist. Respond in the format {s_format}.",
    (
        "EEA",
        "zh",
    ): "你是专门进行事件论元提取的专家。已知事件字典：{s_schema1}，事件类型及触发词：{s_schema2}，请你从以下输入中抽取出可能存在的论元，如果不存在某事件论元就输出NAN。请按照{s_format}的格式回答。",
}

NER_TEXT = "有心无力的前卫寰岛队只靠高峰扳回一球。"
NER_REC = {
    "text": NER_TEXT,
    "entity": [
        {"entity": "高峰", "entity_type": "人物"},
        {"entity": "前卫寰岛队", "entity_type": "组织机构"},
    ],
}
NER_SCHEMA = Schema.from_lists(["人物", "组织机构", "地理位置"])
EV_TEXT = "消失的“外企光环”，5月份在华裁员900余人，香饽饽变“臭”了"
EV_REC = {
    "text": EV_TEXT,
    "event": [
        {
            "event_trigger": "裁员",
            "event_type": "组织关系-裁员",
            "arguments": [
                {"argument": "900余人", "role": "裁员人数"},
                {"argument": "5月份", "role": "时间"},
            ],
        }
    ],
}
EV_SCHEMA = Schema.from_lists(
    ["组织关系-裁员", "司法行为-起诉"],
    [],
    {"组织关系-裁员": ["裁员方", "裁员人数", "时间"], "司法行为-起诉": ["原告", "被告", "时间"]},
)
SCHEMAS = {"NER": NER_SCHEMA, "EE": EV_SCHEMA, "EET": EV_SCHEMA, "EEA": EV_SCHEMA}
RECORDS = {"NER": NER_REC, "EE": EV_REC, "EET": EV_REC, "EEA": EV_REC}

# Expected answers, written from DeepKE's converters (kg2instruction/convert/converter/
# {ner,ee,eet}_converter.py): test split with --neg-ratio 1 → a NAN per absent label / role.
EXPECTED = {
    ("NER", 0, "zh"): "(前卫寰岛队,组织机构)\n(高峰,人物)\nNAN",
    ("NER", 1, "zh"): "实体是前卫寰岛队,实体类型是组织机构\n实体是高峰,实体类型是人物\nNAN",
    (
        "NER",
        1,
        "en",
    ): "Entity is 前卫寰岛队,Entity Type is 组织机构\nEntity is 高峰,Entity Type is 人物\nNAN",
    ("NER", 2, "zh"): "组织机构：前卫寰岛队\n人物：高峰\nNAN",
    ("NER", 3, "zh"): "{'entity': '前卫寰岛队', 'entity_type': '组织机构'}\n"
    "{'entity': '高峰', 'entity_type': '人物'}\nNAN",
    ("EET", 0, "zh"): "(裁员,组织关系-裁员)\nNAN",
    ("EET", 1, "zh"): "事件触发词是裁员,事件类型是组织关系-裁员\nNAN",
    ("EET", 1, "en"): "Event Trigger is 裁员,Event Type is 组织关系-裁员\nNAN",
    ("EET", 2, "zh"): "组织关系-裁员：裁员\nNAN",
    ("EET", 3, "zh"): "{'event_trigger':'裁员', 'event_type':'组织关系-裁员'}\nNAN",
    ("EE", 0, "zh"): "(裁员,组织关系-裁员,时间#5月份;裁员人数#900余人;NAN)\nNAN",
    ("EE", 1, "zh"): "事件触发词是裁员,事件类型是组织关系-裁员\n"
    "事件论元是5月份,论元角色是时间;事件论元是900余人,论元角色是裁员人数;NAN\n\nNAN",
    ("EE", 1, "en"): "Event Trigger is 裁员,Event Type is 组织关系-裁员\n"
    "Argument is 5月份,Argument Role is 时间;Argument is 900余人,Argument Role is 裁员人数;NAN"
    "\n\nNAN",
    ("EE", 2, "zh"): "组织关系-裁员：裁员\n时间：5月份;裁员人数：900余人;NAN\n\nNAN",
    ("EE", 3, "zh"): "{'event_trigger':'裁员', 'event_type':'组织关系-裁员', 'arguments':"
    "({'argument':'5月份', 'role':'时间'},{'argument':'900余人', 'role':'裁员人数'},NAN)}\nNAN",
    # EEA: the same event layouts, negative roles only (no negative event types)
    ("EEA", 0, "zh"): "(裁员,组织关系-裁员,时间#5月份;裁员人数#900余人;NAN)",
    ("EEA", 2, "en"): "组织关系-裁员：裁员\n时间：5月份;裁员人数：900余人;NAN",
    ("EEA", 3, "en"): "{'event_trigger':'裁员', 'event_type':'组织关系-裁员', 'arguments':"
    "({'argument':'5月份', 'role':'时间'},{'argument':'900余人', 'role':'裁员人数'},NAN)}",
}
for (_t, _f, _l), _v in list(EXPECTED.items()):  # formats 0, 2, 3 are the same in English
    if _f != 1:
        EXPECTED.setdefault((_t, _f, "en" if _l == "zh" else "zh"), _v)
EXPECTED[("EEA", 1, "zh")] = EXPECTED[("EE", 1, "zh")].removesuffix("\n\nNAN")
EXPECTED[("EEA", 1, "en")] = EXPECTED[("EE", 1, "en")].removesuffix("\n\nNAN")

S_FORMAT = {
    ("NER", "zh"): ["(实体,实体类型)\n", "实体是,实体类型是\n", "实体类型：实体\n"],
    ("NER", "en"): [
        "(Entity,Entity Type)\n",
        "Entity is,Entity Type is\n",
        "Entity Type：Entity\n",
    ],
    ("EET", "zh"): [
        "(事件触发词,事件类型)\n",
        "事件触发词是,事件类型是\n",
        "事件类型：事件触发词\n",
    ],
    ("EET", "en"): [
        "(Event Trigger,Event Type)\n",
        "Event Trigger is,Event Type is\n",
        "Event Type：Event Trigger\n",
    ],
}


def _templates_file(tmp_path, task):
    """A stand-in for the user's DeepKE template file: template i names its own index."""
    slot = "{s_schema1}|{s_schema2}" if task == "EEA" else "{s_schema}"
    data = {
        lang: {"template": {str(i): f"T{i}-{lang} {slot} <{{s_format}}>" for i in range(20)}}
        for lang in ("zh", "en")
    }
    path = tmp_path / f"{task.lower()}_template.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _convert(
    task,
    recs,
    *,
    split="test",
    language="zh",
    sample=0,
    neg_ratio=1,
    schema="auto",
    templates=None,
    **kw,
):
    opts = ccks_options(sample, neg_ratio, kw.pop("neg_schema", None), seed=kw.pop("seed", 42))
    out, problems = lt.convert_rows(
        task,
        list(enumerate(recs, 1)),
        split=split,
        language=language,
        schema=SCHEMAS[task] if schema == "auto" else schema,
        path="in.jsonl",
        options=opts,
        templates=templates,
    )
    assert problems == []
    return out


def test_templates_equal_deepkes_files():
    """NER and EEA: all 20 templates per language equal DeepKE's configs/*_template.json
    (copies in tests/data/deepke/); EE and EET: template 0 equals DeepKE's README."""
    for task in ("NER", "EEA"):
        ref = json.loads((DATA / f"{task.lower()}_template.json").read_text("utf-8"))
        for lang in ("zh", "en"):
            assert list(lt.DEEPKE_TEMPLATES[task][lang]) == [
                ref[lang]["template"][str(i)] for i in range(20)
            ]
    for (task, lang), text in README_T0.items():
        assert lt.DEEPKE_TEMPLATES[task][lang][0] == text
    for task in ("EE", "EET"):
        assert len(lt.DEEPKE_TEMPLATES[task]["zh"]) == len(lt.DEEPKE_TEMPLATES[task]["en"]) == 1


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("n", [0, 1, 2])
def test_ner_instruction_is_deepkes_template(n, language):
    ref = json.loads((DATA / "ner_template.json").read_text("utf-8"))
    [rec] = _convert("NER", [NER_REC], split="train", language=language, sample=n, neg_schema=1)
    # neg_schema 1 draws every type: 地理位置 is a negative, the list is sorted
    assert rec["instruction"] == ref[language]["template"][str(n)].format(
        s_schema="['人物', '地理位置', '组织机构']", s_format=S_FORMAT[("NER", language)][n]
    )
    assert rec["output"] == EXPECTED[("NER", n, language)]


@pytest.mark.parametrize("language", ["zh", "en"])
def test_eet_ee_eea_instruction_template_0(language):
    [eet] = _convert("EET", [EV_REC], language=language)
    assert eet["instruction"] == README_T0[("EET", language)].format(
        s_schema="['司法行为-起诉', '组织关系-裁员']", s_format=S_FORMAT[("EET", language)][0]
    )
    [ee] = _convert("EE", [EV_REC], language=language)
    schema = "{'司法行为-起诉': ['原告', '时间', '被告'], '组织关系-裁员': ['时间', '裁员人数', '裁员方']}"
    fmt0 = {
        "zh": "(事件触发词,事件类型,事件论元1#论元角色1;事件论元2#论元角色2)\n",
        "en": "(Event Trigger,Event Type,Argument1#Argument Role1;Argument2#Argument Role2)\n",
    }[language]
    assert ee["instruction"] == README_T0[("EE", language)].format(s_schema=schema, s_format=fmt0)
    [eea] = _convert("EEA", [EV_REC], language=language, sample=3)
    ref = json.loads((DATA / "eea_template.json").read_text("utf-8"))
    assert eea["instruction"] == ref[language]["template"]["3"].format(
        s_schema1="{'组织关系-裁员': ['时间', '裁员人数', '裁员方']}",
        s_schema2="[{'event_type': '组织关系-裁员', 'event_trigger': '裁员'}]",
        s_format="{'event_trigger':'', 'event_type':'', 'arguments':({'argument':'', 'role':''},)}\n",
    )


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("fmt", [0, 1, 2, 3])
@pytest.mark.parametrize("task", lt.TASKS)
def test_output_formats(task, fmt, language, tmp_path):
    templates = lt.load_templates(_templates_file(tmp_path, task), task)
    [rec] = _convert(task, [RECORDS[task]], language=language, sample=fmt, templates=templates)
    assert rec["label"] == EXPECTED[(task, fmt, language)]
    assert rec["instruction"].startswith(f"T{fmt}-{language} ")
    assert rec["instruction"].endswith(f"<{lt.DEEPKE_FORMATS[task][language][fmt]}>")


def test_nothing_but_negatives_is_nan_and_no_negatives_without_neg_ratio():
    empty = {"text": "今天天气很好。", "entity": []}
    assert _convert("NER", [empty])[0]["label"] == "NAN"
    assert _convert("EE", [{"text": "x", "event": []}])[0]["label"] == "NAN"
    # kgc's default (no --neg-ratio): the whole schema listed, no NAN lines
    [rec] = _convert("NER", [NER_REC], neg_ratio=None)
    assert rec["label"] == "(前卫寰岛队,组织机构)\n(高峰,人物)"
    assert "['人物', '组织机构', '地理位置']" in rec["instruction"]
    [ee] = _convert("EE", [EV_REC], neg_ratio=None)
    assert ee["label"] == "(裁员,组织关系-裁员,时间#5月份;裁员人数#900余人)"


def test_train_negatives_follow_neg_schema_and_seed():
    recs = [dict(NER_REC, text=f"{NER_TEXT}{i}") for i in range(30)]
    a = _convert("NER", recs, split="train", neg_schema=0.34, seed=3)
    b = _convert("NER", recs, split="train", neg_schema=0.34, seed=3)
    assert a == b
    # k = round(0.34 · 3) = 1 type drawn: 地理位置 (→ one NAN line) or a positive one
    nans = [r["output"].split("\n").count("NAN") for r in a]
    assert set(nans) == {0, 1}
    assert all(("地理位置" in r["instruction"]) == (n == 1) for r, n in zip(a, nans))
    ee = _convert("EE", [EV_REC] * 20, split="train", neg_schema=1)
    assert any(r["output"].endswith("\nNAN") for r in ee)  # the other event type
    assert all("司法行为-起诉" in r["instruction"] for r in ee)


def _score(task, rows):
    rows = list(enumerate(rows, 1))
    return lt.evaluate_rows(task, rows, language="zh")


COMMA_RECS = {
    "NER": {
        "text": "Acme, Inc. hired O'Brien in 高峰.",
        "entity": [
            {"entity": "Acme, Inc.", "entity_type": "组织机构"},
            {"entity": "O'Brien", "entity_type": "人物"},
        ],
    },
    "EV": {
        "text": "Acme, Inc. 在北京裁员 O'Brien 等 3 人",
        "event": [
            {
                "event_trigger": "裁员",
                "event_type": "组织关系-裁员",
                "arguments": [
                    {"argument": "Acme, Inc.", "role": "裁员方"},
                    {"argument": "O'Brien", "role": "裁员人数"},
                ],
            },
            {"event_trigger": "起诉", "event_type": "司法行为-起诉", "arguments": []},
        ],
    },
}


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("fmt", [0, 1, 2, 3])
@pytest.mark.parametrize("task", lt.TASKS)
def test_round_trip_gold_scores_one(task, fmt, language, tmp_path):
    templates = lt.load_templates(_templates_file(tmp_path, task), task)
    recs = [RECORDS[task], COMMA_RECS["NER" if task == "NER" else "EV"]]
    if task != "EEA":
        recs.append({"text": "无关的句子", ANNOTATION_KEY[task]: []})
    out = _convert(task, recs, language=language, sample=fmt, templates=templates)
    rep = _score(task, [{**r, "output": r["label"]} for r in out])
    assert rep["records"] == len(recs) and rep["parse_errors"] == 0
    for group, s in rep["scores"].items():
        assert s["f1"] == 1.0, (group, s)
    assert rep["ccks_score"] == pytest.approx(1.0)
    # gold from the annotation instead of the label text scores the same
    rows = [
        {**rec, "instruction": r["instruction"], "output": r["label"]} for rec, r in zip(recs, out)
    ]
    rep2 = _score(task, rows)
    assert all(s["f1"] == 1.0 for s in rep2["scores"].values()), rep2["scores"]


ANNOTATION_KEY = {"NER": "entity", "EE": "event", "EET": "event", "EEA": "event"}


def test_gold_from_annotation_when_no_label():
    rows = [{**NER_REC, "instruction": "", "output": "(前卫寰岛队,组织机构)\n人物：高峰"}]
    rep = _score("NER", rows)
    assert rep["scores"]["entity"]["f1"] == 1.0
    rows = [{**EV_REC, "output": "(裁员,组织关系-裁员,时间#5月份;裁员人数#900余人)"}]
    rep = _score("EE", rows)
    assert rep["scores"]["event"]["f1"] == rep["scores"]["argument"]["f1"] == 1.0


def test_one_wrong_item_lowers_precision_and_recall():
    [rec] = _convert("NER", [NER_REC])
    rep = _score("NER", [{**rec, "output": "(前卫寰岛队,组织机构)\n(高峰,地理位置)\nNAN"}])
    s = rep["scores"]["entity"]
    assert (s["tp"], s["pred"], s["gold"]) == (1, 2, 2) and s["precision"] == s["recall"] == 0.5
    [rec] = _convert("EE", [EV_REC])
    wrong = "(裁员,组织关系-裁员,时间#6月份;裁员人数#900余人;NAN)\nNAN"
    rep = _score("EE", [{**rec, "output": wrong}])
    assert rep["scores"]["event"]["f1"] == 1.0
    a = rep["scores"]["argument"]
    assert (a["tp"], a["pred"], a["gold"]) == (1, 2, 2)
    # a wrong trigger: the event and all its arguments miss
    rep = _score("EE", [{**rec, "output": "(解雇,组织关系-裁员,时间#5月份)"}])
    assert rep["scores"]["event"]["tp"] == 0 and rep["scores"]["argument"]["tp"] == 0
    [eet] = _convert("EET", [EV_REC])
    rep = _score("EET", [{**eet, "output": "(裁员,组织关系-裁员)\n(起诉,司法行为-起诉)"}])
    t = rep["scores"]["trigger"]
    assert (t["tp"], t["pred"], t["gold"]) == (1, 2, 1)


def test_mixed_formats_and_garbage_lines():
    items, errors = lt.parse(
        "NER",
        "(前卫寰岛队,组织机构)\n实体是高峰,实体类型是人物\n地理位置：北京\n"
        "{'entity': 'Acme, Inc.', 'entity_type': '组织机构'}\nNAN\n这不是答案\n",
        ["人物", "组织机构", "地理位置"],
    )
    assert items == [
        ("前卫寰岛队", "组织机构"),
        ("高峰", "人物"),
        ("北京", "地理位置"),
        ("Acme, Inc.", "组织机构"),
    ]
    assert len(errors) == 1 and "这不是答案" in errors[0]
    schema = {"组织关系-裁员": ["时间", "裁员人数"], "司法行为-起诉": ["原告"]}
    text = (
        "(裁员,组织关系-裁员,时间#5月份;NAN)\n"
        "事件触发词是起诉,事件类型是司法行为-起诉\n事件论元是张三,论元角色是原告\n\n"
        "组织关系-裁员：解雇\n裁员人数：3 人\n\n"
        "{'event_trigger':'裁员', 'event_type':'组织关系-裁员', 'arguments':(NAN)}\n"
        "garbage )(\nNAN"
    )
    events, errors = lt.parse("EE", text, schema)
    assert events == [
        ("组织关系-裁员", "裁员", (("5月份", "时间"),)),
        ("司法行为-起诉", "起诉", (("张三", "原告"),)),
        ("组织关系-裁员", "解雇", (("3 人", "裁员人数"),)),
        ("组织关系-裁员", "裁员", ()),
    ]
    assert len(errors) == 1
    # a comma inside a trigger is resolved with the instruction's event types
    assert lt.parse("EET", "(a,b,组织关系-裁员)", ["组织关系-裁员"])[0] == [
        ("组织关系-裁员", "a,b")
    ]
    assert lt.parse("NER", "No entity found.")[0] == []
    assert lt.parse("EE", None)[1] == ["output is NoneType, not text"]


def test_format_3_with_unescaped_quote_is_read():
    line = "{'event_trigger':'裁员', 'event_type':'组织关系-裁员', 'arguments':({'argument':'O'Brien', 'role':'裁员方'},NAN)}"
    assert lt.parse("EEA", line)[0] == [("组织关系-裁员", "裁员", (("O'Brien", "裁员方"),))]
    assert lt.parse("EET", "{'event_trigger':'O'Brien', 'event_type':'x'}")[0] == [("x", "O'Brien")]


def test_bad_records_are_reported():
    rows = [
        (3, {"text": "a", "entity": [{"entity": "a", "entity_type": "星球"}]}),
        (4, {"text": "b", "entity": [{"entity": 1, "entity_type": "人物"}]}),
        (5, {"text": "c"}),
        (6, {"entity": []}),
    ]
    out, problems = lt.convert_rows(
        "NER", rows, split="train", language="zh", schema=NER_SCHEMA, path="f.jsonl"
    )
    text = [str(p) for p in problems]
    assert out == [] and len(text) == 4
    assert "f.jsonl:3:" in text[0] and "'星球'" in text[0] and "line 1 of the schema" in text[0]
    assert "f.jsonl:4:" in text[1] and "'entity'" in text[1]
    assert "f.jsonl:5: field 'entity' is missing" in text[2] and "--split test" in text[2]
    assert "'text'" in text[3]
    _, problems = lt.convert_rows(
        "EEA", [(1, {"text": "x"})], split="test", language="zh", schema=None, path="f"
    )
    assert "field 'event' is missing; EEA records need it" in str(problems[0])


def test_ee_eet_other_templates_need_the_template_file(tmp_path):
    for task in ("EE", "EET"):
        for sample in (1, -1):
            with pytest.raises(KgcError) as exc:
                _convert(task, [EV_REC], sample=sample)
            assert f"--ccks-sample {sample}" in str(exc.value)
            assert "--ccks-templates" in str(exc.value)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"zh": {"template": {"0": "no format {x}"}}}), encoding="utf-8")
    with pytest.raises(KgcError) as exc:
        lt.load_templates(bad, "EE")
    msgs = [str(p) for p in exc.value.problems]
    assert any("'zh.template.0'" in m and "placeholder" in m for m in msgs)
    assert any("'zh.template.1' must be a string (missing)" in m for m in msgs)
    assert any("'en.template' is missing" in m for m in msgs)


def _cli(tmp_path, task, recs, schema_lines, *extra, split="train", name="out.jsonl"):
    src = write_jsonl(tmp_path / f"{task}_raw.jsonl", recs)
    schema = tmp_path / f"{task}_schema.json"
    schema.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in schema_lines) + "\n")
    out = tmp_path / name
    argv = ["convert", "--format", "ccks2023", "--task", task, "--input", str(src)]
    argv += ["--schema", str(schema), "--output", str(out), "--split", split, *extra]
    return main(argv), out


def test_cli_convert_and_eval(tmp_path, capsys):
    ner_schema = [["人物", "组织机构", "地理位置"], [], {}]
    code, train = _cli(
        tmp_path, "NER", [NER_REC], ner_schema, "--ccks-sample", "2", "--neg-ratio", "1"
    )
    assert code == 0
    [row] = read_jsonl(train)
    assert row["output"] == EXPECTED[("NER", 2, "zh")]
    code, test = _cli(
        tmp_path,
        "NER",
        [NER_REC, COMMA_RECS["NER"]],
        ner_schema,
        "--ccks-sample",
        "-1",
        "--neg-ratio",
        "1",
        split="test",
        name="t.jsonl",
    )
    assert code == 0
    gold = read_jsonl(test)
    preds = write_jsonl(tmp_path / "p.jsonl", [{**g, "output": g["label"]} for g in gold])
    capsys.readouterr()
    argv = ["eval", "--task", "NER", "--format", "ccks2023", "--input", str(preds), "--json"]
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["task"] == "NER" and rep["scores"]["entity"]["f1"] == 1.0
    assert rep["ccks_score"] == pytest.approx(1.0)
    # EE: the template file makes --ccks-sample 1 possible; the table names both groups
    ev_schema = [[], [], {"组织关系-裁员": ["裁员方", "裁员人数", "时间"]}]
    code, ee = _cli(
        tmp_path,
        "EE",
        [EV_REC],
        ev_schema,
        "--ccks-sample",
        "1",
        "--ccks-templates",
        str(_templates_file(tmp_path, "EE")),
        split="test",
        name="ee.jsonl",
    )
    assert code == 0
    preds = write_jsonl(
        tmp_path / "pe.jsonl", [{**g, "output": g["label"]} for g in read_jsonl(ee)]
    )
    capsys.readouterr()
    assert main(["eval", "--task", "EE", "--format", "ccks2023", "--input", str(preds)]) == 0
    table = capsys.readouterr().out
    assert "event" in table and "argument" in table and "CCKS2023 score" in table


def test_cli_errors(tmp_path, capsys):
    ev_schema = [[], [], {"组织关系-裁员": ["裁员方", "裁员人数", "时间"]}]
    code, out = _cli(tmp_path, "EET", [EV_REC], ev_schema, "--ccks-sample", "2")
    assert code == 2 and not out.exists()
    assert "--ccks-templates" in capsys.readouterr().err
    code, _ = _cli(tmp_path, "KG", [EV_REC], ev_schema)
    assert code == 2 and "--format ccks2023 supports --task RE, NER" in capsys.readouterr().err
    code, _ = _cli(tmp_path, "RE", [EV_REC], ev_schema, "--ccks-templates", "x.json")
    assert code == 2 and "not for --task RE" in capsys.readouterr().err
    argv = ["convert", "--task", "NER", "--input", "x", "--schema", "y", "--output", "z"]
    assert main([*argv, "--ccks-templates", "t.json"]) == 2
    assert "--format ccks2023" in capsys.readouterr().err
