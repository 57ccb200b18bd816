"""Fine-tuning on Ray Train: one `TorchTrainer`, DDP or DeepSpeed ZeRO-2/3, checkpoints that
survive a lost worker, automatic resume of a run name.

    kgc train --config jobs/configs/ner_lora.yaml [key.sub=value ...]

Every `save_every` steps the workers write a checkpoint (trainable weights or adapter,
optimizer/scheduler/engine state, step, the resolved config and the chat format; layout and
manifests: kgc.checkpoint) and report it to `RunConfig(storage_path)`. A failed worker
restarts the group from the latest intact checkpoint (`FailureConfig(max_failures)`);
submitting the same `run.name` again resumes it. The batch order is a pure function of
(seed, epoch, step) (kgc.finetune), so a resumed run replays exactly the steps after its
checkpoint. The torch side of each step: kgc.modeling.training.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgc.checkpoint import select_checkpoint
from kgc.config import FinetuneConfig
from kgc.errors import KgcError
from kgc.finetune import total_steps
from kgc.modeling.training import (
    TrainData,
    TrainState,
    ddp_state,
    deepspeed_state,
    eval_metrics,
    load_train_data,
    load_tuned_model,
    resolve_precision,
    restore,
    train_step,
    validate,
    write_checkpoint,
)
from kgc.runtime.cluster import ensure_ray, follow_driver_cwd
from kgc.trainlog import (
    Follower,
    Progress,
    append_event,
    read_events,
    write_loss_png,
    write_tensorboard,
)

# ----------------------------------------------------------------------------- driver
# glibc's malloc at its defaults hands every freed activation back to the kernel: a thread's
# arena (Train V2 runs the loop in a thread) can hold at most 64 MiB, so bigger tensors (the
# logits) are mmap'd and unmapped each step, and the main heap is trimmed past 128 KiB free.
# Each step then page-faults its activations in again: ~100k faults and a third of a second
# of kernel time per step of the demo, and a first step 3x slower. One arena that keeps up to
# 1 GiB freed and serves blocks up to 1 GiB from the heap removes that (bench/train_throughput.py).
GLIBC_MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
}


def allocator_env(environ=os.environ) -> dict[str, str]:
    """GLIBC_MALLOC_ENV for the train workers, where the C library is glibc (the variables are
    read at process start, so they travel in the workers' runtime env); any the operator set
    are left to theirs."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return {}
    return {k: v for k, v in GLIBC_MALLOC_ENV.items() if k not in environ}


def run(cfg: FinetuneConfig, *, ray_address: str | None = None):
    """Validate, then run (or resume) the Ray Train job; returns the ray.train.Result."""
    probs = validate(cfg)
    if probs:
        raise KgcError(probs)
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    ensure_ray(ray_address)
    d = cfg.distributed
    resources = {"CPU": d.cpus_per_worker}
    scaling = ray.train.ScalingConfig(
        num_workers=d.num_workers, use_gpu=d.use_gpu, resources_per_worker=resources
    )
    storage = Path(cfg.run.storage_path).resolve()
    run_dir = storage / cfg.run.name
    run_config = ray.train.RunConfig(
        name=cfg.run.name,
        storage_path=str(storage),
        failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
        worker_runtime_env={"env_vars": env} if (env := allocator_env()) else None,
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg.model_dump(mode="json"),
            "run_dir": str(run_dir),
            "cwd": os.getcwd(),
        },
        scaling_config=scaling,
        run_config=run_config,
    )
    # rank 0 logs to <run>/metrics.jsonl; the driver prints each event as it lands
    with Follower(run_dir, Progress(cfg.run.name)):
        result = trainer.fit()
    report_files(run_dir)
    return result


def report_files(run_dir: Path) -> dict:
    """The loss curve and TensorBoard events from the run's metrics log, and where they are
    (said on the console)."""
    events = read_events(run_dir)
    files = {"metrics": run_dir / "metrics.jsonl"}
    png, tb = write_loss_png(run_dir, events), write_tensorboard(run_dir, events)
    if png:
        files["loss_png"] = png
    if tb:
        files["tensorboard"] = tb
    print(f"[kgc train] metrics: {files['metrics']}", file=sys.stderr)
    if png:
        print(f"[kgc train] loss curve: {png}", file=sys.stderr)
    if tb:
        print(f"[kgc train] TensorBoard: tensorboard --logdir {tb}", file=sys.stderr)
    return files


# ----------------------------------------------------------------------------- worker
@dataclass
class _Worker:
    rank: int
    world: int
    device: Any
    tokens: int = 0  # real (non-pad) tokens this worker trained on
    busy: float = 0.0  # seconds spent in training steps
    run_dir: str | None = None  # where rank 0 keeps the metrics log

    def tokens_per_s(self) -> float:
        return self.tokens / self.busy if self.busy else 0.0

    def log(self, event: dict) -> None:
        """Rank 0: an event into the run's metrics.jsonl (kgc.trainlog)."""
        if self.rank == 0 and self.run_dir:
            append_event(self.run_dir, event)


def train_loop_per_worker(loop_config: dict) -> None:
    """One Ray Train worker: set up, resume, then train step by step, evaluating and
    checkpointing (or only reporting) as the config says."""
    follow_driver_cwd(loop_config.get("cwd"))
    cfg = FinetuneConfig.model_validate(loop_config["cfg"])
    me = _start_worker(cfg)
    me.run_dir = loop_config.get("run_dir")
    data = load_train_data(cfg)
    steps = total_steps(cfg, len(data.rows))
    state = _build(cfg, steps)
    start, ckpt = _resume(state, me)
    precision, why = resolve_precision(cfg)
    me.log(
        {
            "event": "start",
            "step": start,
            "total_steps": steps,
            "checkpoint": ckpt,
            "precision": precision,
            "precision_why": why,
            "malloc": {k: os.environ[k] for k in GLIBC_MALLOC_ENV if k in os.environ},
        }
    )
    for step in range(start, steps):
        metrics = _step(cfg, data, state, me, step)
        _evaluate_and_report(cfg, data, state, me, metrics, steps)


def _start_worker(cfg: FinetuneConfig) -> _Worker:
    import ray.train
    import ray.train.torch
    import torch

    ctx = ray.train.get_context()
    me = _Worker(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())
    torch.manual_seed(cfg.train.seed)
    if not cfg.distributed.use_gpu:
        # use exactly the CPUs Ray reserved for this worker (intra-op threads)
        torch.set_num_threads(max(1, math.ceil(cfg.distributed.cpus_per_worker)))
    print(f"[kgc] rank {me.rank}/{me.world} torch threads {torch.get_num_threads()}", flush=True)
    return me


def _build(cfg: FinetuneConfig, steps: int) -> TrainState:
    """The tuned model with its optimizer and schedule: in a DeepSpeed engine, or wrapped
    for DDP by Ray."""
    if cfg.distributed.strategy == "deepspeed":
        return deepspeed_state(cfg, steps)
    import ray.train.torch

    model = load_tuned_model(cfg)
    # bitsandbytes weights already sit on their device (device_map); still wrap in DDP
    net = ray.train.torch.prepare_model(model, move_to_device=cfg.model.quantization is None)
    return ddp_state(cfg, net, steps)


def _resume(state: TrainState, me: _Worker) -> tuple[int, str | None]:
    """The step to start at and the checkpoint restored: (0, None), or the restored
    checkpoint's step and folder."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    d = _checkpoint_to_restore(ckpt, me.rank, me.world, me.device) if ckpt else None
    if d is None:
        return 0, None
    return restore(d, state.model, state.optimizer, state.scheduler, state.engine), str(d)


def _step(cfg: FinetuneConfig, data: TrainData, state: TrainState, me: _Worker, step: int):
    """Optimizer step `step` (0-based); its metrics."""
    t0 = time.perf_counter()
    loss = train_step(cfg, state, _micro_batches(cfg, data, me, step))
    me.busy += time.perf_counter() - t0
    return {
        "step": step + 1,
        "loss": loss,
        "lr": state.scheduler.get_last_lr()[0],
        "tokens_per_s": me.tokens_per_s(),
        "local_params": state.local_params,
    }


def _micro_batches(cfg: FinetuneConfig, data: TrainData, me: _Worker, step: int) -> Iterator:
    """This rank's micro-batches of step `step`, counting their tokens as they are drawn."""
    first = step * cfg.train.grad_accum
    for micro in range(first, first + cfg.train.grad_accum):
        batch, tokens = data.micro_batch(cfg, micro, me.rank, me.world, me.device)
        me.tokens += tokens
        yield batch


def _evaluate_and_report(cfg, data: TrainData, state: TrainState, me: _Worker, metrics, steps):
    """Evaluation loss when due (and at the end); then a checkpoint when due (and at the
    end), or just the metrics every log_every steps."""
    import ray.train

    done, t = metrics["step"], cfg.train
    if data.val_rows and ((t.eval_every and done % t.eval_every == 0) or done == steps):
        metrics |= eval_metrics(
            state.net,
            data.val_rows,
            data.pad,
            me.device,
            me.rank,
            me.world,
            t.batch_size,
            state.precision,
        )
    if done % t.save_every == 0 or done == steps:
        _save_and_report(cfg, data, state, me, done, metrics)
        me.log({**metrics, "checkpoint": True})
    elif done % t.log_every == 0:
        ray.train.report(metrics)
        me.log(metrics)


def _save_and_report(cfg, data: TrainData, state: TrainState, me: _Worker, step: int, metrics):
    import ray.train

    with tempfile.TemporaryDirectory(prefix="kgc-ckpt-") as tmp:
        wrote = write_checkpoint(Path(tmp), cfg, data, state, step, me.rank, me.world)
        ckpt = ray.train.Checkpoint.from_directory(tmp) if wrote else None
        ray.train.report(metrics, checkpoint=ckpt)


def _checkpoint_to_restore(ckpt, rank: int, world: int, device) -> Path | None:
    """Rank 0 picks the checkpoint (select_checkpoint) and every rank uses its choice, so
    the ranks never resume from different steps; its error reaches every rank."""
    import pyarrow.fs

    choice: dict[str, Any] = {"path": None, "error": None}
    if rank == 0:
        try:
            if not isinstance(ckpt.filesystem, pyarrow.fs.LocalFileSystem):
                raise KgcError(
                    f"checkpoint {ckpt.path}: only a local (or mounted) run.storage_path is "
                    "supported for resuming; point run.storage_path at a shared folder"
                )
            chosen = select_checkpoint(Path(ckpt.path))
            choice["path"] = str(chosen) if chosen else None
        except KgcError as exc:
            choice["error"] = str(exc)
    if world > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            box = [choice]
            dist.broadcast_object_list(box, src=0, device=device)
            choice = box[0]
    if choice["error"]:
        raise KgcError(choice["error"])
    return Path(choice["path"]) if choice["path"] else None
