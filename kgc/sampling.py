"""Schema sampling and chunking rules of IEPile, made deterministic.

DeepKE seeds a global RNG and iterates Python sets, so its output changes with
PYTHONHASHSEED. Here every record gets its own RNG seeded from (seed, record position, text)
through a string seed (hashed with SHA-512 by `random`, independent of PYTHONHASHSEED), and
no set is ever iterated to build output.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class SamplingOptions:
    """How a train instruction's schema is drawn (see `kgc convert --help`)."""

    split_num: int = 4
    neg_prob: float = 1.0
    random_order: bool = False
    seed: int = 42
    hard_negatives: dict[str, list[str]] | None = None


def record_rng(seed: int, index: int, text: str) -> random.Random:
    return random.Random(f"kgc:{seed}:{index}:{text}")


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Number of successes in n Bernoulli(p) draws (IEPile's negative-sample count)."""
    if p >= 1.0:
        return n
    if p <= 0.0:
        return 0
    return sum(1 for _ in range(n) if rng.random() < p)


def split_chunks(items: Sequence[T], split_num: int) -> list[list[T]]:
    """Split a schema list into instruction-sized chunks with IEPile's remainder rule.

    Chunks hold ``split_num`` items; a remainder of r items becomes a chunk of its own when
    r >= max(1, split_num // 2) and is appended to the last chunk otherwise. ``split_num``
    of -1 (or fewer items than ``split_num``) gives a single chunk.
    """
    items = list(items)
    if not items:
        return []
    if split_num == -1 or len(items) <= split_num:
        return [items]
    if split_num < 1:
        raise ValueError(f"split_num must be -1 or >= 1, got {split_num}")
    full = len(items) // split_num
    chunks = [items[i * split_num : (i + 1) * split_num] for i in range(full)]
    rest = items[full * split_num :]
    if rest:
        if len(rest) >= max(1, split_num // 2):
            chunks.append(rest)
        else:
            chunks[-1].extend(rest)
    return chunks


def order(
    items: list[T], rng: random.Random, random_order: bool, key: Callable[[T], Any]
) -> list[T]:
    """Shuffle with the record's RNG, or sort by code point (IEPile's `sorted`)."""
    items = list(items)
    if random_order:
        rng.shuffle(items)
    else:
        items.sort(key=key)
    return items


def sample_negatives(
    rng: random.Random, positives: Sequence[T], universe: Sequence[T], p: float
) -> list[T]:
    """IEPile's negative sampling: k ~ Binomial(|universe|, p), at least 1 when there are no
    positives, at most the number of negatives; drawn without replacement."""
    if p <= 0:
        return []
    pos = set(positives)
    negatives = [u for u in universe if u not in pos]
    k = binomial(rng, len(universe), p)
    if not positives:
        k = max(k, 1)
    k = min(k, len(negatives))
    return rng.sample(negatives, k)


def cluster_negatives(
    rng: random.Random,
    positives: Sequence[str],
    universe: Sequence[str],
    hard: dict[str, list[str]],
    split_num: int,
    p: float,
) -> list[str]:
    """Hard-negative cluster mode: positives, their listed hard negatives, and up to
    ``split_num`` random other labels. Returns the full label set for the record."""
    if len(universe) == 1:
        return list(universe)
    if not positives:
        k = max(binomial(rng, len(universe), p / 2), 1)
        return rng.sample(list(universe), min(k, len(universe)))
    chosen: list[str] = []
    seen: set[str] = set()
    for label in positives:
        for x in [label, *hard.get(label, [])]:
            if x not in seen:
                seen.add(x)
                chosen.append(x)
    rest = [u for u in universe if u not in seen]
    chosen.extend(rng.sample(rest, min(split_num if split_num > 0 else len(rest), len(rest))))
    return chosen
