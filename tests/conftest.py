"""Shared helpers: DeepKE's IEPile format samples live in examples/iepile/<TASK>/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

IEPILE = Path(__file__).resolve().parent.parent / "examples" / "iepile"
TASKS = ("NER", "RE", "SPO", "EE", "EET", "EEA", "KG")


def read_jsonl(path) -> list:
    return [
        json.loads(line)
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def write_jsonl(path, rows) -> Path:
    path = Path(path)
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture
def sample_dir():
    return IEPILE
