"""`make demo`'s job end to end, shortened (few training steps): every stage runs and writes
its outputs. (The full demo's scores are in the README; here the model barely trains.)"""

from __future__ import annotations

import json
import os
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
        [sys.executable, "-m", "jobs.demo", "--out", str(tmp_path), "--steps", "8"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=560,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "triple F1 on the tuning documents" in r.stdout
    scores = json.loads((tmp_path / "score-tuned" / "scores.json").read_text())
    assert scores["records"] == 40
    summary = json.loads((tmp_path / "graph" / "summary.json").read_text())
    assert summary["exports"]["html"]["path"].endswith("graph.html")
    assert (tmp_path / "graph" / "graph.ttl").is_file()
    from kgc.extract import read_rows

    rows = read_rows(tmp_path / "corpus")
    assert len({r["doc_id"] for r in rows}) == 40
    assert all(json.loads(r["errors"]) == [] for r in rows)  # constrained decoding: all parse
