"""The shards of an extraction output: `<output>/rows/part-<hash>.{parquet,jsonl}`.

Exactly-once rows: each batch is written by the actor as one shard named after the hash of
its row ids, via a temporary file and an atomic rename, so a retried batch (killed actor)
rewrites the same shard, and a rerun (killed driver) skips every id already present in a
complete shard.

What a rerun finds that no run of the job writes is set aside, not trusted and not fatal
(`scan_shards`, `settle_shards`): a shard that cannot be read (cut short, not UTF-8) moves
to `<output>/quarantine/` and its rows are extracted again; a second copy of a row (a
copied shard) loses to the copy in the first shard by name; a row whose id the current
input no longer produces (a document removed) is not one of the job's rows; a row whose
fingerprint (`kgc.rows.fingerprint`: task, instruction, model, generation settings) is not
the current one was made from another text, task, model or settings (or by an older kgc, or
not by kgc) and is redone. Each is named in a warning and counted, and the shards left in
`rows/` hold every current id exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgc.errors import KgcError, Problem
from kgc.rows import ROW_FIELDS, fingerprint_parts

SHARDS = "rows"
QUARANTINE = "quarantine"  # shards set aside: unreadable, or holding rows not kept


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


def remove_partial_shards(out_dir: str | os.PathLike) -> None:
    """Delete the temporary files of shards cut short by a crash (their rows are redone)."""
    d = Path(out_dir) / SHARDS
    for stray in d.glob(".part-*.tmp") if d.exists() else []:
        stray.unlink()


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
    # rows of a current id whose fingerprint is not the current row's, by why (`mismatch`)
    changed: Counter = field(default_factory=Counter)
    changed_from: set[tuple[str, str]] = field(default_factory=set)  # their (task, model_id)
    rewrite: dict[Path, list[dict]] = field(default_factory=dict)
    notes: dict[Path, str] = field(default_factory=dict)
    quiet: set[Path] = field(default_factory=set)  # moved for changed rows only: one line

    def whole_run_changed(self) -> str | None:
        """`"model"` or `"task"` when every row found of a current id was made by another model
        (or for another task): the output folder holds another run's results."""
        found = len(self.rows) + sum(self.changed.values())
        for why in ("task", "model"):
            if found and self.changed[why] == found:
                return why
        return None


# why a written row is not reused (`mismatch`), as the warning says it
CHANGED = {
    "task": "the task changed",
    "model": "the model changed",  # engine.model, adapter, checkpoint, dtype, quantization
    "text": "their text changed",  # the chunk text, its schema split or the language
    "generation": "the generation settings changed",
    "unsigned": "no fingerprint, as an older kgc (or not kgc) wrote them",
}


def mismatch(found: dict, want: dict) -> str | None:
    """Why the written row `found` is not the row `want` of this run (a key of `CHANGED`),
    or None when it can be reused: same task, instruction and fingerprint."""
    if found.get("task") != want["task"]:
        return "task"
    have, need = fingerprint_parts(found.get("fingerprint")), fingerprint_parts(want["fingerprint"])
    if have is None or need is None:
        return "unsigned"
    if have["model"] != need["model"]:
        return "model"
    if have["input"] != need["input"] or found.get("instruction") != want["instruction"]:
        return "text"
    if have["generation"] != need["generation"]:
        return "generation"
    return None


def scan_shards(
    out_dir: str | os.PathLike, expected: Mapping[str, dict] | set[str] | None = None
) -> ShardScan:
    """Read every shard and resolve it against `expected`: the current input's rows by id
    (a written row is kept only if `mismatch` finds none), or only their ids, or None (keep
    every id). Deterministic: shards are read in name order, so which copy of a duplicated
    row is kept does not depend on timing or on the order of a listing."""
    scan = ShardScan()
    first: dict[str, str] = {}  # id → name of the shard whose row is kept
    check = isinstance(expected, Mapping)
    for f in shard_files(out_dir):
        rows, problem = read_shard(f)
        if problem is not None:
            scan.corrupt.append((f, problem))
            continue
        kept, dup, stale, dup_of, changed = [], 0, 0, set(), Counter()
        for r in rows:
            why = mismatch(r, expected[r["id"]]) if check and r["id"] in expected else None
            if expected is not None and r["id"] not in expected:
                stale += 1
            elif why is not None:
                changed[why] += 1
                scan.changed_from.add((str(r.get("task")), str(r.get("model_id"))))
            elif r["id"] in first:
                dup += 1
                dup_of.add(first[r["id"]])
            else:
                first[r["id"]] = f.name
                kept.append(r)
        scan.rows.extend(kept)
        scan.changed += changed
        if dup or stale or changed:
            scan.duplicates += dup
            scan.stale += stale
            scan.rewrite[f] = kept
            if not (dup or stale):
                scan.quiet.add(f)
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
            if changed:
                n = sum(changed.values())
                parts.append(f"{n} row(s) from an earlier run not reused: {_why(changed)}")
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
        if f not in scan.quiet:  # changed rows alone are said once for all (`settle_rows`)
            _warn(f"{f}: {scan.notes[f]}; set aside as {dest}, {rest}")
    return moved


def _why(changed: Counter) -> str:
    return ", ".join(f"{CHANGED[k]} ({n})" for k, n in changed.most_common())


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


@dataclass
class SetAside:
    """What the passes of one run set aside, summed: the summary's counts and moves."""

    shards_corrupt: int = 0
    rows_duplicate: int = 0
    rows_not_in_input: int = 0
    rows_changed: int = 0  # of a current id, but not this run's fingerprint: redone
    changed_why: Counter = field(default_factory=Counter)
    moved: list[dict] = field(default_factory=list)

    def counts(self) -> dict:
        return {
            "shards_corrupt": self.shards_corrupt,
            "rows_duplicate": self.rows_duplicate,
            "rows_not_in_input": self.rows_not_in_input,
            "rows_changed": self.rows_changed,
            "rows_changed_why": dict(self.changed_why.most_common()),
        }


def settle_rows(
    out_dir: str | os.PathLike, expected: Mapping[str, dict] | set[str], aside: SetAside
) -> list[dict]:
    """The rows of the shards, each id of `expected` at most once, with everything else set
    aside (`scan_shards`, `settle_shards`) and counted in `aside`; the rows whose
    fingerprint changed are said in one line.

    When every row found was made by another model or for another task, nothing is moved:
    the folder holds another run's results, and the KgcError names it and `--fresh`."""
    scan = scan_shards(out_dir, expected)
    whole = scan.whole_run_changed()
    if whole is not None:
        n = scan.changed[whole]
        now = next(iter(expected.values()))["task"] if isinstance(expected, Mapping) else "?"
        if whole == "task":
            was = ", ".join(sorted({t for t, _ in scan.changed_from})[:3])
            what = f"for another task ({was}; this run's task is {now})"
        else:
            was = ", ".join(sorted({m for _, m in scan.changed_from})[:2])
            what = f"by another model (model_id {was}) than this run's engine settings"
        raise KgcError(
            f"output.path {out_dir} holds another run's results: its {n} rows were extracted "
            f"{what}. Rerun with --fresh to clear that folder's old results, or set "
            "output.path to a new folder"
        )
    aside.moved += settle_shards(out_dir, scan)
    aside.shards_corrupt += len(scan.corrupt)
    aside.rows_duplicate += scan.duplicates
    aside.rows_not_in_input += scan.stale
    n = sum(scan.changed.values())
    if n:
        aside.rows_changed += n
        aside.changed_why += scan.changed
        _warn(
            f"{n} row(s) from an earlier run set aside (under {Path(out_dir) / QUARANTINE}): "
            f"{_why(scan.changed)}; they are extracted again"
        )
    return scan.rows
