"""The graph build job (`kgc graph build`): rows → merged nodes/edges → exports, streaming.

Memory is bounded by one bucket, never by the corpus:

1. map: each group of row files is read row by row; every item (node or edge mention) is
   appended to bucket `hash(key) % B` of that group's folder (buffers flushed every few MB);
   the folder is written under a temporary name and renamed when complete, so a retried
   task rewrites it instead of adding to it;
2. reduce: each bucket — the items of every group with that hash — is loaded, merged by key
   and written as sorted node and edge lines;
3. the buckets' outputs are concatenated into `nodes.jsonl` and `edges.jsonl` (atomic
   renames), then the exports stream from those two files.

With `executor: local` the map and reduce tasks run in this process; with `executor: ray`
as Ray tasks (fractional CPUs), by `kgc.runtime.graph.map_reduce`, which the caller passes in
as `ray_map_reduce` (this module never imports Ray). Both give byte-identical outputs.
`buckets: auto` picks one bucket per `bucket_mb` of input.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from kgc.errors import KgcError
from kgc.graph.config import GraphConfig
from kgc.graph.files import EDGES, NODES, SUMMARY, iter_jsonl, read_graph
from kgc.io import atomic_file, atomic_path, write_json_atomic

__all__ = ["EDGES", "NODES", "SUMMARY", "iter_jsonl", "read_graph", "run_build"]

WORK = ".graph-work"
FLUSH_CHARS = 4 << 20


def bucket_of(key: str, n: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") % n


def _groups(files: list[tuple[str, str, str]], target: int) -> list[list[tuple[str, str, str]]]:
    groups, cur, size = [], [], 0
    for f in files:
        s = os.path.getsize(f[0])
        if cur and size + s > target:
            groups.append(cur)
            cur, size = [], 0
        cur.append(f)
        size += s
    if cur:
        groups.append(cur)
    return groups


# ----------------------------------------------------------------------------- tasks
def map_task(gi: int, files: list, cfg_json: dict, work: str, n_buckets: int) -> dict:
    """Row files → bucket files under work/map-<gi>/; returns the mapper's counts."""
    from kgc.graph.build import RowMapper
    from kgc.graph.inputs import iter_rows

    cfg = GraphConfig.model_validate(cfg_json)
    mapper = RowMapper(cfg)
    final = Path(work) / f"map-{gi:05d}"
    tmp = Path(work) / f".map-{gi:05d}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    buf: dict[tuple[str, int], list[str]] = {}
    held = 0

    def flush():
        nonlocal held
        for (kind, b), lines in buf.items():
            with open(tmp / f"{kind}-{b:05d}.jsonl", "a", encoding="utf-8") as fh:
                fh.writelines(lines)
        buf.clear()
        held = 0

    for path, fmt, name in files:
        for row in iter_rows(path, fmt, cfg, name):
            for it in mapper.items(row):
                # "<id>\t<item>": the reducer groups lines by id without parsing them
                line = it["id"] + "\t" + json.dumps(it, ensure_ascii=False) + "\n"
                buf.setdefault((it["k"], bucket_of(it["key"], n_buckets)), []).append(line)
                held += len(line)
                if held > FLUSH_CHARS:
                    flush()
    flush()
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return mapper.summary()


def reduce_task(b: int, cfg_json: dict, work: str) -> dict:
    """Bucket b of every map folder → work/red-<b>.{nodes,edges}.jsonl; returns counts.

    The bucket's lines are grouped by id as text; each id's items are then parsed, merged
    and written one id at a time, so memory holds the bucket's text plus one merged item.
    """
    from kgc.graph.build import canonicaliser, merge_items

    cfg = GraphConfig.model_validate(cfg_json)
    canon = canonicaliser(cfg)
    w = Path(work)
    counts: Counter = Counter()
    for kind, name in (("n", "nodes"), ("e", "edges")):
        groups: dict[str, list[str]] = {}
        for d in sorted(w.glob("map-*")):
            f = d / f"{kind}-{b:05d}.jsonl"
            if f.exists():
                with open(f, encoding="utf-8") as fh:
                    for line in fh:
                        i, _, item = line.partition("\t")
                        groups.setdefault(i, []).append(item)
        with atomic_file(w / f"red-{b:05d}.{name}.jsonl") as out:
            for i in sorted(groups):
                items = groups.pop(i)
                line, info = merge_items((json.loads(x) for x in items), cfg, canon, counts)
                out.write(line + "\n")
                counts[name] += 1
                counts[f"{name[:-1]}_mentions"] += info["mentions"]
                counts[f"{name}_by_kind:{info['kind']}"] += 1
                counts[f"{name}_by_type:{info['type']}"] += 1
    return dict(counts)


# ----------------------------------------------------------------------------- driver
def say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[kgc graph] {msg}", file=sys.stderr, flush=True)


def _merge_counts(parts: list[dict]) -> dict:
    total: Counter = Counter()
    nested: dict[str, Counter] = {}
    for p in parts:
        for k, v in p.items():
            if isinstance(v, dict):
                nested.setdefault(k, Counter()).update(v)
            else:
                total[k] += v
    out: dict = dict(total)
    out.update({k: dict(sorted(c.items())) for k, c in nested.items()})
    return out


def _concat(parts: list[Path], dest: Path) -> None:
    with atomic_path(dest) as tmp, open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as fh:
                shutil.copyfileobj(fh, out)


# (cfg, groups, cfg_json, work, n_buckets, progress, address) → (map counts, reduce counts):
# map_task on every group, then reduce_task on every bucket (kgc.runtime.graph.map_reduce)
MapReduce = Callable[[GraphConfig, list, dict, Path, int, bool, str | None], tuple[list, list]]


def map_reduce_local(
    cfg: GraphConfig,
    groups: list,
    cfg_json: dict,
    work: Path,
    n_buckets: int,
    progress: bool,
) -> tuple[list[dict], list[dict]]:
    """`executor: local`: the map tasks, then the reduce tasks, one by one in this process."""
    maps = []
    for i, g in enumerate(groups):
        maps.append(map_task(i, g, cfg_json, str(work), n_buckets))
        say(progress, f"map {i + 1}/{len(groups)}")
    reds = []
    for b in range(n_buckets):
        reds.append(reduce_task(b, cfg_json, str(work)))
        if n_buckets > 1:
            say(progress, f"reduce {b + 1}/{n_buckets}")
    return maps, reds


def _plan(cfg: GraphConfig, files: list) -> tuple[int, int, list]:
    """Input bytes, bucket count and map-task groups for the input files."""
    in_bytes = sum(os.path.getsize(f) for f, *_ in files)
    target = int(cfg.bucket_mb * (1 << 20))
    n_buckets = (
        cfg.buckets if cfg.buckets != "auto" else max(1, min(4096, math.ceil(in_bytes / target)))
    )
    # at most ~64 map tasks: each writes one file per bucket, so files grow as tasks × buckets
    return in_bytes, n_buckets, _groups(files, max(target, in_bytes // 64 + 1))


def _summary(cfg: GraphConfig, files: list, in_bytes: int, n_buckets: int, read: dict, red: dict):
    """summary.json's counts from the map (`read`) and reduce (`red`) tallies."""
    out = Path(cfg.output.path)

    def split(prefix: str) -> dict:
        got = {k.split(":", 1)[1]: v for k, v in red.items() if k.startswith(prefix + ":")}
        return dict(sorted(got.items(), key=lambda kv: (-kv[1], kv[0])))

    summary = {
        "input": {"paths": list(cfg.input.paths), "files": len(files), "bytes": in_bytes},
        **{k: v for k, v in read.items() if k not in ("rows_by_task", "dropped", "sanitized")},
        "rows_by_task": read.get("rows_by_task", {}),
        "dropped": read.get("dropped", {}),
        "dropped_total": sum(read.get("dropped", {}).values()),
        # input strings whose unsafe characters (controls, lone surrogates) were replaced by
        # U+FFFD, by field (kgc.graph.clean): nothing is changed without being counted
        "sanitized": read.get("sanitized", {}),
        "sanitized_total": sum(read.get("sanitized", {}).values()),
        "duplicate_mentions": red.get("duplicate_mentions", 0),
        "nodes": red.get("nodes", 0),
        "edges": red.get("edges", 0),
        "node_mentions": red.get("node_mentions", 0),
        "edge_mentions": red.get("edge_mentions", 0),
        "nodes_by_kind": split("nodes_by_kind"),
        "edges_by_kind": split("edges_by_kind"),
        "nodes_by_type": split("nodes_by_type"),
        "edges_by_type": split("edges_by_type"),
        "strict": cfg.strict,
        "buckets": n_buckets,
        "executor": cfg.executor,
        "output": str(out),
        "files": {"nodes": str(out / NODES), "edges": str(out / EDGES)},
    }
    return summary


def run_build(
    cfg: GraphConfig,
    *,
    progress: bool = True,
    address: str | None = None,
    ray_map_reduce: MapReduce | None = None,
) -> dict:
    """Build the graph and its exports; returns the summary (also written to summary.json).

    `executor: ray` runs the tasks with `ray_map_reduce` (pass `kgc.runtime.graph.map_reduce`)
    on the Ray cluster at `address` (default: a local Ray)."""
    from kgc.graph.inputs import input_files

    if cfg.executor == "ray" and ray_map_reduce is None:
        raise ValueError(
            "executor: ray needs ray_map_reduce=kgc.runtime.graph.map_reduce (kgc.graph never "
            "imports Ray; `kgc graph build` passes it)"
        )

    t0 = time.time()
    files = input_files(cfg)
    out = Path(cfg.output.path)
    out.mkdir(parents=True, exist_ok=True)
    work = out / WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    in_bytes, n_buckets, groups = _plan(cfg, files)
    cfg_json = cfg.model_dump(mode="json", by_alias=True)
    say(
        progress,
        f"{len(files)} row files ({in_bytes / 1e6:.1f} MB) → {len(groups)} map tasks, {n_buckets} buckets",
    )
    try:
        if cfg.executor == "ray":
            maps, reds = ray_map_reduce(cfg, groups, cfg_json, work, n_buckets, progress, address)
        else:
            maps, reds = map_reduce_local(cfg, groups, cfg_json, work, n_buckets, progress)
        read = _merge_counts(maps)
        if read.get("rows", 0) == 0:
            raise KgcError(f"input.paths {list(cfg.input.paths)} hold no rows; nothing to build")
        _concat([work / f"red-{b:05d}.nodes.jsonl" for b in range(n_buckets)], out / NODES)
        _concat([work / f"red-{b:05d}.edges.jsonl" for b in range(n_buckets)], out / EDGES)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = _summary(cfg, files, in_bytes, n_buckets, read, _merge_counts(reds))
    from kgc.graph.export import run_exports

    summary["exports"] = run_exports(out, cfg, progress=progress)
    summary["seconds"] = round(time.time() - t0, 3)
    write_json_atomic(out / SUMMARY, summary)
    return summary
