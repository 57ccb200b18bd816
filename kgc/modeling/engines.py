"""The one engine factory: an `EngineConfig` → an `Engine` (Hugging Face, vLLM, or an
OpenAI-compatible server), for batch extraction's actors and Serve's model replicas; and the
tokenizer offsets chunking measures with. Engines take `kgc.engine.GenerationSettings`, the
same type as a config's `generation:` section."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kgc.errors import KgcError

if TYPE_CHECKING:
    from collections.abc import Callable

    from kgc.chunking import Offsets
    from kgc.config import EngineConfig
    from kgc.engine import Engine


def build_engine(
    e: EngineConfig,
    *,
    max_loaded_adapters: int | None = None,
    vllm_dtype: str | None = None,
    serving: bool = False,
    named_lora_rank: int | None = None,
) -> Engine:
    """The engine `e` describes, loaded.

    `max_loaded_adapters`: named LoRA adapters kept loaded at once (Serve; None: the
    engine's default; vllm: its `max_loras`). `vllm_dtype` (vllm) overrides `e.dtype`;
    "auto" is the model's own dtype, what Serve, which has no dtype setting, has always
    used. `serving` (vllm): vLLM's async engine (`AsyncVLLMEngine`: a request at a time,
    continuously batched by vLLM, `e.batch_size` sequences at once) instead of its offline
    batch engine; `named_lora_rank`: it serves named LoRA adapters up to this rank."""
    if e.type == "hf":
        from kgc.modeling.hf_engine import HFEngine

        engine = HFEngine(
            _model(e),
            adapter=e.adapter,
            checkpoint=e.checkpoint,
            batch_size=e.batch_size,
            prefix_cache=e.prefix_cache,
            continuous=e.continuous,
            trust_remote_code=e.trust_remote_code,
            quantization=e.quantization,
        )
        if max_loaded_adapters is not None:
            engine.max_loaded = max_loaded_adapters
        return engine
    if e.type == "openai":
        from kgc.openai_engine import OpenAIEngine

        if not e.model:
            raise KgcError(
                "engine.model (the served model name) is required for engine.type=openai"
            )
        return OpenAIEngine(
            e.base_url or "",
            e.model,
            api_key_env=e.api_key_env,
            concurrency=e.batch_size,
            timeout_s=e.timeout_s,
            max_retries=e.max_retries,
        )
    if e.type == "vllm":
        from kgc.modeling.vllm_engine import AsyncVLLMEngine, VLLMEngine

        served = (
            dict(
                max_num_seqs=e.batch_size,
                named_lora_rank=named_lora_rank,
                max_loras=max_loaded_adapters or 1,
            )
            if serving
            else {}
        )
        return (AsyncVLLMEngine if serving else VLLMEngine)(
            _model(e),
            adapter=e.adapter,
            checkpoint=e.checkpoint,
            tensor_parallel_size=e.tensor_parallel_size,
            gpu_memory_utilization=e.gpu_memory_utilization,
            max_model_len=e.max_model_len,
            dtype=vllm_dtype or e.dtype,
            enforce_eager=e.enforce_eager,
            kv_cache_gib=e.kv_cache_gib,
            **served,
        )
    raise KgcError(f"engine.type={e.type!r} is unknown; use hf, vllm or openai")


def _model(e: EngineConfig):
    from kgc.config import ModelConfig

    if not e.model:
        return None  # the checkpoint names its base model
    return ModelConfig(path=e.model, dtype=e.dtype, trust_remote_code=e.trust_remote_code)


_TOKENIZERS: dict[str, Any] = {}


def offsets_fn(e: EngineConfig) -> Callable[[str], Offsets]:
    """How chunking counts tokens for this engine: its model's tokenizer (hf, vllm; loaded
    once per path), or a regex (openai, or no model to read one from)."""
    from kgc.chunking import regex_offsets, tokenizer_offsets

    path = e.model
    if e.checkpoint:
        from kgc.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(e.checkpoint)[0].path
    if e.type == "openai" or not path:
        return regex_offsets
    if path not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[path] = AutoTokenizer.from_pretrained(path)
    return tokenizer_offsets(_TOKENIZERS[path])
