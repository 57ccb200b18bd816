"""Training throughput: the kgc Ray Train step vs a bare peft loop; packing vs padding.

    python bench/train_throughput.py [--model tiny|small|smollm2] [--steps 12] [--threads 2]

Same model (`--model`: a random LLaMA built locally, `small` ≈ 25M parameters, or the real
SmolLM2-135M-Instruct), same LoRA config, same
records (IEPile NER/RE/EE train records converted from examples/iepile), same batch size and
torch threads. Prints real (non-pad) tokens/s of:
  (a) a bare peft loop in this process (padding),
  (b) the same loop with packing,
  (c) kgc's Ray Train job, 1 worker with `--threads` CPUs (padding),
  (d) the same with packing,
  (e) the bare loop again while the local Ray (GCS, raylet, controller) idles beside it,
  (f) kgc's Ray Train job with `train.shared_prefix` (the batch's common prompt prefix run
      once; tokens/s counts every row's tokens, as in (c)),
and the ratios c/a (Ray Train's cost), c/e (its cost net of Ray's background processes on
the same cores), b/a (what packing buys) and f/c (what the shared prefix buys).
`--model smollm2` runs it on the real 135M model (try --steps 6).

`--data demo` trains on `make demo`'s batches instead (its SPO documents, LoRA r16 on every
layer, lr 3e-3, batch 8 — the demo's preset) and runs only kgc's loop: (c), (d), (f), and
(g) = (f) with `train.precision: auto` (where the code has that setting: bf16 frozen
weights on a CPU with AVX512_BF16/AMX), so g/f is what bf16 buys on this CPU.
`--loss-steps N` also trains (f) and (g) for N steps and prints both loss curves and their
largest relative difference (the accuracy check).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _models import add_model_arg, bench_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # jobs/ (the demo's preset) runs from the checkout


def build_data(tmp: Path) -> Path:
    import json

    from kgc.convert import convert_file
    from kgc.sampling import SamplingOptions

    out = tmp / "train.jsonl"
    lines = []
    for task in ("NER", "RE", "EE"):
        part = tmp / f"{task}.jsonl"
        convert_file(
            task,
            ROOT / "examples/iepile" / task / "sample.json",
            ROOT / "examples/iepile" / task / "schema.json",
            part,
            opts=SamplingOptions(split_num=4),
        )
        lines += part.read_text(encoding="utf-8").splitlines()
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert all(json.loads(x) for x in lines)
    return out


def bare_loop(cfg, steps: int, packing: bool) -> float:
    import torch

    from kgc.finetune import batch_indices
    from kgc.modeling.data import Encoder, as_rows, collate, pack
    from kgc.modeling.loading import load_model, load_tokenizer, resolve_chat_format, resolve_family
    from kgc.modeling.tuning import apply_method
    from kgc.prompting import read_sft_records

    tok = load_tokenizer(cfg.model)
    enc = Encoder(tok, resolve_chat_format(cfg.model, tok), cfg.data)
    exs = [enc.encode(r) for r in read_sft_records(cfg.data.train_file)]
    rows = pack(exs, cfg.data.cutoff_len) if packing else as_rows(exs)
    torch.manual_seed(0)
    model = apply_method(load_model(cfg.model), cfg.method, resolve_family(cfg.model))
    model.train()  # as the Ray worker does (LoRA dropout on)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    bs = cfg.train.batch_size
    lengths = [len(r["input_ids"]) for r in rows]
    tokens, busy = 0, 0.0
    for step in range(steps):
        # the same batches the Ray job draws (same seed, one worker)
        idx = batch_indices(len(rows), bs, 0, 1, cfg.train.seed, step, lengths)
        batch_rows = [rows[i] for i in idx]
        t0 = time.perf_counter()
        loss = model(**collate(batch_rows, tok.pad_token_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad()
        busy += time.perf_counter() - t0
        tokens += sum(len(r["input_ids"]) for r in batch_rows)
    del model, opt, loss
    _release()
    return tokens / busy


def _release() -> None:
    """Give the bare loop's memory back before the next case (the real model's logits take
    gigabytes; the Ray worker of the next case needs them)."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def build_demo_data(tmp: Path) -> Path:
    """The demo's training instructions (examples/demo, all relations in one instruction)."""
    from kgc.convert import convert_file
    from kgc.sampling import SamplingOptions

    demo = ROOT / "examples" / "demo"
    out = tmp / "spo.train.jsonl"
    opts = SamplingOptions(split_num=-1)
    convert_file("SPO", demo / "train.json", demo / "schema.json", out, language="en", opts=opts)
    return out


def has_precision() -> bool:
    """Whether this kgc has `train.precision` (the before/after of the bf16 change)."""
    from kgc.config import TrainConfig

    return "precision" in TrainConfig.model_fields


def ray_job(cfg, name: str, losses: list | None = None) -> float:
    from kgc.runtime.train import run
    from kgc.trainlog import read_events

    result = run(cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": name})}))
    if losses is not None:
        run_dir = Path(cfg.run.storage_path) / name
        losses += [e["loss"] for e in read_events(run_dir) if "loss" in e and "step" in e]
    return float(result.metrics["tokens_per_s"])


def loss_check(cfg, steps: int) -> None:
    """kgc's loop on the same batches, auto precision vs fp32: both loss curves."""
    auto, fp32 = [], []
    over = {"max_steps": steps, "log_every": 1, "save_every": 10**6, "precision": "auto"}
    base = cfg(False, shared=True)
    ray_job(base.model_copy(update={"train": base.train.model_copy(update=over)}), "la", auto)
    over["precision"] = "fp32"
    ray_job(base.model_copy(update={"train": base.train.model_copy(update=over)}), "lf", fp32)
    worst = max(abs(a - b) / max(abs(b), 1e-9) for a, b in zip(auto, fp32))
    print(f"loss check, {steps} steps (auto precision vs fp32, same batches):")
    print("  auto: " + " ".join(f"{x:.4f}" for x in auto))
    print("  fp32: " + " ".join(f"{x:.4f}" for x in fp32))
    print(f"  largest relative difference {worst:.3f}; final {auto[-1]:.4f} vs {fp32[-1]:.4f}")


def demo_main(args) -> None:
    """`--data demo`: kgc's loop on the demo's batches (its preset), (c) (d) (f) (g)."""
    import ray
    import torch

    from jobs.demo import PRESETS
    from kgc.config import load_config

    preset = PRESETS["smollm2"]
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        model, label = bench_model(args.model, tmp)
        data = build_demo_data(tmp)

        def cfg(packing: bool, shared: bool = False, precision: str | None = None):
            train = {**preset["train"], "shared_prefix": shared}
            train.update(max_steps=args.steps, save_every=10**6, log_every=10**6)
            if precision:
                train["precision"] = precision
            return load_config(
                None,
                [],
                data={
                    "model": {"path": str(model)},
                    "method": {"type": "lora", "lora": preset["lora"]},
                    "data": {"train_file": str(data), **preset["data"], "packing": packing},
                    "train": train,
                    "distributed": {"num_workers": 1, "cpus_per_worker": args.threads},
                    "run": {"name": "bench", "storage_path": str(tmp / "runs")},
                },
            )

        ray.init(
            num_cpus=args.threads,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
        )
        jobs = {
            "c": ("(c) kgc Ray Train, padding", lambda: cfg(False), "pad"),
            "d": ("(d) kgc Ray Train, packing", lambda: cfg(True), "pack"),
            "f": ("(f) kgc Ray Train, shared prefix", lambda: cfg(False, shared=True), "shared"),
            "g": ("(g) (f) with train.precision auto",
                  lambda: cfg(False, shared=True, precision="auto"), "auto"),
        }  # fmt: skip
        if not has_precision():
            jobs.pop("g")
        rows = [(label, ray_job(make(), name)) for k, (label, make, name) in jobs.items()
                if k in args.cases]  # fmt: skip
        if args.loss_steps and has_precision():
            loss_check(cfg, args.loss_steps)
        ray.shutdown()
    print(f"model={label} data=demo steps={args.steps} batch={preset['train']['batch_size']} "
          f"threads={args.threads}")  # fmt: skip
    print(f"{'case':<38} {'tokens/s':>10}")
    for name, v in rows:
        print(f"{name:<38} {v:10.0f}")
    v = {label[:3]: x for label, x in rows}
    for ratio, a, b, what in (("d/c", "(d)", "(c)", "packing, kgc"),
                              ("f/c", "(f)", "(c)", "shared prefix vs padding"),
                              ("g/f", "(g)", "(f)", "precision auto vs fp32")):  # fmt: skip
        if a in v and b in v:
            print(f"{ratio} ({what}) {v[a] / v[b]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    add_model_arg(ap, "small")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--data", choices=("iepile", "demo"), default="iepile")
    ap.add_argument("--loss-steps", type=int, default=0, help="with --data demo: loss check")
    ap.add_argument("--cases", default="cdfg", help="with --data demo: which of c d f g to run")
    args = ap.parse_args()
    if args.data == "demo":
        demo_main(args)
        return

    import ray
    import torch

    from kgc.config import load_config

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        model, label = bench_model(args.model, tmp)
        data = build_data(tmp)

        def cfg(packing: bool, shared: bool = False):
            return load_config(
                None,
                [],
                data={
                    "model": {"path": str(model)},
                    "data": {
                        "train_file": str(data),
                        # the real model's tokenizer and chat template make longer prompts
                        "max_source_length": 512 if args.model == "smollm2" else 384,
                        "cutoff_len": 768 if args.model == "smollm2" else 512,
                        "packing": packing,
                    },
                    "train": {
                        "max_steps": args.steps,
                        "batch_size": args.batch_size,
                        "save_every": 10**6,
                        "log_every": 10**6,
                        "lr": 1e-4,
                        "shared_prefix": shared,
                    },
                    "distributed": {"num_workers": 1, "cpus_per_worker": args.threads},
                    "run": {"name": "bench", "storage_path": str(tmp / "runs")},
                },
            )

        a = bare_loop(cfg(False), args.steps, False)
        b = bare_loop(cfg(True), args.steps, True)
        ray.init(
            num_cpus=args.threads,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
        )
        c = ray_job(cfg(False), "pad")
        d = ray_job(cfg(True), "pack")
        f = ray_job(cfg(False, shared=True), "shared")
        e = bare_loop(cfg(False), args.steps, False)  # bare loop again, Ray idling beside it
        ray.shutdown()
    print(f"model={label} steps={args.steps} batch={args.batch_size} threads={args.threads}")
    print(f"{'case':<38} {'tokens/s':>10}")
    for label, v in [
        ("(a) bare peft loop, padding", a),
        ("(b) bare peft loop, packing", b),
        ("(c) kgc Ray Train, padding", c),
        ("(d) kgc Ray Train, packing", d),
        ("(e) bare loop, padding, Ray running", e),
        ("(f) kgc Ray Train, shared prefix", f),
    ]:
        print(f"{label:<38} {v:10.0f}")
    print(f"c/a (Ray Train vs bare loop)  {c / a:.2f}")
    print(f"c/e (same, both beside Ray)   {c / e:.2f}")
    print(f"b/a (packing, bare loop)      {b / a:.2f}")
    print(f"f/c (shared prefix vs padding) {f / c:.2f}")
    print(f"d/c (packing, kgc)            {d / c:.2f}")


if __name__ == "__main__":
    main()
