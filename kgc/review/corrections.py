"""The corrections file and the reviewer's decisions applied to it.

One JSONL line per document touched, in DeepKE's raw RE format, so that `kgc convert --task
RE` (and DeepKE itself) read the file as it is:

    {"id": doc id, "text": the document, "relation": [{"head", "relation", "tail"}, …],
     "review": {"done": bool, "facts": [{"head", "relation", "tail", "status",
                                         "head_span"?, "tail_span"?}, …]}}

`relation` is what the document states once reviewed: every fact not rejected. `review`
(ignored by converters) keeps the decisions: each fact the model found ("model" until
decided, then "accepted" / "rejected" / "edited") and each one the reviewer "added", with
the character spans the reviewer selected. A record without `review` (a hand-written file)
reads as all of its facts accepted.

Every decision is applied to the file as it is on disk, under a lock (a thread lock and
an flock on `<file>.lock`, so two tabs, two threads or two processes take turns), and the
whole file is replaced atomically: a crash leaves the old file or the new one."""

from __future__ import annotations

import contextlib
import fcntl
import threading
from pathlib import Path

from kgc.errors import KgcError, Problem
from kgc.review.corpus import Document, fact

STATUSES = ("model", "accepted", "rejected", "edited", "added")
OPS = ("accept", "reject", "relation", "head", "tail", "add", "done")
MAX_FACTS = (
    1_000  # facts per document (added ones included): a request cannot grow a file without end
)


class ReviewError(ValueError):
    """A decision that cannot be applied: `field` names what is wrong, `status` the HTTP code."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.status = field, status


def seed(doc: Document) -> dict:
    """The record of a document nobody has decided on yet: the model's facts, undecided."""
    return record(doc.id, doc.text, [{**f, "status": "model"} for f in doc.facts], False)


def record(doc_id: str, text: str, facts: list[dict], done: bool) -> dict:
    kept = [fact(f) for f in facts if f["status"] != "rejected"]
    return {"id": doc_id, "text": text, "relation": kept, "review": {"done": done, "facts": facts}}


def facts_of(rec: dict) -> list[dict]:
    review = rec.get("review")
    if isinstance(review, dict) and isinstance(review.get("facts"), list):
        return [dict(f) for f in review["facts"]]
    return [{**fact(f), "status": "accepted"} for f in rec.get("relation") or []]


def is_done(rec: dict) -> bool:
    review = rec.get("review")
    return bool(review.get("done")) if isinstance(review, dict) else True


def _int(decision: dict, key: str) -> int:
    v = decision.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ReviewError(key, f"{key} must be an integer, got {v!r:.40}")
    return v


def _span(decision: dict, key: str, text: str) -> tuple[int, int, str]:
    v = decision.get(key)
    if not (isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v)):
        raise ReviewError(key, f"{key} must be [start, end] character offsets, got {v!r:.60}")
    s, e = v
    if not 0 <= s < e <= len(text):
        raise ReviewError(
            key, f"{key} [{s}, {e}] is outside the text (0 to {len(text)}, start < end)"
        )
    name = text[s:e]
    if not name.strip() or name != name.strip():
        raise ReviewError(key, f"{key} [{s}, {e}] selects {name!r:.40}: no blank or padded name")
    return s, e, name


def _relation(decision: dict, relations: list[str]) -> str:
    r = decision.get("relation")
    if not isinstance(r, str) or (relations and r not in relations):
        raise ReviewError("relation", f"relation {r!r:.60} is not in the schema {relations}")
    return r


def apply(rec: dict, doc: Document, decision: dict, relations: list[str]) -> dict:
    """The record after one decision (a new dict; `rec` is left as it was). Decisions:
    {"op": "accept"|"reject", "fact": i}, {"op": "relation", "fact": i, "relation": r},
    {"op": "head"|"tail", "fact": i, "span": [start, end]},
    {"op": "add", "head": [s, e], "relation": r, "tail": [s, e]}, {"op": "done", "done": b}.
    A decision on a fact may carry `expect` (the fact as the page showed it): if the fact
    changed since (another tab), the decision is refused (409) rather than applied to it."""
    if not isinstance(decision, dict):
        raise ReviewError("body", "a decision is a JSON object")
    op = decision.get("op")
    if op not in OPS:
        raise ReviewError("op", f"op {op!r:.40} is not one of {list(OPS)}")
    facts, done, text = facts_of(rec), is_done(rec), doc.text
    if op == "done":
        done = decision.get("done", True)
        if not isinstance(done, bool):
            raise ReviewError("done", f"done must be true or false, got {done!r:.40}")
        if done:  # what the reviewer left as the model had it, they saw and kept
            facts = [{**f, "status": "accepted"} if f["status"] == "model" else f for f in facts]
        return record(doc.id, text, facts, done)
    if op == "add":
        if len(facts) >= MAX_FACTS:
            raise ReviewError("op", f"a document holds at most {MAX_FACTS} facts")
        hs, he, head = _span(decision, "head", text)
        ts, te, tail = _span(decision, "tail", text)
        new = {"head": head, "relation": _relation(decision, relations), "tail": tail}
        if any(fact(f) == new and f["status"] != "rejected" for f in facts):
            raise ReviewError("relation", f"the document already has the fact {new}", 409)
        facts.append({**new, "status": "added", "head_span": [hs, he], "tail_span": [ts, te]})
        return record(doc.id, text, facts, done)
    i = _int(decision, "fact")
    if not 0 <= i < len(facts):
        raise ReviewError("fact", f"fact {i} does not exist: the document has {len(facts)}", 404)
    f = facts[i]
    expect = decision.get("expect")
    if expect is not None and (not isinstance(expect, dict) or fact_or_none(expect) != fact(f)):
        raise ReviewError("expect", f"fact {i} is now {fact(f)}: reload the document", 409)
    edited = "added" if f["status"] == "added" else "edited"
    if op == "accept":
        f["status"] = "accepted" if f["status"] in ("model", "rejected") else f["status"]
    elif op == "reject":
        f["status"] = "rejected"
    elif op == "relation":
        f.update(relation=_relation(decision, relations), status=edited)
    else:  # head / tail: a span of the text
        s, e, name = _span(decision, "span", text)
        f.update({op: name, f"{op}_span": [s, e], "status": edited})
    return record(doc.id, text, facts, done)


def fact_or_none(d: dict) -> dict | None:
    try:
        return fact(d)
    except KeyError:
        return None


class Corrections:
    """The corrections file: read whole on every call (the state lives in the file, not in
    this object), changed one decision at a time under the lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.read()  # a damaged file is an error at start, naming file and line

    def read(self) -> dict[str, dict]:
        from kgc.io import read_jsonl

        if not self.path.exists():
            return {}
        out: dict[str, dict] = {}
        problems = []
        for n, rec in read_jsonl(self.path):
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                problems.append(Problem('a correction needs a string "id"', self.path, n))
            elif not isinstance(rec.get("relation"), list):
                problems.append(Problem('a correction needs a list "relation"', self.path, n))
            else:
                out[rec["id"]] = rec
        if problems:
            raise KgcError(problems)
        return out

    @contextlib.contextmanager
    def locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def decide(self, doc: Document, decision: dict, relations: list[str]) -> dict:
        """Apply one decision to the document's record on disk; returns the new record."""
        from kgc.io import write_jsonl_atomic

        with self.locked():
            records = self.read()
            new = apply(records.get(doc.id) or seed(doc), doc, decision, relations)
            records[doc.id] = new
            write_jsonl_atomic(self.path, (records[k] for k in sorted(records)))
        return new


def training_records(records: dict[str, dict], only_done: bool = True) -> list[dict]:
    """The corrections to train on, as DeepKE raw records ({id, text, relation}): the
    documents marked done (`only_done`), in id order."""
    return [
        {"id": r["id"], "text": r["text"], "relation": [fact(f) for f in r["relation"]]}
        for _, r in sorted(records.items())
        if isinstance(r.get("text"), str) and (is_done(r) or not only_done)
    ]


def typed(rec: dict, labels: list[str]) -> dict:
    """A raw RE record made SPO: each fact gets the head_type/tail_type its relation has in
    the SPO schema's labels ("person_born_in_city"); a relation typed two ways is an error
    (the reviewer's fact does not say which)."""
    from kgc.tasks.spo import split_typed

    types: dict[str, set] = {}
    for label in labels:
        parts = split_typed(label)
        if parts:
            types.setdefault(parts[1], set()).add((parts[0], parts[2]))
    out = []
    for f in rec["relation"]:
        pair = types.get(f["relation"], set())
        if len(pair) != 1:
            raise KgcError(
                f"document {rec['id']}: relation {f['relation']!r} has {len(pair)} typings in "
                "the SPO schema; convert the corrections as RE instead"
            )
        (st, ot) = next(iter(pair))
        out.append({**fact(f), "head_type": st, "tail_type": ot})
    return {**rec, "relation": out}
