"""Connect to Ray (imported lazily)."""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None) -> None:
    """Connect to `address`, or start an embedded local Ray bound to loopback only."""
    import ray

    if ray.is_initialized():
        return
    # inside `ray job submit` the job's driver finds its cluster in RAY_ADDRESS
    address = address or os.environ.get("RAY_ADDRESS")
    from kgc.logs import ray_logging_level

    level = ray_logging_level()
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=level)
    else:
        ray.init(
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
            logging_level=level,
        )


def follow_driver_cwd(cwd: str | None) -> None:
    """In a worker: work in the driver's folder when it exists on this node, so the relative
    paths of a config (resolved against the config's folder, relative to the driver's
    working directory) name the same files. On a cluster whose workers run in an uploaded
    working_dir, a folder of the driver's machine usually does not exist there and the
    worker stays where Ray started it."""
    if cwd and os.path.isdir(cwd) and os.getcwd() != cwd:
        os.chdir(cwd)
