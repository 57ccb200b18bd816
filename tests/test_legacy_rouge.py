"""The CCKS2023 (head,relation,tail) text format, ROUGE and the CCKS2023 score."""

from __future__ import annotations

import json

import pytest
from conftest import IEPILE, read_jsonl, write_jsonl

from kgc import legacy
from kgc.cli import main
from kgc.rouge import lcs_length, rouge, rouge_scores, tokenize


def test_rouge_hand_computed():
    hyp, ref = ["a", "b", "c", "d"], ["a", "b", "d"]
    s = rouge_scores(hyp, ref)
    # ROUGE-1: overlap 3, P 3/4, R 3/3 → F 6/7
    assert s["rouge-1"] == pytest.approx(6 / 7)
    # ROUGE-2: hyp bigrams ab bc cd, ref ab bd → overlap 1, P 1/3, R 1/2 → F 0.4
    assert s["rouge-2"] == pytest.approx(0.4)
    # ROUGE-L: LCS a b d = 3 → same as ROUGE-1 here
    assert s["rouge-l"] == pytest.approx(6 / 7)
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert rouge_scores([], []) == {"rouge-1": 1.0, "rouge-2": 1.0, "rouge-l": 1.0}
    assert rouge_scores(["a"], [])["rouge-1"] == 0.0


def test_tokenisation():
    assert tokenize("The cat, a dog!", "en") == ["cat", "dog"]
    assert tokenize("张三 在北京", "zh") == ["张", "三", "在", "北", "京"]
    words = tokenize("张三在北京工作", "zh", segmenter="jieba")
    assert "北京" in words
    assert rouge("张三在北京", "张三在北京")["rouge-2"] == 1.0


def test_legacy_parse_variants():
    triples, errors = legacy.parse("(张三,出生地,北京)\n（李四，妻子，王五）\nNAN\nnot a triple")
    assert triples == [("张三", "出生地", "北京"), ("李四", "妻子", "王五")]
    assert len(errors) == 1
    # commas inside a name: resolved with the known relation names
    triples, _ = legacy.parse("(Smith, John,work for,Acme, Inc.)", relations=["work for"])
    assert triples == [("Smith,John", "work for", "Acme,Inc.")]
    assert legacy.parse(None)[1]


def test_legacy_convert_and_score(tmp_path, capsys):
    src = IEPILE / "RE" / "sample.json"
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    assert (
        main(
            [
                "convert",
                "--task",
                "RE",
                "--format",
                "ccks2023",
                "--input",
                str(src),
                "--schema",
                str(IEPILE / "RE" / "schema.json"),
                "--output",
                str(train),
            ]
        )
        == 0
    )
    rows = read_jsonl(train)
    assert set(rows[0]) == {"id", "instruction", "input", "output"}
    assert rows[0]["output"] == "(喜剧之王,主演,周星驰)"
    assert (
        main(
            [
                "convert",
                "--task",
                "RE",
                "--format",
                "ccks2023",
                "--input",
                str(src),
                "--output",
                str(test),
                "--split",
                "test",
                "--language",
                "en",
            ]
        )
        == 0
    )
    gold = read_jsonl(test)
    assert "label" in gold[0] and "Candidate relations" in gold[0]["instruction"]

    perfect = write_jsonl(tmp_path / "p.jsonl", [{**g, "output": g["label"]} for g in gold])
    capsys.readouterr()
    assert (
        main(["eval", "--task", "RE", "--format", "ccks2023", "--input", str(perfect), "--json"])
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert rep["scores"]["triple"]["f1"] == 1.0
    assert rep["rouge"]["rouge-2"] == 1.0 and rep["ccks_score"] == 1.0

    # one record gets one of its triples wrong; check the score arithmetic
    preds = [{**g, "output": g["label"]} for g in gold]
    preds[3]["output"] = preds[3]["label"].replace("70公分", "80公分")
    path = write_jsonl(tmp_path / "q.jsonl", preds)
    capsys.readouterr()
    main(["eval", "--task", "RE", "--format", "ccks2023", "--input", str(path), "--json"])
    rep = json.loads(capsys.readouterr().out)
    s = rep["scores"]["triple"]
    assert s["gold"] == s["pred"] and s["tp"] == s["gold"] - 1
    assert rep["ccks_score"] == pytest.approx(0.5 * s["f1"] + 0.5 * rep["rouge"]["rouge-2"])
    assert rep["rouge"]["rouge-2"] < 1.0
