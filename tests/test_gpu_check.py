"""bench/gpu_check.py --dry-run: the GPU check's code paths (LoRA step with its FLOP
figures, the engine's paths free and constrained) run on CPU and write their JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")
ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    step = report["lora_step"]
    assert step["tokens_per_s"] > 0 and len(step["losses"]) == 3
    assert "6*N*tokens" in step["flop_convention"]
    rows = report["engine"]
    for path in ("plain generate", "+ shared prefix", "kgc continuous"):
        for mode in ("free", "constrained"):
            row = rows[f"{path} | batch 2 | {mode}"]
            assert row["generated_tokens"] > 0 and row["tokens_per_s"] > 0
    assert report["gpu_tests"] == "skipped in a dry run"
