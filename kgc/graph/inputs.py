"""Where graph rows come from: extraction outputs (row shards) or annotated JSONL.

`input_files` resolves `input.paths` into (file, format, name) triples (name: the file's
path relative to the input paths' common folder, unique across them, used in document ids);
`iter_rows` streams one file's rows without loading it whole (JSONL line by line, Parquet
batch by batch).

Annotated input (`{id, text, entity | relation | event}`, the raw IEPile layout) becomes one
row per document and annotation field, with the annotation records as the row's records
(their shapes are the parsed-output shapes), model `annotation`. DeepKE prediction files
(IEPile instruction records with the model's text in `output`, as DeepKE's inference and
`kgc extract`'s predictions.jsonl write them) become one row per record, its output parsed
by the instruction's task, model `predictions`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from kgc.errors import KgcError, Problem
from kgc.graph.config import GraphConfig

ROW_EXTS = (".jsonl", ".json", ".parquet")


def _row_dirs(d: Path) -> list[Path]:
    if (d / "rows").is_dir():
        return [d / "rows"]
    return sorted(p for p in d.rglob("rows") if p.is_dir() and any(p.glob("part-*")))


def input_files(cfg: GraphConfig) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str]] = []
    problems = []
    for raw in cfg.input.paths:
        p = Path(raw)
        if not p.exists():
            problems.append(Problem("input.paths entry does not exist; check the path", raw))
            continue
        if p.is_dir():
            dirs = _row_dirs(p)
            if dirs:
                files = [f for d in dirs for f in sorted(d.glob("part-*")) if f.suffix in ROW_EXTS]
            else:
                files = sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file() and f.suffix in ROW_EXTS and not f.name.startswith(".")
                )
            if not files:
                problems.append(
                    Problem(
                        "input.paths folder has no row shards (rows/part-*) and no "
                        ".jsonl/.parquet files; point it at a `kgc extract` output folder",
                        raw,
                    )
                )
            out.extend((str(f), _format(f, cfg)) for f in files)
        else:
            out.append((str(p), _format(p, cfg)))
    if problems:
        raise KgcError(problems)
    if not out:
        raise KgcError("input.paths is empty: give extraction output folders or row files")
    import os

    # names relative to the folder all input paths share: NER/test.json, RE/test.json
    common = os.path.commonpath([str(Path(p).resolve().parent) for p in cfg.input.paths])
    return [(f, fmt, Path(os.path.relpath(Path(f).resolve(), common)).as_posix()) for f, fmt in out]


def _format(f: Path, cfg: GraphConfig) -> str:
    if cfg.input.format != "auto":
        return cfg.input.format
    if f.suffix == ".parquet":
        return "rows"
    with open(f, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return "rows"  # reported with its line number when read
                if isinstance(first, dict) and "records" in first and "task" in first:
                    return "rows"
                if isinstance(first, dict) and "instruction" in first and "output" in first:
                    return "predictions"
                return "annotated"
    return "rows"


def iter_rows(path: str, fmt: str, cfg: GraphConfig, name: str | None = None) -> Iterator[dict]:
    """`name`: the file's name in document ids (default: its base name)."""
    name = name or Path(path).name
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
        return
    from kgc.io import read_jsonl

    for n, rec in read_jsonl(path):
        if not isinstance(rec, dict):
            raise KgcError(Problem("each line must be a JSON object", path, n))
        if fmt == "rows":
            missing = [k for k in ("doc_id", "task", "records") if k not in rec]
            if missing:
                raise KgcError(
                    Problem(
                        f"row is missing {missing}; input.format=rows expects `kgc extract` "
                        "rows (set input.format=annotated for {text, entity|relation|event})",
                        path,
                        n,
                    )
                )
            yield rec
        elif fmt == "predictions":
            yield prediction_row(rec, path, n, cfg, name)
        else:
            yield from annotated_rows(rec, path, n, cfg, name)


def _doc_id(rec: dict, cfg: GraphConfig, name: str, n: int) -> str:
    idf = cfg.input.id_field
    return str(rec[idf]) if idf and rec.get(idf) is not None else f"{name}:{n}"


def prediction_row(rec: dict, path: str, n: int, cfg: GraphConfig, name: str) -> dict:
    """A DeepKE prediction record (IEPile instruction + `output`) → one row, its output
    parsed by the instruction's task (or `input.task`)."""
    from kgc.instructions import task_of
    from kgc.rows import row_id
    from kgc.tasks import get

    try:
        inst = json.loads(rec["instruction"]) if isinstance(rec.get("instruction"), str) else None
    except json.JSONDecodeError:
        inst = None
    if not isinstance(inst, dict) or not isinstance(inst.get("input"), str):
        raise KgcError(
            Problem(
                "a prediction record needs `instruction`, an IEPile instruction JSON string "
                "with `input`",
                path,
                n,
            )
        )
    if not isinstance(rec.get("output"), str):
        raise KgcError(Problem("a prediction record needs a string `output`", path, n))
    task = cfg.input.task or task_of(inst)
    if task is None:
        raise KgcError(
            Problem(
                "the record's instruction text is not one of IEPile's, so its task is unknown; "
                "set input.task (NER, RE, SPO, EE, EET, EEA or KG)",
                path,
                n,
            )
        )
    parsed = get(task).parse(rec["output"])
    doc_id = _doc_id(rec, cfg, name, n)
    text, schema = inst["input"], inst.get("schema") or []
    return {
        "id": row_id(f"{doc_id}@{name}:{n}", 0, len(text), schema),
        "doc_id": doc_id,
        "chunk_index": 0,
        "chunk_start": 0,
        "chunk_end": len(text),
        "task": task.upper(),
        "schema": json.dumps(schema, ensure_ascii=False),
        "instruction": rec["instruction"],
        "source": rec.get("source") if isinstance(rec.get("source"), str) else "",
        "records": parsed.records,
        "errors": parsed.errors,
        "model_id": "predictions",
    }


def annotated_rows(rec: dict, path: str, n: int, cfg: GraphConfig, name: str) -> Iterator[dict]:
    from kgc.rows import row_id

    text = rec.get("text")
    if not isinstance(text, str):
        raise KgcError(
            Problem(
                "annotated record needs a string field 'text' (DeepKE prediction files: "
                "set input.format=predictions)",
                path,
                n,
            )
        )
    doc_id = _doc_id(rec, cfg, name, n)
    found = False
    for fieldname, task in cfg.input.annotation_tasks.items():
        if fieldname not in rec:
            continue
        found = True
        anns = rec[fieldname]
        if not isinstance(anns, list):
            raise KgcError(Problem(f"field {fieldname!r} must be a list of annotations", path, n))
        yield {
            "id": row_id(doc_id, 0, len(text), [fieldname]),
            "doc_id": doc_id,
            "chunk_index": 0,
            "chunk_start": 0,
            "chunk_end": len(text),
            "task": task.upper(),
            "schema": "null",
            "instruction": json.dumps({"input": text}, ensure_ascii=False),
            "source": rec.get("source") if isinstance(rec.get("source"), str) else "",
            "records": anns,
            "errors": [],
            "model_id": "annotation",
        }
    if not found:
        fields = ", ".join(cfg.input.annotation_tasks)
        raise KgcError(
            Problem(
                f"annotated record has none of the annotation fields ({fields}); add one or "
                "map yours with input.annotation_tasks",
                path,
                n,
            )
        )
