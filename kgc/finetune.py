"""Fine-tuning, the pure part: the config's own rules, the DeepSpeed config, the learning
rate schedule and the batch order (no torch, no Ray).

The batch order is a pure function of (seed, epoch, step), so a resumed run replays exactly
the steps after its checkpoint. The job itself: `kgc.runtime.train` (Ray Train driver and
worker loop), `kgc.modeling.training` (the torch side of a step), `kgc.checkpoint` (what a
checkpoint holds and which one a run resumes from).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from kgc.checkpoint import ADAPTER_CONFIG, resume_problem
from kgc.config import FinetuneConfig
from kgc.errors import KgcError, Problem
from kgc.prompting import read_sft_records


# ----------------------------------------------------------------------------- validation
def config_problems(cfg: FinetuneConfig) -> list[Problem]:
    """What the config gets wrong on its own terms (no model loaded): settings that do not
    go together, a run folder it cannot resume, data files that do not read."""
    probs = _combination_problems(cfg)
    broken = resume_problem(Path(cfg.run.storage_path).resolve() / cfg.run.name)
    if broken:
        probs.append(broken)
    for key in ("train_file", "val_file"):
        path = getattr(cfg.data, key)
        if path is None:
            continue
        try:
            read_sft_records(path)
        except KgcError as exc:
            probs.extend(Problem(f"data.{key}: {p}") for p in exc.problems)
    return probs


def _combination_problems(cfg: FinetuneConfig) -> list[Problem]:
    probs: list[Problem] = []
    m, d = cfg.method, cfg.distributed
    if m.type == "qlora" and cfg.model.quantization is None:
        probs.append(
            Problem(
                "method.type=qlora needs model.quantization (e.g. bits: 4, "
                "quant_type: nf4); or use method.type=lora"
            )
        )
    if cfg.train.precision == "bf16":
        mismatch = [
            what
            for what, bad in (
                (f"method.type={cfg.method.type} (bf16 is for lora)", cfg.method.type != "lora"),
                (f"model.dtype={cfg.model.dtype}", cfg.model.dtype != "fp32"),
                ("model.quantization", cfg.model.quantization is not None),
                ("distributed.strategy=deepspeed", cfg.distributed.strategy != "ddp"),
            )
            if bad
        ]
        if mismatch:
            probs.append(
                Problem(
                    f"train.precision=bf16 (bf16 frozen weights, fp32 LoRA) does not work with "
                    f"{', '.join(mismatch)}; use train.precision=auto or fp32"
                )
            )
    if cfg.train.shared_prefix:
        why = [
            (m.type in ("ptuning", "ptuning_v2"), f"method.type={m.type} (prompt learning)"),
            (d.strategy == "deepspeed", "distributed.strategy=deepspeed"),
            (cfg.data.packing, "data.packing=true"),
            (cfg.model.gradient_checkpointing, "model.gradient_checkpointing=true"),
        ]
        for bad, what in why:
            if bad:
                probs.append(
                    Problem(f"train.shared_prefix=true does not work with {what}; drop one of them")
                )
    if cfg.model.quantization is not None and m.type in ("full", "freeze"):
        probs.append(
            Problem(
                f"method.type={m.type} cannot train a quantised model; remove "
                "model.quantization or use method.type=qlora"
            )
        )
    if d.strategy == "deepspeed" and d.zero_stage == 3:
        if m.type == "freeze":
            probs.append(
                Problem(
                    "method.type=freeze with distributed.zero_stage=3: ZeRO-3 "
                    "partitions every parameter, so per-layer freezing is not "
                    "supported; use zero_stage: 2 or strategy: ddp"
                )
            )
        if cfg.model.quantization is not None:
            probs.append(
                Problem(
                    "model.quantization with ZeRO-3 is not supported (bitsandbytes "
                    "weights cannot be partitioned); use zero_stage: 2 or ddp"
                )
            )
    if m.adapter_path and not (Path(m.adapter_path) / ADAPTER_CONFIG).is_file():
        probs.append(
            Problem(
                f"method.adapter_path {m.adapter_path!r} has no "
                f"{ADAPTER_CONFIG}; point it at a saved peft adapter"
            )
        )
    if cfg.model.dtype == "fp16" and not d.use_gpu:
        probs.append(
            Problem(
                "model.dtype=fp16 needs a GPU (CPU kernels lack fp16 training); "
                "use fp32 or bf16 on CPU"
            )
        )
    return probs


# ----------------------------------------------------------------------------- schedule
def deepspeed_config(cfg: FinetuneConfig) -> dict:
    t, d = cfg.train, cfg.distributed
    zero: dict[str, Any] = {"stage": d.zero_stage}
    if d.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if d.offload_params and d.zero_stage == 3:
        zero["offload_param"] = {"device": "cpu"}
    if d.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    conf: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "gradient_clipping": t.max_grad_norm,
        "zero_optimization": zero,
        # torch's AdamW: DeepSpeed's fused/cpu Adam would JIT-compile for minutes
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": t.lr, "weight_decay": t.weight_decay, "torch_adam": True},
        },
        "zero_force_ds_cpu_optimizer": False,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.model.dtype == "bf16":
        conf["bf16"] = {"enabled": True}
    elif cfg.model.dtype == "fp16":
        conf["fp16"] = {"enabled": True}
    return conf


def lr_lambda(cfg: FinetuneConfig, total_steps: int):
    warm = int(cfg.train.warmup_ratio * total_steps)
    kind = cfg.train.scheduler

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return f


# ----------------------------------------------------------------------------- batch order
GROUP_WINDOW = 8  # length grouping: batches are cut from windows of 8 × (batch × workers) rows
_ORDER_CACHE: dict[str, object] = {}


def _epoch_order(n_rows: int, seed: int, epoch: int, window: int, lengths) -> list[int]:
    key = (n_rows, seed, epoch, window)
    # the cache holds the lengths object itself, so a new list is never mistaken for it
    if _ORDER_CACHE.get("key") != key or _ORDER_CACHE.get("lengths") is not lengths:
        order = list(range(n_rows))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        if lengths is not None:
            # similar lengths share a batch (less padding), while windows keep it random
            order = [
                i
                for w in range(0, n_rows, window)
                for i in sorted(order[w : w + window], key=lambda j: -lengths[j])
            ]
        _ORDER_CACHE.update(key=key, lengths=lengths, order=order)
    return _ORDER_CACHE["order"]  # type: ignore[return-value]


def batch_indices(
    n_rows: int, batch: int, rank: int, world: int, seed: int, micro: int, lengths=None
) -> list[int]:
    """Rows of the `micro`-th micro-batch of this rank: a pure function of its arguments, so
    a resumed run replays exactly the batches after its checkpoint."""
    per_epoch = max(1, n_rows // (batch * world))
    epoch, k = divmod(micro, per_epoch)
    order = _epoch_order(n_rows, seed, epoch, batch * world * GROUP_WINDOW, lengths)
    start = (k * world + rank) * batch
    rows = order[start : start + batch]
    return rows if len(rows) == batch else (rows + order)[:batch]


def total_steps(cfg: FinetuneConfig, n_rows: int) -> int:
    t, world = cfg.train, cfg.distributed.num_workers
    if t.max_steps:
        return t.max_steps
    micro_per_epoch = max(1, n_rows // (t.batch_size * world))
    return max(1, int(math.ceil(t.epochs * micro_per_epoch / t.grad_accum)))
