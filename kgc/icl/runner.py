"""Run a mode: build its requests, send them (a thread pool, or Ray Data actors for large
inputs), parse and score what comes back, write the outputs.

Every input row yields exactly one output row: a failed request or an unparseable answer is a
row with its error. The Ray Data back end is `kgc.runtime.icl.execute_ray`: this module never
imports Ray, so a caller that may run on Ray (the `kgc icl` command) passes it in as
`ray_execute`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgc.errors import KgcError
from kgc.icl.client import ChatClient, ChatParams, Completion
from kgc.icl.config import IclConfig
from kgc.progress import Rate

PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"


@dataclass
class Request:
    id: str
    messages: list[dict]
    params: ChatParams


@dataclass
class Plan:
    """What a mode asks for, and how it turns the answers into rows and a summary."""

    requests: list[Request]
    finish: Callable[[list[Completion]], tuple[list[dict], dict]]
    files: dict[str, Callable[[Path], Any]] = field(default_factory=dict)  # extra outputs


@dataclass
class IclResult:
    rows: list[dict]
    summary: dict


def params_for(
    cfg: IclConfig, *, max_tokens: int, temperature: float, salt: str = ""
) -> ChatParams:
    g = cfg.generation
    return ChatParams(
        max_tokens=g.max_tokens or max_tokens,
        temperature=g.temperature if g.temperature is not None else temperature,
        top_p=g.top_p,
        stop=tuple(g.stop),
        seed=g.seed,
        salt=salt,
    )


def choose_backend(cfg: IclConfig, n: int, single: bool) -> str:
    b = cfg.runner.backend
    if b == "auto":
        return "ray" if (not single and n >= cfg.runner.ray_threshold) else "threads"
    return b


# (cfg, requests, progress) → completions in request order: kgc.runtime.icl.execute_ray
RayExecute = Callable[[IclConfig, list[Request], bool], list[Completion]]


def execute(
    cfg: IclConfig,
    requests: list[Request],
    client: ChatClient,
    *,
    backend: str = "threads",
    progress: bool = False,
    ray_execute: RayExecute | None = None,
) -> list[Completion]:
    if not requests:
        return []
    if backend == "ray":
        if ray_execute is None:
            raise ValueError(
                "backend 'ray' needs ray_execute=kgc.runtime.icl.execute_ray (kgc.icl never "
                "imports Ray; the `kgc icl` command passes it)"
            )
        return ray_execute(cfg, requests, progress)

    rate = Rate("kgc icl", len(requests), "requests")

    def show(done: int, total: int) -> None:
        if progress and (done == total or done % 25 == 0):
            rate.show(done)

    return client.chat_many(
        [r.messages for r in requests], [r.params for r in requests], progress=show
    )


def run_icl(
    cfg: IclConfig,
    *,
    single: dict | None = None,
    client: ChatClient | None = None,
    progress: bool = False,
    write: bool = True,
    ray_execute: RayExecute | None = None,
) -> IclResult:
    """Run the configured mode over `cfg.input` (or one `single` item from the command line).

    `ray_execute` sends the requests when the backend is Ray (`runner.backend: ray`, or
    `auto` from `runner.ray_threshold` requests): pass `kgc.runtime.icl.execute_ray`."""
    from kgc.icl import modes

    client = client or ChatClient(cfg.client)
    t0 = time.time()
    plan = modes.plan(cfg, client, single)
    ids = [r.id for r in plan.requests]
    if len(set(ids)) != len(ids):
        raise KgcError("two requests share an id; give the input records distinct ids")
    backend = choose_backend(cfg, len(plan.requests), single is not None)
    before = dict(client.stats)
    comps = execute(
        cfg, plan.requests, client, backend=backend, progress=progress, ray_execute=ray_execute
    )
    rows, summary = plan.finish(comps)
    stats = {k: v - before.get(k, 0) for k, v in client.stats.items()}
    summary = {
        "mode": cfg.mode,
        "model": cfg.client.model,
        "base_url": cfg.client.base_url,
        "backend": backend,
        "requests": len(plan.requests),
        "cache_hits": sum(c.cached for c in comps),
        "failed_requests": sum(c.error is not None for c in comps),
        "http_attempts": sum(c.attempts for c in comps),
        "retries": sum(max(0, c.attempts - 1) for c in comps),
        "client": stats if backend == "threads" else {},
        **summary,
        "seconds": round(time.time() - t0, 3),
    }
    if write and cfg.output and single is None:
        out = Path(cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        from kgc.io import write_json_atomic, write_jsonl_atomic

        write_jsonl_atomic(out / PREDICTIONS, rows)
        for name, writer in plan.files.items():
            summary.setdefault("files", {})[name] = str(writer(out))
        summary.setdefault("files", {})["predictions"] = str(out / PREDICTIONS)
        write_json_atomic(out / SUMMARY, summary)
    return IclResult(rows, summary)
