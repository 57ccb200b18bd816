"""Run a mode: build its requests, send them (a thread pool, or Ray Data actors for large
inputs), parse and score what comes back, write the outputs.

Every input row yields exactly one output row: a failed request or an unparseable answer is a
row with its error. With Ray Data the requests travel as rows with stable ids; the driver
checks that every id came back exactly once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgc.errors import KgcError
from kgc.icl.client import ChatClient, ChatParams, Completion
from kgc.icl.config import ClientConfig, IclConfig

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


def execute(
    cfg: IclConfig,
    requests: list[Request],
    client: ChatClient,
    *,
    backend: str = "threads",
    progress: bool = False,
) -> list[Completion]:
    if not requests:
        return []
    if backend == "ray":
        return _execute_ray(cfg, requests, progress)

    def show(done: int, total: int) -> None:
        if progress and (done == total or done % 25 == 0):
            print(f"[kgc icl] {done}/{total} requests", file=sys.stderr, flush=True)

    return client.chat_many(
        [r.messages for r in requests], [r.params for r in requests], progress=show
    )


class ChatUDF:
    """Ray Data actor: one client (thread pool, cache, limits) per actor."""

    def __init__(self, client_cfg: dict, limit_share: float):
        self.fatal = ""
        try:
            self.client = ChatClient(
                ClientConfig.model_validate(client_cfg), limit_share=limit_share
            )
        except KgcError as exc:  # e.g. the key's variable did not reach the worker
            self.client = None
            self.fatal = str(exc)

    def __call__(self, batch: dict) -> dict:
        ids = [str(x) for x in batch["id"]]
        n = len(ids)
        if self.client is None:
            return _columns(ids, [Completion(error=self.fatal)] * n, [self.fatal] * n)
        prompts = [json.loads(m) for m in batch["messages"]]
        params = [_params(json.loads(p)) for p in batch["params"]]
        try:
            comps = self.client.chat_many(prompts, params)
        except KgcError as exc:  # fatal for the run (401/403/404): reported by the driver
            return _columns(ids, [Completion(error=str(exc))] * n, [str(exc)] * n)
        return _columns(ids, comps, [""] * n)


def _params(d: dict) -> ChatParams:
    d = dict(d)
    d["stop"] = tuple(d.get("stop") or ())
    return ChatParams(**d)


def _columns(ids: list[str], comps: list[Completion], fatal: list[str]) -> dict:
    return {
        "id": ids,
        "text": [c.text for c in comps],
        "error": [c.error or "" for c in comps],
        "cached": [bool(c.cached) for c in comps],
        "attempts": [int(c.attempts) for c in comps],
        "usage": [json.dumps(c.usage) if c.usage else "" for c in comps],
        "fatal": fatal,
    }


def _execute_ray(cfg: IclConfig, requests: list[Request], progress: bool) -> list[Completion]:
    import ray

    from kgc.raytools import ensure_ray, forwarded_env

    ensure_ray(cfg.runner.address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    env = dict(forwarded_env())
    key_var = cfg.client.api_key_env
    if os.environ.get(key_var):
        env[key_var] = os.environ[key_var]  # workers do not inherit the driver's environment
    client_cfg = cfg.client.model_dump(mode="json")
    if client_cfg.get("cache_dir"):
        client_cfg["cache_dir"] = str(Path(client_cfg["cache_dir"]).expanduser().resolve())
    items = [
        {
            "id": r.id,
            "messages": json.dumps(r.messages, ensure_ascii=False),
            "params": json.dumps(
                {
                    "max_tokens": r.params.max_tokens,
                    "temperature": r.params.temperature,
                    "top_p": r.params.top_p,
                    "stop": list(r.params.stop),
                    "seed": r.params.seed,
                    "salt": r.params.salt,
                }
            ),
        }
        for r in requests
    ]
    n_actors = max(1, min(cfg.runner.num_actors, len(items)))
    bs = cfg.runner.batch_size
    blocks = min(len(items), max(n_actors, min(-(-len(items) // bs), 200)))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(
        ChatUDF,
        fn_constructor_args=(client_cfg, 1.0 / n_actors),  # the limits are shared out
        batch_size=bs,
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_cpus=cfg.runner.cpus_per_actor,
        runtime_env={"env_vars": env} if env else None,
    )
    got: dict[str, Completion] = {}
    dup = 0
    for row in ds.iter_rows():
        if row["fatal"]:
            raise KgcError(row["fatal"])
        if row["id"] in got:
            dup += 1
            continue
        got[row["id"]] = Completion(
            text=row["text"],
            error=row["error"] or None,
            cached=bool(row["cached"]),
            attempts=int(row["attempts"]),
            usage=json.loads(row["usage"]) if row["usage"] else None,
        )
    missing = [r.id for r in requests if r.id not in got]
    if missing or dup:
        raise KgcError(
            f"Ray Data returned {len(got)} distinct answers for {len(requests)} requests "
            f"({len(missing)} missing, {dup} duplicated); rerun: answers already received are "
            "in the cache"
        )
    return [got[r.id] for r in requests]


def run_icl(
    cfg: IclConfig,
    *,
    single: dict | None = None,
    client: ChatClient | None = None,
    progress: bool = False,
    write: bool = True,
) -> IclResult:
    """Run the configured mode over `cfg.input` (or one `single` item from the command line)."""
    from kgc.icl import modes

    client = client or ChatClient(cfg.client)
    t0 = time.time()
    plan = modes.plan(cfg, client, single)
    ids = [r.id for r in plan.requests]
    if len(set(ids)) != len(ids):
        raise KgcError("two requests share an id; give the input records distinct ids")
    backend = choose_backend(cfg, len(plan.requests), single is not None)
    before = dict(client.stats)
    comps = execute(cfg, plan.requests, client, backend=backend, progress=progress)
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
