"""DeepKE users' files in and out: an IEPile test file (DeepKE's own `test.json` of each
task, tests/data/deepke/) → `predictions.jsonl` in DeepKE's shape (every input record once,
its fields as given, the model's text in `output`) → `kgc eval` counts the input's records
(grouped by `id`), and gold answers written as outputs score F1 1.0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kgc.config import ExtractConfig, load_config
from kgc.evaluate import _gold_text, evaluate_file
from kgc.extract import read_instruction_rows, write_predictions
from kgc.tasks import get

DEEPKE = Path(__file__).parent / "data" / "deepke"
TASKS = ["NER", "RE", "SPO", "EE", "EET", "EEA", "KG"]


def _cfg(task: str, tmp_path: Path) -> ExtractConfig:
    data = {
        "input": {"path": str(DEEPKE / task / "test.json"), "format": "iepile"},
        "task": task,
        "engine": {"type": "hf", "model": "unused"},
        "output": {"path": str(tmp_path / "out")},
    }
    return load_config(None, [], data=data, schema=ExtractConfig)


@pytest.mark.parametrize("task", TASKS)
def test_gold_as_output_round_trip(task, tmp_path):
    cfg = _cfg(task, tmp_path)
    lines = [json.loads(x) for x in (DEEPKE / task / "test.json").read_text().splitlines()]
    rows = read_instruction_rows(cfg)
    assert len(rows) == len(lines)
    t = get(task)
    outputs = []
    for row, rec in zip(rows, lines):
        label = json.loads(rec["label"]) if isinstance(rec["label"], str) else rec["label"]
        outputs.append({**row, "output": _gold_text(t, label, json.loads(row["instruction"]))})
    assert all(o["output"] is not None for o in outputs)
    pred = tmp_path / "predictions.jsonl"
    assert write_predictions(cfg, list(reversed(outputs)), pred) == len(lines)
    got = [json.loads(x) for x in pred.read_text().splitlines()]
    # every input record once, in input order, its own fields as given, plus `output`
    assert [{k: v for k, v in g.items() if k != "output"} for g in got] == lines
    report = evaluate_file(task, pred)
    assert report["records"] == len({x["id"] for x in lines})  # grouped by DeepKE's id
    assert report["parse_errors"] == 0
    for group, s in report["scores"].items():
        if s["gold"]:
            assert s["f1"] == pytest.approx(1.0), (task, group, s)
    assert any(s["gold"] for s in report["scores"].values())


def _gold_predictions(task: str, out: Path, tmp_path: Path) -> list[dict]:
    """DeepKE's test file of `task` with gold answers as outputs, written as `out`."""
    cfg = _cfg(task, tmp_path)
    t = get(task)
    lines = [json.loads(x) for x in (DEEPKE / task / "test.json").read_text().splitlines()]
    rows = []
    for row, rec in zip(read_instruction_rows(cfg), lines):
        label = json.loads(rec["label"])
        rows.append({**row, "output": _gold_text(t, label, json.loads(row["instruction"]))})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(cfg, rows, out)
    return lines


def test_graph_reads_deepke_predictions_from_same_named_files(tmp_path):
    """NER, RE and EE predictions, each in its own folder under the same file name: every
    record's document keeps its own id, the outputs are parsed by their task, and no two
    documents merge."""
    from kgc.graph.config import GraphConfig
    from kgc.graph.files import read_graph
    from kgc.graph.stream import run_build

    ids = set()
    for task in ("NER", "RE", "EE"):
        lines = _gold_predictions(task, tmp_path / "deepke" / task / "predictions.jsonl", tmp_path)
        ids |= {x["id"] for x in lines}
    cfg = GraphConfig.model_validate(
        {
            "input": {"paths": [str(tmp_path / "deepke" / t) for t in ("NER", "RE", "EE")]},
            "output": {"path": str(tmp_path / "graph")},
            "exports": [],
        }
    )
    summary = run_build(cfg, progress=False)
    assert summary["input"]["files"] == 3 and summary["records_used"] > 0
    nodes, edges = read_graph(tmp_path / "graph")
    docs = {m["doc_id"] for item in nodes + edges for m in item.get("mentions", [])}
    assert docs and docs <= ids  # DeepKE's own ids, nothing invented or merged
    assert any(e for e in edges)  # RE/EE outputs parsed into edges


def test_annotated_files_of_the_same_name_keep_their_documents_apart(tmp_path):
    """Without ids, documents are named by path relative to the inputs' common folder and
    line, so NER/sample.json:1 and RE/sample.json:1 stay two documents."""
    from kgc.graph.config import GraphConfig
    from kgc.graph.files import read_graph
    from kgc.graph.stream import run_build

    for task, field, anns in (
        ("NER", "entity", [{"entity": "张三", "entity_type": "人物"}]),
        ("RE", "relation", [{"head": "张三", "relation": "居住", "tail": "北京"}]),
    ):
        d = tmp_path / "in" / task
        d.mkdir(parents=True)
        rec = {"text": f"张三住在北京。（{task}）", field: anns}
        (d / "sample.json").write_text(json.dumps(rec, ensure_ascii=False) + "\n")
    cfg = GraphConfig.model_validate(
        {
            "input": {"paths": [str(tmp_path / "in" / "NER"), str(tmp_path / "in" / "RE")],
                      "id_field": None},
            "output": {"path": str(tmp_path / "graph")},
            "exports": [],
        }
    )  # fmt: skip
    run_build(cfg, progress=False)
    nodes, edges = read_graph(tmp_path / "graph")
    docs = {m["doc_id"] for item in nodes + edges for m in item.get("mentions", [])}
    assert docs == {"NER/sample.json:1", "RE/sample.json:1"}
