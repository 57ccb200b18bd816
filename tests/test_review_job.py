"""jobs/review.py end to end on the tiny random model: a demo checkpoint (2 steps), then the
oracle measurement shortened (a pool of 6, 2 reviewed documents per choice, 2 retraining
steps, 3 scored documents): every stage runs and the table is printed and saved. The tiny
model proves the plumbing, not the gain (docs/review.md has the real model's table)."""

from __future__ import annotations

import argparse
import json
import re

import pytest


@pytest.mark.slow  # ≈ 3.5 min on 2 busy cores: a fine-tune, an extraction, two retrains
@pytest.mark.timeout(600)
def test_oracle_runs_every_stage_on_the_tiny_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    from jobs import review
    from jobs.demo import Demo

    demo = Demo(argparse.Namespace(model="tiny", out=str(tmp_path / "demo"), steps=2,
                                   full=False, precision="fp32"))  # fmt: skip
    demo.prepare()
    demo.fine_tune()
    result = review.oracle(tmp_path / "demo", tmp_path / "oracle", "tiny", n=2, pool_size=6,
                           seed=0, score_docs=3, steps=2)  # fmt: skip
    out = capsys.readouterr().out
    assert re.search(r"^  queue\s+\d\.\d{3}\s+[+-]\d\.\d{3}$", out, re.M), out[-2000:]
    assert re.search(r"^  random\s+\d\.\d{3}\s+[+-]\d\.\d{3}$", out, re.M), out[-2000:]
    saved = json.loads((tmp_path / "oracle" / "oracle.json").read_text())
    assert saved["f1"].keys() == {"before", "queue", "random"} and saved["scored_docs"] == 3
    assert len(result["picks"]["queue"]) == len(result["picks"]["random"]) == 2
    # the queue read the answers' log-probabilities written beside the pool's rows
    lps = (tmp_path / "oracle" / "pool" / "answer_logprobs.jsonl").read_text().splitlines()
    assert len(lps) == saved["pool"] and all(json.loads(x)["logprob"] < 0 for x in lps)
    # what each retrain learned from: the oracle's corrections, as SPO training records
    train = [
        json.loads(x) for x in (tmp_path / "oracle" / "train-queue.jsonl").read_text().splitlines()
    ]
    assert len(train) == 2 and all(r["task"] == "SPO" for r in train)
