"""The extraction row: one chunk of one document × one schema split, the unit `kgc extract`
generates, writes in shards (`kgc.shards`) and the graph build reads (`kgc.graph`)."""

from __future__ import annotations

import hashlib
import json
from typing import TypedDict


class Row(TypedDict):
    """A row to extract, as the driver builds it from the input (`kgc.extract`)."""

    # row_id(doc_id, chunk_start, chunk_end, schema split): stable across runs, so a rerun
    # skips every row already written (IEPile input: the doc id gets "#<n>", n counting
    # identical records of the same id)
    id: str
    # input.id_field, else "<file name>:<line>" (a .txt file: its name); IEPile input: "id"
    doc_id: str
    chunk_index: int  # the chunk's position in its document (0 for IEPile input)
    chunk_start: int  # the chunk's characters in the document text: [chunk_start, chunk_end)
    chunk_end: int
    task: str  # the task's registered name (NER, RE, …)
    schema: str  # JSON of the schema split this row's instruction asks about
    instruction: str  # the IEPile instruction JSON {"instruction", "schema", "input"}: the prompt
    source: str  # the document's "source" field, else ""
    label: str | None  # the gold answer of a labelled IEPile record (scored), else None
    # what the row's answer depends on, hashed (`fingerprint`): a rerun reuses a written row
    # only when its fingerprint is this run's (`kgc.shards.scan_shards`)
    fingerprint: str


class ExtractedRow(Row):
    """A row as a shard holds it: the row, plus what the actor added."""

    output: str  # the model's text ("" when the engine failed on this row)
    records: str  # JSON list of the records parsed from `output`
    errors: str  # JSON list of parse errors; an engine failure comes first ("engine error: …")
    model_id: str  # the engine's model id (base model, adapter)


# the start of an error that says a row was not generated: its prompt (+ the answer's
# budget) does not fit the model's context (kgc.runtime.extract); counted in the summary
TOO_LONG = "prompt too long"

# every field the merge, the scores and the graph read from a row (a shard row lacking one
# is not a `kgc extract` row)
ROW_FIELDS = (
    "id",
    "doc_id",
    "chunk_index",
    "chunk_start",
    "task",
    "instruction",
    "output",
    "records",
    "errors",
)


def row_id(doc_id: str, start: int, end: int, schema: list) -> str:
    key = json.dumps([doc_id, start, end, schema], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


# A row's fingerprint: "<input>.<model>.<generation>", three digests of what its answer
# depends on. The id says where a row is (document, chunk span, schema split); the
# fingerprint says what was asked of whom: the task and the instruction (chunk text,
# language, schema split), the model (engine.model/adapter/checkpoint, dtype, quantization)
# and the generation settings. Kept in parts so that a rerun can say why a row no longer
# matches (`kgc.shards.mismatch`).
FINGERPRINT_PARTS = ("input", "model", "generation")


def digest(value) -> str:
    """A short stable hash of a JSON value."""
    key = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def fingerprint(task: str, instruction: str, run: str) -> str:
    """The fingerprint of a row asking `instruction` of `task`, for the run whose model and
    generation part is `run` (`kgc.extract.run_fingerprint`)."""
    return f"{digest([task, instruction])}.{run}"


def fingerprint_parts(value) -> dict[str, str] | None:
    """A fingerprint's parts by name, or None when `value` is not one (a row written by an
    older kgc, or not by kgc)."""
    if not isinstance(value, str):
        return None
    parts = value.split(".")
    if len(parts) != len(FINGERPRINT_PARTS) or not all(
        len(p) == 16 and all(c in "0123456789abcdef" for c in p) for p in parts
    ):
        return None
    return dict(zip(FINGERPRINT_PARTS, parts))
