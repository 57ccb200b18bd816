"""jobs/review.py end to end on the tiny random model: a demo checkpoint (2 steps), then the
oracle measurement shortened (a pool of 6, 2 reviewed documents per choice, 2 retraining
steps, 3 scored documents): every stage runs and the table is printed and saved. The tiny
model proves the plumbing, not the gain (docs/review.md has the real model's table)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# A fresh process: the suite's own Ray session (Serve replicas of other modules holding its
# CPUs) would leave Ray Train's workers waiting for CPUs forever (`ensure_ray` reuses it).
DRIVER = """
import argparse, json, sys
from jobs import review
from jobs.demo import Demo
out = sys.argv[1]
demo = Demo(argparse.Namespace(model="tiny", out=out + "/demo", steps=2, full=False,
                               precision="fp32"))
demo.prepare()
demo.fine_tune()
from pathlib import Path
result = review.oracle(Path(out) / "demo", Path(out) / "oracle", "tiny", n=2, pool_size=6,
                       seed=0, score_docs=3, steps=2)
print("PICKS " + json.dumps(result["picks"]))
"""


@pytest.mark.slow  # ≈ 3.5 min on 2 busy cores: a fine-tune, an extraction, two retrains
@pytest.mark.timeout(600)
def test_oracle_runs_every_stage_on_the_tiny_model(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=560)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert re.search(r"^  queue\s+\d\.\d{3}\s+[+-]\d\.\d{3}$", out, re.M), out[-2000:]
    assert re.search(r"^  random\s+\d\.\d{3}\s+[+-]\d\.\d{3}$", out, re.M), out[-2000:]
    saved = json.loads((tmp_path / "oracle" / "oracle.json").read_text())
    assert saved["f1"].keys() == {"before", "queue", "random"} and saved["scored_docs"] == 3
    picks = json.loads(re.search(r"^PICKS (.*)$", out, re.M).group(1))
    assert len(picks["queue"]) == len(picks["random"]) == 2 and picks == saved["picks"]
    # the queue read the answers' log-probabilities written beside the pool's rows
    lps = (tmp_path / "oracle" / "pool" / "answer_logprobs.jsonl").read_text().splitlines()
    assert len(lps) == saved["pool"] and all(json.loads(x)["logprob"] < 0 for x in lps)
    # what each retrain learned from: the oracle's corrections, as SPO training records
    train = [
        json.loads(x) for x in (tmp_path / "oracle" / "train-queue.jsonl").read_text().splitlines()
    ]
    assert len(train) == 2 and all(r["task"] == "SPO" for r in train)
