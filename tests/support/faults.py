"""Fault injection for tests: kill a Ray Train worker at a step, kill an extraction actor
after N batches, hold every Ray Train worker before a step until the test releases it (to
take a node away at a known point), log the steps a run trained. Not part of kgc: the test session's Ray runs
`install` in every worker process it starts (Ray's `worker_process_setup_hook`, see
tests/conftest.py `local_ray`), and tests say what to do with `plan(...)`.

The plan is a JSON file named by KGC_FAULTS (set for the whole session, so every worker
sees it); workers read it at each step or batch, so a test can change it between runs.

    with faults.plan(kill_step=5, kill_rank=1, marker=tmp / "killed", step_log=tmp / "log"):
        run(cfg)
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path

ENV = "KGC_FAULTS"
TARGETS = ("kgc.runtime.train", "kgc.runtime.extract")


@contextlib.contextmanager
def plan(**faults):
    """Faults for the runs inside the block: kill_step + kill_rank (Ray Train), kill_after
    (extraction batches), marker (the file the one killed process writes: only one dies),
    step_log (rank 0 appends each finished step), hold_step + held_dir + release (every
    rank, before training step hold_step, writes held_dir/rank<r> with its node id, then
    waits until the file `release` exists)."""
    path = Path(os.environ[ENV])
    write_plan(path, **faults)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def write_plan(path, **faults) -> Path:
    """The plan file itself (for a Ray started elsewhere, whose workers get KGC_FAULTS=path
    from `runtime_env(path)`)."""
    path = Path(path)
    path.write_text(json.dumps({k: str(v) for k, v in faults.items()}))
    return path


def runtime_env(plan_path) -> dict:
    """The job runtime_env that arms the faults in every worker the job starts: the setup
    hook, KGC_FAULTS, and the checkout's root on PYTHONPATH (the hook runs before a worker
    takes the driver's sys.path, so `tests.support` must import from there)."""
    root = str(Path(__file__).resolve().parents[2])
    return {
        "worker_process_setup_hook": "tests.support.faults.install",
        "env_vars": {
            ENV: str(plan_path),
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        },
    }


def _plan() -> dict:
    try:
        return json.loads(Path(os.environ[ENV]).read_text())
    except (KeyError, OSError, ValueError):
        return {}


def _die_once(marker: str | None) -> None:
    """SIGKILL this process, unless another process already died for this plan."""
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def _hold(p: dict, rank: int, step: int) -> None:
    """Before training step `step`: if the plan holds there and the test has not released
    it, say where this rank runs (its Ray node id) and wait."""
    if p.get("hold_step") != str(step) or not p.get("release"):
        return
    release = Path(p["release"])
    if release.exists():
        return
    import time

    import ray

    held = Path(p["held_dir"]) / f"rank{rank}"
    held.write_text(ray.get_runtime_context().get_node_id())
    while not release.exists():
        time.sleep(0.2)


def _patch_train(mod) -> None:
    step = mod._step

    @functools.wraps(step)
    def faulty_step(cfg, data, state, me, i, *args, **kw):
        _hold(_plan(), me.rank, i + 1)
        metrics = step(cfg, data, state, me, i, *args, **kw)
        p, done = _plan(), i + 1
        if p.get("step_log") and me.rank == 0:
            with open(p["step_log"], "a") as fh:
                fh.write(f"{done}\n")
        if p.get("kill_step") == str(done) and p.get("kill_rank", "0") == str(me.rank):
            _die_once(p.get("marker"))
        return metrics

    mod._step = faulty_step


def _patch_extract(mod) -> None:
    call = mod.ExtractUDF.__call__

    @functools.wraps(call)
    def faulty_call(self, batch):
        out = call(self, batch)  # the batch's shard is written when this returns
        if _plan().get("kill_after") == str(self.batches):
            _die_once(_plan().get("marker"))
        return out

    mod.ExtractUDF.__call__ = faulty_call


PATCHES = {"kgc.runtime.train": _patch_train, "kgc.runtime.extract": _patch_extract}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches a target module right after it is first imported (workers import kgc only
    when a task needs it, so the hook costs nothing elsewhere)."""

    def find_spec(self, name, path=None, target=None):
        if name not in PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            PATCHES[name](module)

        spec.loader.exec_module = exec_and_patch
        return spec


def install() -> None:
    """Ray's worker_process_setup_hook: arm the patches in this worker process."""
    for name, patch in PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    if not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
