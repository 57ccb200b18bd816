"""Submit a kgc job to a Ray cluster with the repository as its working directory.

    python -m cluster.submit [--address http://127.0.0.1:8265] [--gpus N] [--cpus N]
        [--env NAME ...] [--no-wait] jobs.<name> --config jobs/configs/<file>.yaml [k=v ...]

It does what `ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml
--entrypoint-num-gpus N -- python -m jobs.<name> …` does, plus: checks that the job module
and config exist before uploading, forwards the named environment variables (API keys) from
your shell without writing them anywhere, and (unless --no-wait) follows the logs and exits
with the job's status (0 SUCCEEDED, 1 otherwise).

The address defaults to $RAY_ADDRESS or the local dashboard at http://127.0.0.1:8265
(`ray dashboard ray_cluster.yaml` forwards a cloud cluster's dashboard there).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def job_names() -> tuple[str, ...]:
    """The jobs that exist: the modules jobs/<name>.py (`python -m jobs.<name>`)."""
    return tuple(sorted(p.stem for p in (ROOT / "jobs").glob("*.py") if not p.stem.startswith("_")))


JOBS = job_names()


def runtime_env(env_names: list[str]) -> dict:
    env = yaml.safe_load((ROOT / "cluster" / "runtime_env.yaml").read_text(encoding="utf-8"))
    env["working_dir"] = str(ROOT)
    missing = [n for n in env_names if n not in os.environ]
    if missing:
        raise SystemExit(f"--env {' '.join(missing)}: not set in this shell")
    env.setdefault("env_vars", {}).update({n: os.environ[n] for n in env_names})
    return env


def check_job(module: str, rest: list[str]) -> None:
    name = module.removeprefix("jobs.")
    if not module.startswith("jobs.") or name not in JOBS:
        raise SystemExit(f"unknown job {module!r}; choose one of jobs.{', jobs.'.join(JOBS)}")
    if "--config" in rest:
        i = rest.index("--config")
        cfg = rest[i + 1] if i + 1 < len(rest) else ""
        if not (ROOT / cfg).is_file() and not Path(cfg).is_file():
            raise SystemExit(f"--config {cfg!r} does not exist (paths are relative to {ROOT})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"))
    ap.add_argument("--gpus", type=float, default=0, help="GPUs reserved for the job's driver")
    ap.add_argument("--cpus", type=float, default=None, help="CPUs reserved for the driver")
    ap.add_argument("--env", action="append", default=[], help="forward this variable")
    ap.add_argument("--no-wait", action="store_true", help="print the job id and return")
    ap.add_argument("--python", default="python", help="interpreter on the cluster's nodes")
    ap.add_argument("--timeout", type=float, default=None, help="give up waiting after (s)")
    ap.add_argument("job", help="jobs.<name>")
    args, rest = ap.parse_known_args(argv)
    check_job(args.job, rest)

    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(args.address)
    entry = " ".join([args.python, "-m", args.job, *rest])
    job_id = client.submit_job(
        entrypoint=entry,
        runtime_env=runtime_env(args.env),
        entrypoint_num_gpus=args.gpus or None,
        entrypoint_num_cpus=args.cpus,
    )
    print(f"submitted {job_id}: {entry}", flush=True)
    if args.no_wait:
        return 0
    start, shown = time.monotonic(), 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        print(logs[shown:], end="", flush=True)
        shown = len(logs)
        if status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            print(f"job {job_id}: {status.value}", flush=True)
            return 0 if status == JobStatus.SUCCEEDED else 1
        if args.timeout and time.monotonic() - start > args.timeout:
            print(f"job {job_id}: still {status.value} after {args.timeout}s; stopping it")
            client.stop_job(job_id)
            return 1
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
