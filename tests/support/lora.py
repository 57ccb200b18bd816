"""A kgc LoRA checkpoint without training: a peft adapter with small random weights on a
base model folder, laid out as `kgc train` writes one (kgc_config.yaml naming the base,
model/ holding the adapter and the tokenizer). Its answers differ from the base model's, which
is all the engine comparisons (tests/test_vllm_real.py, bench) need, in seconds."""

from __future__ import annotations

from pathlib import Path


def random_lora_checkpoint(
    base: str | Path, out: str | Path, *, rank: int = 8, std: float = 0.02, seed: int = 0
) -> Path:
    """`out`, a checkpoint folder: LoRA (q, k, v, o projections, `rank`) on `base` with A as
    peft initialises it and B ~ N(0, std) (peft's own B is zero: no effect)."""
    import torch
    import yaml
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kgc.checkpoint import CONFIG_FILE, WEIGHTS_DIR

    out = Path(out)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, std)
    weights = out / WEIGHTS_DIR
    peft_model.save_pretrained(weights)
    AutoTokenizer.from_pretrained(base).save_pretrained(weights)
    (out / CONFIG_FILE).write_text(yaml.safe_dump({"model": {"path": str(base)}}), encoding="utf-8")
    return out
