"""The torch side of fine-tuning, without Ray: checks against the model, the data as rows,
the model with its optimizer/scheduler (or DeepSpeed engine), one optimizer step (answer
logits only, a shared prompt prefix run once), the evaluation loss, and a checkpoint's
files written and read back (their names: kgc.checkpoint).

`kgc.runtime.train` runs these on Ray Train workers; nothing here knows about Ray.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgc.checkpoint import (
    ADAPTER_WEIGHTS,
    CHAT_FILE,
    CONFIG_FILE,
    DS_DIR,
    DS_TAG,
    STATE_FILE,
    TRAINABLE_FILE,
    WEIGHTS_DIR,
    write_manifest,
)
from kgc.config import FinetuneConfig, dump_config
from kgc.errors import KgcError, Problem
from kgc.finetune import batch_indices, config_problems, deepspeed_config, lr_lambda
from kgc.modeling.data import Encoder, as_rows, collate, length_report, pack, split_train_val
from kgc.modeling.loading import (
    check_model_dir,
    load_model,
    load_tokenizer,
    meta_model,
    resolve_chat_format,
    resolve_family,
)
from kgc.modeling.tuning import apply_method, resolve_lora_targets
from kgc.prompting import read_sft_records
from kgc.templates import ChatFormat

# ----------------------------------------------------------------------------- validation
CHECK_RECORDS = 2000  # records whose lengths a run measures before workers start


def validate(cfg: FinetuneConfig, report: list[str] | None = None) -> list[Problem]:
    """Everything checkable before workers start: paths, data, methods, targets, strategy,
    and the length budgets against the records (the first CHECK_RECORDS of them; all when
    `report` is given, which receives the length report's lines)."""
    probs: list[Problem] = []
    try:  # a .gguf file or a prepared model's name → its HF folder, once, in the driver
        cfg.model.path = check_model_dir(cfg.model.path)
    except KgcError as e:
        probs.extend(e.problems)
    probs.extend(config_problems(cfg))
    if probs:
        return probs
    # the model's own structure: LoRA targets, template
    m = cfg.method
    try:
        tok = load_tokenizer(cfg.model)
        chat = resolve_chat_format(cfg.model, tok)
        if m.type in ("lora", "qlora") and not m.adapter_path:
            resolve_lora_targets(meta_model(cfg.model), m, resolve_family(cfg.model))
        records = read_sft_records(cfg.data.train_file)
        lengths = length_report(
            Encoder(tok, chat, cfg.data), records if report is not None else records[:CHECK_RECORDS]
        )
    except KgcError as exc:
        probs.extend(exc.problems)
        return probs
    lines = lengths.lines(cfg.data)
    if report is not None:
        report.extend(lines)
    if lengths.impossible:
        probs.append(Problem(lines[1], cfg.data.train_file))
    return probs


# ----------------------------------------------------------------------------- data
@dataclass
class TrainData:
    """The tokenizer, the prompt layout and the encoded rows a worker trains on."""

    tok: Any
    chat: ChatFormat
    rows: list[dict]
    val_rows: list[dict]
    lengths: list[int]  # tokens per training row: batches group similar lengths

    @property
    def pad(self) -> int:
        return self.tok.pad_token_id

    def micro_batch(self, cfg: FinetuneConfig, micro: int, rank: int, world: int, device):
        """The `micro`-th micro-batch of this rank on `device`, and its real token count."""
        t = cfg.train
        idx = batch_indices(len(self.rows), t.batch_size, rank, world, t.seed, micro, self.lengths)
        batch = {k: v.to(device) for k, v in collate([self.rows[i] for i in idx], self.pad).items()}
        return batch, sum(len(self.rows[i]["input_ids"]) for i in idx)


def load_train_data(cfg: FinetuneConfig) -> TrainData:
    """Records → rows (packed when data.packing); validation rows from data.val_file, or
    data.val_size of the training records held out."""
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
    return TrainData(tok, chat, rows, val_rows, [len(r["input_ids"]) for r in rows])


# ----------------------------------------------------------------------------- model
@dataclass
class TrainState:
    """What a worker trains: `net` runs forward and backward (the DDP wrapper or the
    DeepSpeed engine), `model` is the unwrapped model (saved, restored, prefix cache)."""

    net: Any
    model: Any
    optimizer: Any
    scheduler: Any
    engine: Any  # the DeepSpeed engine, or None (DDP)
    trainable: list
    local_params: int  # parameters this worker holds (ZeRO-3: its partitions only)
    trim: bool  # the model takes `logits_to_keep`
    keepalive: Any = None  # HfDeepSpeedConfig under ZeRO-3: it must outlive the model
    precision: str = "fp32"  # resolve_precision: forwards run under autocast(precision)


def load_tuned_model(cfg: FinetuneConfig):
    """The base model with the tuning method (adapter, frozen layers, …) applied, its frozen
    weights in bf16 when `resolve_precision` says so (with eager attention there, unless
    `model.attn_implementation` says otherwise: torch's CPU SDPA kernel is slower in bf16
    than in fp32, eager's bf16 matmuls are not; a step 1.3× faster, docs/demo.md)."""
    bf16 = resolve_precision(cfg)[0] == "bf16"
    spec = cfg.model
    if bf16 and not spec.attn_implementation:
        spec = spec.model_copy(update={"attn_implementation": "eager"})
    model = apply_method(
        load_model(spec),
        cfg.method,
        resolve_family(cfg.model),
        quantized=cfg.model.quantization is not None,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
    )
    if bf16:
        frozen_to_bf16(model)
    return model


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flag(cpuinfo: str | None = None) -> str | None:
    """The CPU flag that makes bf16 matmuls native here (AVX512_BF16 or AMX), or None."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    return next((f for f in BF16_CPU_FLAGS if f in flags), None)


def resolve_precision(cfg: FinetuneConfig, cpuinfo: str | None = None) -> tuple[str, str]:
    """(`fp32` or `bf16`, why) for `train.precision`. bf16 means the frozen base weights in
    bf16 and everything trained (LoRA weights, their gradients, AdamW state) in fp32, so it
    is for method lora on an fp32, unquantized model with ddp; `auto` picks it on a CPU
    with native bf16 matmuls (on a GPU the model's own dtype, `model.dtype`, decides)."""
    want = cfg.train.precision
    if want == "fp32":
        return "fp32", "train.precision: fp32"
    fits = (
        cfg.method.type == "lora"
        and cfg.model.dtype == "fp32"
        and cfg.model.quantization is None
        and cfg.distributed.strategy == "ddp"
    )
    if want == "bf16":
        return ("bf16", "train.precision: bf16") if fits else ("fp32", "bf16 does not fit")
    if cfg.distributed.use_gpu or not fits:
        return "fp32", "train.precision: auto (fp32 here)"
    flag = cpu_bf16_flag(cpuinfo)
    if flag is None:
        return "fp32", "train.precision: auto; the CPU has no AVX512_BF16/AMX"
    return "bf16", f"train.precision: auto; the CPU has {flag.upper()}"


def frozen_to_bf16(model) -> int:
    """Every frozen floating-point weight of `model` in bf16, in place; their count.

    As a model loaded in bf16 with fp32 adapters: the linears, the embeddings (a tied LM
    head with them) and the norms are bf16, so activations and the residual stream are bf16
    and no layer casts its input. Trained weights (LoRA A/B) stay fp32 for AdamW, and peft's
    cast of a LoRA layer's input to the adapter's dtype is turned off: under
    `autocast("bf16")` the adapter multiplies in bf16 too (its fp32 weights cast once per
    forward) and its gradients land in fp32. Casting only the linears and keeping an fp32
    residual stream was measured slower (casts before and after every matmul, LoRA in fp32,
    ≈ 1.2× fp32 against ≈ 2×: docs/demo.md)."""
    import torch

    n = 0
    for p in model.parameters():
        if not p.requires_grad and p.dtype == torch.float32:
            p.data = p.data.to(torch.bfloat16)
            n += 1
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):  # peft's tuner layers
            module.cast_input_dtype_enabled = False
    return n


def autocast(precision: str):
    """The context a forward runs in: bf16 autocast on the CPU for `bf16`, else nothing."""
    import contextlib

    if precision != "bf16":
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


def ddp_state(cfg: FinetuneConfig, net, steps: int) -> TrainState:
    """AdamW and the LR schedule for `net` (the model as wrapped for DDP)."""
    import torch

    model = net.module if hasattr(net, "module") else net
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    state = _state(net, model, optimizer, scheduler, None, trainable)
    state.precision = resolve_precision(cfg)[0]
    return state


def deepspeed_state(cfg: FinetuneConfig, steps: int) -> TrainState:
    """The tuned model inside a DeepSpeed engine (ZeRO-2/3) with its optimizer and schedule."""
    import deepspeed
    import torch

    _disable_shm_comm(deepspeed)
    ds_conf = deepspeed_config(cfg)
    keepalive = None
    if cfg.distributed.zero_stage == 3:
        # Load straight into ZeRO-3 partitions: no worker holds the full model twice.
        from transformers.integrations import HfDeepSpeedConfig

        keepalive = HfDeepSpeedConfig(ds_conf)
    model = load_tuned_model(cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    schedule = lr_lambda(cfg, steps)
    # DeepSpeed builds the scheduler on its inner optimizer, steps it at accumulation
    # boundaries and keeps its state in the engine checkpoint.
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=trainable,
        config=ds_conf,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
    )
    state = _state(engine, engine.module, optimizer, scheduler, engine, trainable)
    state.keepalive = keepalive
    return state


def _state(net, model, optimizer, scheduler, engine, trainable) -> TrainState:
    local = sum(p.data.numel() for p in model.parameters())
    trim = accepts_logits_to_keep(model)
    return TrainState(net, model, optimizer, scheduler, engine, trainable, local, trim)


def _disable_shm_comm(deepspeed) -> None:
    """Skip DeepSpeed's shared-memory all-reduce op on CPU: building it JIT-compiles C++ for
    about a minute at every process start, and gloo does the same job for training."""
    import torch

    if not torch.cuda.is_available():
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


# ----------------------------------------------------------------------------- a step
def train_step(cfg: FinetuneConfig, state: TrainState, batches: Iterable[dict]) -> float:
    """One optimizer step over the micro-batches (train.grad_accum of them); returns their
    mean loss."""
    import torch

    state.net.train()
    losses = []
    for batch in batches:
        with autocast(state.precision):
            loss = model_loss(state.net, state.model, batch, state.trim, cfg.train.shared_prefix)
        if state.engine is not None:
            state.engine.backward(loss)
            state.engine.step()
        else:
            (loss / cfg.train.grad_accum).backward()
        losses.append(loss.item())
    if state.engine is None:
        if cfg.train.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(state.trainable, cfg.train.max_grad_norm)
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=True)
        state.scheduler.step()
    return sum(losses) / len(losses)


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
    """The same loss with the LM head applied only from the first answer position on (the
    fallback of `label_logits_loss`, for prompt-learning models whose forward adds virtual
    tokens). Rows are right-padded and batched by length, so the answers sit in the last
    columns: keep the logits from one position before the earliest label (it predicts that
    label) and cut the labels to match; transformers' causal-LM loss shifts them inside.
    Packed rows (labels scattered) are left as they are.
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


def _prompt_learning(model) -> bool:
    """Whether a peft prompt-learning method (P-Tuning, prefix) is active: its forward adds
    virtual tokens, so hidden states are wider than the batch."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def label_logits_loss(net, raw_model, batch: dict, **extra):
    """The causal-LM loss with the LM head applied to labelled positions only.

    Prompt positions carry no label, yet the head (vocab × hidden: 49,152 × 576 in
    SmolLM2-135M) would score every one of them, and transformers then runs log-softmax over
    the whole vocabulary at each. Here a forward pre-hook on the output embedding keeps only
    the hidden states whose next token is a label ([N, hidden]), so the head, the softmax
    and their backward run on N rows: the same loss (mean cross-entropy over labelled
    tokens, as transformers computes it), at any layout — padded, after a shared prefix, or
    packed (where answers are scattered and `logits_to_keep` cannot cut anything)."""
    import torch
    import torch.nn.functional as F

    labels = batch["labels"]
    want = torch.zeros_like(labels, dtype=torch.bool)
    want[:, :-1] = labels[:, 1:] != -100
    targets = labels[:, 1:][want[:, :-1]]

    def pick(_module, args):
        (hidden,) = args
        if hidden.shape[:2] != want.shape:
            raise KgcError(
                f"label_logits_loss: hidden states {tuple(hidden.shape[:2])} do not match the "
                f"batch {tuple(want.shape)} (a model whose forward adds positions)"
            )
        return (hidden[want],)

    head = raw_model.get_output_embeddings()
    handle = head.register_forward_pre_hook(pick)
    try:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = net(**inputs, **{"use_cache": False, **extra}).logits
    finally:
        handle.remove()
    return F.cross_entropy(logits.float(), targets)


def causal_lm_loss(net, raw_model, batch: dict, trim: bool, **extra):
    """The batch's loss: labelled positions only (`label_logits_loss`) for transformers'
    own causal LMs (`trim`), answer columns only for prompt-learning models, else plain."""
    if trim and not _prompt_learning(raw_model) and raw_model.get_output_embeddings() is not None:
        return label_logits_loss(net, raw_model, batch, **extra)
    return net(**answer_logits_only(batch, trim), **extra).loss


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
        return causal_lm_loss(net, raw_model, batch, trim)
    import torch

    ids = batch["input_ids"]
    rows, width = ids.shape
    cache = raw_model(input_ids=ids[:1, :n], use_cache=True).past_key_values
    cache.batch_repeat_interleave(rows)
    own = {"input_ids": ids[:, n:], "labels": batch["labels"][:, n:]}
    positions = torch.arange(n, width, device=ids.device).unsqueeze(0).expand(rows, -1)
    return causal_lm_loss(
        net,
        raw_model,
        own,
        trim,
        attention_mask=batch["attention_mask"],
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    )


def eval_metrics(net, rows, pad, device, rank, world, batch, precision: str = "fp32") -> dict:
    """Over the validation `rows` (each rank scoring its share, summed over ranks):
    `eval_loss`, the token-weighted loss, and `eval_exact`, the share of rows whose every
    answer token is the model's top choice given the gold tokens before it — exactly the
    answers greedy decoding would reproduce word for word. The loss of an IE answer is mostly
    its JSON skeleton; `eval_exact` moves only when the facts (which relation, which names)
    come out right. Both come from the same forward pass."""
    import torch
    import torch.distributed as dist

    net.eval()
    total = torch.zeros(4, device=device)  # loss · tokens, tokens, exact rows, rows
    mine = rows[rank::world]
    with torch.no_grad():
        for i in range(0, len(mine), batch):
            b = {k: v.to(device) for k, v in collate(mine[i : i + batch], pad).items()}
            labels = b["labels"][:, 1:]
            n = int((labels != -100).sum())
            with autocast(precision):
                out = net(**b)
            # prompt learning prepends virtual tokens' logits: the text's are the last ones
            logits = out.logits[:, -b["labels"].shape[1] : -1]
            hit = (logits.argmax(-1) == labels) | (labels == -100)
            exact = int(hit.all(dim=1).sum())
            total += torch.tensor([out.loss.item() * n, n, exact, len(labels)], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    net.train()
    loss, n, exact, rows_n = (float(x) for x in total)
    return {
        "eval_loss": loss / n if n > 0 else float("nan"),
        "eval_exact": exact / rows_n if rows_n > 0 else float("nan"),
    }


# ----------------------------------------------------------------------------- checkpoints
def write_checkpoint(
    d: Path,
    cfg: FinetuneConfig,
    data: TrainData,
    state: TrainState,
    step: int,
    rank: int,
    world: int,
) -> bool:
    """This rank's part of a checkpoint into folder d, its manifest last; whether it wrote
    anything (DDP: only rank 0 does)."""
    import torch

    engine = state.engine
    if engine is not None:
        # every rank writes its ZeRO shards; Ray merges the ranks' files in one checkpoint
        engine.save_checkpoint(str(d / DS_DIR), tag=DS_TAG, client_state={"step": step})
        zero3 = cfg.distributed.zero_stage == 3
        _save_weights(cfg, state.model, d / WEIGHTS_DIR, rank, zero3=zero3)
    elif rank == 0:
        _save_weights(cfg, state.model, d / WEIGHTS_DIR, rank, zero3=False)
        torch.save(
            {
                "step": step,
                "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(),
            },
            d / STATE_FILE,
        )
    if rank == 0:
        data.tok.save_pretrained(d / WEIGHTS_DIR)
        (d / CONFIG_FILE).write_text(dump_config(cfg), encoding="utf-8")
        (d / CHAT_FILE).write_text(
            json.dumps(data.chat.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8"
        )
    has_files = any(d.iterdir())
    if has_files:  # last: it vouches for every file above
        ranks = list(range(world)) if engine is not None else [0]  # who writes files
        write_manifest(d, step=step, rank=rank, ranks=ranks)
    return has_files


def _trainable_state(model) -> dict:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names}


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
            torch.save(_trainable_state(model), out / TRAINABLE_FILE)
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


def restore(d: Path, model, optimizer, scheduler, engine) -> int:
    """Load checkpoint folder d into the model and optimizer/scheduler (or the DeepSpeed
    engine); returns its step."""
    if engine is not None:
        try:
            _, client = engine.load_checkpoint(str(d / DS_DIR), tag=DS_TAG)
        except Exception as exc:
            raise _unreadable(d / DS_DIR, exc, "load the DeepSpeed state") from exc
        if not client or "step" not in client:
            raise _unreadable(
                d / DS_DIR, FileNotFoundError(f"no {DS_TAG}/ tag"), "load the DeepSpeed state"
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
    if (wdir / TRAINABLE_FILE).exists():
        state = _torch_load(wdir / TRAINABLE_FILE)
        try:
            model.load_state_dict(state, strict=False)
        except Exception as exc:
            raise _unreadable(wdir / TRAINABLE_FILE, exc, "load the trained weights") from exc
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = wdir / ADAPTER_WEIGHTS
    try:
        set_peft_model_state_dict(model, load_file(str(path)))
    except Exception as exc:
        raise _unreadable(path, exc, "load the adapter weights") from exc
