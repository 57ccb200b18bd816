"""Tuning methods: LoRA, QLoRA, P-Tuning v2 (prefix tuning), P-Tuning (prompt encoder),
full and freeze (train the last k decoder layers), and continuing from an adapter.

`import peft` costs seconds (it imports bitsandbytes), so it happens inside the functions.
"""

from __future__ import annotations

from kgc.config import MethodConfig
from kgc.errors import KgcError
from kgc.families import Family

PEFT_METHODS = ("lora", "qlora", "ptuning_v2", "ptuning")
_SKIP_ALL = ("lm_head", "output_layer", "embed_out")


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def linear_module_names(model) -> list[str]:
    """Names of the Linear layers LoRA can wrap (bitsandbytes' quantised ones included)."""
    import torch.nn as nn

    linear_types: tuple = (nn.Linear,)
    try:
        import bitsandbytes as bnb

        linear_types += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except ImportError:
        pass
    return [n for n, m in model.named_modules() if isinstance(m, linear_types)]


def resolve_lora_targets(model, method: MethodConfig, family: Family | None) -> list[str]:
    """Target module names for LoRA; every named target must exist in the model."""
    targets = method.lora.target_modules
    linears = linear_module_names(model)
    if targets == "all":
        names = sorted({n.split(".")[-1] for n in linears if not any(s in n for s in _SKIP_ALL)})
        return names
    if targets == "auto":
        if family is None:
            raise KgcError(
                "method.lora.target_modules is 'auto' but the model family is unknown; set "
                "model.family, or list the modules (e.g. [q_proj, v_proj]) or use 'all'"
            )
        targets = list(family.lora_targets)
    missing = [t for t in targets if not any(_matches(n, t) for n in linears)]
    if missing:
        available = sorted({n.split(".")[-1] for n in linears})
        raise KgcError(
            f"method.lora.target_modules {missing} not found among the model's Linear layers "
            f"({', '.join(available)}); pick from those or use 'all'"
        )
    return list(targets)


def decoder_layers(model):
    """The ModuleList of transformer blocks (model.layers, transformer.h, …)."""
    import torch.nn as nn

    best = None
    for name, module in model.named_modules():
        is_blocks = isinstance(module, nn.ModuleList) and name.split(".")[-1] in (
            "layers",
            "h",
            "blocks",
        )
        if is_blocks and (best is None or len(module) > len(best)):
            best = module
    if best is None:
        raise KgcError(
            "could not find the model's decoder layers (for method.type=freeze or "
            "method.lora.top_layers)"
        )
    return best


def apply_method(
    model,
    method: MethodConfig,
    family: Family | None,
    *,
    quantized: bool = False,
    gradient_checkpointing: bool = False,
):
    """Return the model ready to train with the chosen method (trainable flags set)."""
    kind = method.type
    if kind in ("full", "freeze"):
        if quantized:
            raise KgcError(f"method.type={kind} cannot train a quantised model; use qlora")
        for p in model.parameters():
            p.requires_grad_(kind == "full")
        if kind == "freeze":
            layers = decoder_layers(model)
            k = min(method.trainable_layers, len(layers))
            for layer in list(layers)[-k:]:
                for p in layer.parameters():
                    p.requires_grad_(True)
        return model

    import peft

    if quantized:
        model = peft.prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    if method.adapter_path:
        return peft.PeftModel.from_pretrained(model, method.adapter_path, is_trainable=True)
    if kind in ("lora", "qlora"):
        targets = resolve_lora_targets(model, method, family)
        layers = None
        if method.lora.top_layers:
            n = len(decoder_layers(model))
            layers = list(range(max(0, n - method.lora.top_layers), n))
        config = peft.LoraConfig(
            task_type="CAUSAL_LM",
            r=method.lora.r,
            lora_alpha=method.lora.alpha,
            lora_dropout=method.lora.dropout,
            target_modules=targets,
            layers_to_transform=layers,
        )
    elif kind == "ptuning_v2":
        config = peft.PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=method.ptuning.pre_seq_len,
            prefix_projection=method.ptuning.prefix_projection,
            encoder_hidden_size=method.ptuning.encoder_hidden_size,
        )
    elif kind == "ptuning":
        config = peft.PromptEncoderConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=method.ptuning.pre_seq_len,
            encoder_hidden_size=method.ptuning.encoder_hidden_size,
        )
    else:  # pragma: no cover - the config's Literal rules this out
        raise KgcError(f"unknown method.type {kind!r}")
    return peft.get_peft_model(model, config)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
