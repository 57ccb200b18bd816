"""Driver processes for the simulated multi-node tests (tests/test_multinode.py): each
connects to the cluster in RAY_ADDRESS, so the test process's own Ray stays as it was.

    python -m tests.support.drivers train CONFIG.json PLAN.json    # Ray Train, faults armed
    python -m tests.support.drivers serve ARGS.json PORT           # deploy, then exit

`train` prints one JSON line: {"error", "step"}. `serve` deploys the kgc app (proxy on the
head only: every simulated node has the same IP, so one proxy per node would fight over
the port) and returns once it is running; Serve keeps it after the driver exits.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def train(config_path: str, plan_path: str) -> int:
    import ray

    from kgc.config import FinetuneConfig
    from kgc.runtime.train import run
    from tests.support import faults

    ray.init(
        address=os.environ["RAY_ADDRESS"],
        log_to_driver=False,
        runtime_env=faults.runtime_env(plan_path),
    )
    cfg = FinetuneConfig.model_validate(json.loads(Path(config_path).read_text()))
    result = run(cfg)
    step = (result.metrics or {}).get("step")
    print(json.dumps({"error": str(result.error) if result.error else None, "step": step}))
    return 0 if result.error is None else 1


def serve(args_path: str, port: str) -> int:
    import ray
    from ray import serve as ray_serve

    from serve.app import build_app

    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    ray_serve.start(
        proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": int(port)}
    )
    ray_serve.run(build_app(json.loads(Path(args_path).read_text())), name="kgc", route_prefix="/")
    print("deployed", flush=True)
    return 0


if __name__ == "__main__":
    verb, *rest = sys.argv[1:]
    sys.exit({"train": train, "serve": serve}[verb](*rest))
