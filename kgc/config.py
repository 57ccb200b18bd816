"""Typed configurations — fine-tuning (`FinetuneConfig`), batch extraction
(`ExtractConfig`), scoring (`EvalConfig`) — read from YAML plus `key.sub=value` overrides
and validated once.

Unknown keys are rejected; every problem is reported together with the key, the bad value
and the fix (`load_config` raises one `KgcError` listing them all), before any Ray worker
starts.

Paths: a relative path written in a config file resolves against that file's folder (so
`kgc train --config <repo>/jobs/configs/ner_lora.yaml` works from any folder); a path given
as an override (`key=value` on the command line) or in `data=` resolves against the current
folder. Absolute paths, URIs (`s3://…`), `~/…` and a model's bare name (no `/`, nothing of
that name next to the config) are left as written (`resolve_config_paths`). Section types are named `…Config`, except `LoraSpec` and `RunSpec`, named so they
cannot be mistaken for peft's `LoraConfig` and Ray's `RunConfig`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kgc.engine import GenerationSettings
from kgc.errors import KgcError, Problem
from kgc.formats import EvalFormat
from kgc.tasks.registry import TaskName


class _Strict(BaseModel):
    """A config section: unknown keys are rejected.

    A top-level config (one `load_config` reads) declares its path keys, as dotted YAML keys
    the way a file writes them (aliases such as `schema`; `*` = every item of a list; a key
    whose value is a list covers each item): `config_paths` every key that holds a path,
    `config_inputs` those a run reads, `config_names` those that may hold a model's name
    instead (a prepared model, `smollm2-135m-instruct`), `config_paths_unless` key →
    (other key, value) where the key holds no path. See `resolve_config_paths`."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class QuantConfig(_Strict):
    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["fp32", "fp16", "bf16"] = "fp32"


class ModelConfig(_Strict):
    path: str
    family: str = "auto"
    template: str = "auto"  # auto | tokenizer | a kgc template name
    system_prompt: str | None = None
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    trust_remote_code: bool = False
    quantization: QuantConfig | None = None
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None


class LoraSpec(_Strict):
    """`method.lora`: the LoRA adapter (becomes a peft `LoraConfig`)."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["auto", "all"] = "auto"
    # adapt only the last N decoder layers: backward stops below them (faster, less memory)
    top_layers: int | None = Field(None, ge=1)


class PTuningConfig(_Strict):
    pre_seq_len: int = Field(16, ge=1)  # virtual tokens
    prefix_projection: bool = False  # P-Tuning v2: reparameterise the prefix with an MLP
    encoder_hidden_size: int = Field(128, ge=1)


class MethodConfig(_Strict):
    type: Literal["lora", "qlora", "ptuning_v2", "ptuning", "full", "freeze"] = "lora"
    lora: LoraSpec = LoraSpec()
    ptuning: PTuningConfig = PTuningConfig()
    trainable_layers: int = Field(2, ge=1, description="freeze: train the last k layers")
    adapter_path: str | None = None  # continue training from an existing adapter


class DataConfig(_Strict):
    train_file: str
    val_file: str | None = None
    val_size: float = Field(0.0, ge=0.0)  # fraction (< 1) or count (>= 1) held out
    max_source_length: int = Field(512, ge=8)
    max_target_length: int = Field(256, ge=1)
    cutoff_len: int = Field(768, ge=16)
    packing: bool = False
    seed: int = 42


class TrainConfig(_Strict):
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(4, ge=1)  # per worker
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = Field(1.0, ge=0)
    eval_every: int = Field(0, ge=0)  # steps; 0 = only at the end
    save_every: int = Field(50, ge=1)  # steps between checkpoints
    log_every: int = Field(10, ge=1)
    seed: int = 42
    # prefill the prompt prefix that every row of a batch shares (chat header, instruction,
    # schema) once per batch instead of once per row: same loss and gradients, fewer tokens
    shared_prefix: bool = False
    # LoRA on CPU: bf16 = every frozen weight in bf16 (a bf16-loaded model), forwards under
    # bf16 autocast, eager attention (LoRA weights, gradients and AdamW state stay fp32);
    # auto = bf16 where the CPU multiplies bf16 natively (AVX512_BF16 / AMX: ≈ 2.3× fp32
    # matmuls) for method lora with ddp and an fp32 model, fp32 elsewhere. Default fp32: in
    # the demo bf16 steps ran 1.5-1.8× faster but held-out F1 moved 0.53-0.59 between runs
    # against 0.564 (docs/demo.md)
    precision: Literal["auto", "fp32", "bf16"] = "fp32"


class DistributedConfig(_Strict):
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: Literal[2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)


def local_folder(value: str, key: str, why: str, example: str) -> str:
    """`value` if it is a path; a URI (s3://…, gs://…, file://…) is refused naming `key`, why
    kgc needs a folder there and the fix. An output folder is written and read back with
    local file I/O (os.replace, Path.mkdir), which would turn `s3://bucket/x` into a local
    folder named "s3:" and write nothing to the bucket: refused, not misread."""
    if "://" in value:
        raise ValueError(
            f"{value!r} is a URI; {why}: mount the bucket or a shared volume (NFS, a "
            "ReadWriteMany PersistentVolumeClaim, Mountpoint for S3, gcsfuse) and set "
            f"{key} to its path, e.g. {example}"
        )
    return value


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class RunSpec(_Strict):
    """`run`: where the run's checkpoints live (becomes Ray Train's `RunConfig`)."""

    # a folder created under storage_path (Ray's RunConfig(name)); resubmitting it resumes
    name: str = "kgc-finetune"
    storage_path: str = "./runs"
    max_failures: int = Field(2, ge=-1)
    keep_checkpoints: int = Field(2, ge=1)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not RUN_NAME.fullmatch(v) or ".." in v:
            raise ValueError(
                "must be a plain folder name (letters, digits, '.', '_', '-'; starts with a "
                "letter or digit; no '/' or '..'; at most 128 characters), e.g. "
                "run.name=ner-lora-r16; set run.storage_path to choose where it goes"
            )
        return v

    @field_validator("storage_path")
    @classmethod
    def _local_folder(cls, v: str) -> str:
        # Ray Train itself takes s3://… here, but kgc reads the run folder back with local
        # file I/O (metrics.jsonl, resume manifests, the checkpoint to restore)
        return local_folder(
            v,
            "run.storage_path",
            "kgc needs a folder every node mounts (its metrics, resume manifests and "
            "checkpoints are read back as local files)",
            "/data/runs",
        )


class FinetuneConfig(_Strict):
    # the keys that hold paths (load_config: relative ones in a file → the file's folder)
    config_paths: ClassVar[tuple[str, ...]] = (
        "model.path",
        "data.train_file",
        "data.val_file",
        "method.adapter_path",
        "run.storage_path",
    )
    config_inputs: ClassVar[tuple[str, ...]] = (
        "model.path",
        "data.train_file",
        "data.val_file",
        "method.adapter_path",
    )
    config_names: ClassVar[tuple[str, ...]] = ("model.path",)

    model: ModelConfig
    method: MethodConfig = MethodConfig()
    data: DataConfig
    train: TrainConfig = TrainConfig()
    distributed: DistributedConfig = DistributedConfig()
    run: RunSpec = RunSpec()


class InputConfig(_Strict):
    path: str  # a file, a folder of files, or a pyarrow URI (s3://…)
    format: Literal["auto", "jsonl", "parquet", "txt", "iepile"] = "auto"
    text_field: str = "text"
    id_field: str | None = None  # default: <file name>:<line or row number>


class ChunkConfig(_Strict):
    max_tokens: int = Field(512, ge=8)
    overlap: int = Field(64, ge=0)


class EngineConfig(_Strict):
    type: Literal["hf", "vllm", "openai"] = "hf"
    model: str | None = None  # model directory (hf, vllm) or served model name (openai)
    adapter: str | None = None
    checkpoint: str | None = None  # a kgc training checkpoint: base + adapter + chat format
    batch_size: int = Field(16, ge=1)
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    # run the model folder's own Python code (remote-code families); only the operator's
    # config turns it on, never a checkpoint's saved config
    trust_remote_code: bool = False
    # hf: prefill the prompt prefix a batch shares once (same greedy answers, less compute)
    prefix_cache: bool = True
    # hf: continuous batching (a finished row's slot is refilled at the next step) on kgc's
    # own decode loop; false: transformers' `generate` on static batches
    continuous: bool = True
    base_url: str | None = None  # openai: http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable
    timeout_s: float = Field(120.0, gt=0)  # openai: per request
    max_retries: int = Field(4, ge=0)  # openai: on 429/5xx/connection errors
    # vllm: GPUs per model copy (give each actor as many: workers.gpus_per_actor), memory
    # share, context length
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=16)
    # vllm: the KV cache's size in GiB (None: on CPU 2, or VLLM_CPU_KVCACHE_SPACE when set;
    # on GPUs gpu_memory_utilization decides); skip torch.compile (on CPU it costs ≈ 2 min at
    # start for faster decoding; a LoRA engine on CPU never compiles)
    kv_cache_gib: float | None = Field(None, gt=0)
    enforce_eager: bool = False
    # a row whose prompt has more tokens is not generated but kept with its error (counted
    # as rows_too_long); hf, vllm. Without it: prompt + generation.max_new_tokens must fit
    # the model's context (its max_position_embeddings)
    max_prompt_tokens: int | None = Field(None, ge=1)
    # hf: load a plain model's weights in 4 or 8 bits (bitsandbytes, as QLoRA training does;
    # DeepKE's `--bits 4`): less memory, and on a GPU often faster for large models
    quantization: QuantConfig | None = None


class WorkersConfig(_Strict):
    num_actors: int = Field(1, ge=1)
    # rows an actor takes per call (one shard each). Default: the engine's batch_size, ×4 on
    # the HF engine's continuous path, so a finished row's slot is refilled from the same
    # call instead of idling until the call's longest answer ends
    rows_per_call: int | None = Field(None, ge=1)
    # fractional is fine (leave CPUs for readers); torch threads = the CPUs rounded up
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0)
    # when no node can hold one actor yet, how long to wait for the autoscaler to start
    # launching one (it is then waited for up to stall_timeout_s); without an autoscaler
    # the job fails at once (kgc.runtime.capacity)
    scale_up_grace_s: float = Field(60.0, gt=0)


class OutputConfig(_Strict):
    path: str  # a folder (input.path may be a URI; outputs may not: `local_folder`)
    format: Literal["parquet", "jsonl"] = "parquet"

    @field_validator("path")
    @classmethod
    def _local_folder(cls, v: str) -> str:
        return local_folder(
            v,
            "output.path",
            "kgc writes the rows as shards by atomic renames (each row exactly once) and "
            "reads them back to resume, merge and score, with local file I/O",
            "/data/out/extract",
        )


CONTINUOUS_CALL_ROWS = 4  # rows per actor call, in engine batches (continuous HF engine)


class ExtractConfig(_Strict):
    config_paths: ClassVar[tuple[str, ...]] = (
        "input.path",
        "schema",
        "engine.model",
        "engine.adapter",
        "engine.checkpoint",
        "output.path",
    )
    config_inputs: ClassVar[tuple[str, ...]] = (
        "input.path",
        "schema",
        "engine.model",
        "engine.adapter",
        "engine.checkpoint",
    )
    config_names: ClassVar[tuple[str, ...]] = ("engine.model",)
    # engine.type openai: engine.model is the served model's name, never a path
    config_paths_unless: ClassVar[dict[str, tuple[str, str]]] = {
        "engine.model": ("engine.type", "openai")
    }

    input: InputConfig
    task: str
    schema_path: str | None = Field(None, alias="schema")
    language: Literal["zh", "en"] = "zh"
    split_num: int = 4
    chunk: ChunkConfig = ChunkConfig()
    engine: EngineConfig = EngineConfig()
    generation: GenerationSettings = GenerationSettings()
    workers: WorkersConfig = WorkersConfig()
    output: OutputConfig
    score: bool = True  # score against labels when the input carries them
    stall_timeout_s: float = Field(600.0, gt=0)  # no progress for this long → fail the job
    # constrained decoding: one answer grammar's compile; a row whose grammar takes longer
    # is kept with its error, not generated (Serve: limits.grammar_timeout_s)
    grammar_timeout_s: float = Field(60.0, gt=0)

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), populate_by_name=True)

    def rows_per_call(self) -> int:
        """Rows an extraction actor takes per call (`workers.rows_per_call`)."""
        if self.workers.rows_per_call is not None:
            return self.workers.rows_per_call
        e = self.engine
        if e.type == "hf" and e.continuous:
            return e.batch_size * CONTINUOUS_CALL_ROWS
        return e.batch_size

    @model_validator(mode="after")
    def _vllm_needs_gpus(self):
        e, w = self.engine, self.workers
        # gpus_per_actor 0: vLLM's CPU build (one model copy per actor, on its CPUs)
        if e.type == "vllm" and 0 < w.gpus_per_actor < e.tensor_parallel_size:
            raise ValueError(
                f"engine.type=vllm with engine.tensor_parallel_size={e.tensor_parallel_size} "
                f"needs workers.gpus_per_actor >= {e.tensor_parallel_size}, got "
                f"{w.gpus_per_actor}"
            )
        if e.type == "vllm" and w.gpus_per_actor == 0 and e.tensor_parallel_size > 1:
            raise ValueError(
                f"engine.type=vllm with engine.tensor_parallel_size={e.tensor_parallel_size} "
                "and workers.gpus_per_actor=0 (vLLM's CPU build): set tensor_parallel_size "
                "to 1, or give each actor that many GPUs (workers.gpus_per_actor)"
            )
        if e.quantization is not None and e.type != "hf":
            raise ValueError(
                f"engine.quantization (bitsandbytes) is for engine.type=hf, not {e.type}; "
                "for vllm give a pre-quantized model (AWQ, GPTQ) in engine.model, or remove "
                "engine.quantization"
            )
        if e.type == "vllm" and self.generation.num_beams > 1:
            raise ValueError("engine.type=vllm: set generation.num_beams to 1")
        return self


class EvalConfig(_Strict):
    """`kgc eval --config` / `python -m jobs.evaluate --config`: score model outputs."""

    config_paths: ClassVar[tuple[str, ...]] = ("input", "report")
    config_inputs: ClassVar[tuple[str, ...]] = ("input",)

    task: TaskName
    input: str  # test records (JSONL) whose `output` holds the model's answer
    format: EvalFormat = "iepile"
    by_source: bool = False
    by_label: bool = False  # also print the per-label rows (relation, entity type)
    match: Literal["multiset", "set"] = "multiset"
    normalize: bool = True
    strict: bool = False  # the papers' strict F1: exact strings, set per record (SpERT)
    rouge: bool = False
    language: Literal["zh", "en"] | None = None
    segmenter: Literal["char", "jieba"] = "char"
    report: str | None = None  # also write the report here as JSON


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def _yaml_reason(exc: yaml.YAMLError) -> str:
    """The one-line gist of a YAML error (its `problem`, without the multi-line context)."""
    reason = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    return " ".join(str(reason).split())


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """`train.lr=2e-4 method.lora.r=16` → nested dict updates (values parsed as YAML, safely:
    no tags that build objects). Every bad override is one line naming key and value."""
    for item in overrides:
        if "=" not in item:
            raise KgcError(f"override {item!r} must look like key.sub=value (e.g. train.lr=2e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part.strip() for part in key.split(".")):
            raise KgcError(
                f"override {item!r}: the key {key!r} has an empty part; write key.sub=value "
                "(e.g. train.lr=2e-4)"
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise KgcError(
                f"override {key}={raw}: not a valid YAML value ({_yaml_reason(exc)}); give a "
                f"number, true/false or [a, b], or quote a string: {key}='\"...\"'"
            ) from None
        _set_dotted(tree, key, value)
    return tree


def read_yaml_file(path: str | os.PathLike) -> Any:
    """A YAML file's data (safe_load), or a KgcError naming the file, line and column."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise KgcError(
            Problem(
                f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                "save the file as UTF-8",
                source,
            )
        ) from None
    except OSError as exc:
        raise KgcError(Problem(f"cannot read the file ({exc.strerror or exc})", source)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        col = f" at column {mark.column + 1}" if mark is not None else ""
        raise KgcError(
            Problem(
                f"not valid YAML{col}: {_yaml_reason(exc)}; fix the syntax there (quote "
                "strings that contain ': ', ' #', or start with *, &, !, [, {)",
                source,
                line,
            )
        ) from None


def _problems(exc: ValidationError, source: str) -> list[Problem]:
    out = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {key!r}; remove it or check its spelling"
        elif err["type"] == "missing":
            msg = f"key {key!r} is required"
        else:
            msg = f"key {key!r} = {value!r}: {err['msg']}"
        out.append(Problem(msg, source))
    return out


@dataclass(frozen=True)
class ResolvedPath:
    """One path value `resolve_config_paths` rewrote: where it is, as written, as resolved."""

    key: str  # dotted, list items by index: input.paths.1
    where: tuple  # the keys and indices that reach it in the tree
    written: str
    resolved: str


def _matches(pattern: str, key: str) -> bool:
    """`tasks.*.schema` matches `tasks.2.schema`; `input.paths` also `input.paths.0`."""
    want, got = pattern.split("."), key.split(".")
    if len(got) == len(want) + 1 and got[-1].isdigit():
        got = got[:-1]  # an item of a list the key holds
    return len(want) == len(got) and all(w in ("*", g) for w, g in zip(want, got, strict=True))


def _slots(node: Any, parts: list[str], where: tuple = ()):
    """(where, container, slot) of every string the dotted key `parts` reaches in `node`."""
    if not parts:
        return
    head, rest = parts[0], parts[1:]
    if head == "*":
        steps = list(enumerate(node)) if isinstance(node, list) else []
    elif isinstance(node, dict) and head in node:
        steps = [(head, node[head])]
    else:
        steps = []
    for slot, child in steps:
        if rest:
            yield from _slots(child, rest, (*where, slot))
        elif isinstance(child, str):
            yield (*where, slot), node, slot
        elif isinstance(child, list):  # a key that holds one path or a list of them
            for i, item in enumerate(child):
                if isinstance(item, str):
                    yield (*where, slot, i), child, i


def _lookup(tree: Any, where: tuple) -> Any:
    node = tree
    for slot in where:
        try:
            node = node[slot]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def resolve_path_value(value: str, folder: str, may_be_name: bool = False) -> str:
    """`value` (a path written in a config file in `folder`) as a path from the current
    folder: `folder/value`, normalised; absolute paths, URIs, `~` paths and empty values as
    they are, and (`may_be_name`) a bare name with nothing of that name in `folder`."""
    if not value.strip() or "://" in value or value.startswith("~") or os.path.isabs(value):
        return value
    joined = os.path.join(folder, value)
    if may_be_name and "/" not in value and os.sep not in value and not os.path.exists(joined):
        return value  # a prepared model's name (model.path) or a served model's (engine.model)
    out = os.path.normpath(joined)
    return out + "/" if value.endswith("/") and not out.endswith("/") else out


def resolve_config_paths(
    tree: dict, schema: type[BaseModel], folder: str | os.PathLike
) -> list[ResolvedPath]:
    """Make every relative path in `tree` (read from a config file in `folder`) a path from
    the current folder, in place; the keys are the schema's `config_paths`. Returns what
    changed. Only file values go through here: overrides and `data=` stay as given."""
    folder = str(folder)
    names = set(getattr(schema, "config_names", ()))
    unless = getattr(schema, "config_paths_unless", {})
    changed = []
    for pattern in getattr(schema, "config_paths", ()):
        if pattern in unless:
            other, value = unless[pattern]
            if _lookup(tree, tuple(other.split("."))) == value:
                continue
        for where, container, slot in list(_slots(tree, pattern.split("."))):
            written = container[slot]
            resolved = resolve_path_value(written, folder, pattern in names)
            if resolved != written:
                container[slot] = resolved
                key = ".".join(str(w) for w in where)
                changed.append(ResolvedPath(key, where, written, resolved))
    return changed


def _misplaced(
    tree: dict, schema: type[BaseModel], folder: str, changed: list[ResolvedPath], source: str
) -> list[Problem]:
    """Input paths still as the file gave them that exist only relative to the current folder
    (written the way configs were read before paths became relative to the file): each one
    named with its key, value and fix, instead of a missing-file error later on."""
    inputs = getattr(schema, "config_inputs", ())
    out = []
    for r in changed:
        if not any(_matches(p, r.key) for p in inputs) or _lookup(tree, r.where) != r.resolved:
            continue  # not read by the run, or replaced by an override
        if os.path.exists(r.resolved) or not os.path.exists(r.written):
            continue
        fix = os.path.relpath(os.path.abspath(r.written), os.path.abspath(folder or "."))
        out.append(
            Problem(
                f"key {r.key!r} = {r.written!r}: a relative path in a config file is read "
                f"from the file's folder, where {r.resolved} does not exist (it exists "
                f"relative to the current folder); write {r.key}: {fix} in the file, an "
                f"absolute path, or give it as the override {r.key}={r.written} (overrides "
                "are read from the current folder)",
                source,
            )
        )
    return out


def load_config(
    path: str | os.PathLike | None,
    overrides: list[str] | None = None,
    data: dict | None = None,
    schema: type[BaseModel] | None = None,
) -> Any:
    """Read YAML (or take `data`), apply overrides, validate; KgcError lists every problem.

    Relative paths read from the file resolve against the file's folder (before the
    overrides, which, like `data`, stay relative to the current folder)."""
    schema = schema or FinetuneConfig
    source = str(path) if path else "<config>"
    tree: dict = dict(data or {})
    changed: list[ResolvedPath] = []
    folder = ""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise KgcError(Problem("config file does not exist", source))
        loaded = read_yaml_file(p) or {}
        if not isinstance(loaded, dict):
            raise KgcError(Problem("the config must be a YAML mapping", source))
        tree = loaded
        folder = os.path.dirname(os.fspath(path))
        changed = resolve_config_paths(tree, schema, folder)
    apply_overrides(tree, overrides or [])
    problems = _misplaced(tree, schema, folder, changed, source)
    try:
        cfg = schema.model_validate(tree)
    except ValidationError as exc:
        raise KgcError(problems + _problems(exc, source)) from None
    if problems:
        raise KgcError(problems)
    return cfg


def dump_config(cfg: FinetuneConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
