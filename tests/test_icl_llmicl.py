"""LLMICL: prompts (en/zh, zero/few-shot, domain, labels), parsing of real-looking and
malformed answers into kgc records, scoring, CCKS2023 — against a replaying server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("openai")

from kgc.errors import KgcError  # noqa: E402
from kgc.icl import llmicl  # noqa: E402
from kgc.icl.config import load_icl_config  # noqa: E402
from kgc.icl.runner import run_icl  # noqa: E402
from tests.support.replay import ReplayServer  # noqa: E402

pytestmark = pytest.mark.timeout(60)
EX = Path(__file__).resolve().parent.parent / "examples" / "icl" / "llmicl"
DEEPKE = Path("/work/shared/reference/deepke-formats/llmicl")
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def cfg_for(srv, task, **kw):
    data = {
        "mode": "llmicl",
        "input": str(EX / f"{task}_input.jsonl"),
        "client": {"base_url": srv.base_url, "model": "m", "allow_no_key": True, "cache_dir": None},
        "llmicl": {"task": task, **kw.pop("llmicl", {})},
        **kw,
    }
    return load_icl_config(None, data=data)


def test_instructions_en_zh_domain_labels():
    en = llmicl.instruction("ner", "en", "biomedical", ["DISEASE", "DRUG"])
    assert "biomedical" in en and "DISEASE, DRUG" in en and "JSON" in en
    zh = llmicl.instruction("ner", "zh", "体育", ["人物", "地点"])
    assert "体育" in zh and "人物、地点" in zh
    # zero labels, no domain: a NER prompt (DeepKE fell back to its RE text here)
    assert "named entities" in llmicl.instruction("ner", "en", None, None)
    for task in ("re", "ee", "rte"):
        for lang in ("en", "zh"):
            assert llmicl.instruction(task, lang, None, ["x"])
    re_user = llmicl.user_message(
        "re",
        "en",
        {"text": "T", "head_entity": "A", "head_type": "person", "tail_entity": "B"},
    )
    # the text appears once (EasyInstruct repeated it)
    assert re_user == (
        "Text: T\nHead entity: A (person)\nTail entity: B\n"
        "Relation of the head entity to the tail entity:"
    )


def test_instructions_are_the_pinned_strings():
    """The prompt table (kgc/icl/prompts/llmicl.json) gives, byte for byte, the strings of the
    if-chain it replaced: every task × language × domain (none, "", given) × labels (none, [],
    [""], one, two), values with braces included (tests/fixtures/llmicl_instructions.json)."""
    cases = json.loads((FIXTURES / "llmicl_instructions.json").read_text(encoding="utf-8"))
    assert len(cases) == 120
    for c in cases:
        got = llmicl.instruction(c["task"], c["language"], c["domain"], c["labels"])
        assert got == c["instruction"], c
    with pytest.raises(KgcError, match="no built-in instruction"):
        llmicl.instruction("ccks2023", "en", None, None)


@pytest.mark.parametrize(
    "text, records, errors",
    [
        ('{"person": ["Ada"], "location": []}', [("Ada", "person")], 0),
        ('```json\n{"person": ["Ada"]}\n```', [("Ada", "person")], 0),
        ("[{'E': 'person', 'W': 'Ada'}]", [("Ada", "person")], 0),  # DeepKE's layout
        ('{"person": ["Ada"], "city": ["Paris"]}', [("Ada", "person")], 1),  # not a label
        ('{"person": ["Ada", "Bo', [("Ada", "person")], 1),  # cut off
        ("Sorry, I can't.", [], 1),
        ("", [], 1),
    ],
)
def test_ner_answers(text, records, errors):
    res = llmicl.parse_answer("ner", text, ["person", "location"])
    assert [(r["entity"], r["entity_type"]) for r in res.records] == records
    assert len(res.errors) == errors


def test_re_ee_rte_answers():
    assert llmicl.parse_answer("re", "Founded By.", ["founded by", "employee of"]).records == [
        {"relation": "founded by"}
    ]
    assert llmicl.parse_answer("re", "NONE", ["founded by"]).records == []
    bad = llmicl.parse_answer("re", "sister of", ["founded by"])
    assert bad.records == [] and "not one of the candidate" in bad.errors[0]
    ee = llmicl.parse_answer(
        "ee", '{"Attack": [{"trigger": "hit", "arguments": {"Target": ["car", "bus"]}}]}'
    )
    assert ee.records == [
        {
            "event_type": "Attack",
            "event_trigger": "hit",
            "arguments": [
                {"argument": "car", "role": "Target"},
                {"argument": "bus", "role": "Target"},
            ],
        }
    ]
    deepke_ee = llmicl.parse_answer(
        "ee", '[{"event_type": "Die", "arguments": [{"role": "Victim", "argument": "man"}]}]'
    )
    assert deepke_ee.records[0]["arguments"] == [{"argument": "man", "role": "Victim"}]
    rte = llmicl.parse_answer("rte", '[["A", "born in", "B"], ["broken"]]')
    assert rte.records == [{"head": "A", "relation": "born in", "tail": "B"}]
    assert len(rte.errors) == 1


def test_ner_few_shot_against_replay_with_malformed_answers():
    rules = [
        {"match": "Marek Olsen", "reply": '{"person": ["Marek Olsen"], "location": ["Tallinn"], "organization": ["Baltic Growth Fund"]}'},
        {"match": "Ines Duarte", "reply": '```json\n{"person": ["Ines Duarte"], "location": ["Lisbon", "Recif'},
        {"match": "Corvane", "reply": "I am not able to answer."},
    ]  # fmt: skip
    with ReplayServer(rules) as srv:
        cfg = cfg_for(
            srv, "ner", llmicl={"demos": str(EX), "labels": ["person", "location", "organization"]}
        )
        res = run_icl(cfg)
        body = srv.requests[0]["body"]
    assert [r["id"] for r in res.rows] == ["n1", "n2", "n3"]  # every input row, in order
    assert res.rows[2]["records"] == [] and res.rows[2]["errors"] == ["no JSON object in output"]
    assert "truncated" in res.rows[1]["errors"][0]
    ent = res.summary["scores"]["entity"]
    assert (ent["tp"], ent["pred"], ent["gold"]) == (5, 5, 7)  # Recife was cut off, n3 failed
    assert res.summary["demonstrations"] == 2 and res.summary["rows_with_errors"] == 2
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert json.loads(body["messages"][2]["content"])["person"] == ["Hana Kobayashi"]


def test_zero_shot_re_scores_pairs():
    rules = [
        {"match": "Bright Wells", "reply": "founded by"},
        {"match": "St. Ansgar", "reply": "Founded_by"},  # wrong relation
        {"match": "met in Oslo", "reply": "NONE"},
    ]
    with ReplayServer(rules) as srv:
        cfg = cfg_for(srv, "re", llmicl={"labels": ["founded by", "employee of"]})
        res = run_icl(cfg)
        msgs = srv.requests[0]["body"]["messages"]
    assert len(msgs) == 2 and "Candidate relations: founded by, employee of" in msgs[0]["content"]
    assert res.rows[0]["records"] == [
        {"head": "Bright Wells", "relation": "founded by", "tail": "Tomas Grey"}
    ]
    t = res.summary["scores"]["triple"]
    assert (t["tp"], t["pred"], t["gold"]) == (1, 2, 2)


def test_ee_and_rte_few_shot():
    ee_reply = '{"Attack": [{"trigger": "attacked", "arguments": {"Attacker": "Soldiers", "Place": "Tarn"}}]}'
    with ReplayServer([{"match": "Tarn", "reply": ee_reply}]) as srv:
        res = run_icl(cfg_for(srv, "ee", llmicl={"demos": str(EX / "ee_en.json")}))
    s = res.summary["scores"]
    assert (s["trigger"]["tp"], s["trigger"]["gold"]) == (1, 2)
    assert (s["argument"]["tp"], s["argument"]["pred"], s["argument"]["gold"]) == (2, 2, 3)
    rte_reply = (
        '[["Jon Ekman", "composer of", "Winter Light"], ["Winter Light", "premiered in", "Oslo"]]'
    )
    with ReplayServer([{"match": "Jon Ekman", "reply": rte_reply}]) as srv:
        res = run_icl(cfg_for(srv, "rte", llmicl={"demos": str(EX)}))
        demo_answer = srv.requests[0]["body"]["messages"][2]["content"]
    assert json.loads(demo_answer)[0] == ["Ada Rowe", "author of", "Salt Roads"]
    assert res.summary["scores"]["triple"]["f1"] == pytest.approx(0.5)


def test_chinese_prompts_use_cn_demo_files():
    with ReplayServer([], default="{}") as srv:
        cfg = cfg_for(srv, "ner", language="zh", llmicl={"demos": str(EX), "domain": "商业"})
        run_icl(cfg, single={"text": "李雷在上海。"})
        msgs = srv.requests[0]["body"]["messages"]
    assert "商业" in msgs[0]["content"] and msgs[1]["content"].startswith("文本：王晓明")
    assert msgs[-1]["content"] == "文本：李雷在上海。"


def test_ccks2023_scored_with_f1_rouge2_and_score():
    rules = [
        {"match": "《远潮》", "reply": "(远潮,作者,李青)\n(远潮,出版社,北岭出版社)"},
        {"match": "《山月》", "reply": "(山月,出版社,王岚)"},
    ]
    with ReplayServer(rules) as srv:
        cfg = cfg_for(
            srv, "ccks2023", language="zh", llmicl={"demos": str(EX / "ccks2023_demos.jsonl")}
        )
        res = run_icl(cfg)
        msgs = srv.requests[0]["body"]["messages"]
    assert msgs[0]["role"] == "user" and msgs[1]["content"].startswith("(晚潮,作者,陈默)")
    s = res.summary["scores"]
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert 0 < s["rouge-2"] < 1
    assert s["ccks_score"] == pytest.approx(0.5 * s["f1"] + 0.5 * s["rouge-2"])
    assert res.rows[1]["records"] == [{"head": "山月", "relation": "出版社", "tail": "王岚"}]


def test_failed_request_is_a_row_with_its_error():
    with ReplayServer([], default="{}") as srv:
        srv.fail(400, body={"error": {"message": "prompt too long"}})
        cfg = cfg_for(srv, "ner")
        cfg.client.max_retries = 0
        res = run_icl(cfg)
    assert len(res.rows) == 3 and res.summary["failed_requests"] == 1
    failed = [r for r in res.rows if r["errors"] and r["errors"][0].startswith("request failed")]
    assert len(failed) == 1 and "prompt too long" in failed[0]["errors"][0]


def test_bad_inputs_are_reported_with_file_line_and_fix(tmp_path):
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"text": "ok", "head_entity": "A"}\n{"txt": "x"}\n{broken\n', encoding="utf-8")
    with ReplayServer([]) as srv:
        with pytest.raises(KgcError, match=r"in.jsonl:3: malformed JSON"):
            run_icl(load_icl_config(None, data={**_base(srv), "input": str(bad)}))
        bad.write_text('{"text": "ok", "head_entity": "A"}\n{"txt": "x"}\n', encoding="utf-8")
        with pytest.raises(KgcError) as exc:
            run_icl(
                load_icl_config(
                    None, data={**_base(srv), "input": str(bad), "llmicl": {"task": "re"}}
                )
            )
    msg = str(exc.value)
    assert "in.jsonl:1: field 'tail_entity' must be a non-empty string (missing)" in msg
    assert "in.jsonl:2: field 'text'" in msg


def _base(srv):
    return {
        "mode": "llmicl",
        "client": {"base_url": srv.base_url, "model": "m", "allow_no_key": True, "cache_dir": None},
    }


@pytest.mark.skipif(not DEEPKE.is_dir(), reason="DeepKE reference files not present")
@pytest.mark.parametrize("task", ["ner", "re", "ee", "rte"])
@pytest.mark.parametrize("language", ["en", "zh"])
def test_deepke_demonstration_files_load(task, language):
    cfg = load_icl_config(
        None,
        data={
            "mode": "llmicl",
            "language": language,
            "llmicl": {"task": task, "demos": str(DEEPKE)},
        },
    )
    demos, no_text = llmicl.load_demos(cfg)
    assert demos
    if task == "ner":  # DeepKE's NER examples carry no input text: format-only examples
        assert no_text == len(demos) and all(d.user is None for d in demos)
        msgs = llmicl.messages_for("SYS", demos, "Text: x", language)
        assert [m["role"] for m in msgs] == ["system", "user"]
        example = "Alzheimer's disease" if language == "en" else "秦始皇"
        assert example in msgs[0]["content"] and '"entity"' not in msgs[0]["content"]
    else:
        assert no_text == 0 and all(d.user for d in demos)
