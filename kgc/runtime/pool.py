"""The one Ray Data actor pool: rows → batches on a fixed pool of actors → the driver, which
fails loudly when no batch comes back for too long.

Extraction (`kgc.runtime.extract`) and ICL (`kgc.runtime.icl`) both run through `run_pool`.
The graph build does not: its map and reduce steps are stateless Ray tasks with retries
(`kgc.runtime.graph`), nothing is loaded once per worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kgc.errors import KgcError


def run_pool(
    items: list[dict],
    udf: type,
    *,
    args: tuple,
    actors: int,
    batch_size: int,
    blocks: int,
    num_cpus: float,
    num_gpus: float | None = None,
    env: dict[str, str] | None = None,
    on_batch: Callable[[Any], None],
    stall_s: float,
    what: str,
    advice: str,
    fields: dict[str, str] | None = None,
    scale_up_grace_s: float = 60.0,
    heartbeat: Callable[[], object] | None = None,
) -> None:
    """Map `items` through `actors` instances of `udf` and hand each finished batch (a pandas
    DataFrame of the UDF's output columns) to `on_batch`, in the driver.

    Each actor is built once, `udf(*args)`, then called on batches of `batch_size` rows (the
    input is split in `blocks` blocks). `env`: variables the actors get (workers do not
    inherit the driver's environment). If no batch finishes and `heartbeat()` (the actors'
    sign of progress inside a batch, e.g. a file's mtime) does not change for `stall_s`
    seconds, the run fails with `Stalled`: "`what` stalled: …" followed by `advice`. The
    command line (`kgc.cli.main`), which ends with that error, then silences the abandoned
    pipeline (`quiet_abandoned_pipeline`): nothing prints after it. A library caller keeps
    its process's logging as it was.

    Before the pool starts, some node must be able to hold one actor (kgc.runtime.capacity:
    at once, or once the autoscaler adds one within `scale_up_grace_s`, longer while a node
    is launching, up to `stall_s`); else a KgcError names the config field of the resource
    that no node has (`fields`: {"CPU": "workers.cpus_per_actor", "GPU": …})."""
    import ray
    import ray.data

    from kgc.logs import settle_loggers
    from kgc.runtime.capacity import actor_shape, ensure_capacity

    release: Callable[[], None] = lambda: None  # noqa: E731 - replaced once asked
    try:  # whatever fails after the autoscaler was asked, the request is withdrawn
        release = ensure_capacity(
            actor_shape(num_cpus, num_gpus),
            fields or {"CPU": "num_cpus", "GPU": "num_gpus"},
            what=what,
            grace_s=scale_up_grace_s,
            timeout_s=stall_s,
        )

        settle_loggers()  # Ray Data set its loggers' levels on import (docs/console.md)
        ray.data.DataContext.get_current().enable_progress_bars = False  # the caller reports
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        ds = ds.map_batches(
            udf,
            fn_constructor_args=args,
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=num_cpus,
            num_gpus=num_gpus or None,
            runtime_env={"env_vars": env} if env else None,
        )

        def first_then(batch) -> None:
            release()  # the actors run: the autoscaler request (if any) has done its job
            on_batch(batch)

        drain(
            ds.iter_batches(batch_size=None, batch_format="pandas"),
            first_then,
            total=len(items),
            stall_s=stall_s,
            what=what,
            advice=advice,
            heartbeat=heartbeat,
        )
    finally:
        release()


def drain(
    batches: Iterable,
    on_batch: Callable[[Any], None],
    *,
    total: int,
    stall_s: float,
    what: str,
    advice: str,
    heartbeat: Callable[[], object] | None = None,
) -> None:
    """Pull `batches` (on a thread) into `on_batch`; raise `Stalled` if for `stall_s`
    seconds no batch finishes and `heartbeat()` (when given: any value the workers change
    as they make progress inside a batch) stays the same, or re-raise what the iteration or
    `on_batch` raised.

    A hung actor never fails by itself (Ray Data waits for it forever), so the driver has to
    be the one that gives up. The thread is a daemon: once the driver raises, the process is
    free to exit with the pipeline still blocked."""
    state: dict[str, Any] = {"last": time.time(), "error": None, "finished": False, "rows": 0}
    seen = [heartbeat() if heartbeat is not None else None]

    def worker():
        try:
            for batch in batches:
                on_batch(batch)
                state["rows"] += len(batch)
                state["last"] = time.time()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the driver thread
            state["error"] = exc
        finally:
            state["finished"] = True

    th = threading.Thread(target=worker, daemon=True)
    th.start()
    while not state["finished"]:
        th.join(timeout=min(1.0, stall_s))
        if heartbeat is not None:
            now = heartbeat()
            if now != seen[0]:  # compared, not read as a time: node clocks may differ
                seen[0], state["last"] = now, time.time()
        if not state["finished"] and time.time() - state["last"] > stall_s:
            tokens = " and no token was generated" if heartbeat is not None else ""
            raise Stalled(
                f"{what} stalled: no batch finished{tokens} in {stall_s:.0f} s "
                f"({state['rows']}/{total} rows done). {advice}"
            )
    if state["error"] is not None:
        raise state["error"]


class Stalled(KgcError):
    """The pool made no progress for its stall time (`drain`)."""


def quiet_abandoned_pipeline() -> None:
    """After a stall the driver exits with Ray Data's pipeline still running: its threads
    and Ray's shutdown at exit would print tracebacks of the abandoned work after kgc's own
    error line. Silence them: Ray's loggers, exceptions ending other threads, and (at exit,
    before Ray's own exit handler runs: handlers run last registered first) stderr."""
    import atexit
    import logging
    import os

    names = [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]
    for name in ["ray", *names]:
        log = logging.getLogger(name)
        log.setLevel(logging.CRITICAL + 1)
        log.propagate = False
        log.disabled = True
    main = threading.main_thread()
    previous = threading.excepthook

    def hook(args) -> None:
        if threading.current_thread() is main:
            previous(args)

    threading.excepthook = hook

    def mute() -> None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
        except OSError:
            pass

    atexit.register(mute)
