"""Model families: how to recognise one, its default chat template and LoRA target modules.

Pure data, so configs can be validated without importing torch. A family is found from the
model's `config.json` (`model_type`), or named in the config (`model.family`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kgc.errors import KgcError

_LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_GLM_TARGETS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    template: str
    lora_targets: tuple[str, ...]
    remote_code: bool = False  # its Hub repos need trust_remote_code=True
    notes: str = ""


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "llama",
            ("llama",),
            "alpaca",
            _LLAMA_TARGETS,
            notes="LLaMA/LLaMA-2/3, Alpaca, Vicuna, ZhiXi/KnowLM, OneKE (llama2_zh)",
        ),
        Family(
            "qwen2",
            ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe"),
            "qwen",
            _LLAMA_TARGETS,
            notes="Qwen1.5/2/2.5/3",
        ),
        Family(
            "qwen",
            ("qwen",),
            "qwen",
            ("c_attn", "attn.c_proj", "w1", "w2", "mlp.c_proj"),
            remote_code=True,
            notes="Qwen (v1)",
        ),
        Family(
            "baichuan",
            ("baichuan",),
            "baichuan2",
            ("W_pack", "o_proj", "gate_proj", "up_proj", "down_proj"),
            remote_code=True,
            notes="Baichuan/Baichuan2",
        ),
        Family(
            "chatglm", ("chatglm",), "chatglm3", _GLM_TARGETS, remote_code=True, notes="ChatGLM2/3"
        ),
        Family(
            "moss",
            ("moss",),
            "moss",
            ("qkv_proj", "out_proj", "fc_in", "fc_out"),
            remote_code=True,
            notes="MOSS (CodeGen architecture)",
        ),
        Family("falcon", ("falcon", "RefinedWeb", "RefinedWebModel"), "falcon", _GLM_TARGETS),
        Family("mistral", ("mistral", "mixtral"), "mistral", _LLAMA_TARGETS),
        Family("cpm-bee", ("cpmbee",), "vanilla", ("project_q", "project_v"), remote_code=True),
        # OpenBA is an encoder-decoder: templates and LoRA targets as in DeepKE, but kgc trains
        # and decodes causal LMs only (load_model says so)
        Family(
            "openba",
            ("openba",),
            "openba",
            ("q", "kv", "qkv", "o", "fc_in", "fc_out"),
            remote_code=True,
            notes="OpenBA (encoder-decoder)",
        ),
        Family(
            "internlm",
            ("internlm", "internlm2"),
            "intern",
            ("wqkv", "wo", "w1", "w2", "w3"),
            remote_code=True,
        ),
    ]
}


def family_for_model_type(model_type: str) -> Family | None:
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    return None


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KgcError(
            f"model.family {name!r} is unknown; choose one of {', '.join(FAMILIES)} or 'auto'"
        ) from None


def detect_family(model_path: str | Path) -> Family | None:
    """The family of a local Hugging Face model directory, from its config.json."""
    cfg = Path(model_path) / "config.json"
    try:
        model_type = json.loads(cfg.read_text(encoding="utf-8")).get("model_type", "")
    except (OSError, json.JSONDecodeError):
        return None
    return family_for_model_type(model_type)
