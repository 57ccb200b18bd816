"""An extraction output folder (`kgc extract`: rows/part-* shards) as review documents: each
document's whole text (put back from its chunks by `kgc.graph.documents.load_texts`), the
facts the model extracted (merged over chunks and schema splits by `kgc.extract`), and the
signals the review queue orders documents by (`kgc.review.queue`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from kgc.errors import KgcError, Problem

# optional: the mean token log-probability of each row's answer under the model that wrote
# it, {"id": row id, "logprob": float} per line (jobs/review.py `score_answers` writes it)
LOGPROBS = "answer_logprobs.jsonl"
TASKS = ("RE", "SPO")  # tasks whose records are (head, relation, tail) facts


@dataclass
class Signals:
    """What a document's rows say about how sure the model was."""

    rows: int = 0
    error_rows: int = 0  # rows whose answer did not parse, or that the engine failed on
    empty_rows: int = 0  # rows answered with no fact at all
    facts: int = 0
    not_spans: int = 0  # facts whose subject or object is not a span of the text
    outside_schema: int = 0  # facts whose relation is not in the schema
    min_logprob: float | None = None  # the least sure answer's mean token log-probability

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Document:
    id: str
    text: str
    facts: list[dict]  # {"head", "relation", "tail"}: the model's, de-duplicated
    signals: Signals = field(default_factory=Signals)


def fact(rec: dict) -> dict:
    return {"head": rec["head"], "relation": rec["relation"], "tail": rec["tail"]}


def schema_relations(rows: list[dict]) -> list[str]:
    """The relations the rows' schema splits asked about (RE: names; SPO: predicates)."""
    seen: dict[str, None] = {}
    for r in rows:
        try:
            items = json.loads(r.get("schema") or "[]")
        except ValueError:
            continue
        for it in items if isinstance(items, list) else []:
            name = it.get("predicate") or it.get("relation") if isinstance(it, dict) else it
            if isinstance(name, str):
                seen.setdefault(name, None)
    return list(seen)


def read_logprobs(out_dir: Path) -> dict[str, float]:
    from kgc.io import read_jsonl

    f = Path(out_dir) / LOGPROBS
    if not f.is_file():
        return {}
    got: dict[str, float] = {}
    for n, rec in read_jsonl(f):
        lp = rec.get("logprob") if isinstance(rec, dict) else None
        if not isinstance(rec.get("id"), str) or not isinstance(lp, (int, float)):
            raise KgcError(Problem('each line needs {"id": row id, "logprob": number}', f, n))
        if math.isfinite(lp):
            got[rec["id"]] = float(lp)
    return got


def load_corpus(out_dir: str | Path) -> tuple[dict[str, Document], list[str]]:
    """(doc id → Document in id order, the schema's relations) from a `kgc extract` folder."""
    from kgc.extract import merge_documents
    from kgc.graph.clean import clean_str
    from kgc.graph.documents import load_texts
    from kgc.shards import read_rows

    out_dir = Path(out_dir)
    rows, seen = [], set()
    for r in read_rows(out_dir):  # a row written twice: the first shard by name wins
        if r["id"] not in seen:
            seen.add(r["id"])
            rows.append(r)
    if not rows:
        raise KgcError(
            Problem(
                "no extraction rows (rows/part-*); point `kgc review` at a `kgc extract` "
                "output folder",
                str(out_dir),
            )  # fmt: skip
        )
    other = sorted({r["task"] for r in rows} - set(TASKS))
    if other:
        raise KgcError(f"kgc review reviews RE and SPO extractions; {out_dir} has task {other}")
    for r in rows:
        r["doc_id"] = clean_str(str(r["doc_id"]))
    texts = load_texts([str(out_dir)], {r["doc_id"] for r in rows})
    relations = schema_relations(rows)
    logprobs = read_logprobs(out_dir)
    docs: dict[str, Document] = {}
    for merged in merge_documents(rows):
        doc = merged["doc_id"]
        docs[doc] = Document(
            doc, texts.get(doc, ""), [fact(m["record"]) for m in merged["records"]]
        )
    for r in rows:
        d = docs[r["doc_id"]]
        s = d.signals
        s.rows += 1
        errors, records = json.loads(r["errors"]), json.loads(r["records"])
        s.error_rows += bool(errors)
        s.empty_rows += not records and not errors
        lp = logprobs.get(r["id"])
        if lp is not None:
            s.min_logprob = lp if s.min_logprob is None else min(s.min_logprob, lp)
    for d in docs.values():
        d.signals.facts = len(d.facts)
        d.signals.not_spans = sum(
            f["head"] not in d.text or f["tail"] not in d.text for f in d.facts
        )
        d.signals.outside_schema = sum(f["relation"] not in relations for f in d.facts)
    return dict(sorted(docs.items())), relations
