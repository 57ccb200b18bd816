"""Tiny causal LMs built from config, with a tokenizer trained offline, saved to a directory.

Tests and the demo load them through the same path-based code a user runs on
`/models/Qwen2.5-7B-Instruct` — nothing is downloaded. The tokenizer is a byte-level BPE
trained on the bundled IE samples (so Chinese and English text round-trip exactly), with
ChatML special tokens and a `chat_template` for the qwen2 variant.

    python -m kgc.modeling.tiny --arch llama --out /tmp/tiny-llama
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "iepile"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<pad>"]
CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SIZES = {
    # hidden, layers, heads, kv heads, intermediate
    "tiny": (64, 2, 4, 2, 128),
    "demo": (128, 4, 4, 2, 352),  # `make demo`: learns the bundled task in minutes on CPU
    "small": (512, 8, 8, 4, 1376),  # ≈25M parameters: compute, not Python, dominates
}

# A frozen random output head initialised at std 0.02 caps every logit near ±3, so an
# adapter (LoRA, P-Tuning) trained on top can never make a confident prediction (the loss
# stalls near 5.5 nats); the demo model's head starts 6× larger, as a pretrained head would be.
HEAD_SCALE = {"demo": 6.0}


def _corpus() -> list[str]:
    texts: list[str] = []
    from kgc.instructions import INSTRUCTIONS

    texts.extend(INSTRUCTIONS.values())
    # the bundled IEPile samples when running from the repository; byte-level BPE encodes
    # any text even without them (e.g. from an installed wheel). Not examples/demo: its
    # generated documents change with the demo, and the tiny vocabulary must not.
    paths = sorted(EXAMPLES.glob("*/*.json")) if EXAMPLES.is_dir() else []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(line)
    return texts


def build_tokenizer(vocab_size: int = 2000, chat_template: str | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat_template:
        fast.chat_template = chat_template
    return fast


def build_tiny_model(
    out: str | Path, arch: str = "llama", size: str = "tiny", seed: int = 0, vocab_size: int = 2000
) -> Path:
    """Write a randomly initialised model + tokenizer to `out` (save_pretrained layout)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    out = Path(out)
    hidden, layers, heads, kv, inter = SIZES[size]
    tok = build_tokenizer(vocab_size, CHATML_TEMPLATE if arch == "qwen2" else None)
    common = dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    if arch == "llama":
        config = LlamaConfig(**common)
    elif arch == "qwen2":
        config = Qwen2Config(**common)
    else:
        raise ValueError(f"arch must be llama or qwen2, got {arch!r}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if size in HEAD_SCALE:
        with torch.no_grad():
            model.lm_head.weight.mul_(HEAD_SCALE[size])
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "kgc_tiny.json").write_text(json.dumps({"arch": arch, "size": size, "seed": seed}))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("llama", "qwen2"), default="llama")
    ap.add_argument("--size", choices=tuple(SIZES), default="tiny")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    path = build_tiny_model(args.out, args.arch, args.size, args.seed)
    print(path)


if __name__ == "__main__":
    main()
