"""The graph build's map and reduce steps as Ray tasks (`executor: ray`), and `kgc pipeline`
(documents → extraction on Ray Data → graph).

The steps themselves (`map_task`, `reduce_task`) and the build around them are core
(`kgc.graph.stream`); `map_reduce` is what `run_build(ray_map_reduce=…)` calls. They are
stateless tasks with retries, not an actor pool: a retried map task rewrites its folder
under a temporary name, so a retry never adds to what a failed attempt wrote.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kgc.errors import KgcError
from kgc.graph.config import GraphConfig, PipelineConfig
from kgc.graph.stream import map_task, reduce_task, say
from kgc.runtime.cluster import ensure_ray


def _ray_get(refs: list) -> list:
    """ray.get, with a user error raised in a task re-raised as itself (not wrapped)."""
    import ray

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, KgcError):
            raise exc.cause from None
        raise


def map_reduce(
    cfg: GraphConfig,
    groups: list,
    cfg_json: dict,
    work: Path,
    n_buckets: int,
    progress: bool,
    address: str | None = None,
) -> tuple[list[dict], list[dict]]:
    """Every map task, then every reduce task, as Ray tasks of `cfg.cpus_per_task` CPUs on the
    cluster at `address` (default: a local Ray); returns their counts in task order."""
    import ray

    ensure_ray(address)
    rmap = ray.remote(num_cpus=cfg.cpus_per_task, max_retries=2)(map_task)
    rred = ray.remote(num_cpus=cfg.cpus_per_task, max_retries=2)(reduce_task)
    maps = _ray_get(
        [rmap.remote(i, g, cfg_json, str(work), n_buckets) for i, g in enumerate(groups)]
    )
    say(progress, "map done")
    reds = _ray_get([rred.remote(b, cfg_json, str(work)) for b in range(n_buckets)])
    return maps, reds


def run_pipeline(
    cfg: PipelineConfig,
    *,
    progress: bool = True,
    address: str | None = None,
    fresh: bool = False,
) -> dict:
    """`kgc pipeline`: every task's extraction, then the graph; returns the summary (also
    written to <extract.output.path>/pipeline.json). `fresh`: each extraction clears its
    output folder's old results first (`kgc extract --fresh`)."""
    from kgc.graph.pipeline import plan
    from kgc.graph.stream import run_build
    from kgc.io import write_json_atomic
    from kgc.runtime.extract import run_extract

    runs, gcfg = plan(cfg)
    t0 = time.time()
    ensure_ray(address or cfg.address)
    extracted = {}
    for r in runs:
        if progress:
            print(f"[kgc pipeline] extract {r.task} → {r.output.path}", file=sys.stderr, flush=True)
        extracted[r.task] = run_extract(r, progress=progress, fresh=fresh)
    if progress:
        print(f"[kgc pipeline] graph → {gcfg.output.path}", file=sys.stderr, flush=True)
    graph = run_build(
        gcfg, progress=progress, address=address or cfg.address, ray_map_reduce=map_reduce
    )
    summary = {
        "extract": extracted,
        "graph": graph,
        "seconds": round(time.time() - t0, 3),
    }
    write_json_atomic(Path(cfg.extract.output.path) / "pipeline.json", summary)
    return summary
