"""Load on the Serve app, over real HTTP on 127.0.0.1, in one run:

1. 1,000 chat-completion requests from 32 concurrent clients, 5 % malformed (bad JSON,
   missing `messages`, unknown model): statuses, zero 5xx for valid requests, a 4xx with a
   message for every malformed one, p50/p99 latency, throughput;
2. batched (`@serve.batch`, batch 16) vs unbatched (batch 1) throughput at 16 clients;
3. overload: a deployment with 2 ongoing + 2 queued requests under 64 clients answers
   503/429 for the excess instead of failing.

  python bench/serve_load.py [--requests 1000] [--model tiny|small|smollm2]
  python bench/serve_load.py --model smollm2 --requests 160 --phase-requests 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from _models import add_model_arg, bench_model

KEY = "sk-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def fire(url: str, n: int, clients: int, malformed: float, seed: int = 0) -> dict:
    import httpx

    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        kind = "ok"
        if rng.random() < malformed:
            kind = rng.choice(["bad_json", "no_messages", "unknown_model"])
        jobs.append((i, kind))
    sem = asyncio.Semaphore(clients)
    results: list[tuple[str, int, float, str]] = []
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as c:

        async def one(i: int, kind: str) -> None:
            body: bytes
            msg = {"role": "user", "content": f"请抽取实体：样例文本{i}"}
            if kind == "bad_json":
                body = b'{"messages": [oops'
            elif kind == "no_messages":
                body = json.dumps({"model": "kgc"}).encode()
            elif kind == "unknown_model":
                body = json.dumps({"model": "kgc:nope", "messages": [msg]}).encode()
            else:
                body = json.dumps(
                    {"model": "kgc", "max_tokens": 16, "messages": [msg]}, ensure_ascii=False
                ).encode()
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await c.post("/v1/chat/completions", content=body)
                    status, text = r.status_code, r.text
                except httpx.HTTPError as exc:
                    status, text = -1, str(exc)
                results.append((kind, status, time.perf_counter() - t0, text))

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, k) for i, k in jobs))
        wall = time.perf_counter() - t0
    ok = [r for r in results if r[0] == "ok"]
    bad = [r for r in results if r[0] != "ok"]
    lat = sorted(r[2] for r in ok if r[1] == 200)
    return {
        "statuses": Counter(f"{k}:{s}" for k, s, _, _ in results),
        "valid_5xx": sum(1 for r in ok if r[1] >= 500 or r[1] < 0),
        "malformed_4xx_with_message": sum(1 for r in bad if 400 <= r[1] < 500 and r[3]),
        "malformed": len(bad),
        "p50": statistics.median(lat) if lat else float("nan"),
        "p99": lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
        "rps": len(ok) / wall,
    }


def deploy(model: str, batch: int, ongoing: int = 64, queued: int = 256) -> str:
    from ray import serve

    from serve.app import build_app

    serve.run(
        build_app(
            {
                "model": model,
                "api_keys_env": "KGC_BENCH_KEYS",
                "batch_size": batch,
                "max_new_tokens": 16,
                "replica_cpus": 0.5,
                "max_ongoing_requests": ongoing,
                "max_queued_requests": queued,
            }
        ),
        name="kgc",
        route_prefix="/",
    )
    return "ok"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--phase-requests", type=int, default=200, help="requests per ratio phase")
    add_model_arg(ap, "tiny")
    args = ap.parse_args()

    import ray
    from ray import serve

    os.environ["KGC_BENCH_KEYS"] = KEY
    with tempfile.TemporaryDirectory() as t:
        model, label = bench_model(args.model, Path(t))
        print(f"model={label}", flush=True)
        ray.init(
            num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False
        )
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"

        deploy(model, 16)
        load = asyncio.run(fire(url, args.requests, 32, 0.05))
        n = args.phase_requests
        batched = asyncio.run(fire(url, n, 16, 0.0, seed=1))
        deploy(model, 1)
        unbatched = asyncio.run(fire(url, n, 16, 0.0, seed=1))
        deploy(model, 16, ongoing=2, queued=2)
        over = asyncio.run(fire(url, n, 64, 0.0, seed=2))
        serve.shutdown()
        ray.shutdown()

    print(f"1) {args.requests} requests, 32 clients, 5% malformed")
    print(f"   statuses {dict(sorted(load['statuses'].items()))}")
    print(f"   valid requests answered 5xx: {load['valid_5xx']}")
    print(
        f"   malformed answered 4xx with a message: {load['malformed_4xx_with_message']}"
        f" / {load['malformed']}"
    )
    print(
        f"   p50 {load['p50'] * 1000:.0f} ms  p99 {load['p99'] * 1000:.0f} ms  "
        f"{load['rps']:.1f} req/s"
    )
    ratio = batched["rps"] / unbatched["rps"]
    print(
        f"2) 16 clients: batched {batched['rps']:.1f} req/s, unbatched "
        f"{unbatched['rps']:.1f} req/s → {ratio:.2f}x (target ≥ 4x)"
    )
    print(
        f"3) overload (2 ongoing + 2 queued, 64 clients): {dict(over['statuses'])}, "
        f"5xx other than 503: {sum(v for k, v in over['statuses'].items() if k.split(':')[1] not in ('200', '503', '429'))}"
    )


if __name__ == "__main__":
    main()
