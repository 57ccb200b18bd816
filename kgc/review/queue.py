"""The review queue: documents ordered by how unsure the model was about them, most unsure
first, so that the first documents a person checks are the ones most likely to hold
mistakes (and, fed back into training, the ones that teach the model most).

A document's score adds, each in [0, 1] (weights below; docs/review.md):

- the share of its rows that failed (a parse error, or the engine failed): × 2;
- the share of its facts whose subject or object is not a span of the text: × 1;
- the share of its facts whose relation is not in the schema: × 1;
- 1 − p, p = exp(the least sure answer's mean token log-probability), when known: × 1;
- no fact at all (every answer empty): 0.25 (a missed fact leaves no other trace).

Ties keep document-id order, so the queue is the same on every machine and every run."""

from __future__ import annotations

import math

from kgc.review.corpus import Signals

WEIGHTS = {"errors": 2.0, "not_spans": 1.0, "outside_schema": 1.0, "logprob": 1.0, "empty": 0.25}


def parts(s: Signals) -> dict[str, float]:
    """The score's terms for one document (before weights), each in [0, 1]."""
    return {
        "errors": s.error_rows / s.rows if s.rows else 0.0,
        "not_spans": s.not_spans / s.facts if s.facts else 0.0,
        "outside_schema": s.outside_schema / s.facts if s.facts else 0.0,
        "logprob": 1.0 - math.exp(min(0.0, s.min_logprob)) if s.min_logprob is not None else 0.0,
        "empty": 1.0 if s.rows and not s.facts else 0.0,
    }


def unsure(s: Signals) -> float:
    return sum(WEIGHTS[k] * v for k, v in parts(s).items())


def review_queue(signals: dict[str, Signals]) -> list[tuple[str, float]]:
    """(doc id, score) for every document, most unsure first; ties by doc id."""
    scored = [(doc, round(unsure(s), 9)) for doc, s in signals.items()]
    return sorted(scored, key=lambda x: (-x[1], x[0]))
