"""`make demo`'s job end to end on the tiny random model, shortened (few training steps):
every stage runs and writes its outputs, and the summary has the lines checks read. (The
real model's demo takes minutes; its scores are in the README and docs/demo.md.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
def test_demo_runs_every_stage(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run(
        [sys.executable, "-m", "jobs.demo", "--out", str(tmp_path), "--model", "tiny", "--steps", "8"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=560,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    line = re.search(r"^held-out F1 \(constrained\): zero-shot (\d\.\d{3}) \(8 documents\) → "
                     r"tuned (\d\.\d{3})$", r.stdout, re.M)  # fmt: skip
    assert line, r.stdout[-3000:]
    took = re.search(r"^demo time: (\d+) s \(model preparation excluded\)$", r.stdout, re.M)
    assert took and r.stdout.rstrip().endswith(took.group(0)), r.stdout[-3000:]
    report = json.loads((tmp_path / "demo.json").read_text())
    assert [(row["model"], row["docs"]) for row in report["table"]] == [
        ("zero-shot constrained", 8), ("tuned constrained", 40)
    ]  # fmt: skip
    assert f"{report['table'][1]['f1']:.3f}" == line.group(2)
    assert report["table"][1]["errors"] == 0.0  # constrained answers always parse
    assert re.search(r"^  checkpoint\s+\S+", r.stdout, re.M)
    n_heldout = len((ROOT / "examples/demo/heldout.json").read_text().splitlines())
    preds = (tmp_path / "predictions-tuned-constrained.jsonl").read_text().splitlines()
    assert len(preds) == n_heldout
    summary = json.loads((tmp_path / "graph" / "summary.json").read_text())
    assert summary["exports"]["html"]["path"].endswith("graph.html")
    assert (tmp_path / "graph" / "graph.ttl").is_file()
    from kgc.shards import read_rows

    rows = read_rows(tmp_path / "corpus")
    assert len({r["doc_id"] for r in rows}) == n_heldout
    assert all(json.loads(r["errors"]) == [] for r in rows)  # constrained decoding: all parse
