"""vLLM engine (optional extra, GPU): continuous batching and paged attention for large runs.

    engine: {type: vllm, model: /models/Qwen2.5-7B-Instruct, adapter: runs/…/model}
    engine: {type: vllm, checkpoint: runs/ner-lora/checkpoint_000010}

Prompts are tokenized by kgc (`PromptEncoder`: the same chat format as training and the HF
engine) and handed to vLLM as token ids, so both engines see identical inputs. A LoRA adapter
is applied per request through `LoRARequest`; prompt-learning adapters (P-Tuning) are not
supported by vLLM, so they are refused with a pointer to the HF engine. Constrained
decoding uses vLLM's structured outputs (JSON Schema). vLLM is imported only when this
engine is built.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from kgc.checkpoint import ADAPTER_CONFIG
from kgc.config import ModelConfig
from kgc.engine import GenerationSettings, Prompt, cut_at_stop
from kgc.errors import KgcError


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
    ):
        try:
            from vllm import LLM
        except ImportError:
            raise KgcError(
                "engine.type=vllm needs vLLM on a CUDA machine: pip install vllm "
                "(or use engine.type=hf)"
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
        extra: dict = {}
        if adapter:
            from vllm.lora.request import LoRARequest

            rank = lora_rank(adapter)
            extra.update(enable_lora=True, max_lora_rank=max(8, rank), max_loras=1)
            self.lora = LoRARequest("kgc-adapter", 1, str(adapter))
        kw = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
        self.llm = LLM(
            model=str(cfg.path),
            tokenizer=str(cfg.path),
            dtype=kw.get(dtype, dtype),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            trust_remote_code=bool(getattr(cfg, "trust_remote_code", False)),
            **extra,
        )
        self.model_id = f"vllm:{cfg.path}" + (f"+{adapter}" if adapter else "")
        # what Serve measures a prompt + its budget against (vLLM's own context length)
        engine_cfg = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        self.context_tokens = getattr(engine_cfg, "max_model_len", None) or max_model_len
        self.context_source = "max_model_len"
        self.last_token_counts: list[int] | None = None  # token ids per answer, last call

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

            kw["structured_outputs"] = StructuredOutputsParams(json=schema)
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

    def prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens of a prompt as fed to the model (Serve's admission check, usage)."""
        return len(self.prompts.encode(prompt))

    def count_tokens(self, prompt: Prompt, text: str) -> tuple[int, int]:
        """(prompt tokens as fed to the model, tokens of the answer's text) for usage."""
        tok = self.prompts.tok
        return len(self.prompts.encode(prompt)), len(
            tok(text, add_special_tokens=False)["input_ids"]
        )
