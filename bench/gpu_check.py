"""GPU check: the figures a CPU machine cannot give, in one JSON, in a few minutes on one GPU.

    python bench/gpu_check.py [--out gpu_check.json]      # on a CUDA machine (≈ 5 min on an H200)
    python bench/gpu_check.py --dry-run                   # the same code paths, tiny, on CPU

Needs torch (CUDA), transformers, peft; kgc itself comes from this checkout (its imports are
pure Python, plus pydantic and PyYAML; xgrammar for the constrained rows). Nothing else: no
Ray, vLLM, bitsandbytes or DeepSpeed, no network (the tokenizer is trained here, the model
weights are random). A part that cannot run records why and the rest goes on.

1. `lora_step`: bf16 LoRA (r 16, every linear layer) training steps on a ≈1.1B LLaMA-shaped
   model (hidden 2048, 22 layers, GQA 32/4 heads, MLP 5632: TinyLlama's shape), batch 8 ×
   1,024 tokens: tokens/s, step time, peak memory, and MFU. FLOP convention: model FLOPs =
   6 · N · tokens (N = all parameters; the usual convention, which counts the weight
   gradients LoRA does not compute), and also 4 · N · tokens (what a LoRA step computes:
   forward + input gradients), each over the GPU's dense bf16 peak (H100/H200 SXM: 989 TFLOPS).
2. `engine`: kgc's HF engine on the same model in bf16: generated tokens/s at batch 1, 32 and
   128, for plain static batches (`generate`), + shared prefix, and kgc's continuous path
   (continuous + prefix + jump-forward), free and constrained (NER answer schema).
3. `gpu_tests`: `pytest -m gpu` on this checkout (its summary line and exit code).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FULL = {"hidden": 2048, "layers": 22, "heads": 32, "kv": 4, "inter": 5632, "batch": 8, "seq": 1024,
        "steps": 10, "warmup": 3, "engine_batches": (1, 32, 128), "new_tokens": 64, "min_prompts": 4}  # fmt: skip
DRY = {"hidden": 64, "layers": 2, "heads": 4, "kv": 2, "inter": 128, "batch": 2, "seq": 64,
       "steps": 2, "warmup": 1, "engine_batches": (2,), "new_tokens": 8, "min_prompts": 2}  # fmt: skip
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12}


def build_model(out: Path, s: dict, dtype):
    """A random LLaMA-shaped model with a tokenizer trained here, saved to `out`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kgc.modeling.tiny import build_tokenizer

    tok = build_tokenizer(4000)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=s["hidden"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], num_key_value_heads=s["kv"],
        intermediate_size=s["inter"], max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(dtype)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model, tok


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def lora_step(model, s: dict, device: str) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    n_params = sum(p.numel() for p in model.parameters())
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    net = get_peft_model(model.to(device), LoraConfig(r=16, lora_alpha=32, target_modules=targets))
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, model.config.vocab_size, (s["batch"], s["seq"]), generator=g).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(s["warmup"] + s["steps"]):
        sync(device)
        t0 = time.perf_counter()
        loss = net(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= s["warmup"]:
            times.append(time.perf_counter() - t0)
        losses.append(round(loss.item(), 4))
    step = sum(times) / len(times)
    tokens = s["batch"] * s["seq"]
    out = {
        "parameters": n_params,
        "batch": [s["batch"], s["seq"]],
        "step_s": round(step, 4),
        "tokens_per_s": round(tokens / step, 1),
        "losses": losses,
        "flop_convention": "model FLOPs 6*N*tokens (N all parameters); lora FLOPs 4*N*tokens",
    }
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    out["achieved_tflops_6N"] = round(6 * n_params * tokens / step / 1e12, 2)
    out["achieved_tflops_4N"] = round(4 * n_params * tokens / step / 1e12, 2)
    if peak:
        out["peak_bf16_tflops"] = peak / 1e12
        out["mfu_6N"] = round(6 * n_params * tokens / step / peak, 4)
        out["mfu_4N"] = round(4 * n_params * tokens / step / peak, 4)
    if device == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    net.unload()
    return out


def engine(path: Path, s: dict, device: str) -> dict:
    """Generated tokens/s per batch size, path and decoding (free / constrained)."""
    from kgc.config import ModelConfig
    from kgc.engine import GenerationSettings, bounded
    from kgc.modeling.hf_engine import HFEngine
    from kgc.sampling import SamplingOptions
    from kgc.schema import read_schema
    from kgc.tasks import get

    ner = get("NER")
    sample = ROOT / "examples" / "iepile" / "NER"
    texts = [
        json.loads(x)["text"]
        for x in (sample / "sample.json").read_text().splitlines()
        if x.strip()
    ]
    chunk = ner.test_chunks(None, read_schema(sample / "schema.json"), None,
                            SamplingOptions(split_num=6), "")[0]  # fmt: skip
    dtype = "bf16" if device == "cuda" else "fp32"
    try:
        import xgrammar  # noqa: F401

        modes = ("free", "constrained")
    except ImportError:
        modes = ("free",)
    out: dict = {} if len(modes) == 2 else {"constrained": "skipped: xgrammar is not installed"}
    paths = {"plain generate": (False, False), "+ shared prefix": (False, True),
             "kgc continuous": (True, True)}  # fmt: skip
    for name, (cont, prefix) in paths.items():
        eng = HFEngine(ModelConfig(path=str(path), dtype=dtype), batch_size=1, continuous=cont,
                       prefix_cache=prefix, device=device)  # fmt: skip
        for batch in s["engine_batches"]:
            eng.batch_size = batch
            n = max(batch, s["min_prompts"])
            prompts = [
                ner.instruction("zh", chunk, f"{i}. {texts[i % len(texts)]}") for i in range(n)
            ]
            for mode in modes:
                schemas = None
                if mode == "constrained":
                    schemas = [bounded(ner.output_schema(chunk), 16, 4)] * n
                cfg = GenerationSettings(max_new_tokens=s["new_tokens"])
                eng.generate(prompts[:2], cfg, schemas[:2] if schemas else None)  # warm-up
                sync(device)
                t0 = time.perf_counter()
                answers = eng.generate(prompts, cfg, schemas)
                sync(device)
                dt = time.perf_counter() - t0
                generated = sum(len(eng.tok(a)["input_ids"]) for a in answers)
                out[f"{name} | batch {batch} | {mode}"] = {
                    "prompts": n,
                    "seconds": round(dt, 3),
                    "generated_tokens": generated,
                    "tokens_per_s": round(generated / dt, 1),
                }
        del eng
    return out


def gpu_tests(timeout: int) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           "--timeout", str(timeout)]  # fmt: skip
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 60)
    except Exception as exc:  # pytest missing, or a hang
        return {"error": repr(exc)}
    lines = (r.stdout + r.stderr).strip().splitlines()
    return {"returncode": r.returncode, "summary": lines[-1] if lines else "", "tail": lines[-30:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU: the code paths")
    ap.add_argument("--skip", nargs="*", default=[], choices=["lora_step", "engine", "gpu_tests"])
    args = ap.parse_args(argv)

    import torch
    import transformers

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on a CPU machine", file=sys.stderr)
        return 2
    s = DRY if args.dry_run else FULL
    report: dict = {
        "dry_run": args.dry_run,
        "device": torch.cuda.get_device_name()
        if device == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "sizes": {k: v for k, v in s.items() if k != "engine_batches"},
    }
    t_start = time.time()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as t:
        model = None
        try:
            model, _ = build_model(Path(t) / "model", s, dtype)
        except Exception:
            report["build_model"] = {"error": traceback.format_exc(limit=3)}
        for part in ("lora_step", "engine", "gpu_tests"):
            if part in args.skip or (part != "gpu_tests" and model is None):
                continue
            if part == "gpu_tests" and args.dry_run:
                report[part] = "skipped in a dry run"
                continue
            t0 = time.time()
            try:
                if part == "lora_step":
                    report[part] = lora_step(model, s, device)
                elif part == "engine":
                    report[part] = engine(Path(t) / "model", s, device)
                else:
                    report[part] = gpu_tests(240)
            except Exception:
                report[part] = {"error": traceback.format_exc(limit=5)}
            print(f"[gpu_check] {part}: {time.time() - t0:.0f} s", flush=True)
    report["seconds"] = round(time.time() - t_start, 1)
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"[gpu_check] wrote {args.out} ({report['seconds']} s)")
    failed = [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    if failed:
        print(f"[gpu_check] failed parts: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
