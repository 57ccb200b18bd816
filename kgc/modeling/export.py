"""`kgc export`: a checkpoint (or a bare adapter) + its base model → a plain HF model directory.

LoRA/QLoRA adapters are merged into the base weights (a QLoRA adapter is merged into the
base loaded unquantised, in the chosen dtype — merging into 4-bit weights would lose the
adapter's precision). Full/freeze checkpoints have their trained weights written over the
base. Prompt-learning adapters (P-Tuning, P-Tuning v2) cannot be merged: serve base + adapter.
The chat format and config travel with the export, so extraction and serving format prompts
exactly as training did.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kgc.checkpoint import (
    ADAPTER_CONFIG,
    CHAT_FILE,
    CONFIG_FILE,
    TOKENIZER_CONFIG,
    TRAINABLE_FILE,
    WEIGHTS_DIR,
)
from kgc.errors import KgcError, Problem


def load_trainable(model, path) -> None:
    """Load a full/freeze checkpoint's trained weights into its base model (in place)."""
    import torch

    try:  # tensors only: a checkpoint file is data, never code
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise KgcError(
            f"{path}: cannot be read as a weights file ({type(exc).__name__}: {exc}); "
            "the checkpoint is damaged: use an earlier one or train again"
        ) from None
    missing = [k for k in state if k not in dict(model.named_parameters())]
    if missing:
        raise KgcError(f"checkpoint weights do not fit the base model: {missing[:3]} …")
    model.load_state_dict(state, strict=False)


def _locate(checkpoint: Path) -> tuple[Path, dict | None]:
    """(weights dir, training config or None) for a kgc checkpoint or a bare adapter dir."""
    if (checkpoint / WEIGHTS_DIR).is_dir():
        cfg_path = checkpoint / CONFIG_FILE
        from kgc.config import read_yaml_file

        cfg = read_yaml_file(cfg_path) if cfg_path.exists() else None
        return checkpoint / WEIGHTS_DIR, cfg
    return checkpoint, None


def export_model(
    checkpoint: str,
    out: str,
    *,
    base: str | None = None,
    dtype: str = "fp32",
    trust_remote_code: bool = False,
) -> Path:
    """Merge a checkpoint into its base model. Remote code runs only when the operator asks
    (`trust_remote_code`, `kgc export --trust-remote-code`), never because a checkpoint's
    saved config says so."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kgc.modeling.loading import torch_dtype

    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        raise KgcError(Problem("checkpoint directory does not exist", str(ckpt)))
    wdir, cfg = _locate(ckpt)
    base_path = base or (cfg or {}).get("model", {}).get("path")
    if base_path is None and (wdir / ADAPTER_CONFIG).exists():
        base_path = json.loads((wdir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base_path or not (Path(base_path) / "config.json").is_file():
        raise KgcError(f"base model {base_path!r} not found; pass --base /path/to/base-model")
    trust = bool(trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        base_path, dtype=torch_dtype(dtype), trust_remote_code=trust
    )
    if (wdir / ADAPTER_CONFIG).exists():
        from peft import PeftConfig, PeftModel

        pcfg = PeftConfig.from_pretrained(str(wdir))
        if pcfg.is_prompt_learning:
            raise KgcError(
                f"{pcfg.peft_type} adapters cannot be merged into the base model; serve or "
                "extract with base model + adapter instead of exporting"
            )
        model = PeftModel.from_pretrained(model, str(wdir)).merge_and_unload()
    elif (wdir / TRAINABLE_FILE).exists():
        load_trainable(model, wdir / TRAINABLE_FILE)
    else:
        raise KgcError(
            Problem(f"no {ADAPTER_CONFIG} or {TRAINABLE_FILE} in the checkpoint", str(wdir))
        )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok_src = wdir if (wdir / TOKENIZER_CONFIG).exists() else Path(base_path)
    AutoTokenizer.from_pretrained(str(tok_src), trust_remote_code=trust).save_pretrained(out_dir)
    for name in (CONFIG_FILE, CHAT_FILE):
        if (ckpt / name).exists():
            shutil.copy(ckpt / name, out_dir / name)
    return out_dir
