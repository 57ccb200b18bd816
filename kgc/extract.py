"""Batch extraction on Ray Data (`kgc extract --config …`).

documents → chunks (token-aware, overlap, char offsets) → instructions (task × schema split)
→ generation on an actor pool (an Engine loaded once per actor) → parsing → rows written as
atomic shard files → per-document merge (records with their document offsets) → scores
(when the input carries labels).

Exactly-once rows: every row has a stable id (hash of doc id, chunk span and schema chunk).
Each batch is written by the actor as one shard named after the hash of its row ids, via a
temporary file and an atomic rename, so a retried batch (killed actor) rewrites the same
shard, and a rerun (killed driver) skips every id already present in a complete shard.

What a rerun finds that no run of this job writes is set aside, not trusted and not fatal
(`scan_shards`, `settle_shards`): a shard that cannot be read (cut short, not UTF-8) moves
to `<output>/quarantine/` and its rows are extracted again; a second copy of a row (a
copied shard) loses to the copy in the first shard by name; a row whose id the current
input no longer produces (a document removed) is not one of the job's rows. Each is named
in a warning and counted in the summary, and the shards left in `rows/` hold every current
id exactly once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgc.config import ExtractConfig
from kgc.errors import KgcError, Problem

SHARDS = "rows"
SUMMARY = "summary.json"
DOCUMENTS = "documents.jsonl"
SCORES = "scores.json"
QUARANTINE = "quarantine"  # shards set aside: unreadable, or holding rows not kept


def row_id(doc_id: str, start: int, end: int, schema: list) -> str:
    key = json.dumps([doc_id, start, end, schema], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


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


def read_instruction_rows(cfg: ExtractConfig) -> list[dict]:
    """IEPile instruction records (e.g. a test split with labels) → rows, no chunking."""
    from kgc.prompting import check_record

    rows, problems, seen = [], [], {}
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
            row = {
                "id": rid,
                "doc_id": doc_id,
                "chunk_index": 0,
                "chunk_start": 0,
                "chunk_end": len(inst.get("input", "")),
                "task": cfg.task.upper(),
                "schema": json.dumps(inst.get("schema", []), ensure_ascii=False),
                "instruction": rec["instruction"],
                "source": rec.get("source") or "",
                "label": rec.get("label") if isinstance(rec.get("label"), str) else None,
            }
            rows.append(row)
    if problems:
        raise KgcError(problems)
    if not rows:
        raise KgcError(Problem("the input has no instruction records", cfg.input.path))
    return rows


# ----------------------------------------------------------------------------- chunking
_TOKENIZERS: dict[str, Any] = {}


def _offsets_fn(cfg: ExtractConfig):
    from kgc.chunking import regex_offsets, tokenizer_offsets

    path = cfg.engine.model
    if cfg.engine.checkpoint:
        from kgc.modeling.hf_engine import resolve_checkpoint

        path = resolve_checkpoint(cfg.engine.checkpoint)[0].path
    if cfg.engine.type == "openai" or not path:
        return regex_offsets
    if path not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[path] = AutoTokenizer.from_pretrained(path)
    return tokenizer_offsets(_TOKENIZERS[path])


def document_rows(doc: dict, cfg: ExtractConfig, schema, offsets) -> list[dict]:
    """One document → rows (chunk × schema split), each with its instruction."""
    from kgc.chunking import chunk_text
    from kgc.sampling import SamplingOptions, record_rng
    from kgc.tasks import get

    task = get(cfg.task)
    opts = SamplingOptions(split_num=cfg.split_num)
    rows = []
    for ch in chunk_text(doc["text"], cfg.chunk.max_tokens, cfg.chunk.overlap, offsets):
        rng = record_rng(0, ch.index, ch.text)
        for schema_chunk in task.test_chunks(None, schema, rng, opts, ch.text):
            rows.append(
                {
                    "id": row_id(doc["doc_id"], ch.start, ch.end, schema_chunk),
                    "doc_id": doc["doc_id"],
                    "chunk_index": ch.index,
                    "chunk_start": ch.start,
                    "chunk_end": ch.end,
                    "task": task.name,
                    "schema": json.dumps(schema_chunk, ensure_ascii=False),
                    "instruction": task.instruction(cfg.language, schema_chunk, ch.text),
                    "source": doc.get("source", ""),
                    "label": None,
                }
            )
    return rows


# ----------------------------------------------------------------------------- engines
def build_engine(cfg: ExtractConfig):
    e = cfg.engine
    if e.type == "hf":
        from kgc.config import ModelConfig
        from kgc.modeling.hf_engine import HFEngine

        trust = e.trust_remote_code
        model = (
            ModelConfig(path=e.model, dtype=e.dtype, trust_remote_code=trust) if e.model else None
        )
        return HFEngine(
            model,
            adapter=e.adapter,
            checkpoint=e.checkpoint,
            batch_size=e.batch_size,
            prefix_cache=e.prefix_cache,
            trust_remote_code=trust,
        )
    if e.type == "openai":
        from kgc.openai_engine import OpenAIEngine

        if not e.model:
            raise KgcError(
                "engine.model (the served model name) is required for engine.type=openai"
            )
        return OpenAIEngine(
            e.base_url or "",
            e.model,
            api_key_env=e.api_key_env,
            concurrency=e.batch_size,
            timeout_s=e.timeout_s,
            max_retries=e.max_retries,
        )
    if e.type == "vllm":
        from kgc.config import ModelConfig
        from kgc.modeling.vllm_engine import VLLMEngine

        return VLLMEngine(
            ModelConfig(path=e.model, dtype=e.dtype, trust_remote_code=e.trust_remote_code)
            if e.model
            else None,
            adapter=e.adapter,
            checkpoint=e.checkpoint,
            tensor_parallel_size=e.tensor_parallel_size,
            gpu_memory_utilization=e.gpu_memory_utilization,
            max_model_len=e.max_model_len,
            dtype=e.dtype,
        )
    raise KgcError(f"engine.type={e.type!r} is unknown; use hf, vllm or openai")


def generation_config(cfg: ExtractConfig):
    from kgc.engine import GenerationConfig

    g = cfg.generation
    return GenerationConfig(
        max_new_tokens=g.max_new_tokens,
        do_sample=g.do_sample,
        temperature=g.temperature,
        top_p=g.top_p,
        num_beams=g.num_beams,
        stop=tuple(g.stop),
        seed=g.seed,
        ignore_eos=g.ignore_eos,
    )


# ----------------------------------------------------------------------------- the actor
class ExtractUDF:
    """Ray Data actor: loads the engine once, then generates, parses and writes batches."""

    def __init__(self, cfg_json: dict, out_dir: str):
        from kgc.tasks import get

        self.cfg = ExtractConfig.model_validate(cfg_json)
        if self.cfg.workers.gpus_per_actor == 0:
            import torch

            # intra-op threads = the CPUs Ray reserved for this actor, rounded up (1.5 CPUs
            # leave half a core to Ray Data's read tasks and still compute on 2 threads)
            torch.set_num_threads(max(1, math.ceil(self.cfg.workers.cpus_per_actor)))
        self.engine = build_engine(self.cfg)
        self.gen = generation_config(self.cfg)
        self.task = get(self.cfg.task)
        self.out = Path(out_dir) / SHARDS
        self.out.mkdir(parents=True, exist_ok=True)
        self.batches = 0

    def __call__(self, batch: dict) -> dict:
        ids = [str(x) for x in batch["id"]]
        outputs, failures = self._generate(list(batch["instruction"]), self._schemas(batch))
        rows, n_errors, n_records = [], [], []
        for i, text in enumerate(outputs):
            parsed = self.task.parse(text)
            if failures[i]:  # kept as a row with its error, never dropped in silence
                parsed.errors.insert(0, f"engine error: {failures[i]}")
            row = {k: _plain(batch[k][i]) for k in batch}
            if not isinstance(row.get("label"), str):
                row["label"] = None  # Ray turns an all-None column into NaN floats
            row.update(
                output=text,
                records=json.dumps(parsed.records, ensure_ascii=False),
                errors=json.dumps(parsed.errors, ensure_ascii=False),
                model_id=self.engine.model_id,
            )
            rows.append(row)
            n_errors.append(bool(parsed.errors))
            n_records.append(len(parsed.records))
        write_shard(self.out, rows, self.cfg.output.format)
        self.batches += 1
        _maybe_kill_actor(self.batches)
        return {
            "id": ids,
            "parse_error": n_errors,
            "n_records": n_records,
        }

    def _schemas(self, batch: dict) -> list[dict] | None:
        """Answer schemas per row (constrained decoding), from each row's schema chunk."""
        g = self.cfg.generation
        if not g.constrained:
            return None
        from kgc.engine import bounded

        schemas = [
            bounded(self.task.output_schema(json.loads(s)), g.max_text_chars, g.max_list_items)
            for s in batch["schema"]
        ]
        if g.grounded:  # strings must be spans of the row's input text
            from kgc.engine import grounded

            texts = [json.loads(i).get("input", "") for i in batch["instruction"]]
            schemas = [grounded(s, t, g.grounded_max_words) for s, t in zip(schemas, texts)]
        return schemas

    def _generate(
        self, prompts: list[str], schemas: list[dict] | None = None
    ) -> tuple[list[str], list[str | None]]:
        """Texts per prompt; if the batch fails, prompts are retried one by one and a prompt
        that still fails gets an empty text and its error."""
        extra = {"schemas": schemas} if schemas else {}
        try:
            return self.engine.generate(prompts, self.gen, **extra), [None] * len(prompts)
        except Exception:  # noqa: BLE001 - isolate the failing prompt(s) below
            texts, errs = [], []
            for i, p in enumerate(prompts):
                one = {"schemas": [schemas[i]]} if schemas else {}
                try:
                    texts.append(self.engine.generate([p], self.gen, **one)[0])
                    errs.append(None)
                except Exception as exc:  # noqa: BLE001
                    texts.append("")
                    errs.append(f"{type(exc).__name__}: {exc}"[:500])
            return texts, errs


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _maybe_kill_actor(batches: int) -> None:
    """Test hook: KGC_TEST_KILL_ACTOR_AFTER=N SIGKILLs one actor (once) after N batches."""
    n, marker = os.environ.get("KGC_TEST_KILL_ACTOR_AFTER"), os.environ.get("KGC_TEST_KILL_MARKER")
    if n and marker and batches == int(n):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # only the first actor
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- shards
def write_shard(out: Path, rows: list[dict], fmt: str) -> Path:
    key = hashlib.sha256("\n".join(sorted(r["id"] for r in rows)).encode()).hexdigest()[:24]
    final = out / f"part-{key}.{fmt}"
    tmp = out / f".part-{key}.{os.getpid()}.tmp"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, final)
    return final


def read_rows(out_dir: str | os.PathLike, columns: list[str] | None = None) -> list[dict]:
    """All rows written so far (complete shards only; temporary files are ignored), as they
    are on disk: a row written twice is returned twice. A shard that cannot be read is an
    error naming the file and line (rerunning `kgc extract` sets it aside and redoes it)."""
    rows: list[dict] = []
    problems: list[Problem] = []
    for f in shard_files(out_dir):
        got, problem = read_shard(f, columns)
        if problem is not None:
            problems.append(problem)
        else:
            rows.extend(got)
    if problems:
        raise KgcError(
            [
                Problem(
                    f"{p.message}; rerun the same `kgc extract` command: it sets the shard "
                    "aside and extracts its rows again",
                    p.path,
                    p.line,
                )
                for p in problems
            ]
        )
    return rows


def shard_files(out_dir: str | os.PathLike) -> list[Path]:
    """The complete shards, in name order (the order that decides which copy of a row wins)."""
    d = Path(out_dir) / SHARDS
    if not d.is_dir():
        return []
    return sorted(f for f in d.glob("part-*") if f.is_file() and f.suffix in (".jsonl", ".parquet"))


# every field the merge, the scores and the graph read from a row
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


def read_shard(f: Path, columns: list[str] | None = None) -> tuple[list[dict], Problem | None]:
    """One shard's rows, or ([], the problem) if any part of it cannot be read: a line cut
    short, bytes that are not UTF-8, a row that is not an object or lacks a field. A shard is
    written whole by one atomic rename, so a damaged one is damage from outside (a disk, a
    copy), and none of its rows is trusted."""
    need = list(columns) if columns else list(ROW_FIELDS)
    if f.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(f, columns=columns).to_pylist()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types here
            return [], Problem(f"unreadable Parquet shard ({type(exc).__name__}: {exc})", str(f))
        lines: list[tuple[int, Any]] = list(enumerate(rows, 1))
    else:
        from kgc.io import decode_utf8, undecodable

        data = f.read_bytes()
        if not data.strip():
            return [], Problem("the shard is empty (cut short before its first row)", str(f), 1)
        lines = []
        for n, raw in enumerate(decode_utf8(data).split("\n"), 1):
            if not raw.strip():
                continue
            msg = undecodable(raw)
            if msg is None:
                try:
                    lines.append((n, json.loads(raw)))
                    continue
                except json.JSONDecodeError as exc:
                    msg = f"malformed JSON ({exc.msg} at column {exc.colno})"
            if not data.endswith(b"\n") and n == data.count(b"\n") + 1:
                msg += "; the last line is cut short"
            return [], Problem(msg, str(f), n)
    rows = []
    for n, r in lines:
        if not isinstance(r, dict):
            return [], Problem("a row must be a JSON object", str(f), n)
        missing = [k for k in need if k not in r]
        if missing or not isinstance(r["id"], str):
            what = f"lacks {missing}" if missing else f"has a non-string id {r['id']!r}"
            return [], Problem(f"the row {what}; not a `kgc extract` row", str(f), n)
        rows.append({k: r[k] for k in columns} if columns else r)
    return rows, None


@dataclass
class ShardScan:
    """What the shards hold for the current input: `rows`, one per id (the copy in the
    first shard by name wins), and everything else, counted: shards that cannot be read
    (`corrupt`), rows of an id already seen (`duplicates`), rows whose id the current input
    no longer produces (`stale`). `rewrite` maps each readable shard holding any row not
    kept to the rows of it that are kept."""

    rows: list[dict] = field(default_factory=list)
    corrupt: list[tuple[Path, Problem]] = field(default_factory=list)
    duplicates: int = 0
    stale: int = 0
    rewrite: dict[Path, list[dict]] = field(default_factory=dict)
    notes: dict[Path, str] = field(default_factory=dict)


def scan_shards(out_dir: str | os.PathLike, expected: set[str] | None = None) -> ShardScan:
    """Read every shard and resolve it against `expected` (the ids of the current input;
    None keeps every id). Deterministic: shards are read in name order, so which copy of a
    duplicated row is kept does not depend on timing or on the order of a listing."""
    scan = ShardScan()
    first: dict[str, str] = {}  # id → name of the shard whose row is kept
    for f in shard_files(out_dir):
        rows, problem = read_shard(f)
        if problem is not None:
            scan.corrupt.append((f, problem))
            continue
        kept, dup, stale, dup_of = [], 0, 0, set()
        for r in rows:
            if expected is not None and r["id"] not in expected:
                stale += 1
            elif r["id"] in first:
                dup += 1
                dup_of.add(first[r["id"]])
            else:
                first[r["id"]] = f.name
                kept.append(r)
        scan.rows.extend(kept)
        if dup or stale:
            scan.duplicates += dup
            scan.stale += stale
            scan.rewrite[f] = kept
            parts = []
            if dup:
                was = ", ".join(sorted(dup_of)[:3]) + (" …" if len(dup_of) > 3 else "")
                parts.append(f"{dup} row(s) whose id is already in {was} (a copied shard?)")
            if stale:
                parts.append(
                    f"{stale} row(s) whose id the current input no longer produces (a "
                    "document removed or changed, or other chunk/schema settings, since "
                    "these rows were written)"
                )
            scan.notes[f] = " and ".join(parts)
    return scan


def settle_shards(out_dir: str | os.PathLike, scan: ShardScan) -> list[dict]:
    """Make the shard folder hold exactly `scan.rows`: each corrupt shard, and each shard
    with rows not kept, moves to `<output>/quarantine/` (renamed `<name>.corrupt-<n>` or
    `<name>.superseded-<n>`, kept for inspection, never deleted); the kept rows of a
    superseded shard are written back as a new shard. Later readers of `rows/` (the graph
    stage, `read_rows`) see every current id exactly once. Each move is warned about on
    stderr and returned as {shard, moved_to, reason, rows_kept}.

    Originals move before their kept rows are rewritten (a new shard may take the name of
    one being moved); a crash in between loses no row for good: the rerun redoes them."""
    out = Path(out_dir)
    moved = []
    for f, problem in scan.corrupt:
        dest = _quarantine(out, f, "corrupt")
        moved.append(
            {"shard": f.name, "moved_to": str(dest), "reason": str(problem), "rows_kept": 0}
        )
        _warn(
            f"{problem}: the shard cannot be read; set aside as {dest}, its rows will be "
            "extracted again"
        )
    dests = {f: _quarantine(out, f, "superseded") for f in sorted(scan.rewrite)}
    for f, dest in dests.items():
        kept = scan.rewrite[f]
        new = write_shard(out / SHARDS, kept, f.suffix[1:]) if kept else None
        moved.append(
            {
                "shard": f.name,
                "moved_to": str(dest),
                "reason": scan.notes[f],
                "rows_kept": len(kept),
            }
        )
        rest = f"the {len(kept)} row(s) kept rewritten as {new.name}" if new else "no row kept"
        _warn(f"{f}: {scan.notes[f]}; set aside as {dest}, {rest}")
    return moved


def _quarantine(out: Path, f: Path, why: str) -> Path:
    q = out / QUARANTINE
    q.mkdir(parents=True, exist_ok=True)
    n = 1
    while (q / f"{f.name}.{why}-{n}").exists():
        n += 1
    dest = q / f"{f.name}.{why}-{n}"
    os.replace(f, dest)
    return dest


def _warn(msg: str) -> None:
    """Warnings go to stderr (stdout carries the summary JSON), even with --quiet."""
    print(f"kgc extract: warning: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- merging
def merge_documents(rows: list[dict], docs: dict[str, str] | None = None) -> list[dict]:
    """Per document: records of all its chunks and schema splits, de-duplicated, each with
    the document-level character spans where it was found (overlaps merged)."""
    from kgc.chunking import locate
    from kgc.tasks import get

    by_doc: dict[str, list[dict]] = {}
    for r in rows:
        by_doc.setdefault(r["doc_id"], []).append(r)
    out = []
    for doc_id in sorted(by_doc):
        merged: dict[str, dict] = {}
        for r in sorted(by_doc[doc_id], key=lambda x: (x["chunk_index"], x["id"])):
            task = get(r["task"])
            chunk_text = json.loads(r["instruction"]).get("input", "")
            for rec in json.loads(r["records"]):
                key = json.dumps(task.tuples([rec]), ensure_ascii=False, sort_keys=True)
                item = merged.setdefault(key, {"record": rec, "spans": [], "chunks": []})
                if r["chunk_index"] not in item["chunks"]:
                    item["chunks"].append(r["chunk_index"])
                span = locate(chunk_text, _anchor(rec), r["chunk_start"])
                if span and span not in item["spans"]:
                    item["spans"].append(span)
        out.append({"doc_id": doc_id, "records": list(merged.values())})
    return out


def _anchor(rec: dict) -> str:
    for k in ("entity", "head", "event_trigger"):
        if isinstance(rec.get(k), str):
            return rec[k]
    return ""


# ----------------------------------------------------------------------------- driver
def run_extract(cfg: ExtractConfig, *, progress: bool = True) -> dict:
    """Run (or resume) an extraction; returns the summary (also written next to the rows).

    The summary counts what was set aside before and after generating: `shards_corrupt`,
    `rows_duplicate`, `rows_not_in_input`, with each moved shard under `set_aside`."""
    import ray

    from kgc.schema import read_schema

    if cfg.engine.type in ("hf", "vllm") and cfg.engine.model:
        # a .gguf file or a prepared model's name → its HF folder, once, before any actor
        from kgc.modeling.prepare import resolve_model_path

        cfg.engine.model = resolve_model_path(cfg.engine.model)
    out_dir = Path(cfg.output.path)
    fmt = _detect_format(cfg)
    if fmt == "iepile":
        rows = read_instruction_rows(cfg)
        n_docs = len({r["doc_id"] for r in rows})
    else:
        if not cfg.schema_path:
            raise KgcError("schema is required (the 3-line schema file of the labels to extract)")
        schema = read_schema(cfg.schema_path)
        from kgc.tasks import get

        problems = get(cfg.task).check_schema(schema)
        if problems:
            raise KgcError([Problem(p, cfg.schema_path) for p in problems])
        docs = read_documents(cfg)
        n_docs = len(docs)
        offsets = _offsets_fn(cfg)
        rows = [r for d in docs for r in document_rows(d, cfg, schema, offsets)]
    total = len(rows)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise KgcError("two rows share an id (duplicate documents with the same doc id?)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stray in (out_dir / SHARDS).glob(".part-*.tmp") if (out_dir / SHARDS).exists() else []:
        stray.unlink()  # a shard cut short by a crash; its rows are redone
    # what earlier runs left: unreadable shards, copies of a row, rows of documents no longer
    # in the input are set aside (counted, warned about), so that a rerun always converges
    expected = set(ids)
    scan = scan_shards(out_dir, expected)
    setaside = settle_shards(out_dir, scan)
    counts = {
        "shards_corrupt": len(scan.corrupt),
        "rows_duplicate": scan.duplicates,
        "rows_not_in_input": scan.stale,
    }
    done = {r["id"] for r in scan.rows}
    del scan
    todo = [r for r in rows if r["id"] not in done]
    start = time.time()
    stats = {
        "rows_total": total,
        "rows_skipped_resume": total - len(todo),
        "rows_done": 0,
        "parse_errors": 0,
        "records": 0,
    }
    if todo:
        from kgc.raytools import ensure_ray, forwarded_env

        ensure_ray()
        ds = ray.data.from_items(todo, override_num_blocks=max(1, min(len(todo) // 64, 200)))
        w = cfg.workers
        ds = ds.map_batches(
            ExtractUDF,
            fn_constructor_args=(cfg.model_dump(mode="json", by_alias=True), str(out_dir)),
            batch_size=cfg.engine.batch_size,
            compute=ray.data.ActorPoolStrategy(size=w.num_actors),
            num_cpus=w.cpus_per_actor,
            num_gpus=w.gpus_per_actor or None,
            runtime_env={"env_vars": forwarded_env()} if forwarded_env() else None,
        )
        _consume(ds, stats, len(todo), cfg.stall_timeout_s, progress)
    elapsed = time.time() - start
    # again after the run: a retried batch may have rewritten some rows under another name
    final = scan_shards(out_dir, expected)
    setaside += settle_shards(out_dir, final)
    counts["shards_corrupt"] += len(final.corrupt)
    counts["rows_duplicate"] += final.duplicates
    counts["rows_not_in_input"] += final.stale
    all_rows = final.rows
    missing = expected - {r["id"] for r in all_rows}
    if missing:
        raise KgcError(
            f"output has {len(all_rows)} of the {total} rows expected ({len(missing)} "
            f"missing, e.g. id {min(missing)}); rerun the same command to finish them"
        )
    docs_out = merge_documents(all_rows)
    with open(out_dir / DOCUMENTS, "w", encoding="utf-8") as fh:
        for d in docs_out:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    summary = {
        "documents": n_docs,
        "rows": total,
        "rows_this_run": len(todo),
        "rows_skipped_resume": stats["rows_skipped_resume"],
        "records": sum(len(json.loads(r["records"])) for r in all_rows),
        "parse_error_rate": sum(bool(json.loads(r["errors"])) for r in all_rows) / max(1, total),
        "seconds": elapsed,
        "rows_per_s": len(todo) / elapsed if todo and elapsed else 0.0,
        # set aside this run, each counted: unreadable shards (their rows redone), extra
        # copies of a row (the first shard by name kept), rows of ids the input no longer has
        **counts,
        "set_aside": setaside,
        "output": str(out_dir),
    }
    if cfg.score and any(isinstance(r.get("label"), str) for r in all_rows):
        summary["scores"] = score_rows(cfg, all_rows)
        (out_dir / SCORES).write_text(json.dumps(summary["scores"], ensure_ascii=False, indent=1))
    (out_dir / SUMMARY).write_text(json.dumps(summary, ensure_ascii=False, indent=1))
    return summary


def _consume(ds, stats: dict, n: int, stall_s: float, progress: bool) -> None:
    """Drive the pipeline; fail loudly if no batch finishes for `stall_s` seconds."""
    state = {"last": time.time(), "error": None, "finished": False}
    t0 = time.time()

    def worker():
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
                stats["rows_done"] += len(batch)
                stats["parse_errors"] += int(batch["parse_error"].sum())
                stats["records"] += int(batch["n_records"].sum())
                state["last"] = time.time()
                if progress:
                    rate = stats["rows_done"] / max(1e-9, time.time() - t0)
                    print(
                        f"[kgc extract] {stats['rows_done']}/{n} rows, {rate:.1f} rows/s",
                        flush=True,
                    )
        except BaseException as exc:  # noqa: BLE001 - re-raised in the driver thread
            state["error"] = exc
        finally:
            state["finished"] = True

    th = threading.Thread(target=worker, daemon=True)
    th.start()
    while not state["finished"]:
        th.join(timeout=1.0)
        if not state["finished"] and time.time() - state["last"] > stall_s:
            raise KgcError(
                f"extraction stalled: no batch finished in {stall_s:.0f} s "
                f"({stats['rows_done']}/{n} rows done). Rows written so far are kept; rerun "
                "the same command to resume. Check the actors' logs (ray logs) for a hung "
                "engine, or raise stall_timeout_s for very slow models."
            )
    if state["error"] is not None:
        raise state["error"]


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
