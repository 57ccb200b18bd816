"""Fine-tuning on Ray Train: one `TorchTrainer`, DDP or DeepSpeed ZeRO-2/3, checkpoints that
survive a lost worker, automatic resume of a run name.

    kgc train --config jobs/configs/ner_lora.yaml [key.sub=value ...]

Every `save_every` steps the workers write a checkpoint (trainable weights or adapter,
optimizer/scheduler/engine state, step, the resolved config and the chat format) and report
it to `RunConfig(storage_path)`. A failed worker restarts the group from the latest
checkpoint (`FailureConfig(max_failures)`); submitting the same `run.name` again resumes it.
The batch order is a pure function of (seed, epoch, step), so a resumed run replays exactly
the steps after its checkpoint.

Every rank that writes checkpoint files writes, after them, a manifest of their sizes and
sha256 (`kgc_manifest.json` on rank 0, which also lists the ranks whose manifests belong to
the checkpoint; `kgc_manifest.rank<N>.json` on the others). A checkpoint is used only when
every manifest is there and every file matches it, with no file added: a save cut short
(manifest or files missing, whatever order storage copied them in), a truncated
`trainer_state.pt` or a stale adapter copied in is skipped, with the reason printed, and the
run resumes from the newest intact checkpoint in the run folder (storage_path/name/
checkpoint_*). A run folder that holds checkpoints none of which is intact is an error (the
driver checks before any worker starts, `kgc train --check` too): delete the folder to start
over, or choose a new run.name. Checkpoints written before manifests existed count as broken.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from kgc.config import FinetuneConfig, dump_config
from kgc.errors import KgcError, Problem
from kgc.modeling.export import CHAT_FILE, CONFIG_FILE, WEIGHTS_DIR
from kgc.raytools import ensure_ray, forwarded_env

STATE_FILE = "trainer_state.pt"
DS_DIR = "deepspeed"
MANIFEST = "kgc_manifest.json"
MANIFEST_FORMAT = 1


# ----------------------------------------------------------------------------- validation
def validate(cfg: FinetuneConfig) -> list[Problem]:
    """Everything checkable before workers start: paths, data, methods, targets, strategy."""
    from kgc.prompting import read_sft_records

    probs: list[Problem] = []
    m, d = cfg.method, cfg.distributed
    try:  # a .gguf file or a prepared model's name → its HF folder, once, in the driver
        from kgc.modeling.loading import check_model_dir

        cfg.model.path = check_model_dir(cfg.model.path)
    except KgcError as e:
        probs.extend(e.problems)
    if m.type == "qlora" and cfg.model.quantization is None:
        probs.append(
            Problem(
                "method.type=qlora needs model.quantization (e.g. bits: 4, "
                "quant_type: nf4); or use method.type=lora"
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
    if m.adapter_path and not (Path(m.adapter_path) / "adapter_config.json").is_file():
        probs.append(
            Problem(
                f"method.adapter_path {m.adapter_path!r} has no "
                "adapter_config.json; point it at a saved peft adapter"
            )
        )
    if cfg.model.dtype == "fp16" and not d.use_gpu:
        probs.append(
            Problem(
                "model.dtype=fp16 needs a GPU (CPU kernels lack fp16 training); "
                "use fp32 or bf16 on CPU"
            )
        )
    run_dir = Path(cfg.run.storage_path).resolve() / cfg.run.name
    broken = resume_problem(run_dir)
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
    if probs:
        return probs
    # the model's own structure: LoRA targets, template
    from kgc.modeling.loading import load_tokenizer, meta_model, resolve_chat_format, resolve_family
    from kgc.modeling.tuning import resolve_lora_targets

    try:
        resolve_chat_format(cfg.model, load_tokenizer(cfg.model))
        if m.type in ("lora", "qlora") and not m.adapter_path:
            resolve_lora_targets(meta_model(cfg.model), m, resolve_family(cfg.model))
    except KgcError as exc:
        probs.extend(exc.problems)
    return probs


# ----------------------------------------------------------------------------- helpers
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


def _maybe_kill(step: int, rank: int) -> None:
    """Test hook: KGC_TEST_KILL_STEP=N kills this worker process (SIGKILL) once, at step N."""
    target = os.environ.get("KGC_TEST_KILL_STEP")
    marker = os.environ.get("KGC_TEST_KILL_MARKER")
    if not target or not marker or step != int(target):
        return
    if rank != int(os.environ.get("KGC_TEST_KILL_RANK", "0")) or os.path.exists(marker):
        return
    Path(marker).write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def _log_step(step: int, rank: int) -> None:
    path = os.environ.get("KGC_STEP_LOG")
    if path and rank == 0:
        with open(path, "a") as fh:
            fh.write(f"{step}\n")


# ----------------------------------------------------------------------------- worker
def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import torch

    from kgc.modeling.data import Encoder, as_rows, collate, pack, split_train_val
    from kgc.modeling.loading import load_model, load_tokenizer, resolve_chat_format, resolve_family
    from kgc.modeling.tuning import apply_method
    from kgc.prompting import read_sft_records

    cfg = FinetuneConfig.model_validate(loop_config["cfg"])
    os.environ.update(loop_config.get("env", {}))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed)
    if not cfg.distributed.use_gpu:
        # use exactly the CPUs Ray reserved for this worker (intra-op threads)
        torch.set_num_threads(max(1, math.ceil(cfg.distributed.cpus_per_worker)))
    print(f"[kgc] rank {rank}/{world} torch threads {torch.get_num_threads()}", flush=True)
    use_ds = cfg.distributed.strategy == "deepspeed"

    tok = load_tokenizer(cfg.model)
    chat = resolve_chat_format(cfg.model, tok)
    records = read_sft_records(cfg.data.train_file)
    val_records = read_sft_records(cfg.data.val_file) if cfg.data.val_file else []
    if not val_records:
        records, val_records = split_train_val(records, cfg.data.val_size, cfg.data.seed)
    enc = Encoder(tok, chat, cfg.data)
    examples = [enc.encode(r) for r in records]
    rows = pack(examples, cfg.data.cutoff_len) if cfg.data.packing else as_rows(examples)
    val_rows = as_rows([enc.encode(r) for r in val_records])
    steps = total_steps(cfg, len(rows))
    lengths = [len(r["input_ids"]) for r in rows]

    ds_keepalive = None
    if use_ds:
        import deepspeed

        _disable_shm_comm(deepspeed)
        ds_conf = deepspeed_config(cfg)
        if cfg.distributed.zero_stage == 3:
            # Load straight into ZeRO-3 partitions: no worker holds the full model twice.
            from transformers.integrations import HfDeepSpeedConfig

            ds_keepalive = HfDeepSpeedConfig(ds_conf)  # noqa: F841 (must stay alive)
    model = load_model(cfg.model)
    model = apply_method(
        model,
        cfg.method,
        resolve_family(cfg.model),
        quantized=cfg.model.quantization is not None,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    device = ray.train.torch.get_device()

    if use_ds:
        schedule = lr_lambda(cfg, steps)
        # DeepSpeed builds the scheduler on its inner optimizer, steps it at accumulation
        # boundaries and keeps its state in the engine checkpoint.
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model,
            model_parameters=trainable,
            config=ds_conf,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        )
        net = engine
        raw_model = engine.module
    else:
        # bitsandbytes weights already sit on their device (device_map); still wrap in DDP
        model = ray.train.torch.prepare_model(model, move_to_device=cfg.model.quantization is None)
        raw_model = model.module if hasattr(model, "module") else model
        optimizer = torch.optim.AdamW(
            trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
        net = model
        engine = None

    # parameters this worker holds (ZeRO-3 partitions: a fraction of the model per rank)
    local_params = sum(p.data.numel() for p in raw_model.parameters())
    start = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        d = _checkpoint_to_restore(ckpt, rank, world, device)
        if d is not None:
            start = _restore(d, raw_model, optimizer, scheduler, engine)

    pad = tok.pad_token_id
    trim = accepts_logits_to_keep(raw_model)
    micro = start * cfg.train.grad_accum
    last_loss = float("nan")
    tokens, busy = 0, 0.0  # real (non-pad) tokens trained on by this worker, step seconds
    for step in range(start, steps):
        t0 = time.perf_counter()
        net.train()
        losses = []
        for _ in range(cfg.train.grad_accum):
            idx = batch_indices(
                len(rows), cfg.train.batch_size, rank, world, cfg.train.seed, micro, lengths
            )
            micro += 1
            batch = {k: v.to(device) for k, v in collate([rows[i] for i in idx], pad).items()}
            tokens += sum(len(rows[i]["input_ids"]) for i in idx)
            loss = model_loss(net, raw_model, batch, trim, cfg.train.shared_prefix)
            if engine is not None:
                engine.backward(loss)
                engine.step()
            else:
                (loss / cfg.train.grad_accum).backward()
            losses.append(loss.item())
        if engine is None:
            if cfg.train.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.train.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        done = step + 1
        busy += time.perf_counter() - t0
        last_loss = sum(losses) / len(losses)
        _log_step(done, rank)
        _maybe_kill(done, rank)
        metrics = {
            "step": done,
            "loss": last_loss,
            "lr": scheduler.get_last_lr()[0],
            "tokens_per_s": tokens / busy if busy else 0.0,
            "local_params": local_params,
        }
        evaluate_now = cfg.train.eval_every and done % cfg.train.eval_every == 0
        if val_rows and (evaluate_now or done == steps):
            metrics["eval_loss"] = _eval_loss(
                net, val_rows, pad, device, rank, world, cfg.train.batch_size
            )
        if done % cfg.train.save_every == 0 or done == steps:
            _save_and_report(
                cfg, chat, tok, raw_model, optimizer, scheduler, engine, done, metrics, rank
            )
        elif done % cfg.train.log_every == 0:
            ray.train.report(metrics)


def accepts_logits_to_keep(model) -> bool:
    """Whether the (unwrapped) model's forward takes `logits_to_keep` (transformers' own
    causal LMs do; remote-code models may not)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def answer_logits_only(batch: dict, enabled: bool = True) -> dict:
    """The same loss with the LM head applied only from the first answer position on.

    Prompt positions carry no label, yet the head (vocab × hidden, a fifth of a small
    model's compute) would score every one of them. Rows are right-padded and batched by
    length, so the answers sit in the last columns: keep the logits from one position before
    the earliest label (it predicts that label) and cut the labels to match; transformers'
    causal-LM loss shifts them inside. Packed rows (labels scattered) are left as they are.
    """
    labels = batch.get("labels")
    if not enabled or labels is None or "position_ids" in batch:
        return batch
    width = labels.shape[1]
    cols = (labels != -100).any(0).nonzero()
    if len(cols) == 0:
        return batch
    keep = width - int(cols[0]) + 1
    if keep >= width:
        return batch
    return {**batch, "labels": labels[:, width - keep :], "logits_to_keep": keep}


MIN_SHARED_PREFIX = 16  # tokens; below this the extra prefill is not worth it


def shared_prefix_len(batch: dict) -> int:
    """Leading tokens every row of a (right-padded) batch shares and that hold no label
    (the prefix ends one position before the earliest label, which it must predict)."""
    ids, labels = batch["input_ids"], batch["labels"]
    if ids.shape[0] < 2 or "position_ids" in batch:
        return 0
    same = (ids == ids[:1]).all(0).long().cumprod(0)
    cols = (labels != -100).any(0).nonzero()
    n = min(int(same.sum()), int(cols[0]) - 1 if len(cols) else ids.shape[1] - 1)
    return n if n >= MIN_SHARED_PREFIX else 0


def model_loss(net, raw_model, batch: dict, trim: bool, shared_prefix: bool):
    """The batch's causal-LM loss; with `shared_prefix`, the common prefix is run once.

    The prefix goes through the unwrapped model (batch of 1, KV cache kept with its graph),
    the cache is repeated for every row, and the rows' own tokens go through `net` (DDP sees
    one forward) at positions after the prefix. Loss and gradients equal the plain forward's
    (tests); only the prefix's repeated work is gone.
    """
    n = shared_prefix_len(batch) if shared_prefix else 0
    if not n:
        return net(**answer_logits_only(batch, trim)).loss
    import torch

    ids = batch["input_ids"]
    rows, width = ids.shape
    cache = raw_model(input_ids=ids[:1, :n], use_cache=True).past_key_values
    cache.batch_repeat_interleave(rows)
    own = {"input_ids": ids[:, n:], "labels": batch["labels"][:, n:]}
    own = answer_logits_only(own, trim)
    positions = torch.arange(n, width, device=ids.device).unsqueeze(0).expand(rows, -1)
    return net(
        **own,
        attention_mask=batch["attention_mask"],
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    ).loss


def _disable_shm_comm(deepspeed) -> None:
    """Skip DeepSpeed's shared-memory all-reduce op on CPU: building it JIT-compiles C++ for
    about a minute at every process start, and gloo does the same job for training."""
    import torch

    if not torch.cuda.is_available():
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _eval_loss(net, rows, pad, device, rank, world, batch) -> float:
    import torch
    import torch.distributed as dist

    from kgc.modeling.data import collate

    net.eval()
    total = torch.zeros(2, device=device)
    mine = rows[rank::world]
    with torch.no_grad():
        for i in range(0, len(mine), batch):
            b = {k: v.to(device) for k, v in collate(mine[i : i + batch], pad).items()}
            n = int((b["labels"] != -100).sum())
            total += torch.tensor([net(**b).loss.item() * n, n], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    net.train()
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def _trainable_state(model) -> dict:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names}


def _save_and_report(cfg, chat, tok, model, optimizer, scheduler, engine, step, metrics, rank):
    import ray.train
    import torch

    with tempfile.TemporaryDirectory(prefix="kgc-ckpt-") as tmp:
        d = Path(tmp)
        if engine is not None:
            # every rank writes its ZeRO shards; Ray merges the ranks' files in one checkpoint
            engine.save_checkpoint(str(d / DS_DIR), tag="state", client_state={"step": step})
            _save_weights(cfg, model, d / WEIGHTS_DIR, rank, zero3=cfg.distributed.zero_stage == 3)
        elif rank == 0:
            _save_weights(cfg, model, d / WEIGHTS_DIR, rank, zero3=False)
            torch.save(
                {
                    "step": step,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                },
                d / STATE_FILE,
            )
        if rank == 0:
            tok.save_pretrained(d / WEIGHTS_DIR)
            (d / CONFIG_FILE).write_text(dump_config(cfg), encoding="utf-8")
            (d / CHAT_FILE).write_text(
                json.dumps(chat.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8"
            )
        has_files = any(d.iterdir())
        if has_files:  # last: it vouches for every file above
            world = ray.train.get_context().get_world_size()
            ranks = list(range(world)) if engine is not None else [0]  # who writes files
            write_manifest(d, step=step, rank=rank, ranks=ranks)
        ckpt = ray.train.Checkpoint.from_directory(tmp) if has_files else None
        ray.train.report(metrics, checkpoint=ckpt)


def _save_weights(cfg, model, out: Path, rank: int, zero3: bool) -> None:
    """Adapter via peft's save_pretrained; full/freeze: the trainable weights."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    ctx = None
    if zero3:
        import deepspeed

        ctx = deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        ctx.__enter__()
    try:
        if rank != 0:
            return
        if cfg.method.type in ("full", "freeze"):
            out.mkdir(parents=True, exist_ok=True)
            torch.save(_trainable_state(model), out / "trainable.pt")
        else:
            model.save_pretrained(out)
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)


def _unreadable(path: Path, exc: BaseException, what: str) -> KgcError:
    """A checkpoint file that cannot be used, named, with the fix (never a bare OSError)."""
    detail = " ".join(str(exc).split())[:200] or "no detail"
    return KgcError(
        Problem(
            f"cannot {what} ({type(exc).__name__}: {detail}); the file is truncated, "
            f"corrupt or from another run: delete its checkpoint folder ({path.parent}) to "
            "resume from the one before, or use a new run.name",
            str(path),
        )
    )


def _torch_load(path: Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # data, not code
    except Exception as exc:  # a cut file: OSError EINVAL, EOFError, RuntimeError (zip)
        raise _unreadable(path, exc, "read this checkpoint file") from exc


def _restore(d: Path, model, optimizer, scheduler, engine) -> int:
    if engine is not None:
        try:
            _, client = engine.load_checkpoint(str(d / DS_DIR), tag="state")
        except Exception as exc:
            raise _unreadable(d / DS_DIR, exc, "load the DeepSpeed state") from exc
        if not client or "step" not in client:
            raise _unreadable(
                d / DS_DIR, FileNotFoundError("no state/ tag"), "load the DeepSpeed state"
            )
        return int(client["step"])
    state = _torch_load(d / STATE_FILE)
    _load_weights(model, d / WEIGHTS_DIR)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return int(state["step"])
    except Exception as exc:  # another run's state: missing keys, parameter groups differ
        raise _unreadable(d / STATE_FILE, exc, "restore the optimizer/scheduler state") from exc


def _load_weights(model, wdir: Path) -> None:
    if (wdir / "trainable.pt").exists():
        state = _torch_load(wdir / "trainable.pt")
        try:
            model.load_state_dict(state, strict=False)
        except Exception as exc:
            raise _unreadable(wdir / "trainable.pt", exc, "load the trained weights") from exc
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = wdir / "adapter_model.safetensors"
    try:
        set_peft_model_state_dict(model, load_file(str(path)))
    except Exception as exc:
        raise _unreadable(path, exc, "load the adapter weights") from exc


# ----------------------------------------------------------------------------- manifests
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _is_manifest(rel: str) -> bool:
    return "/" not in rel and rel.startswith("kgc_manifest") and rel.endswith(".json")


def rank_manifest_name(rank: int) -> str:
    return MANIFEST if rank == 0 else f"kgc_manifest.rank{rank}.json"


def _files(d: Path) -> dict[str, Path]:
    """Regular files under d by their relative POSIX path; dotfiles (filesystem litter
    such as NFS's .nfs*) and the manifests themselves left out."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        hidden = any(part.startswith(".") for part in rel.split("/"))
        if p.is_file() and not hidden and not _is_manifest(rel):
            out[rel] = p
    return out


def write_manifest(d: Path, *, step: int, rank: int = 0, ranks: list[int] | None = None) -> Path:
    """Write this rank's manifest into checkpoint folder d, after all its other files:
    size and sha256 of each. Rank 0's also names the ranks whose manifests must be there."""
    body: dict[str, Any] = {"format": MANIFEST_FORMAT, "step": step, "rank": rank}
    if rank == 0:
        body["ranks"] = sorted(set(ranks or [0]) | {0})
    body["files"] = {
        rel: {"size": p.stat().st_size, "sha256": _sha256(p)} for rel, p in _files(d).items()
    }
    out = d / rank_manifest_name(rank)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
    os.replace(tmp, out)
    return out


def _read_manifest(path: Path) -> dict:
    body = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(body, dict) or not isinstance(body.get("files"), dict):
        raise ValueError("no `files` mapping")
    return body


def manifest_step(d: Path) -> int | None:
    try:
        return int(_read_manifest(d / MANIFEST)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def checkpoint_problem(d: Path, *, hashes: bool = True) -> str | None:
    """Why checkpoint folder d must not be used, or None when it is intact: every manifest
    present and of the same step, every file listed there with its size (and, with
    `hashes`, its sha256), no file that no manifest lists."""
    if not d.is_dir():
        return "the folder does not exist"
    if not (d / MANIFEST).is_file():
        return (
            f"no {MANIFEST}: its save did not finish (or a kgc without checkpoint manifests "
            "wrote it)"
        )
    try:
        main = _read_manifest(d / MANIFEST)
        manifests = [main]
        for r in main.get("ranks", [0]):
            if int(r) == 0:
                continue
            path = d / rank_manifest_name(int(r))
            if not path.is_file():
                return f"{path.name} is missing: rank {r}'s files did not all arrive"
            other = _read_manifest(path)
            if other.get("step") != main.get("step"):
                return (
                    f"{path.name} is from step {other.get('step')}, {MANIFEST} from step "
                    f"{main.get('step')}: files of two saves are mixed"
                )
            manifests.append(other)
        listed: dict[str, dict] = {}
        for m in manifests:
            for rel, info in m["files"].items():
                if rel.startswith("/") or ".." in rel.split("/"):
                    return f"the manifest names a path outside the checkpoint: {rel!r}"
                if rel in listed and listed[rel] != info:
                    return f"{rel} is listed twice with different contents"
                listed[rel] = {"size": int(info["size"]), "sha256": str(info["sha256"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its manifest is unreadable ({type(exc).__name__}: {exc})"
    present = _files(d)
    for rel, info in listed.items():
        if rel not in present:
            return f"{rel} is missing"
        size = present[rel].stat().st_size
        if size != info["size"]:
            return (
                f"{rel} has {size} bytes, the manifest says {info['size']} (truncated or replaced)"
            )
    extra = sorted(set(present) - set(listed))
    if extra:
        return f"{extra[0]} is not in the manifest (copied in after the save)"
    if hashes:
        for rel, info in listed.items():
            if _sha256(present[rel]) != info["sha256"]:
                return f"{rel} does not match its sha256 in the manifest (changed after the save)"
    return None


def _say(msg: str) -> None:
    print(f"[kgc] {msg}", flush=True)


def select_checkpoint(latest: Path | None, *, say=_say) -> Path | None:
    """The checkpoint to resume from: `latest` (Ray's) when intact, else the newest intact
    checkpoint_* beside it (its run folder), saying which and why; None (start at step 0)
    when there is no checkpoint at all. Raises KgcError when checkpoints exist but none is
    intact, naming each one's problem."""
    if latest is None:
        return None
    why = checkpoint_problem(latest)
    if why is None:
        return latest
    say(f"checkpoint {latest} is not used: {why}")
    run_dir = latest.parent
    others = [p for p in run_dir.glob("checkpoint_*") if p.is_dir() and p != latest]
    # newest first: by the step its manifest records, then by name (Ray's timestamp)
    others.sort(key=lambda p: (manifest_step(p) or -1, p.name), reverse=True)
    bad = [(latest, why)]
    for p in others:
        w = checkpoint_problem(p)
        if w is None:
            say(f"resuming from {p} (step {manifest_step(p)}), the newest intact checkpoint")
            return p
        say(f"checkpoint {p} is not used: {w}")
        bad.append((p, w))
    if not latest.exists() and not others:
        say(f"{latest} is gone and {run_dir} holds no other checkpoint: starting at step 0")
        return None
    raise KgcError(_none_intact(run_dir, bad))


def _none_intact(run_dir: Path, bad: list[tuple[Path, str]]) -> Problem:
    listed = "; ".join(f"{p.name}: {w}" for p, w in bad)
    return Problem(
        f"run.name={run_dir.name!r} would resume, but no checkpoint in {run_dir} is intact "
        f"({listed}); delete {run_dir} to start the run over, or set run.name to a new name",
    )


def resume_problem(run_dir: Path) -> Problem | None:
    """Driver-side check before any worker starts: a run folder that holds checkpoints of
    which none is intact (sizes only; workers also check sha256)."""
    ckpts = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
    if not ckpts:
        return None
    bad = []
    for p in ckpts:
        w = checkpoint_problem(p, hashes=False)
        if w is None:
            return None
        bad.append((p, w))
    return _none_intact(run_dir, bad)


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


# ----------------------------------------------------------------------------- driver
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
    run_config = ray.train.RunConfig(
        name=cfg.run.name,
        storage_path=str(Path(cfg.run.storage_path).resolve()),
        failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "env": forwarded_env()},
        scaling_config=scaling,
        run_config=run_config,
    )
    return trainer.fit()
