"""Small helpers shared by the ICL modes: label normalisation, scoring, demo sampling."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from typing import Any

from kgc.metrics import PRF, count

NONE_WORDS = frozenset(
    {"", "none", "nan", "na", "n/a", "null", "no relation", "norelation", "other", "others",
     "无", "没有", "无关系", "不存在"}
)  # fmt: skip
_NORM = re.compile(r"[\s_\-:/.,'\"`“”‘’]+")


def norm_label(s: str) -> str:
    """'per:cities_of_residence', 'Per Cities-Of Residence' → 'percitiesofresidence'."""
    return _NORM.sub("", s.casefold())


def first_answer_line(text: str) -> str:
    """The model's first non-empty line, without list marks, quotes or a final period."""
    for line in text.strip().splitlines():
        line = line.strip().strip("*`").strip()
        if line:
            line = re.sub(r"^(?:answer|relation|关系|答案)\s*[:：]\s*", "", line, flags=re.I)
            return line.strip().strip("\"'“”‘’「」《》").rstrip("。.").strip()
    return ""


def seeded_rng(seed: int, *parts: Any) -> random.Random:
    """A reproducible RNG for one item (independent of PYTHONHASHSEED)."""
    key = ":".join(["kgc-icl", str(seed), *map(str, parts)])
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def sample(items: Sequence[Any], k: int | None, rng: random.Random) -> list[Any]:
    if k is None or k >= len(items):
        return list(items)
    return rng.sample(list(items), k)


def score_groups(
    pairs: Iterable[tuple[dict[str, list[tuple]], dict[str, list[tuple]]]],
    groups: Sequence[str],
) -> dict[str, dict]:
    """Micro P/R/F1 per group over (predicted tuples, gold tuples) of each scored row."""
    totals = {g: PRF() for g in groups}
    for pred, gold in pairs:
        for g in groups:
            totals[g].add(count(pred.get(g, []), gold.get(g, [])))
    return {g: t.as_dict() for g, t in totals.items()}


def fmt_prf(d: dict) -> str:
    return f"P {d['precision'] * 100:.2f}  R {d['recall'] * 100:.2f}  F1 {d['f1'] * 100:.2f}"
