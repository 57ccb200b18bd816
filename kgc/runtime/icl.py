"""ICL requests on Ray Data actors (`runner.backend: ray`, or `auto` for large inputs).

The requests travel as rows with stable ids; the driver checks that every id came back
exactly once. `execute_ray` is what the core's `kgc.icl.runner.run_icl(ray_execute=…)`
calls: the core never imports Ray, the entry point (`kgc icl`) hands this in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kgc.errors import KgcError
from kgc.icl.client import ChatClient, ChatParams, Completion
from kgc.icl.config import ClientConfig, IclConfig
from kgc.icl.runner import Request
from kgc.progress import Rate
from kgc.runtime.cluster import ensure_ray
from kgc.runtime.pool import run_pool


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


def _item(r: Request) -> dict:
    p = r.params
    params = {
        "max_tokens": p.max_tokens,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "stop": list(p.stop),
        "seed": p.seed,
        "salt": p.salt,
    }
    return {
        "id": r.id,
        "messages": json.dumps(r.messages, ensure_ascii=False),
        "params": json.dumps(params),
    }


def execute_ray(cfg: IclConfig, requests: list[Request], progress: bool) -> list[Completion]:
    """The completions of `requests`, in order, from `cfg.runner.num_actors` ChatUDF actors."""
    import ray

    ensure_ray(cfg.runner.address)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours: kgc.progress
    env = {}
    key_var = cfg.client.api_key_env
    if os.environ.get(key_var):
        env[key_var] = os.environ[key_var]  # workers do not inherit the driver's environment
    client_cfg = cfg.client.model_dump(mode="json")
    if client_cfg.get("cache_dir"):
        client_cfg["cache_dir"] = str(Path(client_cfg["cache_dir"]).expanduser().resolve())
    items = [_item(r) for r in requests]
    n_actors = max(1, min(cfg.runner.num_actors, len(items)))
    bs = cfg.runner.batch_size
    got: dict[str, Completion] = {}
    dup = 0
    rate = Rate("kgc icl", len(items), "requests")

    def collect(batch) -> None:
        nonlocal dup
        if progress:
            rate.show(len(got) + len(batch))
        for row in batch.to_dict("records"):
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

    run_pool(
        items,
        ChatUDF,
        args=(client_cfg, 1.0 / n_actors),  # the limits are shared out
        actors=n_actors,
        batch_size=bs,
        blocks=min(len(items), max(n_actors, min(-(-len(items) // bs), 200))),
        num_cpus=cfg.runner.cpus_per_actor,
        fields={"CPU": "runner.cpus_per_actor"},
        env=env,
        on_batch=collect,
        stall_s=cfg.runner.stall_timeout_s,
        what="ICL",
        advice="Rerun the same command: the answers already received come from the cache "
        "(client.cache_dir). Check the endpoint and the actors' logs (ray logs), or raise "
        "runner.stall_timeout_s.",
    )
    missing = [r.id for r in requests if r.id not in got]
    if missing or dup:
        raise KgcError(
            f"Ray Data returned {len(got)} distinct answers for {len(requests)} requests "
            f"({len(missing)} missing, {dup} duplicated); rerun: answers already received are "
            "in the cache"
        )
    return [got[r.id] for r in requests]
