"""SpERT-format input (`kgc convert --format spert`) and the papers' scoring (`kgc eval
--strict`, `--by label`), on a hand-written fixture of five sentences (tests/data/spert/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import read_jsonl

from kgc import spert
from kgc.cli import main
from kgc.errors import KgcError

DATA = Path(__file__).resolve().parent / "data" / "spert"
SPANS = DATA / "tiny.spert.json"
TAGS = DATA / "tiny_tags.spert.json"
TYPES = DATA / "tiny_types.json"

S1_TOKENS = ["Maria", "Lopez", ",", "a", "nurse", "at", "St.", "Anne", "'s", "Hospital", "in"]
S1_TOKENS += ["Lyon", ",", "retired", "."]


# ------------------------------------------------------------------------------ reader
def test_detokenize_text_and_offsets():
    text, offsets = spert.detokenize(S1_TOKENS)
    assert text == "Maria Lopez, a nurse at St. Anne's Hospital in Lyon, retired."
    assert offsets[:3] == [(0, 5), (6, 11), (11, 12)]  # "," glued to "Lopez"
    assert offsets[8] == (32, 34) and text[32:34] == "'s"  # the clitic glued to "Anne"
    assert all(text[a:b] == tok for tok, (a, b) in zip(S1_TOKENS, offsets, strict=True))
    text, _ = spert.detokenize(["``", "We", "will", "return", ",", "''", "said", "Tom", "("])
    assert text == "``We will return,'' said Tom ("
    text, offsets = spert.join_tokens(S1_TOKENS[:3])
    assert (text, offsets) == ("Maria Lopez ,", [(0, 5), (6, 11), (12, 13)])


def test_spans_become_exact_substrings_with_and_without_detokenize():
    sentences = spert.read_spert(SPANS, TYPES)
    assert [s.number for s in sentences] == [1, 2, 3, 4, 5]
    plain = spert.to_raw(sentences)
    detok = spert.to_raw(sentences, detokenize=True)
    assert plain[0]["text"] == "Maria Lopez , a nurse at St. Anne 's Hospital in Lyon , retired ."
    assert [e["entity"] for e in plain[0]["entity"]] == [
        "Maria Lopez",
        "St. Anne 's Hospital",
        "Lyon",
    ]
    assert [e["entity"] for e in detok[0]["entity"]] == [
        "Maria Lopez",
        "St. Anne's Hospital",
        "Lyon",
    ]
    assert detok[1]["text"] == "The Hakawati theatre (in East Jerusalem) opened an art exhibit."
    assert detok[0]["relation"][0] == {
        "head": "Maria Lopez",
        "head_type": "Peop",
        "relation": "Work_For",
        "tail": "St. Anne's Hospital",
        "tail_type": "Org",
    }
    assert detok[0]["orig_id"] == 100
    for rec in (*plain, *detok):  # every gold string is cut from the text the model reads
        strings = [e["entity"] for e in rec["entity"]]
        strings += [x for r in rec["relation"] for x in (r["head"], r["tail"])]
        assert all(s in rec["text"] for s in strings)


def test_bilou_and_bio_tags_give_the_span_entities():
    by_span = spert.read_spert(SPANS, TYPES)
    by_tag = spert.read_spert(TAGS, TYPES)  # sentence 3 is tagged BIO (no L-/U-)
    assert [s.entities for s in by_tag] == [s.entities for s in by_span]
    assert spert.to_raw(by_tag, detokenize=True) == spert.to_raw(by_span, detokenize=True)


def _bad_file(tmp_path, sentences) -> Path:
    path = tmp_path / "bad.spert.json"
    path.write_text(json.dumps(sentences), encoding="utf-8")
    return path


def test_every_bad_sentence_is_named_with_file_and_record(tmp_path):
    ok = {"tokens": ["Ann", "met", "Bo"], "entities": [{"type": "Peop", "start": 0, "end": 1}]}
    path = _bad_file(
        tmp_path,
        [
            ok,
            {**ok, "relations": [{"type": "Kill", "head": 0, "tail": 5}]},
            {
                "tokens": ["Ann", "met", "Bo"],
                "entities": [
                    {"type": "Peop", "start": 0, "end": 2},
                    {"type": "Peop", "start": 1, "end": 3},
                ],
            },
            {"tokens": ["Ann"], "entities": [{"type": "Person", "start": 0, "end": 1}]},
            {"tokens": ["Ann", "Lee", "ran"], "tags": ["O", "I-Peop", "L-Peop"]},
            {"tokens": ["Ann"], "entities": [{"type": "Peop", "start": 0, "end": 4}]},
            {"tokens": ["Ann", "ran"], "tags": ["U-Peop"]},
        ],
    )
    with pytest.raises(KgcError) as exc:
        spert.read_spert(path, TYPES)
    lines = str(exc.value).splitlines()
    where = str(path)
    expected = [
        f"{where}:2: relations[0].tail: 5 is not an entity index; this sentence has 1 entities",
        f"{where}:3: entities[1] (tokens 1-3) overlaps entities[0] (tokens 0-2)",
        f"{where}:4: entities[0].type 'Person' is not in {TYPES} (entity types: Peop, Org, Loc, Other)",
        f"{where}:5: tags[1]: 'I-Peop' continues an entity but has no B- tag before it",
        f"{where}:5: tags[2]: 'L-Peop' continues an entity but has no B- tag before it",
        f"{where}:6: entities[0]: start 0, end 4 is out of range for 1 tokens",
        f"{where}:7: tags: 1 tags for 2 tokens; give one tag per token",
    ]
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), (line, start)


def test_types_names_and_top_level_errors(tmp_path):
    with pytest.raises(KgcError, match="one JSON list of sentences"):
        spert.read_spert(_bad_file(tmp_path, {"tokens": []}))
    types = spert.read_types(TYPES)
    assert spert.read_names("verbose", types)["OrgBased_In"] == "based in"
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"Peop": "human", "Loc_X": "place", "Wrk": "w"}))
    with pytest.raises(KgcError, match=r"'Loc_X', 'Wrk': not a type of .*tiny_types.json"):
        spert.read_names(names, types)
    names.write_text(json.dumps({"Peop": "thing", "Other": "thing"}))
    with pytest.raises(KgcError, match="'Peop' and 'Other' both become 'thing'"):
        spert.read_names(names, types)
    # an SPO label reads subject_type_predicate_object_type: a type with "_" would break it
    names.write_text(json.dumps({"Peop": "per_son"}))
    with pytest.raises(KgcError, match=r"entity type 'Peop' \(named 'per_son'\) contains '_'"):
        spert.build_schema(
            "SPO", types, spert.read_spert(SPANS, types), spert.read_names(names, types)
        )


# --------------------------------------------------------------------------- converter
def _convert(tmp_path, task, split, *extra) -> list[dict]:
    out = tmp_path / f"{task}.{split}.jsonl"
    argv = ["convert", "--format", "spert", "--task", task, "--input", str(SPANS)]
    argv += ["--types", str(TYPES), "--language", "en", "--split", split, "--output", str(out)]
    assert main([*argv, *extra]) == 0
    return read_jsonl(out)


def test_convert_re_train_and_test(tmp_path):
    opts = ("--names", "verbose", "--detokenize", "--split-num", "-1")
    train = _convert(tmp_path, "RE", "train", *opts)
    assert len(train) == 5  # one instruction per sentence (sentence 4: all negatives)
    first = json.loads(train[0]["instruction"])
    assert first["input"] == "Maria Lopez, a nurse at St. Anne's Hospital in Lyon, retired."
    assert first["schema"] == ["based in", "killed", "lives in", "works for"]
    assert json.loads(train[0]["output"]) == {
        "based in": [{"subject": "St. Anne's Hospital", "object": "Lyon"}],
        "killed": [],
        "lives in": [{"subject": "Maria Lopez", "object": "Lyon"}],
        "works for": [{"subject": "Maria Lopez", "object": "St. Anne's Hospital"}],
    }
    assert train[0]["source"] == "spert"  # the input's folder name, as for --format iepile
    test = _convert(tmp_path, "RE", "test", *opts)
    assert len(test) == 5 and all("output" not in r for r in test)
    assert len({r["id"] for r in test}) == 5
    label = json.loads(test[1]["label"])
    assert [(r["head"], r["relation"], r["tail"]) for r in label] == [
        ("Hakawati", "based in", "East Jerusalem")
    ]
    assert json.loads(test[3]["label"]) == []


def test_convert_spo_labels_come_from_the_data(tmp_path):
    train = _convert(tmp_path, "SPO", "train", "--names", "verbose", "--split-num", "-1")
    schema = json.loads(train[0]["instruction"])["schema"]
    assert [(e["subject_type"], e["predicate"], e["object_type"]) for e in schema] == [
        ("organization", "based in", "location"),
        ("person", "killed", "person"),
        ("person", "lives in", "location"),
        ("person", "works for", "organization"),
    ]
    assert json.loads(train[4]["output"])["killed"] == [
        {"subject": "Ken Ito", "object": "Joe Hale"}
    ]


def test_convert_ner_with_tags_and_kept_names(tmp_path):
    out = tmp_path / "ner.jsonl"
    argv = ["convert", "--format", "spert", "--task", "NER", "--input", str(TAGS)]
    argv += ["--types", str(TYPES), "--language", "en", "--split-num", "-1", "--output", str(out)]
    assert main(argv) == 0
    rows = read_jsonl(out)
    assert json.loads(rows[2]["output"]) == {
        "Loc": ["Oslo"],
        "Org": [],
        "Other": [],
        "Peop": ["Tom Berg"],
    }


def test_convert_refusals(tmp_path, capsys):
    base = ["convert", "--input", str(SPANS), "--output", str(tmp_path / "x.jsonl")]
    assert main([*base, "--task", "EE", "--format", "spert", "--types", str(TYPES)]) == 2
    assert "--format spert converts --task NER, RE, SPO" in capsys.readouterr().err
    assert main([*base, "--task", "RE", "--format", "spert"]) == 2
    assert "needs --types FILE" in capsys.readouterr().err
    assert main([*base, "--task", "RE", "--types", str(TYPES), "--detokenize"]) == 2
    assert "--types, --detokenize: only for --format spert" in capsys.readouterr().err
    assert main([*base, "--task", "RE", "--format", "spert", "--ccks-sample", "0"]) == 2
    assert "only for --format ccks2023" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


# ------------------------------------------------------------------------------ scorer
def _pairs(**by_relation) -> str:
    rels = ("based in", "killed", "lives in", "works for")
    out = {r: [] for r in rels}
    for key, pairs in by_relation.items():
        out[key.replace("_", " ")] = [{"subject": s, "object": o} for s, o in pairs]
    return json.dumps(out)


# Gold (6 triples): S1 (Maria Lopez, works for, St. Anne's Hospital), (St. Anne's Hospital,
# based in, Lyon), (Maria Lopez, lives in, Lyon); S2 (Hakawati, based in, East Jerusalem);
# S3 (Tom Berg, lives in, Oslo); S4 none; S5 (Ken Ito, killed, Joe Hale).
# Predictions: S1 the works-for and based-in triples exact, based-in predicted twice, lives-in
# missed; S2 a boundary error "The Hakawati"; S3 the right pair under the wrong relation
# (works for); S4 nothing; S5 "ken Ito" (a case-only difference).
PREDICTIONS = [
    _pairs(
        works_for=[("Maria Lopez", "St. Anne's Hospital")],
        based_in=[("St. Anne's Hospital", "Lyon"), ("St. Anne's Hospital", "Lyon")],
    ),
    _pairs(based_in=[("The Hakawati", "East Jerusalem")]),
    _pairs(works_for=[("Tom Berg", "Oslo")]),
    _pairs(),
    _pairs(killed=[("ken Ito", "Joe Hale")]),
]


@pytest.fixture
def predictions(tmp_path) -> Path:
    test = _convert(
        tmp_path, "RE", "test", "--names", "verbose", "--detokenize", "--split-num", "-1"
    )
    path = tmp_path / "predictions.jsonl"
    rows = [{**rec, "output": out} for rec, out in zip(test, PREDICTIONS, strict=True)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _eval(path, *flags, capsys) -> tuple[dict, str]:
    assert main(["eval", "--task", "RE", "--input", str(path), "--json", *flags]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main(["eval", "--task", "RE", "--input", str(path), *flags]) == 0
    return report, capsys.readouterr().out


def _counts(s: dict) -> tuple[int, int, int]:
    return s["tp"], s["pred"], s["gold"]


def test_strict_scores_match_the_hand_count(predictions, capsys):
    report, table = _eval(predictions, "--strict", "--by", "label", capsys=capsys)
    # strict = exact strings, sets per record: S1 2 tp of 2 predicted (the repeat collapses);
    # S2, S3, S5 one wrong prediction each → tp 2, pred 5, gold 6
    overall = report["scores"]["triple"]
    assert _counts(overall) == (2, 5, 6)
    assert overall["precision"] == pytest.approx(2 / 5)
    assert overall["recall"] == pytest.approx(2 / 6)
    assert overall["f1"] == pytest.approx(4 / 11)  # 2PR/(P+R) = (4/15)/(11/15)
    assert report["strict"] is True
    # per relation: works for 1 of 2 predicted (S3's is wrong), 1 gold; based in 1 of 2
    # (S1 once, S2's boundary error), 2 gold; lives in 0 predicted, 2 gold; killed 0 of 1, 1 gold
    by_label = {k: _counts(v) for k, v in report["by_label"]["triple"].items()}
    assert by_label == {
        "based in": (1, 2, 2),
        "killed": (0, 1, 1),
        "lives in": (0, 0, 2),
        "works for": (1, 2, 1),
    }
    assert report["by_label"]["triple"]["works for"]["f1"] == pytest.approx(2 / 3)
    assert table.splitlines()[0] == "strict relation F1 (micro): 0.3636  P 0.4000  R 0.3333"
    label_rows = [line.split() for line in table.splitlines() if line.startswith("based in")]
    assert label_rows == [["based", "in", "triple", "0.5000", "0.5000", "0.5000", "1", "2", "2"]]


def test_default_matching_differs_from_strict(predictions, capsys):
    report, table = _eval(predictions, "--by", "label", capsys=capsys)
    # normalised multiset: S1's repeated triple is a false positive (pred 3, tp 2) and S5's
    # "ken Ito" matches "Ken Ito" → tp 3, pred 6, gold 6
    assert _counts(report["scores"]["triple"]) == (3, 6, 6)
    assert report["scores"]["triple"]["f1"] == pytest.approx(0.5)
    assert _counts(report["by_label"]["triple"]["killed"]) == (1, 1, 1)
    assert _counts(report["by_label"]["triple"]["based in"]) == (1, 3, 2)
    assert report["strict"] is False and "strict" not in table
    # --no-normalize --match set is the same as --strict
    same, _ = _eval(predictions, "--no-normalize", "--match", "set", capsys=capsys)
    assert _counts(same["scores"]["triple"]) == (2, 5, 6)


def test_strict_entity_headline_for_ner(tmp_path, capsys):
    test = _convert(tmp_path, "NER", "test", "--detokenize", "--split-num", "-1")
    gold = [json.loads(r["label"]) for r in test]
    outputs = []
    for labels in gold:  # every entity right, except S2's "Hakawati" given as "the Hakawati"
        out = {t: [] for t in ("Loc", "Org", "Other", "Peop")}
        for e in labels:
            out[e["entity_type"]].append(
                "the Hakawati" if e["entity"] == "Hakawati" else e["entity"]
            )
        outputs.append(json.dumps(out))
    path = tmp_path / "ner.pred.jsonl"
    path.write_text(
        "".join(json.dumps({**r, "output": o}) + "\n" for r, o in zip(test, outputs, strict=True))
    )
    assert main(["eval", "--task", "NER", "--input", str(path), "--strict", "--by", "label"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # 11 gold entities, 11 predicted, 10 right
    assert lines[0] == "strict entity F1 (micro): 0.9091  P 0.9091  R 0.9091"
    org = next(line.split() for line in lines if line.startswith("Org "))
    assert org[-3:] == ["1", "2", "2"]  # St. Anne's Hospital right, "the Hakawati" wrong


def test_strict_refuses_multiset(predictions, capsys):
    argv = ["eval", "--task", "RE", "--input", str(predictions), "--strict", "--match", "multiset"]
    assert main(argv) == 2
    assert "--strict matches each record's items as sets" in capsys.readouterr().err
