"""Connect to Ray, and the environment that must reach its workers (Ray is imported lazily)."""

from __future__ import annotations

import os

# Test hooks that must reach Ray workers, which do not inherit the driver's environment.
TEST_HOOKS = (
    "KGC_STEP_LOG",
    "KGC_TEST_KILL_STEP",
    "KGC_TEST_KILL_RANK",
    "KGC_TEST_KILL_MARKER",
    "KGC_TEST_KILL_ACTOR_AFTER",
)


def forwarded_env() -> dict:
    return {k: os.environ[k] for k in TEST_HOOKS if k in os.environ}


def ensure_ray(address: str | None = None) -> None:
    """Connect to `address`, or start an embedded local Ray bound to loopback only."""
    import ray

    if ray.is_initialized():
        return
    # inside `ray job submit` the job's driver finds its cluster in RAY_ADDRESS
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
