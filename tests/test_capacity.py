"""The pre-flight check before an actor pool starts (kgc.runtime.capacity), without a
cluster: what fits, what the autoscaler's status says, when to wait and when to fail, and
the error's text. On real (simulated) clusters: tests/test_multinode.py."""

from __future__ import annotations

import json

import pytest

from kgc.errors import KgcError
from kgc.runtime import capacity
from kgc.runtime.capacity import (
    Autoscaler,
    actor_shape,
    autoscaler_state,
    capacity_error,
    decide,
    fits,
    shortfall,
)

HEAD = {"CPU": 8.0, "memory": 1e9, "node:127.0.0.1": 1.0, "node:__internal_head__": 1.0}
GPU1 = {"CPU": 8.0, "GPU": 1.0, "accelerator_type:A10G": 1.0}
FIELDS = {"CPU": "workers.cpus_per_actor", "GPU": "workers.gpus_per_actor"}


def test_shapes_and_fits():
    assert actor_shape(0.5, 0) == {"CPU": 0.5}
    assert actor_shape(0.5, None) == {"CPU": 0.5}
    assert actor_shape(1, 2) == {"CPU": 1.0, "GPU": 2.0}
    assert fits({"CPU": 0.5}, HEAD) and not fits({"CPU": 0.5, "GPU": 1}, HEAD)
    assert fits({"CPU": 8, "GPU": 1}, GPU1) and not fits({"CPU": 9}, GPU1)
    # the GPU is short everywhere; CPU is there (named alone)
    assert shortfall({"CPU": 1, "GPU": 16}, [HEAD, GPU1]) == ["GPU"]
    # each is there somewhere, never both on one node: both named
    assert shortfall({"CPU": 8, "GPU": 1}, [HEAD, {"CPU": 2, "GPU": 1}]) == ["CPU", "GPU"]


def _status(active: dict, pending_launches: dict | None = None, pending_nodes=()) -> bytes:
    report = {
        "active_nodes": active,
        "idle_nodes": {},
        "pending_nodes": list(pending_nodes),
        "pending_launches": pending_launches or {},
        "failed_nodes": [],
    }
    return json.dumps({"time": 0, "autoscaler_report": report}).encode()


def test_autoscaler_state_from_the_monitor_status():
    ids = ["aa11", "bb22"]
    assert autoscaler_state(None, ids) == Autoscaler(running=False)  # no monitor status
    # a plain `ray.init()` head: the read-only stand-in, types named after the nodes
    assert autoscaler_state(_status({"node_aa11": 1, "node_bb22": 1}), ids).running is False
    # `ray up ray_cluster.yaml`: named node types
    up = autoscaler_state(_status({"ray.head.default": 1}), ids)
    assert up == Autoscaler(running=True, launching=False)
    launching = autoscaler_state(_status({"head": 1}, {"gpu_1x": 1}), ids)
    assert launching == Autoscaler(running=True, launching=True)
    pending = _status({"head": 1}, {}, [["ip", "gpu_1x", "setting-up"]])
    assert autoscaler_state(pending, ids).launching
    # a status kgc cannot read: neither yes nor no (waited on with the grace period)
    assert autoscaler_state(b"not json", ids).running is None
    assert autoscaler_state(json.dumps({"time": 0}), ids).running is None


@pytest.mark.parametrize(
    "nodes, scaler, waited, expected",
    [
        ([HEAD, GPU1], Autoscaler(False), 0, "ready"),  # a node fits: go, whatever else
        ([HEAD], Autoscaler(False), 0, "fail"),  # nothing fits, nothing will come: at once
        ([HEAD], Autoscaler(True), 5, "wait"),  # asked, inside the grace period
        ([HEAD], Autoscaler(True), 31, "fail"),  # nothing launched within the grace period
        ([HEAD], Autoscaler(True, launching=True), 31, "wait"),  # launching: wait longer
        ([HEAD], Autoscaler(True, launching=True), 601, "fail"),  # ... up to the timeout
        ([HEAD], Autoscaler(None), 5, "wait"),  # unknown status: the grace period too
        ([HEAD], Autoscaler(None), 31, "fail"),
    ],
)
def test_decide(nodes, scaler, waited, expected):
    shape = {"CPU": 1.0, "GPU": 1.0}
    verdict = decide(shape, nodes, scaler, waited_s=waited, grace_s=30, timeout_s=600)
    assert verdict == expected


def test_errors_name_field_value_largest_node_and_fix():
    shape = {"CPU": 0.5, "GPU": 16.0}
    none = str(
        capacity_error(
            shape, [HEAD], FIELDS, "extraction", autoscaler=Autoscaler(False), waited_s=0
        )
    )
    assert none.startswith("workers.gpus_per_actor=16: no node of this Ray cluster can hold one "
                           "extraction actor (CPU 0.5, GPU 16)")  # fmt: skip
    assert "the largest node has CPU 8, and no autoscaler is running" in none
    assert "Fix: lower the value" in none and "node:" not in none and "memory" not in none
    late = str(capacity_error(shape, [HEAD, GPU1], FIELDS, "extraction", autoscaler=Autoscaler(True), waited_s=8.2))  # fmt: skip
    assert "the largest node has CPU 8, GPU 1, accelerator_type:A10G 1" in late
    assert "the autoscaler started no node that fits within 8 s" in late
    assert "available_node_types" in late


def test_ensure_capacity_without_a_cluster(monkeypatch):
    """The driver side with Ray's calls stubbed: a fitting node returns at once without
    asking the autoscaler; no autoscaler fails at once; an autoscaler is asked, waited for
    and always told to forget the request."""
    asked: list = []
    nodes = {"now": [HEAD]}
    status = {"now": None}
    monkeypatch.setattr(capacity, "_alive_nodes", lambda: (nodes["now"], ["aa11"]))
    monkeypatch.setattr(capacity, "_read_status", lambda: status["now"])
    import ray.autoscaler.sdk

    monkeypatch.setattr(
        ray.autoscaler.sdk, "request_resources", lambda bundles: asked.append(bundles)
    )
    release = capacity.ensure_capacity({"CPU": 1.0}, FIELDS, what="extraction")
    release()
    assert asked == []  # fits: nothing asked
    with pytest.raises(KgcError, match="no autoscaler is running"):
        capacity.ensure_capacity({"GPU": 1.0}, FIELDS, what="extraction")
    assert asked == []
    status["now"] = _status({"head": 1})
    with pytest.raises(KgcError, match="started no node that fits within 0 s"):
        capacity.ensure_capacity({"GPU": 1.0}, FIELDS, what="x", grace_s=0.05, poll_s=0.01)
    assert asked == [[{"GPU": 1.0}], []]  # asked, then withdrawn
    asked.clear()
    calls = {"n": 0}

    def arriving():
        calls["n"] += 1
        return ([HEAD, GPU1] if calls["n"] > 3 else [HEAD]), ["aa11"]

    monkeypatch.setattr(capacity, "_alive_nodes", arriving)
    release = capacity.ensure_capacity({"GPU": 1.0}, FIELDS, what="x", grace_s=5, poll_s=0.01)
    assert asked == [[{"GPU": 1.0}]]  # still asked while the pool starts
    release()
    release()
    assert asked == [[{"GPU": 1.0}], []]  # withdrawn once


def test_requests_of_two_pools_do_not_cancel_each_other(monkeypatch):
    """`request_resources` replaces the cluster's whole request: each pool's release must
    leave the other pools' requests standing (the union of the live ones is sent)."""
    asked: list = []
    monkeypatch.setattr(capacity, "REQUESTS", capacity.Requests())
    monkeypatch.setattr(capacity, "_alive_nodes", lambda: ([HEAD], ["aa11"]))
    monkeypatch.setattr(capacity, "_read_status", lambda: _status({"head": 1}))
    import ray.autoscaler.sdk

    monkeypatch.setattr(
        ray.autoscaler.sdk, "request_resources", lambda bundles: asked.append(bundles)
    )
    with pytest.raises(KgcError):  # job A asks for a GPU node that never comes...
        capacity.ensure_capacity({"GPU": 1.0}, FIELDS, what="a", grace_s=0.05, poll_s=0.01)
    assert asked == [[{"GPU": 1.0}], []]
    asked.clear()
    gpu, big = {"GPU": 1.0}, {"CPU": 32.0}
    release_a = capacity.REQUESTS.add(gpu, ray.autoscaler.sdk.request_resources)
    release_b = capacity.REQUESTS.add(big, ray.autoscaler.sdk.request_resources)
    assert asked == [[gpu], [gpu, big]]
    release_a()
    release_a()  # idempotent
    assert asked[-1] == [big]  # B's request stands
    release_b()
    assert asked[-1] == [] and len(asked) == 4


def test_a_failure_after_the_request_still_withdraws_it(monkeypatch):
    """An exception between `ensure_capacity` and the pool's drain (building the dataset)
    must not leave the autoscaler request behind."""
    import ray.data

    from kgc.runtime import pool

    released = []
    monkeypatch.setattr(capacity, "ensure_capacity", lambda *a, **k: lambda: released.append(1))

    def boom(*a, **k):
        raise RuntimeError("from_items failed")

    monkeypatch.setattr(ray.data, "from_items", boom)
    with pytest.raises(RuntimeError, match="from_items failed"):
        pool.run_pool(
            [{"x": 1}],
            object,
            args=(),
            actors=1,
            batch_size=1,
            blocks=1,
            num_cpus=1,
            on_batch=lambda b: None,
            stall_s=5,
            what="test",
            advice="",
        )
    assert released == [1]
