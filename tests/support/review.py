"""A `kgc extract` output folder written directly (no model): RE rows whose answers a test
chooses, for the review app's and the review queue's tests."""

from __future__ import annotations

import json
from pathlib import Path

from kgc.rows import row_id
from kgc.shards import SHARDS, write_shard

RELATIONS = ["born_in", "works_for", "located_in"]


def extraction(out: Path, docs: list[dict]) -> Path:
    """`docs`: {"id", "text", "facts": [(head, relation, tail)], "errors"?: [...],
    "chunks"?: [(start, end)]} → out/rows/part-*.jsonl, one row per chunk (the facts on the
    first chunk)."""
    rows = []
    for d in docs:
        for k, (s, e) in enumerate(d.get("chunks") or [(0, len(d["text"]))]):
            facts = d["facts"] if k == 0 else []
            output = {}
            for h, r, t in facts:
                output.setdefault(r, []).append({"subject": h, "object": t})
            inst = {"instruction": "extract", "schema": RELATIONS, "input": d["text"][s:e]}
            rows.append(
                {
                    "id": row_id(d["id"], s, e, RELATIONS),
                    "doc_id": d["id"],
                    "chunk_index": k,
                    "chunk_start": s,
                    "chunk_end": e,
                    "task": "RE",
                    "schema": json.dumps(RELATIONS),
                    "instruction": json.dumps(inst, ensure_ascii=False),
                    "source": "",
                    "label": None,
                    "fingerprint": "test",
                    "output": json.dumps(output, ensure_ascii=False),
                    "records": json.dumps(
                        [{"head": h, "relation": r, "tail": t} for h, r, t in facts],
                        ensure_ascii=False,
                    ),
                    "errors": json.dumps(d.get("errors") if k == 0 else []),
                    "model_id": "test",
                }
            )
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    write_shard(out / SHARDS, rows, "jsonl")
    return out


DOCS = [
    {
        "id": "d1",
        "text": "Ada Lovelace was born in London. She worked for the Analytical Society.",
        "facts": [("Ada Lovelace", "born_in", "London"),
                  ("Ada Lovelace", "works_for", "Analytical Society")],
    },
    {
        "id": "d2",
        "text": "Alan Turing worked for Bletchley Park, which is located in Milton Keynes.",
        "facts": [("Alan Turing", "works_for", "Bletchley Park"),
                  ("Alan Turng", "born_in", "Bletchley")],  # not a span: the queue's signal
        "chunks": [(0, 37), (30, 73)],
    },
    {"id": "d3", "text": "Grace Hopper <b>wrote</b> compilers in Arlington.", "facts": [],
     "errors": ["expected a JSON object, got str"]},
    {"id": "d4", "text": "Nothing here states a fact.", "facts": []},
]  # fmt: skip
