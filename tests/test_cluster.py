"""Cluster side: ray_cluster.yaml against Ray's autoscaler schema and our rules, the runtime
env, and real `ray job submit` runs against a head started with `ray start` on 127.0.0.1."""

from __future__ import annotations

import contextlib
import copy
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import IEPILE, read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def cluster_cfg() -> dict:
    return yaml.safe_load((ROOT / "ray_cluster.yaml").read_text(encoding="utf-8"))


def check_cluster(cfg: dict) -> None:
    """Ray's own validation (JSON schema + its consistency checks) and kgc's rules."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head node must not have GPUs"
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    assert workers, "no worker node types"
    for name, t in workers.items():
        assert t["resources"].get("GPU", 0) >= 1, f"{name}: worker types are GPU nodes"
        assert 0 <= t["min_workers"] <= t["max_workers"], f"{name}: min/max workers"
    setup = " ".join(cfg["setup_commands"])
    assert "torch==2.13.0" in setup and "pip install" in setup and ".[train" in setup
    import ray

    major_minor = ".".join(ray.__version__.split(".")[:2])
    assert f"ray:{major_minor}" in cfg["docker"]["image"], "image's Ray = the pinned Ray"
    assert "." in cfg["file_mounts"].values(), "the repository is mounted on the nodes"


def test_ray_cluster_yaml_is_valid():
    check_cluster(cluster_cfg())


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda c: c["available_node_types"]["gpu_1x"]["resources"].update(GPU="one"), "integer"),
        (lambda c: c.pop("provider"), "provider"),
        (lambda c: c.update(head_node_type="nope"), "head_node_type"),
        (lambda c: c["available_node_types"]["gpu_1x"].update(min_workers=99), "max_workers"),
        (lambda c: c["available_node_types"]["head"]["resources"].update(GPU=1), "GPUs"),
        (lambda c: c["available_node_types"]["gpu_8x"]["resources"].update(GPU=0), "GPU nodes"),
        (lambda c: c.update(setup_commands=["pip install torch"]), "torch"),
        (lambda c: c["available_node_types"]["gpu_1x"].update(bogus=1), "bogus"),
    ],
)
def test_broken_cluster_yaml_is_caught(mutate, error):
    cfg = cluster_cfg()
    mutate(cfg)
    with pytest.raises(Exception, match=error):
        check_cluster(cfg)


def test_runtime_env_leaves_heavy_folders_behind():
    sys.path.insert(0, str(ROOT))
    from cluster.submit import runtime_env

    env = runtime_env([])
    assert env["working_dir"] == str(ROOT)
    assert {".venv/", ".git/", "out/", "runs/"} <= set(env["excludes"])
    os.environ["KGC_TEST_FORWARD"] = "x"
    assert runtime_env(["KGC_TEST_FORWARD"])["env_vars"]["KGC_TEST_FORWARD"] == "x"
    with pytest.raises(SystemExit, match="not set"):
        runtime_env(["KGC_TEST_SURELY_UNSET"])


def test_submit_names_only_jobs_that_exist():
    sys.path.insert(0, str(ROOT))
    from cluster.submit import JOBS, check_job

    assert {"finetune", "extract", "icl", "build_graph", "evaluate"} <= set(JOBS)
    for name in JOBS:  # every job it offers is a module `python -m jobs.<name>` runs
        assert (ROOT / "jobs" / f"{name}.py").is_file(), name
        check_job(f"jobs.{name}", [])
    for bad in ("jobs.pipeline", "jobs.__init__", "extract", "jobs.nope"):
        with pytest.raises(SystemExit, match="unknown job"):
            check_job(bad, [])
    # the documented submit lines name existing jobs and configs
    docs = (ROOT / "cluster" / "README.md").read_text(encoding="utf-8")
    lines = re.findall(r"python -m cluster\.submit .*?(jobs\.\w+) --config (\S+)", docs)
    assert len(lines) >= 3
    for job, cfg in lines:
        check_job(job, ["--config", cfg])
    # and every job in jobs/README.md's table is one
    table = re.findall(r"^\| `(\w+)` \|", (ROOT / "jobs" / "README.md").read_text("utf-8"), re.M)
    assert table and set(table) <= set(JOBS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_processes(root_pid: int | None, temp_dir: str) -> list:
    """The processes of the head that `ray start --head --block --temp-dir=temp_dir` (pid
    root_pid) runs: that process and its descendants (workers rename themselves ray::…, so
    they are found by parentage), plus any process whose command line names temp_dir (its
    session lives there). Nothing else: another Ray on the host has another temp dir."""
    import psutil

    found: dict[int, psutil.Process] = {}
    if root_pid is not None:
        try:
            root = psutil.Process(root_pid)
            found[root.pid] = root
            found.update((c.pid, c) for c in root.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    exact = {f"--temp-dir={temp_dir}", f"--temp_dir={temp_dir}"}
    inside = temp_dir.rstrip("/") + "/"
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        if any(a in exact or inside in a for a in args):
            found.setdefault(proc.pid, proc)
    return list(found.values())


def stop_head(proc: subprocess.Popen, temp_dir, grace_s: float = 3) -> list[int]:
    """Stop only the head this test started (never `ray stop`, which stops every Ray on
    the host, a user's own cluster included): SIGTERM its processes, SIGKILL what is left
    after grace_s (gcs_server and `ray start` itself linger on SIGTERM for 30 s and more;
    the old teardown was `ray stop --force`, all SIGKILL). Returns the pids it stopped."""
    import psutil

    members = head_processes(proc.pid if proc.poll() is None else None, str(temp_dir))
    for p in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()  # psutil checks the pid still is that process (no reuse)
    _, alive = psutil.wait_procs(members, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=10)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    return [p.pid for p in members]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """`ray start --head --block` on loopback (its own ports, temp dir and process group;
    auth off for local use), run as a child of this test; stopped after by stop_head, which
    touches no other Ray on the host."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PATH=f"{BIN}:{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    tmp = tmp_path_factory.mktemp("ray-head")
    dash = _free_port()
    ports = {
        "--port": _free_port(),
        "--dashboard-port": dash,
        "--ray-client-server-port": _free_port(),
        "--dashboard-agent-listen-port": _free_port(),
        "--dashboard-agent-grpc-port": _free_port(),
        "--metrics-export-port": _free_port(),
        "--runtime-env-agent-port": _free_port(),
    }
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1"]
    cmd += ["--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2"]
    cmd += [f"--temp-dir={tmp}", "--disable-usage-stats", "--block"]
    cmd += [f"{k}={v}" for k, v in ports.items()]
    log = tmp / "ray-start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    address = f"http://127.0.0.1:{dash}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + 240
        while True:  # `ray start --block` never returns: wait for its job server
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield {"address": address, "env": env}
    finally:
        stop_head(proc, tmp)


def _wait(address: str, job_id: str, timeout: float = 420) -> str:
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            return status.value + "\n" + client.get_job_logs(job_id)[-3000:]
        time.sleep(1)
    client.stop_job(job_id)
    return "TIMEOUT\n" + client.get_job_logs(job_id)[-3000:]


@pytest.mark.timeout(600)
def test_ray_job_submit_extract(head, tiny_llama, tmp_path):
    """`ray job submit --working-dir . -- python -m jobs.extract --config …` on a real head:
    SUCCEEDED, and every row is written once."""
    from kgc.shards import read_rows

    docs = [
        {"id": f"d{i}", "text": r["text"]}
        for i, r in enumerate(read_jsonl(IEPILE / "NER" / "sample.json"))
    ]
    src = write_jsonl(tmp_path / "corpus.jsonl", docs)
    out = tmp_path / "out"
    cfg = {
        "input": {"path": str(src), "id_field": "id"},
        "task": "NER",
        "schema": str(IEPILE / "NER" / "schema.json"),
        "split_num": 6,
        "engine": {"type": "hf", "model": str(tiny_llama), "batch_size": 8},
        "generation": {"max_new_tokens": 4},
        "workers": {"num_actors": 1, "cpus_per_actor": 0.5},
        "output": {"path": str(out), "format": "jsonl"},
    }
    cfg_file = tmp_path / "extract.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    submit = [str(BIN / "ray"), "job", "submit", "--address", head["address"], "--no-wait"]
    submit += ["--working-dir", ".", "--runtime-env", "cluster/runtime_env.yaml", "--"]
    submit += ["python", "-m", "jobs.extract", "--config", str(cfg_file), "--quiet"]
    r = subprocess.run(
        submit, cwd=ROOT, env=head["env"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    printed = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout + r.stderr)  # the CLI colours its output
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", printed).group(0)
    result = _wait(head["address"], job_id)
    assert result.startswith("SUCCEEDED"), result
    rows = read_rows(out)
    assert len(rows) == len(docs)  # one chunk and one schema split per short document
    assert sorted(r["doc_id"] for r in rows) == sorted(d["id"] for d in docs)
    assert len({r["id"] for r in rows}) == len(rows)


@pytest.mark.timeout(300)
def test_submit_helper_runs_the_evaluate_job(head, tmp_path):
    report = tmp_path / "ner.json"
    cmd = [sys.executable, "-m", "cluster.submit", "--address", head["address"], "--timeout", "240"]
    cmd += ["jobs.evaluate", "--config", "jobs/configs/eval_ner.yaml", f"report={report}"]
    r = subprocess.run(cmd, cwd=ROOT, env=head["env"], capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCEEDED" in r.stdout and "entity" in r.stdout
    assert '"f1": 0.5714' in report.read_text(encoding="utf-8")
    bad = subprocess.run(
        [sys.executable, "-m", "cluster.submit", "--address", head["address"], "jobs.nope"],
        cwd=ROOT, env=head["env"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode != 0 and "unknown job" in bad.stderr
