"""kgc on simulated Ray clusters (several raylets on this one machine, all on 127.0.0.1):
a training run, an extraction and a Serve app each lose a node mid-run and finish or
recover; the autoscaler, configured from our ray_cluster.yaml, starts a `gpu_1x` node for
an extraction that asks for a GPU and removes it when idle; a GPU count no node type has
fails clearly. What this shows and what it cannot: docs/cluster.md.

    .venv/bin/python -m pytest -m multinode -q -s

Each cluster has its own temp dir and is stopped through its own handles (and then by its
temp dir, never by process name); drivers run as child processes with RAY_ADDRESS, so the
test session's own Ray (`local_ray`) is left as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import IEPILE, ROOT, read_jsonl, write_jsonl

from tests.support import faults
from tests.support.cluster import (
    AutoscalingCluster,
    LocalCluster,
    driver_env,
    free_port,
    processes_under,
    wait_for,
)

pytestmark = pytest.mark.multinode
pytest.importorskip("ray")

TEXTS = [r["text"] for t in ("NER", "RE") for r in read_jsonl(IEPILE / t / "sample.json")]


def _driver(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A driver process (its own session, output to `log`) for a cluster."""
    fh = open(log, "w")  # noqa: SIM115 - closed with the process by _finish
    proc = subprocess.Popen(
        [sys.executable, *args], env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT
    )
    proc.log_file = fh  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.log_file.close()  # type: ignore[attr-defined]


def _extract_config(tmp_path: Path, model, n_docs: int, **workers) -> Path:
    src = write_jsonl(
        tmp_path / "corpus.jsonl",
        [{"id": f"d{i}", "text": TEXTS[i % len(TEXTS)]} for i in range(n_docs)],
    )
    cfg = {
        "input": {"path": str(src), "id_field": "id"},
        "task": "NER",
        "schema": str(IEPILE / "NER" / "schema.json"),
        "chunk": {"max_tokens": 96, "overlap": 16},
        "engine": {"type": "hf", "model": str(model), "batch_size": 8},
        "generation": {"max_new_tokens": 8},
        "workers": {"num_actors": 1, "cpus_per_actor": 0.5, "rows_per_call": 8, **workers},
        "output": {"path": str(tmp_path / "out"), "format": "jsonl"},
    }
    path = tmp_path / "extract.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _expected_ids(cfg_path: Path) -> list[str]:
    """Every row id the input makes (documents → chunks → schema splits), as kgc builds
    them before any actor runs."""
    from kgc.config import ExtractConfig, load_config
    from kgc.extract import input_rows
    from kgc.modeling.engines import offsets_fn

    cfg = load_config(str(cfg_path), [], schema=ExtractConfig)
    rows, _docs = input_rows(cfg, lambda: offsets_fn(cfg.engine))
    return [r["id"] for r in rows]


def _ids_once(out_dir: Path) -> Counter:
    from kgc.shards import read_rows

    return Counter(r["id"] for r in read_rows(out_dir))


def _json_line(log: str) -> dict:
    """The driver's one JSON line (stdout), among whatever else it logged (stderr)."""
    return json.loads(next(ln for ln in log.splitlines() if ln.startswith("{")))


def _kgc(*args: str) -> list[str]:
    return ["-m", "kgc", *args]


# ----------------------------------------------------------------------------- train
def _extract_now(cfg_path: Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    """`kgc extract` on this config with overrides, run to its end (output captured)."""
    return subprocess.run(
        [sys.executable, *_kgc("extract", "--config", str(cfg_path), "--quiet", *overrides)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _registered(run_dir: Path) -> list[int]:
    """The steps of the checkpoints Ray Train's controller has registered for a run."""
    try:
        snap = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):
        return []
    return [c["metrics"]["step"] for c in snap.get("checkpoint_results", [])]


@pytest.mark.timeout(480)
def test_train_resumes_after_losing_the_node_of_rank_1(tiny_llama, ner_train_file, tmp_path):
    """2 nodes × 1 worker, ZeRO-2. The head has no CPUs and each worker node one, so the
    two workers (1 CPU each) can only land one per worker node."""
    from kgc.config import load_config
    from kgc.trainlog import read_events

    cfg = load_config(
        None,
        [],
        data={
            "model": {"path": str(tiny_llama)},
            "data": {
                "train_file": str(ner_train_file),
                "max_source_length": 256,
                "cutoff_len": 384,
            },
            "train": {"max_steps": 4, "batch_size": 2, "save_every": 2, "log_every": 1},
            "distributed": {
                "num_workers": 2,
                "cpus_per_worker": 1,
                "strategy": "deepspeed",
                "zero_stage": 2,
            },
            # one folder both nodes see (one machine): checkpoints and metrics.jsonl
            "run": {"name": "mn", "storage_path": str(tmp_path / "runs"), "max_failures": 3},
        },
    )
    cfg_path = tmp_path / "train.json"
    cfg_path.write_text(json.dumps(cfg.model_dump(mode="json")))
    held, release, steps = tmp_path / "held", tmp_path / "release", tmp_path / "steps.log"
    run = tmp_path / "runs" / "mn"
    held.mkdir()
    plan = faults.write_plan(
        tmp_path / "plan.json", hold_step=3, held_dir=held, release=release, step_log=steps
    )
    with LocalCluster(head_cpus=0) as c:
        workers = [c.add_node(num_cpus=1), c.add_node(num_cpus=1)]
        proc = _driver(
            ["-m", "tests.support.drivers", "train", str(cfg_path), str(plan)],
            driver_env(c.address),
            tmp_path / "driver.log",
        )
        # both ranks stop before step 3, after writing and reporting the step-2 checkpoint;
        # the node goes once Ray Train's controller has registered it (its snapshot lists
        # it): a checkpoint reported but not yet collected by the controller when a worker
        # dies is not resumed from (Ray Train V2), the group would start at step 0
        wait_for(
            "both ranks at step 3 and the step-2 checkpoint registered",
            lambda: (
                ((held / "rank0").exists() and (held / "rank1").exists() and _registered(run))
                or proc.poll() is not None
            ),
            300,
        )
        assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        on = {r: (held / f"rank{r}").read_text() for r in (0, 1)}
        assert on[0] != on[1] and set(on.values()) == {w.node_id for w in workers}
        before = [int(x) for x in steps.read_text().split()]
        c.remove_node(c.node(on[1]))  # the machine of rank 1 is gone
        release.touch()
        c.add_node(num_cpus=1)  # a replacement joins
        rc = _finish(proc, 360)
    log = (tmp_path / "driver.log").read_text()
    assert rc == 0, log[-4000:]
    assert _json_line(log) == {"error": None, "step": 4}
    all_steps = [int(x) for x in steps.read_text().split()]
    starts = [e for e in read_events(run) if e.get("event") == "start"]
    print(
        f"\n[train] nodes of ranks 0/1: {on[0][:8]}…/{on[1][:8]}…; steps before the loss "
        f"{before}; run starts at steps {[e['step'] for e in starts]} (the second from "
        f"{Path(starts[-1]['checkpoint'] or '-').name}); rank 0's steps {all_steps}; "
        f"final step 4; processes killed by temp dir at close: {c.leftovers}"
    )
    assert before == [1, 2]
    # the group restarted from the step-2 checkpoint: steps 3 and 4, none before it again
    assert [e["step"] for e in starts] == [0, 2] and starts[-1]["checkpoint"]
    assert all_steps == [1, 2, 3, 4]
    assert processes_under(c.temp_dir) == []


# ----------------------------------------------------------------------------- extract
@pytest.mark.timeout(480)
def test_extract_completes_after_losing_a_node(tiny_llama, tmp_path):
    """3 nodes with 1 CPU each, 3 actors of 0.5 CPU (spread by Ray Data); a worker node
    holding an actor goes away once some shards are written."""
    cfg_path = _extract_config(tmp_path, tiny_llama, 400, num_actors=3)
    out = tmp_path / "out"
    with LocalCluster(head_cpus=1) as c:
        c.add_node(num_cpus=1)
        c.add_node(num_cpus=1)
        env = driver_env(c.address)
        # no autoscaler on this cluster: a GPU actor is refused at once, not left pending
        t0 = time.monotonic()
        gpu = _extract_now(cfg_path, env, "workers.gpus_per_actor=1")
        refused_in = time.monotonic() - t0
        assert gpu.returncode == 2, gpu.stderr[-3000:]
        assert "workers.gpus_per_actor=1: no node of this Ray cluster" in gpu.stderr
        assert "no autoscaler is running" in gpu.stderr
        proc = _driver(
            _kgc("extract", "--config", str(cfg_path), "--quiet"), env, tmp_path / "driver.log"
        )
        worker_ids = c.worker_ids()

        def actor_hosts() -> Counter:
            alive = [a for a in c.actors() if "MapWorker" in a["class"] and a["state"] == "ALIVE"]
            return Counter(a["node_id"] for a in alive)

        # some shards written, and an actor on a worker node (Ray Data spreads the actors,
        # but the head can hold two of them)
        hosts = wait_for(
            "3 shards and an actor on a worker node",
            lambda: (
                proc.poll() is not None
                or (
                    len(list((out / "rows").glob("part-*"))) >= 3
                    and set(hosts := actor_hosts()) & worker_ids
                    and hosts
                )
            ),
            300,
        )
        assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        victim = next(n for n in hosts if n in worker_ids)  # a worker node with an actor
        shards_before = len(list((out / "rows").glob("part-*")))
        c.remove_node(c.node(victim))
        assert proc.poll() is None, "the job ended before the node was removed"
        rc = _finish(proc, 400)
    log = (tmp_path / "driver.log").read_text()
    assert rc == 0, log[-4000:]
    summary = _json_line(log)
    counts = _ids_once(out)
    expected = _expected_ids(cfg_path)
    refusal = next(ln for ln in gpu.stderr.splitlines() if "no node of this" in ln)
    print(
        f"\n[extract] refused a GPU actor in {refused_in:.1f} s: {refusal}\n[extract] actors "
        f"per node before the loss {dict(Counter({k[:8]: v for k, v in hosts.items()}))}, "
        f"removed {victim[:8]}… with {hosts[victim]} actor(s) after {shards_before} shards; "
        f"input rows {len(expected)}, distinct ids written {len(counts)}, times each id is "
        f"written {dict(Counter(counts.values()))}; rows set aside as duplicates "
        f"{summary['rows_duplicate']}, corrupt shards {summary['shards_corrupt']}; processes "
        f"killed by temp dir at close: {c.leftovers}"
    )
    assert sorted(counts) == sorted(expected) and set(counts.values()) == {1}
    assert summary["rows"] == len(expected) and summary["documents"] == 400
    assert processes_under(c.temp_dir) == []


# ----------------------------------------------------------------------------- serve
def _load(url: str, stop: threading.Event, seen: list, i: int) -> None:
    """One client: /v1/extract requests back to back; (end time, status, Retry-After,
    body) each."""
    import httpx

    body = {"task": "NER", "schema": ["人物", "地点"], "text": TEXTS[i % len(TEXTS)][:60]}
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            try:
                r = client.post("/v1/extract", json=body)
                seen.append(
                    (time.monotonic(), r.status_code, r.headers.get("retry-after"), r.text[:200])
                )
            except httpx.HTTPError as exc:  # a dropped connection counts as a failure
                seen.append((time.monotonic(), 0, None, repr(exc)[:200]))
            if seen[-1][1] != 200:
                time.sleep(0.2)


@pytest.mark.timeout(420)
def test_serve_recovers_after_losing_a_replica_node(tiny_llama, tmp_path):
    """2 worker nodes with 1 CPU each, 2 model replicas + the ingress at 0.5 CPU each (the
    head has none: only Serve's controller and proxy, which ask for no CPU)."""
    window_s, after_s = 15.0, 8.0
    port = free_port()
    args = {
        "model": str(tiny_llama),
        "auth_disabled": True,
        "num_replicas": 2,
        "replica_cpus": 0.5,
        "max_new_tokens": 8,
        "retry_after_s": 1,
    }
    (tmp_path / "serve.json").write_text(json.dumps(args))
    with LocalCluster(head_cpus=0) as c:
        c.add_node(num_cpus=1)
        c.add_node(num_cpus=1)
        deploy = _driver(
            ["-m", "tests.support.drivers", "serve", str(tmp_path / "serve.json"), str(port)],
            driver_env(c.address),
            tmp_path / "deploy.log",
        )
        assert _finish(deploy, 240) == 0, (tmp_path / "deploy.log").read_text()[-3000:]
        alive = [a for a in c.actors() if a["state"] == "ALIVE"]
        models = Counter(a["node_id"] for a in alive if a["class"].endswith("ModelDeployment"))
        ingress = {a["node_id"] for a in alive if a["class"].endswith("Ingress")}
        assert sum(models.values()) == 2, alive
        # a node with a model replica and not the ingress (the ingress's node going away
        # is a different test: every request in it is lost)
        victim = next((n for n in models if n not in ingress), next(iter(models)))
        seen: list = []
        stop = threading.Event()
        clients = [
            threading.Thread(target=_load, args=(f"http://127.0.0.1:{port}", stop, seen, i))
            for i in range(4)
        ]
        for t in clients:
            t.start()
        try:
            wait_for("10 answers", lambda: sum(1 for s in seen if s[1] == 200) >= 10, 120)
            t_loss = time.monotonic()
            c.remove_node(c.node(victim))
            time.sleep(window_s + after_s)
        finally:
            stop.set()
            for t in clients:
                t.join(timeout=90)
        replicas_after = Counter(
            a["node_id"]
            for a in c.actors()
            if a["state"] == "ALIVE" and a["class"].endswith("ModelDeployment")
        )
    before = Counter(s[1] for s in seen if s[0] < t_loss)
    during = Counter(s[1] for s in seen if t_loss <= s[0] < t_loss + window_s)
    after = Counter(s[1] for s in seen if s[0] >= t_loss + window_s)
    bad = [s for s in seen if s[1] != 200]
    print(
        f"\n[serve] model replicas per node {dict(Counter({k[:8]: v for k, v in models.items()}))}"
        f", ingress on {[n[:8] for n in ingress]}, removed {victim[:8]}…; status codes of the responses that came before "
        f"the loss {dict(before)}, in the {window_s:.0f} s after it {dict(during)}, after that "
        f"{dict(after)}; model replicas alive at the end {sum(replicas_after.values())}; "
        f"first non-200s {[(round(s[0] - t_loss, 1), s[1], s[2], s[3][:80]) for s in bad[:3]]}"
        f"; processes killed by temp dir at close: {c.leftovers}"
    )
    assert before and set(before) == {200}
    # during the window: answers, or 503 with Retry-After; never another 5xx or a dropped
    # connection
    assert set(during) <= {200, 503}, bad[:5]
    assert all(s[2] for s in seen if s[1] == 503), "a 503 without Retry-After"
    assert after[200] >= 10 and set(after) == {200}, bad[-5:]
    assert processes_under(c.temp_dir) == []


# ----------------------------------------------------------------------------- autoscaling
def _nodes_in(status: str, section: str) -> str:
    """One section of `ray status`'s node list ("Active:", "Pending:")."""
    rest = status.split(section, 1)[1] if section in status else ""
    return rest.split(":\n", 1)[0]  # up to the next heading


def _event_lines(log: str) -> list[str]:
    keep = ("Adding", "Removing", "Resized to", "Terminating", "No available node types")
    return [ln for ln in log.splitlines() if any(k in ln for k in keep)]


@pytest.mark.timeout(480)
def test_autoscaler_from_our_cluster_config(tiny_llama, tmp_path):
    """The node types of ray_cluster.yaml on Ray's fake multi-node provider: a GPU
    extraction makes the autoscaler add a gpu_1x node, which goes when idle; 16 GPUs per
    actor (no node type has them) fail clearly instead of waiting forever."""
    import torch

    cluster = AutoscalingCluster(ROOT / "ray_cluster.yaml", idle_timeout_s=6)
    types = cluster.config["available_node_types"]
    src = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())["available_node_types"]
    for name in ("gpu_1x", "gpu_8x"):  # names, bounds and shapes kept; CPUs scaled to 1
        want = {k: v for k, v in src[name]["resources"].items() if k != "CPU"}
        assert {k: v for k, v in types[name]["resources"].items() if k in want} == want
        assert types[name]["resources"]["CPU"] == 1
        assert (types[name]["min_workers"], types[name]["max_workers"]) == (
            src[name]["min_workers"],
            src[name]["max_workers"],
        )
    cfg_path = _extract_config(tmp_path, tiny_llama, 24)
    with cluster:
        env = driver_env(cluster.address)
        # a shape no node type has: refused after the grace period, the request withdrawn
        t0 = time.monotonic()
        big = _extract_now(cfg_path, env, "workers.gpus_per_actor=16", "workers.scale_up_grace_s=5")
        refused_in = time.monotonic() - t0
        assert big.returncode == 2, big.stderr[-3000:]
        error = next((ln for ln in big.stderr.splitlines() if "no node of this" in ln), "")
        assert error.startswith("workers.gpus_per_actor=16: no node of this Ray"), big.stderr
        assert "the autoscaler started no node that fits within" in error
        # one GPU per actor: the autoscaler adds a gpu_1x node and the job runs there
        proc = _driver(
            _kgc("extract", "--config", str(cfg_path), "--quiet", "workers.gpus_per_actor=1"),
            env,
            tmp_path / "driver.log",
        )
        gpu_node = wait_for(
            "a GPU node",
            lambda: next((n for n in cluster.nodes() if n["resources"].get("GPU")), None),
            180,
        )

        def active_status() -> str | None:
            st = cluster.status()
            return st if "gpu_1x" in _nodes_in(st, "Active:") else None

        status_up = wait_for("ray status to list gpu_1x as active", active_status, 60, every=1)
        raylets = [
            " ".join(p.cmdline())
            for p in processes_under(cluster.temp_dir)
            if p.name() == "raylet" and gpu_node["node_id"] in " ".join(p.cmdline())
        ]
        rc = _finish(proc, 300)
        log = (tmp_path / "driver.log").read_text()
        assert rc == 0, log[-4000:]
        summary = _json_line(log)
        # the node goes once idle (idle_timeout 6 s), the job's request withdrawn
        wait_for(
            "the GPU node to go",
            lambda: not any(n["resources"].get("GPU") for n in cluster.nodes()),
            150,
            every=1,
        )
        status_down = cluster.status()
        events = _event_lines(cluster.monitor_log())
    print(f"\n[autoscaler] refused 16 GPUs per actor in {refused_in:.0f} s: {error}")
    print("[autoscaler] kgc driver lines:\n  " + "\n  ".join(
        ln for ln in log.splitlines() if ln.startswith("[kgc")))  # fmt: skip
    print("[autoscaler] monitor events:\n  " + "\n  ".join(events))
    print(f"[autoscaler] ray status with the gpu_1x node:\n{status_up}")
    print(f"[autoscaler] ray status after the idle timeout:\n{status_down}")
    print(f"[autoscaler] stopped by its temp dir: {len(cluster.leftovers)} processes")
    assert summary["rows"] > 0 and summary["rows_this_run"] == summary["rows"]
    assert gpu_node["resources"].get("accelerator_type:A10G") == 1  # a gpu_1x, not a gpu_8x
    # the fake node's raylet runs on 127.0.0.1 and under our temp dir (so stop() finds it)
    assert raylets and "--node_ip_address=127.0.0.1" in raylets[0]
    assert any("Adding 1 node(s) of type gpu_1x" in e for e in events), events
    assert any("Removing 1 nodes of type gpu_1x (idle)" in e for e in events), events
    assert "gpu_1x" in _nodes_in(status_up, "Active:")
    assert "gpu_1x" not in _nodes_in(status_down, "Active:") + _nodes_in(status_down, "Pending:")
    assert "[kgc] a node that holds one extraction actor joined" in log
    if not torch.cuda.is_available():
        line = "workers.gpus_per_actor=1 but CUDA is not available on this node: running on CPU"
        assert log.count(line) == 1, log[-3000:]
    assert processes_under(cluster.temp_dir) == []
