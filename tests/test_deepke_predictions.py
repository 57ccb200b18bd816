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
