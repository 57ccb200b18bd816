"""ICL client throughput against the replay server with simulated model latency (127.0.0.1).

Compares, in one run: serial vs concurrent requests (thread pool), uncached vs cached reruns
(the disk cache), and optionally the Ray Data back end. Prints ratios measured here; nothing
is asserted.

    .venv/bin/python bench/icl_throughput.py [--requests 64] [--latency 0.05] [--ray]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# the replay server is test tooling (tests/support/), not installed: import it from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per simulated answer")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--ray", action="store_true", help="also the Ray Data back end (2 actors)")
    args = ap.parse_args()

    from kgc.icl.client import ChatClient, ChatParams
    from kgc.icl.config import ClientConfig, IclConfig
    from kgc.icl.runner import Request
    from tests.support.replay import ReplayServer

    prompts = [[{"role": "user", "content": f"Text: document {i}"}] for i in range(args.requests)]
    params = ChatParams(max_tokens=32)
    results = {}
    with ReplayServer([], default='{"person": []}', latency_s=args.latency) as srv:

        def client(concurrency: int, cache: str | None) -> ChatClient:
            return ChatClient(
                ClientConfig(
                    base_url=srv.base_url,
                    model="replay",
                    allow_no_key=True,
                    concurrency=concurrency,
                    cache_dir=cache,
                )
            )

        client(1, None).chat(prompts[0], ChatParams(max_tokens=1))  # warm up the import
        for name, conc in (("serial", 1), ("concurrent", args.concurrency)):
            n0 = srv.count()
            t = time.perf_counter()
            client(conc, None).chat_many(prompts, params)
            results[name] = (time.perf_counter() - t, srv.count() - n0)
        with tempfile.TemporaryDirectory() as cache:
            c = client(args.concurrency, cache)
            c.chat_many(prompts, params)  # fills the cache
            n0 = srv.count()
            t = time.perf_counter()
            client(args.concurrency, cache).chat_many(prompts, params)
            results["cached"] = (time.perf_counter() - t, srv.count() - n0)
        if args.ray:
            from kgc.runtime.cluster import ensure_ray
            from kgc.runtime.icl import execute_ray

            ensure_ray()
            cfg = IclConfig.model_validate(
                {
                    "mode": "llmicl",
                    "client": {
                        "base_url": srv.base_url,
                        "model": "replay",
                        "allow_no_key": True,
                        "cache_dir": None,
                        "concurrency": args.concurrency // 2,
                    },
                    "runner": {"backend": "ray", "num_actors": 2, "batch_size": 16},
                }
            )
            reqs = [
                Request(str(i), [{"role": "user", "content": f"Ray document {i}"}], params)
                for i in range(args.requests)
            ]
            n0 = srv.count()
            t = time.perf_counter()
            execute_ray(cfg, reqs, False)
            results["ray_data_2_actors"] = (time.perf_counter() - t, srv.count() - n0)

    serial = results["serial"][0]
    print(
        f"{args.requests} requests, {args.latency * 1000:.0f} ms simulated latency, "
        f"concurrency {args.concurrency}"
    )
    for name, (secs, http) in results.items():
        print(
            f"  {name:18s} {secs:7.3f} s  {args.requests / secs:8.1f} req/s  "
            f"{http:4d} HTTP requests  x{serial / secs:6.1f} vs serial"
        )
    print(
        json.dumps(
            {
                "concurrent_vs_serial": serial / results["concurrent"][0],
                "cached_vs_uncached_concurrent": results["concurrent"][0] / results["cached"][0],
                "cached_http_requests": results["cached"][1],
            }
        )
    )


if __name__ == "__main__":
    main()
