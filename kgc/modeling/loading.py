"""Load a causal LM and its tokenizer from a local Hugging Face directory.

dtype, bitsandbytes 4/8-bit quantisation (nf4/fp4, double quant), gradient checkpointing,
`trust_remote_code` only when asked for. Also resolves the model family and the chat
template that training, extraction and serving share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kgc.config import ModelConfig
from kgc.errors import KgcError, Problem
from kgc.families import Family, detect_family, get_family
from kgc.templates import TOKENIZER, ChatFormat, get_template

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def torch_dtype(name: str):
    import torch

    return getattr(torch, DTYPES[name])


def resolve_family(cfg: ModelConfig) -> Family | None:
    if cfg.family != "auto":
        return get_family(cfg.family)
    return detect_family(check_model_dir(cfg.path))


def resolve_chat_format(cfg: ModelConfig, tokenizer=None) -> ChatFormat:
    """'auto': the tokenizer's chat_template when it has one, else the family's template."""
    name = cfg.template
    if name == "auto":
        has_own = tokenizer is not None and getattr(tokenizer, "chat_template", None)
        if has_own:
            return ChatFormat(None, cfg.system_prompt)
        fam = resolve_family(cfg)
        name = fam.template if fam else "alpaca"
    if name == TOKENIZER:
        if tokenizer is not None and not getattr(tokenizer, "chat_template", None):
            raise KgcError(
                f"model.template is 'tokenizer' but {cfg.path} has no chat_template; "
                "name a kgc template instead (e.g. alpaca, qwen, llama2_zh)"
            )
        return ChatFormat(None, cfg.system_prompt)
    return ChatFormat(get_template(name), cfg.system_prompt)


def check_model_dir(path: str) -> str:
    """The local HF folder `path` names (a folder, a `.gguf` file or a prepared model's
    name: see kgc.modeling.prepare), or a clear error."""
    from kgc.modeling.prepare import resolve_model_path

    p = Path(resolve_model_path(path))
    if not (p / "config.json").is_file():
        raise KgcError(
            Problem(
                f"model.path {path!r} is not a Hugging Face model directory (no config.json); "
                "point it at a local folder such as /models/Qwen2.5-7B-Instruct, a .gguf "
                "file, or smollm2-135m-instruct (kgc model prepare)",
            )
        )
    return str(p)


def check_remote_code(cfg: ModelConfig, path: str) -> None:
    """A model folder whose config names its own Python code (`auto_map`: ChatGLM, Baichuan,
    MOSS, Qwen v1, …) loads only with model.trust_remote_code=true; without it, say so
    (instead of transformers' traceback), with the family and the risk."""
    import json

    if cfg.trust_remote_code:
        return
    try:
        conf = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # transformers reports an unreadable config itself
    auto_map = conf.get("auto_map") if isinstance(conf, dict) else None
    if not auto_map:
        return
    from transformers import CONFIG_MAPPING

    if conf.get("model_type") in CONFIG_MAPPING:
        return  # transformers has its own class for it: the folder's code is not needed
    fam = detect_family(path)
    who = f"a {fam.notes or fam.name} model" if fam else "this model"
    raise KgcError(
        Problem(
            f"{who} comes with its own Python code (config.json auto_map: "
            f"{', '.join(sorted(auto_map))}); set model.trust_remote_code=true to load it. That "
            "runs the .py files in the model folder with your permissions: only do it for a "
            "folder from a source you trust.",
            path,
        )
    )


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer

    path = check_model_dir(cfg.path)
    check_remote_code(cfg, path)
    from kgc.modeling.chat_render import install

    install()  # the model's chat template (data from the model file) renders under limits
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token_id is None:
        # batching needs a pad id; EOS is safe because padded positions are masked out
        tok.pad_token = tok.eos_token
    return tok


def quantization_config(cfg: ModelConfig):
    q = cfg.quantization
    if q is None:
        return None
    from transformers import BitsAndBytesConfig

    if q.bits == 8:
        _warn_cast_once()
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(q.compute_dtype),
    )


def _warn_cast_once() -> None:
    """bitsandbytes logs "inputs will be cast … to float16" on every 8-bit matmul of a float32
    model (each forward, each layer): let the first through, drop the repeats."""
    import logging

    log = logging.getLogger("bitsandbytes.autograd._functions")
    if any(getattr(f, "kgc_once", False) for f in log.filters):
        return
    seen: set[str] = set()

    def once(record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        first = msg not in seen
        seen.add(msg)
        return first

    once.kgc_once = True  # type: ignore[attr-defined]
    log.addFilter(once)


def load_model(cfg: ModelConfig, *, device_map: Any = None, for_training: bool = True):
    from transformers import AutoModelForCausalLM

    path = check_model_dir(cfg.path)
    fam = resolve_family(cfg)
    if fam is not None and fam.name == "openba":
        raise KgcError(
            Problem(
                "OpenBA is an encoder-decoder model; kgc trains and decodes causal "
                "(decoder-only) language models only. Its chat template (openba) and family "
                "settings are there for converting and serving prompts.",
                path,
            )
        )
    check_remote_code(cfg, path)
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(cfg.dtype),
        "trust_remote_code": cfg.trust_remote_code,
    }
    qc = quantization_config(cfg)
    if qc is not None:
        kwargs["quantization_config"] = qc
        kwargs["device_map"] = device_map if device_map is not None else {"": _default_device()}
    elif device_map is not None:
        kwargs["device_map"] = device_map
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if for_training:
        model.config.use_cache = False  # the cache is useless (and memory-hungry) in training
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            model.enable_input_require_grads()
    return model


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def meta_model(cfg: ModelConfig):
    """The model's module tree without allocating weights (for validating target modules)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(
        check_model_dir(cfg.path), trust_remote_code=cfg.trust_remote_code
    )
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code)
