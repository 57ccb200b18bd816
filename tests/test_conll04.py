"""`python -m jobs.conll04` end to end on a hand-written SpERT fixture and the tiny random
model (a few steps): every stage runs, the lines checks read are printed, and the test
file's predictions and strict scores are written (the scores against a hand count)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "tests" / "data" / "conll04_mini"


@pytest.mark.timeout(600)
def test_conll04_recipe_runs_every_stage_and_scores_a_test_file(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    test_file = MINI / "mini_dev.spert.json"
    r = subprocess.run(
        [sys.executable, "-m", "jobs.conll04", "--data", str(MINI), "--out", str(tmp_path),
         "--model", "tiny", "--steps", "3", "--zero-shot", "1", "--test", str(test_file)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=560,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    dev = re.search(r"^dev F1 \(strict\): (\d\.\d{3})$", r.stdout, re.M)
    test = re.search(r"^test F1 \(strict\): (\d\.\d{3})$", r.stdout, re.M)
    assert dev and test, r.stdout[-3000:]
    for row in ("dev, zero-shot", "dev, tuned", "test, tuned", "published: SpERT"):
        assert row in r.stdout, row
    # the test file: 3 sentences, one instruction each (all 5 relations in one), with output
    preds = [json.loads(x) for x in (tmp_path / "test.predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 3 and all(isinstance(p["output"], str) for p in preds)
    assert json.loads(preds[0]["instruction"])["input"] == (
        "Anna Lind, a writer at Orbis Media, lives in Graz."  # detokenized
    )
    scores = json.loads((tmp_path / "test.scores.json").read_text())
    triple = scores["scores"]["triple"]
    # hand count: mini_dev holds 2 + 1 + 1 gold relations
    assert triple["gold"] == 4
    assert f"{triple['f1']:.3f}" == test.group(1)
    assert scores["by_label"]["triple"]["work for"]["gold"] == 1
    summary = json.loads((tmp_path / "conll04.json").read_text())
    assert summary["steps"] == 3 and f"{summary['dev']['tuned']['f1']:.3f}" == dev.group(1)


def test_conll04_recipe_names_a_missing_data_folder(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "jobs.conll04", "--data", str(tmp_path / "nowhere")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode != 0 and "--data" in r.stderr and "nowhere" in r.stderr
