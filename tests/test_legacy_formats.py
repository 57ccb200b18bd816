"""CCKS2023 / kg2instruction RE: NAN lines for negatives, DeepKE's four output formats and
twenty instruction templates per language, and scoring that reads every format it writes."""

from __future__ import annotations

import json

import pytest
from conftest import IEPILE, read_jsonl, write_jsonl

from kgc import legacy
from kgc.cli import main
from kgc.errors import KgcError

# DeepKE kg2instruction/README.md: the InstructIE example (11 candidate relations, 3 triples
# of 2 relations → 9 NAN lines) and the RE template with candidate labels.
WEWAK = (
    "Wewak Airport, also known as Boram Airport, is an airport located in Wewak, Papua New "
    "Guinea. IATA code: WWK; ICAO code: AYWK."
)
WEWAK_RELATIONS = [
    "achievement",
    "alternative name",
    "area",
    "creation time",
    "creator",
    "event",
    "height",
    "length",
    "located in",
    "named after",
    "width",
]
WEWAK_OUTPUT = (
    "(Wewak Airport,located in,Wewak)\n(Wewak,located in,Papua New Guinea)\n"
    "(Wewak Airport,alternative name,Boram Airport)\nNAN\nNAN\nNAN\nNAN\nNAN\nNAN\nNAN\nNAN\nNAN"
)
README_RE_TEMPLATE = (
    "You are an expert in extracting relation triples. With the candidate relation list: "
    "{s_schema}, please extract the possible head entities and tail entities from the input "
    "below and provide the corresponding relation triples. If a relation does not exist, "
    "output NAN. Please answer in the {s_format} format."
)


def _wewak_record():
    return {
        "text": WEWAK,
        "relation": [
            {"head": "Wewak Airport", "relation": "located in", "tail": "Wewak"},
            {"head": "Wewak", "relation": "located in", "tail": "Papua New Guinea"},
            {"head": "Wewak Airport", "relation": "alternative name", "tail": "Boram Airport"},
        ],
    }


def _convert(
    records,
    relations,
    split="train",
    language="en",
    ccks_sample=None,
    neg_ratio=None,
    neg_schema=None,
    random_order=False,
    seed=42,
):
    options = legacy.ccks_options(
        ccks_sample, neg_ratio, neg_schema, random_sort=random_order, seed=seed
    )
    out, problems = legacy.convert_rows(
        list(enumerate(records, 1)),
        split=split,
        language=language,
        relations=relations,
        path="in.jsonl",
        options=options,
    )
    assert problems == []
    return out


def _synthetic(n=40):
    """Records over 8 relations; some with commas and quotes inside names, some empty."""
    rels = [f"rel{i}" for i in range(8)]
    records = []
    for i in range(n):
        head, tail = f"Acme, Inc. {i}", f"O'Brien {i}"
        text = f"{head} hired {tail} in {1990 + i}."
        relation = [] if i % 7 == 3 else [{"head": head, "relation": rels[i % 8], "tail": tail}]
        if i % 3 == 0:
            relation.append({"head": tail, "relation": rels[(i + 3) % 8], "tail": str(1990 + i)})
        records.append({"text": text, "relation": relation})
    return records, rels


def test_template_strings_are_deepkes():
    assert legacy.DEEPKE_TEMPLATES["en"][0] == README_RE_TEMPLATE
    for language in ("zh", "en"):
        assert len(legacy.DEEPKE_TEMPLATES[language]) == 20
        for t in legacy.DEEPKE_TEMPLATES[language]:
            assert t.count("{s_schema}") == 1 and t.count("{s_format}") == 1 and "NAN" in t
    assert legacy.DEEPKE_TEMPLATES["zh"][0] == (
        "你是专门进行关系三元组提取的专家。已知候选的关系列表：{s_schema}，请你根据关系列表，"
        "从以下输入中抽取出可能存在的头实体与尾实体，并给出对应的关系三元组，如果不存在某关系就输出NAN。"
        "请按照{s_format}的格式回答。"
    )
    # DeepKE's doubled comma is part of the interface
    assert "关系三元组，，如果不存在某关系就输出NAN" in legacy.DEEPKE_TEMPLATES["zh"][1]


def test_deepke_example_nan_lines_and_instruction():
    [rec] = _convert([_wewak_record()], WEWAK_RELATIONS, ccks_sample=0, neg_ratio=1, neg_schema=1)
    assert set(rec) == {"id", "instruction", "input", "output"}
    assert rec["instruction"] == README_RE_TEMPLATE.format(
        s_schema=str(WEWAK_RELATIONS), s_format="(Subject,Relation,Object)\n"
    )
    assert "['achievement', 'alternative name', 'area'," in rec["instruction"]
    lines, expected = rec["output"].split("\n"), WEWAK_OUTPUT.split("\n")
    # DeepKE's order: the triples (kgc: in reading order), then one NAN per negative relation
    assert sorted(lines[:3]) == sorted(expected[:3]) and lines[3:] == expected[3:]
    assert lines[:3] == [
        "(Wewak Airport,located in,Wewak)",
        "(Wewak Airport,alternative name,Boram Airport)",
        "(Wewak,located in,Papua New Guinea)",
    ]
    assert sorted(legacy.parse(rec["output"])[0]) == sorted(legacy.parse(WEWAK_OUTPUT)[0])


@pytest.mark.parametrize(
    ("fmt", "language", "line"),
    [
        (0, "en", "(Wewak Airport,located in,Wewak)"),
        (1, "en", "Subject is Wewak Airport,Relation is located in,Object is Wewak"),
        (1, "zh", "头实体是Wewak Airport,关系是located in,尾实体是Wewak"),
        (2, "en", "located in：Wewak Airport,Wewak"),
        (3, "zh", "{'head': 'Wewak Airport', 'relation': 'located in', 'tail': 'Wewak'}"),
    ],
)
def test_format_lines(fmt, language, line):
    assert legacy.format_triple("Wewak Airport", "located in", "Wewak", fmt, language) == line
    assert legacy.parse(f"{line}\nNAN\nNAN")[0] == [("Wewak Airport", "located in", "Wewak")]


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("sample", [0, 1, 2, 3])
def test_each_format_renders_and_round_trips(sample, language):
    records, rels = _synthetic()
    out = _convert(records, rels, language=language, ccks_sample=sample, neg_ratio=1)
    template = legacy.DEEPKE_TEMPLATES[language][sample]
    s_format = legacy.DEEPKE_FORMATS[language][sample]
    for rec, raw in zip(out, records, strict=True):
        listed = legacy.candidates(rec["instruction"])
        assert rec["instruction"] == template.format(s_schema=str(listed), s_format=s_format)
        gold = {(r["head"], r["relation"], r["tail"]) for r in raw["relation"]}
        nan = rec["output"].split("\n").count("NAN")
        assert nan == (len(listed) - len({r for _, r, _ in gold}) if gold else 1)
        triples, errors = legacy.parse(rec["output"], listed, raw["text"])
        assert errors == [] and set(triples) == gold
    preds = [{**rec, "label": rec["output"]} for rec in out]
    report = legacy.evaluate_rows(list(enumerate(preds, 1)))
    assert report["scores"]["triple"]["f1"] == 1.0 and report["parse_errors"] == 0
    assert report["scores"]["triple"]["gold"] == sum(len(r["relation"]) for r in records)
    # (ROUGE-2 of a lone "NAN" answer is 0 — no bigrams — so the CCKS score is not 1 here)
    assert report["rouge"]["rouge-1"] == 1.0 and report["rouge"]["rouge-l"] == 1.0


def test_nan_is_never_a_triple():
    text = "NAN\nnan.\n(NAN,located in,NAN)\nlocated in：NAN\n{'head': 'NAN', 'relation': 'r', 'tail': 'x'}"
    assert legacy.parse(text) == ([], [])
    rows = [(1, {"input": WEWAK, "label": WEWAK_OUTPUT, "output": "NAN\nNAN"})]
    s = legacy.evaluate_rows(rows)["scores"]["triple"]
    assert (s["tp"], s["pred"], s["gold"]) == (0, 0, 3)


def test_commas_resolved_by_relation_names_or_text():
    text = "Acme, Inc. hired O'Brien, Jr. in 1990."
    # a head or tail keeps its spelling when it occurs in the text
    assert legacy.parse("hires：Acme, Inc.,O'Brien, Jr.", text=text)[0] == [
        ("Acme, Inc.", "hires", "O'Brien, Jr.")
    ]
    assert legacy.parse("(Acme, Inc.,hires,O'Brien, Jr.)", text=text)[0] == [
        ("Acme, Inc.", "hires", "O'Brien, Jr.")
    ]
    # without text or relation names: the first comma splits (format 2), 2nd field (format 0)
    assert legacy.parse("hires：Acme, Inc.,O'Brien")[0] == [("Acme", "hires", "Inc.,O'Brien")]
    assert legacy.parse("(Acme, Inc.,hires,Bob)", relations=["hires"])[0] == [
        ("Acme,Inc.", "hires", "Bob")
    ]
    # format 3 writes Python's str(): a quote inside a name switches to double quotes
    line = legacy.format_triple("O'Brien", "hires", "Acme, Inc.", 3)
    assert line == """{'head': "O'Brien", 'relation': 'hires', 'tail': 'Acme, Inc.'}"""
    assert legacy.parse(line)[0] == [("O'Brien", "hires", "Acme, Inc.")]


def test_negative_sampling_is_seeded_and_follows_neg_schema():
    records, rels = _synthetic()
    a = _convert(records, rels, neg_ratio=1, neg_schema=0.5, seed=3)
    assert a == _convert(records, rels, neg_ratio=1, neg_schema=0.5, seed=3)
    assert a != _convert(records, rels, neg_ratio=1, neg_schema=0.5, seed=4)
    k = round(0.5 * len(rels))
    for rec, raw in zip(a, records, strict=True):
        positives = {r["relation"] for r in raw["relation"]}
        listed = legacy.candidates(rec["instruction"])
        negatives = set(listed) - positives
        assert positives <= set(listed) and len(negatives) <= k and listed == sorted(listed)
        lines = rec["output"].split("\n")
        if positives:
            # every negative relation is answered by one NAN line, after the triples
            assert lines.count("NAN") == len(negatives)
            assert lines[len(lines) - len(negatives) :] == ["NAN"] * len(negatives)
        else:
            assert lines == ["NAN"] and negatives
    # neg_ratio 0: each record lists only its own relations and has no NAN line
    none = _convert(records, rels, neg_ratio=0)
    for rec, raw in zip(none, records, strict=True):
        positives = {r["relation"] for r in raw["relation"]}
        assert set(legacy.candidates(rec["instruction"])) == positives
        assert "NAN" not in rec["output"].split("\n") or not positives
    # neg_ratio 0.5: some records get negatives, some do not
    half = _convert(records, rels, neg_ratio=0.5)
    got = [
        len(legacy.candidates(r["instruction"])) > len(raw["relation"])
        for r, raw in zip(half, records, strict=True)
    ]
    assert any(got) and not all(got)


def test_default_is_unchanged_without_options():
    records, rels = _synthetic(5)
    out = _convert(records, rels)
    for rec in out:
        assert rec["instruction"] == legacy.instruction(rels, "en")
        assert "\nNAN" not in rec["output"]


def test_random_template_and_format_per_record():
    records, rels = _synthetic()
    out = _convert(records, rels, ccks_sample=-1, neg_ratio=1, seed=5)
    assert out == _convert(records, rels, ccks_sample=-1, neg_ratio=1, seed=5)
    seen = set()
    for rec, raw in zip(out, records, strict=True):
        listed = str(legacy.candidates(rec["instruction"]))
        combos = {
            (t, f): legacy.deepke_instruction(eval_list(listed), "en", t, f)
            for t in range(20)
            for f in range(4)
        }
        [(t, f)] = [k for k, v in combos.items() if v == rec["instruction"]]
        seen.add((t, f))
        triples, errors = legacy.parse(rec["output"], text=raw["text"])
        assert not errors and len(triples) == len(raw["relation"])
    assert len({t for t, _ in seen}) > 5 and {f for _, f in seen} == {0, 1, 2, 3}


def eval_list(s):
    import ast

    return ast.literal_eval(s)


def test_random_sort_groups_lines_by_relation_order():
    records, rels = _synthetic()
    out = _convert(records, rels, ccks_sample=2, neg_ratio=1, random_order=True, seed=1)
    assert out != _convert(records, rels, ccks_sample=2, neg_ratio=1, seed=1)
    for rec, raw in zip(out, records, strict=True):
        listed = legacy.candidates(rec["instruction"])
        triples, _ = legacy.parse(rec["output"], listed, raw["text"])
        assert set(triples) == {(r["head"], r["relation"], r["tail"]) for r in raw["relation"]}
        order = [listed.index(r) for _, r, _ in triples]
        assert order == sorted(order)


def test_test_split_labels():
    records, rels = _synthetic(10)
    plain = _convert(records, rels, split="test", ccks_sample=1)
    assert all("label" in r and "output" not in r for r in plain)
    assert all("\nNAN" not in r["label"] for r in plain)
    withnan = _convert(records, rels, split="test", ccks_sample=1, neg_ratio=1)
    for rec, raw in zip(withnan, records, strict=True):
        assert legacy.candidates(rec["instruction"]) == sorted(rels)
        positives = {r["relation"] for r in raw["relation"]}
        if positives:
            assert rec["label"].split("\n").count("NAN") == len(rels) - len(positives)


def _cli(tmp_path, *extra, split="train", name="out.jsonl"):
    out = tmp_path / name
    argv = [
        "convert",
        "--task",
        "RE",
        "--format",
        "ccks2023",
        "--input",
        str(IEPILE / "RE" / "sample.json"),
        "--schema",
        str(IEPILE / "RE" / "schema.json"),
        "--output",
        str(out),
        "--split",
        split,
        *extra,
    ]
    return main(argv), out


def test_cli_convert_and_eval(tmp_path, capsys):
    code, train = _cli(
        tmp_path, "--ccks-sample", "2", "--neg-ratio", "1", "--neg-schema", "0.1", "--seed", "7"
    )
    assert code == 0
    rows = read_jsonl(train)
    assert rows[0]["output"].split("\n")[0] == "主演：喜剧之王,周星驰"
    assert all("NAN" in r["output"].split("\n") for r in rows)
    assert all("关系：头实体,尾实体\n" in r["instruction"] for r in rows)
    assert (
        _cli(
            tmp_path,
            "--ccks-sample",
            "2",
            "--neg-ratio",
            "1",
            "--neg-schema",
            "0.1",
            "--seed",
            "7",
            name="again.jsonl",
        )[0]
        == 0
    )
    assert (tmp_path / "again.jsonl").read_text() == train.read_text()

    code, test = _cli(
        tmp_path, "--ccks-sample", "3", "--neg-ratio", "1", split="test", name="t.jsonl"
    )
    assert code == 0
    gold = read_jsonl(test)
    assert gold[0]["label"].startswith(
        "{'head': '喜剧之王', 'relation': '主演', 'tail': '周星驰'}\nNAN"
    )
    preds = write_jsonl(tmp_path / "p.jsonl", [{**g, "output": g["label"]} for g in gold])
    capsys.readouterr()
    assert (
        main(["eval", "--task", "RE", "--format", "ccks2023", "--input", str(preds), "--json"]) == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert rep["scores"]["triple"]["f1"] == 1.0 and rep["ccks_score"] == 1.0
    # the same answers written in format 1 still score F1 1.0
    fmt1 = [
        {
            **g,
            "output": "\n".join(
                legacy.format_triple(*t, 1, "zh") for t in legacy.parse(g["label"])[0]
            ),
        }
        for g in gold
    ]
    path = write_jsonl(tmp_path / "f1.jsonl", fmt1)
    capsys.readouterr()
    main(["eval", "--task", "RE", "--format", "ccks2023", "--input", str(path), "--json"])
    assert json.loads(capsys.readouterr().out)["scores"]["triple"]["f1"] == 1.0


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--ccks-sample", "5"], ["--ccks-sample", "'5'", "use -1"]),
        (["--ccks-sample", "x"], ["--ccks-sample", "'x'"]),
        (["--neg-ratio", "1.5"], ["--neg-ratio", "'1.5'", "between 0 and 1"]),
        (["--neg-ratio", "abc"], ["--neg-ratio", "'abc'", "must be a number"]),
        (["--neg-schema", "0"], ["--neg-schema", "'0'", "--neg-ratio 0"]),
    ],
)
def test_cli_bad_values(tmp_path, capsys, extra, needles):
    code, out = _cli(tmp_path, *extra)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    for n in needles:
        assert n in err, (n, err)


def test_cli_options_need_ccks_format(tmp_path, capsys):
    argv = [
        "convert",
        "--task",
        "RE",
        "--input",
        str(IEPILE / "RE" / "sample.json"),
        "--schema",
        str(IEPILE / "RE" / "schema.json"),
        "--output",
        str(tmp_path / "o.jsonl"),
        "--neg-ratio",
        "0.5",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--neg-ratio 0.5" in err and "--format ccks2023" in err


def test_all_bad_options_reported_at_once():
    with pytest.raises(KgcError) as exc:
        legacy.ccks_options(9, -1, 2)
    assert len(exc.value.problems) == 3


def test_bad_relation_items_are_reported():
    rows = [(4, {"text": "a b", "relation": [{"head": "a", "relation": "r", "tail": ""}, "x"]})]
    out, problems = legacy.convert_rows(
        rows, split="train", language="zh", relations=["r"], path="f"
    )
    assert out == [] and len(problems) == 2
    assert "f:4: field 'relation' item 0" in str(problems[0]) and "item 1" in str(problems[1])


def test_templates_equal_deepkes_file():
    """The 20 templates per language equal DeepKE's `configs/re_template.json` ("template";
    a copy in tests/data/deepke/), string for string."""
    from pathlib import Path

    ref = json.loads(
        (Path(__file__).parent / "data" / "deepke" / "re_template.json").read_text("utf-8")
    )
    for lang in ("zh", "en"):
        assert list(legacy.DEEPKE_TEMPLATES[lang]) == [
            ref[lang]["template"][str(i)] for i in range(20)
        ]
