"""Micro precision / recall / F1 over extracted tuples, with optional normalisation.

Matching is multiset by default (a gold item is matched at most once; predicting it twice
counts one hit and one false positive) or set (duplicates collapsed on both sides). Values
are fractions in [0, 1] and are never rounded before F1 is computed.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

MATCH_MODES = ("multiset", "set")
_SPACE = re.compile(r"\s+")


def normalize_text(s: str) -> str:
    """NFKC (full-width → half-width), case-folded, whitespace collapsed and stripped."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", s)).strip().casefold()


def normalize_item(item, normalize: bool = True):
    """Normalise every string in a tuple; a nested tuple is an unordered bag and is sorted."""
    if isinstance(item, str):
        return normalize_text(item) if normalize else item
    if isinstance(item, tuple):
        parts = tuple(normalize_item(x, normalize) for x in item)
        return parts
    return item


def _canonical(item, normalize: bool):
    item = normalize_item(item, normalize)
    if isinstance(item, tuple):
        return tuple(tuple(sorted(x, key=repr)) if isinstance(x, tuple) else x for x in item)
    return item


@dataclass
class PRF:
    tp: int = 0
    pred: int = 0
    gold: int = 0

    def add(self, other: PRF) -> None:
        self.tp += other.tp
        self.pred += other.pred
        self.gold += other.gold

    @property
    def precision(self) -> float:
        return self.tp / self.pred if self.pred else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.gold if self.gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.tp,
            "pred": self.pred,
            "gold": self.gold,
        }


def count(
    pred: Iterable, gold: Iterable, *, match: str = "multiset", normalize: bool = True
) -> PRF:
    """True positives and sizes for one record's predicted and gold items."""
    if match not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {match!r}")
    p = Counter(_canonical(x, normalize) for x in pred)
    g = Counter(_canonical(x, normalize) for x in gold)
    if match == "set":
        p = Counter(set(p))
        g = Counter(set(g))
    tp = sum(min(n, g[k]) for k, n in p.items())
    return PRF(tp, sum(p.values()), sum(g.values()))
