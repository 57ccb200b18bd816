"""Graph build: the streaming (bucketed, on-disk) build vs the in-memory baseline, one run.

    python bench/graph_build.py [--rows 60000] [--bucket-mb 4]

Writes synthetic extraction rows (NER + RE, names drawn from a skewed distribution, so
some nodes gather many mentions) as JSONL shards, then builds the same graph twice, each in
a fresh process: `build_in_memory` on all rows (the baseline) and `run_build` (hash
buckets on disk, merged one at a time). Prints rows/s and peak RSS of each and the ratios;
the streaming build's peak memory is bounded by one bucket, not by the corpus.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kgc.rows import row_id


def write_rows(out: Path, n: int, per_shard: int = 2000, seed: int = 0) -> int:
    rng = random.Random(seed)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    people = [f"Person {i}" for i in range(max(10, n // 20))]
    places = [f"City {i}" for i in range(max(5, n // 200))]
    written, shard = 0, []

    def pick(xs):
        return xs[min(len(xs) - 1, int(rng.paretovariate(1.2)) - 1)]

    for i in range(n):
        a, b = pick(people), pick(places)
        text = f"{a} moved to {b} in {1900 + i % 120}. Later {a} left {b}. " + "x " * 40
        task = "RE" if i % 2 else "NER"
        recs = (
            [{"head": a, "relation": "lives_in", "tail": b}]
            if task == "RE"
            else [{"entity": a, "entity_type": "person"}, {"entity": b, "entity_type": "city"}]
        )
        shard.append(
            {
                "id": row_id(f"d{i // 2}", 0, len(text), [task]),
                "doc_id": f"d{i // 2}",
                "chunk_index": 0,
                "chunk_start": 0,
                "chunk_end": len(text),
                "task": task,
                "schema": "[]",
                "instruction": json.dumps({"schema": [], "input": text}),
                "records": json.dumps(recs),
                "errors": "[]",
                "model_id": "bench",
            }
        )
        if len(shard) == per_shard or i == n - 1:
            with open(out / "rows" / f"part-{written:06d}.jsonl", "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in shard)
            written += 1
            shard = []
    return n


def child(mode: str, data: str, out: str, bucket_mb: float) -> None:
    from kgc.graph.build import build_in_memory
    from kgc.graph.config import GraphConfig
    from kgc.graph.inputs import input_files, iter_rows

    cfg = GraphConfig.model_validate(
        {
            "input": {"paths": [data]},
            "output": {"path": out},
            "exports": [],
            "bucket_mb": bucket_mb,
        }
    )
    t0 = time.perf_counter()
    if mode == "memory":
        rows = [r for f, fmt in input_files(cfg) for r in iter_rows(f, fmt, cfg)]
        nodes, edges, s = build_in_memory(rows, cfg)
        result = {"nodes": len(nodes), "edges": len(edges), "rows": s["rows"], "buckets": 0}
    else:
        from kgc.graph.stream import run_build

        s = run_build(cfg, progress=False)
        result = {k: s[k] for k in ("nodes", "edges", "rows", "buckets")}
    result["seconds"] = time.perf_counter() - t0
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--bucket-mb", type=float, default=4.0)
    ap.add_argument("--child", choices=("memory", "stream"))
    ap.add_argument("--data")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.data, args.out, args.bucket_mb)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "extract"
        write_rows(data, args.rows)
        mb = sum(f.stat().st_size for f in (data / "rows").iterdir()) / 1e6
        print(f"{args.rows} rows, {mb:.1f} MB of shards")
        res = {}
        for mode in ("memory", "stream"):
            cmd = [sys.executable, __file__, "--child", mode, "--data", str(data)]
            cmd += ["--out", str(Path(tmp) / mode), "--bucket-mb", str(args.bucket_mb)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res[mode] = json.loads(done.stdout.strip().splitlines()[-1])
            r = res[mode]
            print(
                f"{mode:>7}: {r['rows'] / r['seconds']:8.0f} rows/s  peak RSS {r['peak_rss_mb']:7.1f}"
                f" MB  nodes {r['nodes']}  edges {r['edges']}  buckets {r['buckets']}"
            )
        m, s = res["memory"], res["stream"]
        assert (m["nodes"], m["edges"]) == (s["nodes"], s["edges"]), "the two builds differ"
        print(
            f"stream/memory: speed x{m['seconds'] / s['seconds']:.2f}, "
            f"peak memory x{s['peak_rss_mb'] / m['peak_rss_mb']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
