"""Before an actor pool starts: can one node of the cluster hold one actor?

Ray leaves a task or actor whose shape fits no node pending forever, and Ray Data's actor
pool waits with it, silently. `ensure_capacity` looks first: if an alive node can hold the
shape, it returns at once. If none can and no autoscaler runs (a local Ray, a fixed
cluster), the job fails at once, naming the config field, its value, the largest node and
the fix. If an autoscaler runs (`ray up ray_cluster.yaml`: the monitor writes its status
under the internal KV key `__autoscaling_status`), it is asked for the shape
(`ray.autoscaler.sdk.request_resources`) and the job waits for a node that fits: as long as
the autoscaler is launching something (up to `timeout_s`), else `grace_s`. The request is
always withdrawn afterwards (once the pool's first batch is back, or on failure), so idle
nodes can go.

`request_resources` replaces the cluster's whole standing request, so the requests of this
process are kept together (`Requests`): each pool adds its own shape, and the autoscaler is
always sent the union of those still live; withdrawing one leaves the others standing.
(Drivers in separate processes still replace each other's request: docs/cluster.md.)

The decisions are plain functions of what the cluster reports (`decide`, `autoscaler_state`,
`shortfall`), tested without a cluster; `ensure_capacity` reads Ray and applies them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kgc.errors import KgcError

# ray._private.ray_constants.DEBUG_AUTOSCALING_STATUS (the monitor's status, JSON)
AUTOSCALING_STATUS_KEY = "__autoscaling_status"
_EPS = 1e-9


def actor_shape(num_cpus: float, num_gpus: float | None = None, **resources: float) -> dict:
    """One actor's resource request as Ray's bundle: {"CPU": …, "GPU": …} (zeros left out)."""
    shape = {"CPU": float(num_cpus), "GPU": float(num_gpus or 0), **resources}
    return {k: float(v) for k, v in shape.items() if v}


def fits(shape: dict, total: dict) -> bool:
    """Whether a node with `total` resources can hold `shape` (when nothing else runs)."""
    return all(total.get(k, 0.0) + _EPS >= v for k, v in shape.items())


def largest(nodes: list[dict]) -> dict:
    """The biggest node's resources (by GPUs, then CPUs); {} for no node."""
    return max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})


def shortfall(shape: dict, nodes: list[dict]) -> list[str]:
    """The resources of `shape` that no node has enough of; every resource of the shape
    when each is there somewhere but never all together on one node."""
    short = [k for k, v in shape.items() if all(n.get(k, 0.0) + _EPS < v for n in nodes)]
    return short or list(shape)


@dataclass(frozen=True)
class Autoscaler:
    """What the autoscaler's status says. `running`: True (it can add nodes), False (no
    status, or only Ray's read-only stand-in that every plain `ray.init()` head runs, which
    never launches), None (a status kgc cannot read: waited on with the grace period).
    `launching`: a node launch is pending."""

    running: bool | None
    launching: bool = False


def autoscaler_state(status: Any, alive_node_ids: list[str]) -> Autoscaler:
    """Read the monitor's `__autoscaling_status` JSON (bytes, str, dict or None).

    A head started without `--autoscaling-config` still runs the monitor, with a read-only
    provider whose node types are named after the nodes (`node_<node id>`) and which has no
    worker types: that one cannot add nodes."""
    if status is None:
        return Autoscaler(running=False)
    try:
        data = json.loads(status) if isinstance(status, (bytes, str)) else dict(status)
        report = data.get("autoscaler_report")
    except (ValueError, TypeError, AttributeError):
        return Autoscaler(running=None)
    if not isinstance(report, dict):
        return Autoscaler(running=None)
    types = list((report.get("active_nodes") or {}).keys())
    types += [p[1] for p in report.get("pending_nodes") or [] if len(p) > 1]
    ids = set(alive_node_ids)
    if types and all(t.startswith("node_") and t[5:] in ids for t in types):
        return Autoscaler(running=False)
    launching = bool(report.get("pending_nodes")) or any(
        (report.get("pending_launches") or {}).values()
    )
    return Autoscaler(running=True, launching=launching)


def decide(
    shape: dict,
    nodes: list[dict],
    autoscaler: Autoscaler,
    *,
    waited_s: float,
    grace_s: float,
    timeout_s: float,
) -> str:
    """ "ready" (a node holds the shape), "wait" (the autoscaler may still add one) or "fail"."""
    if any(fits(shape, n) for n in nodes):
        return "ready"
    if autoscaler.running is False:
        return "fail"
    if autoscaler.launching:
        return "wait" if waited_s < timeout_s else "fail"
    return "wait" if waited_s < grace_s else "fail"


def _show(resources: dict) -> str:
    keep = {k: v for k, v in resources.items() if not k.startswith("node:")}
    if not keep:
        return "none"
    order = sorted(keep, key=lambda k: (k not in ("CPU", "GPU"), k != "CPU", k))
    return ", ".join(
        f"{k} {keep[k]:g}" for k in order if k not in ("memory", "object_store_memory")
    )


def capacity_error(
    shape: dict,
    nodes: list[dict],
    fields: dict[str, str],
    what: str,
    *,
    autoscaler: Autoscaler,
    waited_s: float,
) -> KgcError:
    """The error naming the config field(s) and value(s), the largest node and the fix."""
    short = shortfall(shape, nodes)
    named = ", ".join(f"{fields.get(k, k)}={shape[k]:g}" for k in short)
    big = largest(nodes)
    if autoscaler.running is False:
        why = "and no autoscaler is running to add one"
        fix = (
            "lower the value to what one node has, or run on a cluster whose nodes have it "
            "(RAY_ADDRESS, or `ray up ray_cluster.yaml` whose node types autoscale)"
        )
    else:
        why = (
            f"and the autoscaler started no node that fits within {waited_s:.0f} s (no node "
            "type of the cluster config has that much)"
        )
        fix = (
            "lower the value to what one node type has (available_node_types in the "
            "cluster config, e.g. ray_cluster.yaml), or add a node type that large"
        )
    return KgcError(
        f"{named}: no node of this Ray cluster can hold one {what} actor ({_show(shape)}); "
        f"the largest node has {_show(big)}, {why}. Fix: {fix}."
    )


class Requests:
    """The autoscaler requests of this process, one per waiting pool: `add` and `remove`
    send the union of those live (`request_resources(bundles=[...])`, [] when none is)."""

    def __init__(self):
        import itertools
        import threading

        self._live: dict[int, dict] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, shape: dict, send: Callable[..., Any]) -> Callable[[], None]:
        """Ask for `shape` on top of the others; returns its own `release` (idempotent)."""
        with self._lock:
            key = next(self._ids)
            self._live[key] = dict(shape)
            send(bundles=list(self._live.values()))

        def release() -> None:
            with self._lock:
                if self._live.pop(key, None) is not None:
                    send(bundles=list(self._live.values()))

        return release


REQUESTS = Requests()


# ----------------------------------------------------------------------------- on Ray
def _alive_nodes() -> tuple[list[dict], list[str]]:
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    return [dict(n.get("Resources") or {}) for n in alive], [n["NodeID"] for n in alive]


def _read_status() -> Any:
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    if not _internal_kv_initialized():
        return None
    return _internal_kv_get(AUTOSCALING_STATUS_KEY)


def ensure_capacity(
    shape: dict,
    fields: dict[str, str],
    *,
    what: str,
    grace_s: float = 60.0,
    timeout_s: float = 900.0,
    poll_s: float = 1.0,
) -> Callable[[], None]:
    """Return once an alive node can hold `shape`; raise KgcError when none can and none
    will (see the module's docstring). `fields` names the config field of each resource
    (e.g. {"GPU": "workers.gpus_per_actor"}); `what` names the actor in the message.

    Returns `release`: it withdraws the request made to the autoscaler (a no-op when none
    was made). Call it once the actors run (until then the new node is idle and could be
    taken away again), and in any case at the end."""
    nodes, ids = _alive_nodes()
    if any(fits(shape, n) for n in nodes):
        return lambda: None
    state = autoscaler_state(_read_status(), ids)
    if state.running is False:
        raise capacity_error(shape, nodes, fields, what, autoscaler=state, waited_s=0)
    from ray.autoscaler.sdk import request_resources

    print(
        f"[kgc] no node can hold one {what} actor ({_show(shape)}) yet; asked the autoscaler "
        f"for one, waiting (up to {grace_s:.0f} s unless a node is launching)",
        file=sys.stderr,
        flush=True,
    )
    start = time.monotonic()
    # withdrawn once the pool runs or fails: idle nodes may go again (other requests stay)
    release = REQUESTS.add(shape, request_resources)
    try:
        while True:
            waited = time.monotonic() - start
            nodes, ids = _alive_nodes()
            state = autoscaler_state(_read_status(), ids)
            verdict = decide(
                shape, nodes, state, waited_s=waited, grace_s=grace_s, timeout_s=timeout_s
            )
            if verdict == "ready":
                print(
                    f"[kgc] a node that holds one {what} actor joined after {waited:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
                return release
            if verdict == "fail":
                raise capacity_error(shape, nodes, fields, what, autoscaler=state, waited_s=waited)
            time.sleep(poll_s)
    except BaseException:
        release()
        raise
