"""`kgc convert` / `kgc eval` end to end, and their answers to bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IEPILE, TASKS, read_jsonl, write_jsonl

from kgc.cli import main

NER_SCHEMA = IEPILE / "NER" / "schema.json"


def run(*args):
    return subprocess.run([sys.executable, "-m", "kgc", *args], capture_output=True, text=True)


def test_console_script_help_and_version():
    out = run("--version")
    assert out.returncode == 0 and "kgc" in out.stdout
    out = run("convert", "--help")
    assert out.returncode == 0 and "--split-num" in out.stdout


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("task", TASKS)
def test_convert_then_eval_gold_scores_one(task, language, tmp_path, capsys):
    src = IEPILE / task / "sample.json"
    schema = IEPILE / task / "schema.json"
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    assert (
        main(
            [
                "convert",
                "--task",
                task,
                "--input",
                str(src),
                "--schema",
                str(schema),
                "--output",
                str(train),
                "--split",
                "train",
                "--language",
                language,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "convert",
                "--task",
                task,
                "--input",
                str(src),
                "--schema",
                str(schema),
                "--output",
                str(test),
                "--split",
                "test",
                "--language",
                language,
            ]
        )
        == 0
    )
    for rec in read_jsonl(train):
        inst = json.loads(rec["instruction"])
        assert set(rec) == {"task", "source", "instruction", "output"}
        assert isinstance(json.loads(rec["output"]), dict)
        assert inst["schema"]
    # answer every test line with the target a perfect model would give
    from kgc.evaluate import _gold_text
    from kgc.tasks import get

    t = get(task)
    preds = [
        {**r, "output": _gold_text(t, json.loads(r["label"]), json.loads(r["instruction"]))}
        for r in read_jsonl(test)
    ]
    pred_path = write_jsonl(tmp_path / "pred.jsonl", preds)
    capsys.readouterr()
    assert main(["eval", "--task", task, "--input", str(pred_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"task", "records", "parse_errors", "scores", "by_source"}
    assert report["parse_errors"] == 0
    for group, s in report["scores"].items():
        assert s["f1"] == 1.0 and s["gold"] > 0, group
    assert list(report["scores"]) == list(t.groups)
    empty = write_jsonl(tmp_path / "empty.jsonl", [{**r, "output": "{}"} for r in preds])
    main(["eval", "--task", task, "--input", str(empty), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert all(s["f1"] == 0.0 for s in report["scores"].values())


def test_eval_table_by_source(tmp_path, capsys):
    rows = [{"id": "1", "source": "news", "instruction": "{}", "label": "[]", "output": "{}"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    assert main(["eval", "--task", "NER", "--input", str(path), "--by", "source"]) == 0
    out = capsys.readouterr().out
    assert "news" in out and "entity" in out


def bad(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_convert_missing_input(tmp_path, capsys):
    bad(
        capsys,
        [
            "convert",
            "--task",
            "NER",
            "--input",
            str(tmp_path / "nope.json"),
            "--schema",
            str(NER_SCHEMA),
            "--output",
            str(tmp_path / "o.json"),
        ],
        "nope.json",
        "does not exist",
    )


def test_convert_malformed_json_line_names_file_and_line(tmp_path, capsys):
    src = tmp_path / "raw.json"
    src.write_text('{"text": "a", "entity": []}\n{"text": "b", "entity": [}\n', encoding="utf-8")
    out = tmp_path / "o.json"
    bad(
        capsys,
        [
            "convert",
            "--task",
            "NER",
            "--input",
            str(src),
            "--schema",
            str(NER_SCHEMA),
            "--output",
            str(out),
        ],
        "raw.json:2:",
        "malformed JSON",
        "nothing written",
    )
    assert not out.exists()


def test_unknown_task(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--task", "XYZ", "--input", "a", "--schema", "b", "--output", "c"])
    assert exc.value.code == 2
    assert "unknown task 'XYZ'" in capsys.readouterr().err


def test_schema_with_wrong_shape(tmp_path, capsys):
    src = write_jsonl(tmp_path / "raw.json", [{"text": "a", "entity": []}])
    schema = tmp_path / "schema.json"
    schema.write_text('["人物"]\n[]\n', encoding="utf-8")
    bad(
        capsys,
        [
            "convert",
            "--task",
            "NER",
            "--input",
            str(src),
            "--schema",
            str(schema),
            "--output",
            str(tmp_path / "o"),
        ],
        "schema.json",
        "exactly 3 non-empty lines",
    )
    schema.write_text('{"人物": 1}\n[]\n{}\n', encoding="utf-8")
    bad(
        capsys,
        [
            "convert",
            "--task",
            "NER",
            "--input",
            str(src),
            "--schema",
            str(schema),
            "--output",
            str(tmp_path / "o"),
        ],
        "schema.json:1:",
        "line 1 must be a JSON list",
    )
    schema.write_text("[]\n[]\n{}\n", encoding="utf-8")
    bad(
        capsys,
        [
            "convert",
            "--task",
            "NER",
            "--input",
            str(src),
            "--schema",
            str(schema),
            "--output",
            str(tmp_path / "o"),
        ],
        "no labels for task NER",
    )


def test_label_type_not_in_schema(tmp_path, capsys):
    src = write_jsonl(
        tmp_path / "raw.json",
        [
            {"text": "张三在北京", "entity": [{"entity": "张三", "entity_type": "人物"}]},
            {"text": "李四在上海", "entity": [{"entity": "上海", "entity_type": "城市"}]},
        ],
    )
    out = tmp_path / "o.json"
    bad(
        capsys,
        [
            "convert",
            "--task",
            "NER",
            "--input",
            str(src),
            "--schema",
            str(NER_SCHEMA),
            "--output",
            str(out),
        ],
        "raw.json:2:",
        "entity[0]",
        "'entity_type' value '城市' is not in the schema",
        "add it to line 1",
        "nothing written",
    )
    assert not out.exists()


def test_all_bad_lines_reported_at_once(tmp_path, capsys):
    src = write_jsonl(
        tmp_path / "raw.json",
        [
            {"text": "a", "relation": [{"head": "x", "relation": "不存在", "tail": "y"}]},
            {"entity": []},
            {"text": "b", "relation": [{"head": "x", "tail": "y"}]},
        ],
    )
    bad(
        capsys,
        [
            "convert",
            "--task",
            "RE",
            "--input",
            str(src),
            "--schema",
            str(IEPILE / "RE" / "schema.json"),
            "--output",
            str(tmp_path / "o"),
        ],
        "raw.json:1:",
        "raw.json:2:",
        "field 'text'",
        "raw.json:3:",
        "'relation' must be a string",
    )


def test_train_split_needs_annotations(tmp_path, capsys):
    src = write_jsonl(tmp_path / "raw.json", [{"text": "张三"}])
    bad(
        capsys,
        [
            "convert",
            "--task",
            "NER",
            "--input",
            str(src),
            "--schema",
            str(NER_SCHEMA),
            "--output",
            str(tmp_path / "o"),
        ],
        "field 'entity' is missing",
        "--split test",
    )


def test_existing_output_untouched_on_error(tmp_path, capsys):
    out = tmp_path / "o.json"
    out.write_text("previous\n", encoding="utf-8")
    src = write_jsonl(tmp_path / "raw.json", [{"text": "a", "entity": [{"entity": 1}]}])
    bad(
        capsys,
        [
            "convert",
            "--task",
            "NER",
            "--input",
            str(src),
            "--schema",
            str(NER_SCHEMA),
            "--output",
            str(out),
        ],
        "'entity' must be a string",
    )
    assert out.read_text() == "previous\n"


@pytest.mark.parametrize(
    "row, needle",
    [
        ({"id": "1", "instruction": "{}", "label": "[]"}, "field 'output'"),
        ({"id": "1", "instruction": "{}", "output": "{}"}, "field 'label' is missing"),
        ({"id": "1", "instruction": "{}", "label": "[oops", "output": "{}"}, "not valid JSON"),
        ({"instruction": "not json", "label": "[]", "output": "{}"}, "field 'id'"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_eval_bad_records(row, needle, tmp_path, capsys):
    path = write_jsonl(
        tmp_path / "pred.jsonl",
        [{"id": "0", "instruction": "{}", "label": "[]", "output": "{}"}, row],
    )
    bad(capsys, ["eval", "--task", "NER", "--input", str(path)], "pred.jsonl:2:", needle)


def test_eval_missing_file_and_malformed_line(tmp_path, capsys):
    bad(capsys, ["eval", "--task", "NER", "--input", str(tmp_path / "x.jsonl")], "does not exist")
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1\n', encoding="utf-8")
    bad(capsys, ["eval", "--task", "NER", "--input", str(path)], "p.jsonl:1:", "malformed JSON")


def test_eval_derives_missing_id_from_input(tmp_path, capsys):
    inst = json.dumps({"instruction": "x", "schema": ["人物"], "input": "张三"}, ensure_ascii=False)
    rows = [
        {
            "instruction": inst,
            "label": json.dumps([{"entity": "张三", "entity_type": "人物"}]),
            "output": '{"人物": ["张三"]}',
        }
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    assert main(["eval", "--task", "NER", "--input", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scores"]["entity"]["f1"] == 1.0


def test_serve_runs_from_the_checkout_that_holds_serve(tmp_path, monkeypatch):
    """`serve/` is not installed: `kgc serve` started from another folder runs Ray's `serve
    run` in the checkout (the config's own), with the config's absolute path."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    seen = {}
    monkeypatch.setattr(subprocess, "call", lambda argv, cwd: seen.update(argv=argv, cwd=cwd))
    monkeypatch.chdir(tmp_path)
    main(["serve", "--config", str(root / "serve" / "config.yaml")])
    assert seen["cwd"] == root
    assert seen["argv"][1:] == ["run", str(root / "serve" / "config.yaml")]
