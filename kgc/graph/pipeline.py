"""`kgc pipeline --config …`: documents → extraction (one run per task) → graph → exports.

Every config (each task's extraction, the graph) is built and checked before anything
runs, so a typo in the last task stops the command before the first extraction starts.
Extraction runs resume like `kgc extract` (rerun the same command to finish a killed run).
This is the plan; the run, on Ray, is `kgc.runtime.graph.run_pipeline`.
"""

from __future__ import annotations

from pathlib import Path

from kgc.config import ExtractConfig
from kgc.errors import KgcError, Problem
from kgc.graph.config import GraphConfig, PipelineConfig


def plan(cfg: PipelineConfig) -> tuple[list[ExtractConfig], GraphConfig]:
    """The extraction configs and the graph config of a pipeline, all validated."""
    from kgc.schema import read_schema
    from kgc.tasks import get

    base = cfg.extract.model_dump(mode="json", by_alias=True)
    runs: list[ExtractConfig] = []
    if not cfg.tasks:
        runs.append(cfg.extract)
    else:
        seen = set()
        for i, tr in enumerate(cfg.tasks):
            task = get(tr.task).name
            if task in seen:
                raise KgcError(f"tasks[{i}].task {tr.task!r} appears twice; list each task once")
            seen.add(task)
            data = {**base, "task": task, "output": {**base["output"]}}
            if tr.schema_path:
                data["schema"] = tr.schema_path
            if tr.split_num is not None:
                data["split_num"] = tr.split_num
            data["output"]["path"] = str(Path(cfg.extract.output.path) / task)
            runs.append(ExtractConfig.model_validate(data))
    problems: list[Problem] = []
    for r in runs:
        task = get(r.task)
        if r.input.format == "iepile":
            continue
        if not r.schema_path:
            problems.append(
                Problem(f"task {task.name}: extract.schema (or tasks[].schema) is required")
            )
            continue
        try:
            problems += [
                Problem(p, r.schema_path) for p in task.check_schema(read_schema(r.schema_path))
            ]
        except KgcError as exc:
            problems += exc.problems
    if problems:
        raise KgcError(problems)
    g = cfg.graph.model_dump(mode="json", by_alias=True, exclude_none=True)
    g.setdefault("input", {"paths": [r.output.path for r in runs]})
    g.setdefault("output", {"path": str(Path(cfg.extract.output.path) / "graph")})
    return runs, GraphConfig.model_validate(g)
