"""Batch extraction, the pure-Python parts (`kgc extract --config …`; the Ray job is
`kgc.runtime.extract`).

documents → chunks (token-aware, overlap, char offsets) → instructions (task × schema split,
`kgc.schema_splits`) → rows (`kgc.rows`) → generated and parsed by the actors, written as
shards (`kgc.shards`) → per-document merge (records with their document offsets) → scores
(when the input carries labels) and the summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kgc.chunking import Offsets
from kgc.config import ExtractConfig
from kgc.errors import KgcError, Problem
from kgc.rows import TOO_LONG, ExtractedRow, Row, digest, fingerprint, row_id
from kgc.shards import QUARANTINE, SHARDS, SetAside

SUMMARY = "summary.json"
DOCUMENTS = "documents.jsonl"
SCORES = "scores.json"
PREDICTIONS = "predictions.jsonl"  # IEPile inputs: the input records + `output` (DeepKE's shape)
# touched by the actors as tokens are generated: the driver's stall watchdog sees progress
# inside a batch (kgc.runtime.extract)
HEARTBEAT = ".heartbeat"


# ----------------------------------------------------------------------------- reading
def is_uri(path: str) -> bool:
    """s3://bucket/key, gs://…, hdfs://…, file:///… — read through pyarrow's filesystems."""
    return "://" in path


def _filesystem(uri: str):
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types here
        raise KgcError(
            Problem(f"cannot open this URI with pyarrow ({exc}); check input.path", uri)
        ) from None


def _files(path: str, exts: tuple[str, ...]) -> list[str]:
    """The input files: the path itself, or every file with one of `exts` under a folder
    (local, or a pyarrow URI such as s3://bucket/prefix/)."""
    if is_uri(path):
        import pyarrow.fs as pafs

        fs, inner = _filesystem(path)
        info = fs.get_file_info(inner)
        scheme = path.split("://", 1)[0]
        query = "?" + path.split("?", 1)[1] if "?" in path else ""  # e.g. endpoint_override
        if info.type == pafs.FileType.File:
            return [path]
        if info.type != pafs.FileType.Directory:
            raise KgcError(Problem("input does not exist; check input.path", path))
        found = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
        files = sorted(
            f"{scheme}://{i.path}{query}"
            for i in found
            if i.type == pafs.FileType.File and Path(i.path).suffix in exts
        )
        if not files:
            raise KgcError(
                Problem(f"no {'/'.join(exts)} files under the URI (set input.format)", path)
            )
        return files
    p = Path(path)
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix in exts)
        if not files:
            raise KgcError(Problem(f"no {'/'.join(exts)} files in the folder", path))
        return files
    if not p.exists():
        raise KgcError(Problem("input does not exist; check input.path", path))
    return [str(p)]


def _read_text(f: str) -> str:
    """The file's text; bytes that are not UTF-8 are kept escaped (`kgc.io.decode_utf8`) so
    that the caller reports them with their line instead of raising UnicodeDecodeError."""
    from kgc.io import decode_utf8

    if not is_uri(f):  # text mode as before: universal newlines
        return Path(f).read_text(encoding="utf-8", errors="surrogateescape")
    fs, inner = _filesystem(f)
    with fs.open_input_stream(inner) as fh:
        return decode_utf8(fh.read())


def _text_problems(text: str, f: str) -> list[Problem]:
    """Each line of a text read by `_read_text` that was not valid UTF-8, as a problem."""
    from kgc.io import undecodable

    if undecodable(text) is None:
        return []
    out = []
    for n, line in enumerate(text.split("\n"), 1):
        msg = undecodable(line)
        if msg is not None:
            out.append(Problem(msg, f, n))
    return out


def _jsonl(f: str, problems: list[Problem]):
    from kgc.io import iter_jsonl_lines, read_jsonl

    if is_uri(f):
        return iter_jsonl_lines(_read_text(f).splitlines(), f, problems)
    return read_jsonl(f, problems)


def _parquet_rows(f: str) -> list[dict]:
    import pyarrow.parquet as pq

    if is_uri(f):
        fs, inner = _filesystem(f)
        return pq.read_table(inner, filesystem=fs).to_pylist()
    return pq.read_table(f).to_pylist()


def _detect_format(cfg: ExtractConfig) -> str:
    fmt = cfg.input.format
    if fmt != "auto":
        return fmt
    p = cfg.input.path
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith(".txt") or (Path(p).is_dir() and any(Path(p).rglob("*.txt"))):
        return "txt"
    return "jsonl"


def read_documents(cfg: ExtractConfig) -> list[dict]:
    """Documents as {doc_id, text[, source, label]}; a bad one is an error, never skipped.

    Every problem is collected, then raised together as one `KgcError` naming file and line:
    a JSONL line that is not JSON, not UTF-8, or has a string with a lone surrogate escape
    (`"\\ud800"`: an error naming the field, never replaced), a record without text, a .txt
    file that is empty or has bytes that are not UTF-8 (each such line is named)."""
    fmt = _detect_format(cfg)
    tf, idf = cfg.input.text_field, cfg.input.id_field
    docs: list[dict] = []
    problems: list[Problem] = []

    def add(rec: Any, fname: str, n: int) -> None:
        if not isinstance(rec, dict):
            problems.append(Problem("record must be a JSON object", fname, n))
            return
        text = rec.get(tf)
        if not isinstance(text, str) or not text.strip():
            problems.append(
                Problem(f"field {tf!r} (input.text_field) is missing or empty", fname, n)
            )
            return
        doc_id = str(rec[idf]) if idf and rec.get(idf) is not None else f"{Path(fname).name}:{n}"
        doc = {"doc_id": doc_id, "text": text}
        if isinstance(rec.get("source"), str):
            doc["source"] = rec["source"]
        docs.append(doc)

    if fmt == "jsonl":
        for f in _files(cfg.input.path, (".jsonl", ".json")):
            for n, rec in _jsonl(f, problems):
                add(rec, f, n)
    elif fmt == "parquet":
        for f in _files(cfg.input.path, (".parquet",)):
            for n, rec in enumerate(_parquet_rows(f), 1):
                add(rec, f, n)
    elif fmt == "txt":
        for f in _files(cfg.input.path, (".txt",)):
            text = _read_text(f)
            bad = _text_problems(text, f)
            if bad:
                problems.extend(bad)
                continue
            if not text.strip():
                problems.append(Problem("the text file is empty", f))
                continue
            docs.append({"doc_id": Path(f).name, "text": text})
    if problems:
        raise KgcError(problems)
    if not docs:
        raise KgcError(Problem("the corpus is empty: no documents to extract from", cfg.input.path))
    seen: dict[str, int] = {}
    for d in docs:
        seen[d["doc_id"]] = seen.get(d["doc_id"], 0) + 1
    dup = [k for k, v in seen.items() if v > 1]
    if dup:
        raise KgcError(
            f"input.id_field {idf!r} is not unique: {dup[:3]} appear more than once; "
            "fix the ids or drop input.id_field to number documents by line"
        )
    return docs


def _instruction_records(cfg: ExtractConfig) -> list[tuple[dict, Row]]:
    """IEPile instruction records in input order, each with its row; bad records are
    reported together (file:line), never skipped."""
    from kgc.prompting import check_record

    out: list[tuple[dict, Row]] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    run = run_fingerprint(cfg)
    for f in _files(cfg.input.path, (".jsonl", ".json")):
        for n, rec in _jsonl(f, problems):
            msg = check_record(rec, need_output=False)
            if msg:
                problems.append(Problem(msg, f, n))
                continue
            inst = json.loads(rec["instruction"])
            doc_id = str(rec.get("id") or f"{Path(f).name}:{n}")
            key = (doc_id, rec["instruction"])
            seen[key] = seen.get(key, 0) + 1  # identical texts: keep every record apart
            rid = row_id(
                f"{doc_id}#{seen[key]}", 0, len(inst.get("input", "")), inst.get("schema", [])
            )
            row = Row(
                id=rid,
                doc_id=doc_id,
                chunk_index=0,
                chunk_start=0,
                chunk_end=len(inst.get("input", "")),
                task=cfg.task.upper(),
                schema=json.dumps(inst.get("schema", []), ensure_ascii=False),
                instruction=rec["instruction"],
                source=rec.get("source") or "",
                label=rec.get("label") if isinstance(rec.get("label"), str) else None,
                fingerprint=fingerprint(cfg.task.upper(), rec["instruction"], run),
            )
            out.append((rec, row))
    if problems:
        raise KgcError(problems)
    if not out:
        raise KgcError(Problem("the input has no instruction records", cfg.input.path))
    return out


def read_instruction_rows(cfg: ExtractConfig) -> list[Row]:
    """IEPile instruction records (e.g. a test split with labels) → rows, no chunking."""
    return [row for _rec, row in _instruction_records(cfg)]


def write_predictions(cfg: ExtractConfig, rows: list[ExtractedRow], path: Path) -> int:
    """DeepKE's prediction file: every input instruction record once, in input order, with
    all its fields as given (`id`, `label`, …) and the model's text in `output`. DeepKE's
    scorer and `kgc eval` read it (records grouped by `id`)."""
    from kgc.io import write_jsonl_atomic

    outputs = {r["id"]: r["output"] for r in rows}
    return write_jsonl_atomic(
        path, ({**rec, "output": outputs[row["id"]]} for rec, row in _instruction_records(cfg))
    )


# ----------------------------------------------------------------------------- rows
def input_rows(
    cfg: ExtractConfig, load_offsets: Callable[[], Callable[[str], Offsets]]
) -> tuple[list[Row], int]:
    """The job's rows and its number of documents: IEPile instruction records as they are,
    or documents chunked (`load_offsets()`, called once the documents are read, says how
    chunking counts tokens) × the schema's splits. Every id is unique."""
    from kgc.schema import read_schema
    from kgc.tasks import get

    if _detect_format(cfg) == "iepile":
        rows = read_instruction_rows(cfg)
        n_docs = len({r["doc_id"] for r in rows})
    else:
        if not cfg.schema_path:
            raise KgcError("schema is required (the 3-line schema file of the labels to extract)")
        schema = read_schema(cfg.schema_path)
        problems = get(cfg.task).check_schema(schema)
        if problems:
            raise KgcError([Problem(p, cfg.schema_path) for p in problems])
        docs = read_documents(cfg)
        n_docs = len(docs)
        offsets = load_offsets()
        run = run_fingerprint(cfg)  # once: it reads the model's file list
        rows = [r for d in docs for r in document_rows(d, cfg, schema, offsets, run)]
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise KgcError("two rows share an id (duplicate documents with the same doc id?)")
    return rows, n_docs


def document_rows(
    doc: dict, cfg: ExtractConfig, schema, offsets, run: str | None = None
) -> list[Row]:
    """One document → rows (chunk × schema split), each with its instruction; `run`: this
    run's `run_fingerprint` (computed here when not given)."""
    from kgc.chunking import chunk_text
    from kgc.schema_splits import instructions
    from kgc.tasks import get

    task = get(cfg.task)
    run = run or run_fingerprint(cfg)
    rows = []
    for ch in chunk_text(doc["text"], cfg.chunk.max_tokens, cfg.chunk.overlap, offsets):
        for split in instructions(
            task, cfg.language, schema, ch.text, split_num=cfg.split_num, index=ch.index
        ):
            rows.append(
                Row(
                    id=row_id(doc["doc_id"], ch.start, ch.end, split.schema),
                    doc_id=doc["doc_id"],
                    chunk_index=ch.index,
                    chunk_start=ch.start,
                    chunk_end=ch.end,
                    task=task.name,
                    schema=json.dumps(split.schema, ensure_ascii=False),
                    instruction=split.instruction,
                    source=doc.get("source", ""),
                    label=None,
                    fingerprint=fingerprint(task.name, split.instruction, run),
                )
            )
    return rows


# what changes no answer: speed settings documented to keep the greedy answers
_SAME_ANSWERS = {"jump_forward", "lookup_drafts"}


def run_fingerprint(cfg: ExtractConfig) -> str:
    """The model and generation parts of this run's row fingerprints (`kgc.rows`): the
    engine's model identity and every generation setting that can change an answer."""
    e = cfg.engine
    model = {
        "type": e.type,
        "model": e.model,
        "adapter": e.adapter,
        "checkpoint": e.checkpoint,
        "dtype": e.dtype,
        "quantization": e.quantization.model_dump(mode="json") if e.quantization else None,
        "base_url": e.base_url if e.type == "openai" else None,
    }
    # the files behind the paths too: a model retrained or replaced in place is another model
    model["files"] = [_files_identity(p) for p in (e.model, e.adapter, e.checkpoint)]
    gen = cfg.generation.model_dump(mode="json", exclude=_SAME_ANSWERS)
    return f"{digest(model)}.{digest(gen)}"


def _files_identity(path: str | None) -> list | None:
    """Name, size and modification time of a local model/adapter/checkpoint's files (its
    folder and the folders in it, at most 256 files): cheap, and it changes when the weights
    are rewritten. None for no path or a name that is not a local file (a hub id, a URI)."""
    if not path or is_uri(path):
        return None
    root = Path(path)
    try:
        if root.is_file():
            st = root.stat()
            return [[root.name, st.st_size, st.st_mtime_ns]]
        if not root.is_dir():
            return None
        out = []
        files = [f for f in root.iterdir()] + [
            f for d in root.iterdir() if d.is_dir() and not d.is_symlink() for f in d.iterdir()
        ]
        for f in sorted(files)[:256]:
            if f.is_file():
                st = f.stat()
                out.append([f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
        return out
    except OSError:
        return None


# ----------------------------------------------------------------------------- results
def clear_results(out_dir: str | Path) -> list[str]:
    """`kgc extract --fresh`: remove what earlier runs wrote in the output folder (its rows,
    the shards set aside, the merge, scores, predictions and summary) and nothing else.
    Returns the paths removed."""
    import shutil

    out = Path(out_dir)
    gone = []
    for name in (SHARDS, QUARANTINE, DOCUMENTS, SUMMARY, SCORES, PREDICTIONS, HEARTBEAT):
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        gone.append(str(p))
    return gone


def finish(
    cfg: ExtractConfig,
    rows: list[ExtractedRow],
    expected: set[str],
    aside: SetAside,
    *,
    documents: int,
    rows_this_run: int,
    seconds: float,
) -> dict:
    """Check that the shards hold every expected row, then write the per-document merge,
    the scores (rows with labels) and the summary; returns the summary."""
    out_dir = Path(cfg.output.path)
    total = len(expected)
    missing = expected - {r["id"] for r in rows}
    if missing:
        raise KgcError(
            f"output has {len(rows)} of the {total} rows expected ({len(missing)} "
            f"missing, e.g. id {min(missing)}); rerun the same command to finish them"
        )
    with open(out_dir / DOCUMENTS, "w", encoding="utf-8") as fh:
        for d in merge_documents(rows):
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    summary = {
        "documents": documents,
        "rows": total,
        "rows_this_run": rows_this_run,
        "rows_skipped_resume": total - rows_this_run,
        "records": sum(len(json.loads(r["records"])) for r in rows),
        "parse_error_rate": sum(bool(json.loads(r["errors"])) for r in rows) / max(1, total),
        # rows not generated: the prompt (+ generation.max_new_tokens) exceeds the context
        "rows_too_long": sum(_too_long(r) for r in rows),
        "seconds": seconds,
        "rows_per_s": rows_this_run / seconds if rows_this_run and seconds else 0.0,
        # set aside this run, each counted: unreadable shards (their rows redone), extra
        # copies of a row (the first shard by name kept), rows of ids the input no longer has
        **aside.counts(),
        "set_aside": aside.moved,
        "output": str(out_dir),
    }
    if _detect_format(cfg) == "iepile":
        write_predictions(cfg, rows, out_dir / PREDICTIONS)
        summary["predictions"] = str(out_dir / PREDICTIONS)
    if cfg.score and any(isinstance(r.get("label"), str) for r in rows):
        summary["scores"] = score_rows(cfg, rows)
        (out_dir / SCORES).write_text(json.dumps(summary["scores"], ensure_ascii=False, indent=1))
    (out_dir / SUMMARY).write_text(json.dumps(summary, ensure_ascii=False, indent=1))
    return summary


def _too_long(row: dict) -> bool:
    errors = json.loads(row["errors"])
    return bool(errors) and str(errors[0]).startswith(f"engine error: {TOO_LONG}")


def merge_documents(rows: list[dict], docs: dict[str, str] | None = None) -> list[dict]:
    """Per document: records of all its chunks and schema splits, de-duplicated, each with
    the document-level character spans where it was found (overlaps merged)."""
    from kgc.chunking import locate
    from kgc.schema_splits import merge_records
    from kgc.tasks import get

    by_doc: dict[str, list[dict]] = {}
    for r in rows:
        by_doc.setdefault(r["doc_id"], []).append(r)
    out = []
    for doc_id in sorted(by_doc):
        found = []  # (task, record, (chunk index, span in the document or None))
        for r in sorted(by_doc[doc_id], key=lambda x: (x["chunk_index"], x["id"])):
            task = get(r["task"])
            chunk_text = json.loads(r["instruction"]).get("input", "")
            for rec in json.loads(r["records"]):
                span = locate(chunk_text, _anchor(rec), r["chunk_start"])
                found.append((task, rec, (r["chunk_index"], span)))
        records = [
            {
                "record": rec,
                "spans": _unique(span for _, span in where if span),
                "chunks": _unique(chunk for chunk, _ in where),
            }
            for rec, where in merge_records(found)
        ]
        out.append({"doc_id": doc_id, "records": records})
    return out


def _unique(items) -> list:
    out: list = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def _anchor(rec: dict) -> str:
    for k in ("entity", "head", "event_trigger"):
        if isinstance(rec.get(k), str):
            return rec[k]
    return ""


def score_rows(cfg: ExtractConfig, rows: list[dict]) -> dict:
    from kgc.evaluate import evaluate_rows

    lines = [
        (
            i,
            {
                "id": r["doc_id"],
                "source": r.get("source") or "",
                "instruction": r["instruction"],
                "label": r["label"],
                "output": r["output"],
            },
        )
        for i, r in enumerate(sorted(rows, key=lambda r: (r["doc_id"], r["id"])), 1)
        if isinstance(r.get("label"), str)
    ]
    return evaluate_rows(cfg.task, lines)


def iter_documents(out_dir: str) -> Iterator[dict]:
    with open(Path(out_dir) / DOCUMENTS, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def _asks(instruction: str) -> tuple[str, str]:
    """What an instruction asks: its input text and its schema (canonical JSON)."""
    inst = json.loads(instruction)
    schema = json.dumps(inst.get("schema"), ensure_ascii=False, sort_keys=True)
    return inst.get("input", ""), schema


def answers_for_records(out_dir: str | Path, records: list[dict]) -> list[str]:
    """The answer an extraction (`out_dir`) gave to each IEPile record, in the records'
    order: the row whose instruction asks the same (input text and schema), so a raw
    corpus extracted by the job can be scored against annotated records of its documents
    (the demo's "tuned constrained" row, bench case (d)). Each document must have been one
    chunk, and each record must have its row: else a KgcError naming the fix."""
    from kgc.shards import read_rows

    by_key = {}
    for row in read_rows(out_dir):
        if row["chunk_index"] != 0:
            raise KgcError(
                f"document {row['doc_id']} of {out_dir} was split into chunks, so its rows "
                "cannot be matched to whole-document records: raise chunk.max_tokens"
            )
        by_key[_asks(row["instruction"])] = row["output"]
    missing = [i for i, r in enumerate(records) if _asks(r["instruction"]) not in by_key]
    if missing:
        raise KgcError(
            f"{len(missing)} of {len(records)} records (the first: record {missing[0]}) have "
            f"no row in {out_dir} asking the same input text and schema: extract the same "
            "documents with the same schema and split_num"
        )
    return [by_key[_asks(r["instruction"])] for r in records]
