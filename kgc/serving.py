"""What the Serve app needs that is not Ray: request models, limits, the engine config of the
settings, instruction building for `/v1/extract` and merging of the split results (both
shared with batch extraction: `kgc.schema_splits`).

`schema` in a request is the task's label universe: a list of labels (NER entity types, RE
relations, EET event types, SPO "subject_type_predicate_object_type" strings) or an object
type → roles (EE, EEA event roles; KG attributes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kgc.config import QuantConfig
from kgc.errors import KgcError
from kgc.schema import Schema
from kgc.tasks.registry import TaskName

if TYPE_CHECKING:
    from kgc.config import EngineConfig

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_body_bytes: int = 1_000_000
    max_text_chars: int = 20_000
    max_texts: int = 64
    max_schema_items: int = 200
    max_new_tokens: int = 1024
    # model calls one /v1/extract request may make (texts × schema splits): beyond this the
    # request could only time out or be shed, so it is refused up front (413)
    max_model_calls: int = Field(128, ge=1)
    max_messages: int = Field(256, ge=1)  # chat messages per request
    # a response_format JSON Schema: its size, nesting and property count bound the cost of
    # compiling its grammar (a 1 MB schema blocked the model for minutes)
    max_schema_bytes: int = Field(32_000, ge=64)
    max_schema_depth: int = Field(24, ge=2)
    max_schema_properties: int = Field(512, ge=1)
    max_json_depth: int = Field(64, ge=4)  # any request body
    grammar_timeout_s: float = Field(10.0, gt=0)  # compiling one schema's grammar
    # a prompt is counted in tokens on the model replica before it joins the decode: prompt
    # + max_new_tokens beyond the model's context, or a prompt beyond this many tokens (None:
    # the context alone), is a 413 (an 89k-token prompt grew a replica to 19.9 GB)
    max_prompt_tokens: int | None = Field(None, ge=1)
    # /v1/extract schema labels (every one is in the prompt): characters per label, and of
    # all labels together
    max_label_chars: int = Field(200, ge=1)
    max_schema_chars: int = Field(8000, ge=1)


class Autoscaling(BaseModel):
    """Ray Serve autoscaling of the model deployment (replaces a fixed replica count)."""

    model_config = ConfigDict(extra="forbid")
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(16, gt=0)  # per replica, before scaling up
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(300.0, ge=0)


class ServeSettings(BaseModel):
    """serve/config.yaml `args`: the model, adapters, batching, limits, auth."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    # hf: CPU/GPU, named LoRA adapters, P-Tuning; vllm: a CUDA GPU (replica_gpus ≥ 1) or
    # vLLM's CPU build (replica_gpus: 0, .venv-vllm), named LoRA adapters
    engine: Literal["hf", "vllm"] = "hf"
    model: str | None = None  # base model directory
    checkpoint: str | None = None  # or a kgc checkpoint (base + adapter + chat format)
    adapter: str | None = None  # an adapter always applied to the base (P-Tuning works here)
    trust_remote_code: bool = False  # the operator's decision; never taken from a checkpoint
    # weights' dtype (None: hf fp32, vllm the model's own, as before these settings existed)
    dtype: Literal["fp32", "fp16", "bf16"] | None = None
    # vllm: GPUs per model copy (set replica_gpus to match), memory share, context length
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=16)
    # vllm: skip torch.compile at start (faster start, slower decode); KV cache in GiB (CPU
    # build; None: 2 GiB there, unless VLLM_CPU_KVCACHE_SPACE says), as engine.* in extraction
    enforce_eager: bool = False
    kv_cache_gib: float | None = Field(None, gt=0)
    # hf: 4/8-bit weights (bitsandbytes), as extraction's engine.quantization
    quantization: QuantConfig | None = None
    name: str = "kgc"  # model name clients use for the base model
    adapters: dict[str, str] = {}  # name → adapter directory
    adapter_dir: str | None = None  # more adapters by folder name, loaded on first use
    max_loaded_adapters: int = Field(4, ge=1)
    batch_size: int = Field(16, ge=1)
    # continuous path: from idle, gather requests until none arrived for this long (at most
    # 4 ×); other engines: the @serve.batch window
    batch_wait_s: float = Field(0.02, ge=0)
    max_new_tokens: int = Field(256, ge=1)
    limits: Limits = Limits()
    api_keys_env: str = "KGC_API_KEYS"  # comma-separated keys in this environment variable
    # sha256 of the keys, filled in by build_app from api_keys_env: the replicas (and Ray's
    # dashboard, which shows deployment arguments) never see a key itself
    api_key_sha256: list[str] = []
    auth_disabled: bool = False  # only for local use
    replica_cpus: float = Field(1.0, gt=0)  # CPUs per replica (fractional is fine)
    # GPUs per model replica (vllm: 0 runs vLLM's CPU build, else ≥ 1 whole GPUs)
    replica_gpus: float = Field(0.0, ge=0)
    max_ongoing_requests: int = Field(64, ge=1)
    # requests waiting for the model beyond this → 429 with Retry-After (-1: unbounded)
    max_queued_requests: int = Field(256, ge=-1)
    retry_after_s: int = Field(1, ge=0)
    num_replicas: int = Field(1, ge=1)  # model replicas when autoscaling is off
    autoscaling: Autoscaling | None = None
    # constrained decoding caps (requests opt in with "constrained": true / response_format)
    constrained_max_text_chars: int = Field(200, ge=1)
    constrained_max_list_items: int = Field(64, ge=1)


def check_engine(s: ServeSettings) -> None:
    """Settings the chosen engine cannot serve, as one clear error."""
    if s.engine == "vllm" and 0 < s.replica_gpus < 1:
        raise KgcError(
            f"replica_gpus: {s.replica_gpus} with engine: vllm: vLLM takes whole GPUs; set "
            "replica_gpus: 1 (a CUDA GPU) or 0 (vLLM's CPU build, .venv-vllm)"
        )
    if s.engine == "vllm" and s.replica_gpus == 0 and s.tensor_parallel_size > 1:
        raise KgcError(
            f"tensor_parallel_size: {s.tensor_parallel_size} with replica_gpus: 0: vLLM's CPU "
            "build serves one model copy per replica; set tensor_parallel_size: 1 (more "
            "copies: num_replicas), or give the replica GPUs"
        )
    if s.engine == "vllm" and s.replica_gpus and s.replica_gpus < s.tensor_parallel_size:
        raise KgcError(
            f"replica_gpus: {s.replica_gpus} is fewer than tensor_parallel_size: "
            f"{s.tensor_parallel_size}: set replica_gpus to the GPUs one model copy needs"
        )
    if s.engine == "vllm" and s.quantization is not None:
        raise KgcError(
            "quantization (bitsandbytes) is for engine: hf; for vllm serve a pre-quantized "
            "model (AWQ, GPTQ) or remove quantization"
        )
    if s.engine == "vllm" and s.adapter and (s.adapters or s.adapter_dir):
        raise KgcError(
            f"adapter: {s.adapter!r} with named adapters (adapters, adapter_dir) on engine: "
            "vllm: vLLM applies one LoRA per request; merge the base adapter first (kgc "
            "export) and serve the merged model, or use engine: hf"
        )


def engine_config(s: ServeSettings) -> EngineConfig:
    """The settings' model as the engine factory's config (`kgc.modeling.engines`)."""
    from kgc.config import EngineConfig

    return EngineConfig(
        type=s.engine,
        model=s.model,
        adapter=s.adapter,
        checkpoint=s.checkpoint,
        batch_size=s.batch_size,
        trust_remote_code=s.trust_remote_code,
        tensor_parallel_size=s.tensor_parallel_size,
        gpu_memory_utilization=s.gpu_memory_utilization,
        max_model_len=s.max_model_len,
        enforce_eager=s.enforce_eager,
        kv_cache_gib=s.kv_cache_gib,
        quantization=s.quantization,
        **({"dtype": s.dtype} if s.dtype else {}),
    )


class SpoLabel(BaseModel):
    """An SPO schema item as IEPile writes it in an instruction."""

    model_config = ConfigDict(extra="forbid")
    subject_type: str = Field(min_length=1)
    predicate: str = Field(min_length=1)
    object_type: str = Field(min_length=1)


class ExtractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: TaskName
    # labels; SPO: "人物_出生地_地点" or {"subject_type", "predicate", "object_type"};
    # EE, EEA, KG: {type: [roles]}
    schema_: list[str | SpoLabel] | dict[str, list[str]] = Field(alias="schema")
    text: str | None = None
    texts: list[str] | None = None
    language: Literal["zh", "en"] = "zh"
    model: str | None = None
    split_num: int = Field(4, ge=-1)  # labels per instruction; -1: all in one
    max_new_tokens: int | None = Field(None, ge=1)
    constrained: bool = False  # schema-constrained decoding: every answer parses

    @field_validator("split_num")
    @classmethod
    def _split(cls, v):
        if v == 0:
            raise ValueError(
                "split_num 0 is not allowed: labels per instruction (≥ 1), or -1 for all"
            )
        return v


class RequestTooLarge(KgcError):
    """Maps to HTTP 413."""


def request_texts(req: ExtractRequest, limits: Limits) -> list[str]:
    if (req.text is None) == (req.texts is None):
        raise KgcError("give exactly one of 'text' or 'texts'")
    texts = [req.text] if req.text is not None else list(req.texts or [])
    if not texts:
        raise KgcError("'texts' is empty")
    if len(texts) > limits.max_texts:
        raise RequestTooLarge(f"'texts' has {len(texts)} items; at most {limits.max_texts}")
    for i, t in enumerate(texts):
        if not t.strip():
            raise KgcError(f"texts[{i}] is empty")
        if len(t) > limits.max_text_chars:
            raise RequestTooLarge(
                f"texts[{i}] has {len(t)} characters; at most {limits.max_text_chars} "
                "(split long documents, or use kgc extract for corpora)"
            )
    n_schema = (
        len(req.schema_) + sum(len(v) for v in req.schema_.values())
        if isinstance(req.schema_, dict)
        else len(req.schema_)
    )
    if n_schema > limits.max_schema_items:
        raise RequestTooLarge(f"'schema' has {n_schema} items; at most {limits.max_schema_items}")
    check_schema_chars(req, limits)
    return texts


def _short(name: str) -> str:
    return name if len(name) <= 40 else name[:40] + "…"


def check_schema_chars(req: ExtractRequest, limits: Limits) -> None:
    """Every label of a /v1/extract schema (types, roles, SPO parts) within
    `max_label_chars`, all of them within `max_schema_chars`: each split's prompt holds its
    labels, so their size is the prompt's size."""
    labels: list[tuple[str, str]] = []  # (field, label)
    if isinstance(req.schema_, dict):
        for t, roles in req.schema_.items():
            labels.append((f"schema.{_short(t)}", t))
            labels += [(f"schema.{_short(t)}[{j}]", r) for j, r in enumerate(roles)]
    else:
        for i, x in enumerate(req.schema_):
            text = x if isinstance(x, str) else f"{x.subject_type}_{x.predicate}_{x.object_type}"
            labels.append((f"schema[{i}]", text))
    for where, label in labels:
        if len(label) > limits.max_label_chars:
            raise RequestTooLarge(
                f"{where} has {len(label)} characters; at most {limits.max_label_chars} "
                "(limits.max_label_chars): a label is a type or role name, not a description"
            )
    total = sum(len(label) for _, label in labels)
    if total > limits.max_schema_chars:
        raise RequestTooLarge(
            f"schema: its labels have {total} characters in all; at most "
            f"{limits.max_schema_chars} (limits.max_schema_chars): send fewer labels"
        )


def request_schema(req: ExtractRequest) -> Schema:
    from kgc.tasks import get

    task = get(req.task)
    if req.task in ("EE", "EEA", "KG"):
        if not isinstance(req.schema_, dict):
            raise KgcError(f"'schema' for {req.task} must be an object type → roles")
        schema = Schema.from_lists(type_roles=req.schema_)
    else:
        if not isinstance(req.schema_, list):
            raise KgcError(f"'schema' for {req.task} must be a list of labels")
        labels = [_label(req.task, i, x) for i, x in enumerate(req.schema_)]
        if req.task == "RE":
            schema = Schema.from_lists(roles=labels)
        else:
            schema = Schema.from_lists(types=labels)
    problems = task.check_schema(schema)
    if problems:
        raise KgcError("; ".join(problems))
    return schema


def _label(task: str, i: int, item: str | SpoLabel) -> str:
    """A schema item as the label kgc's tasks use (SPO objects joined as s_p_o)."""
    if isinstance(item, str):
        return item
    if task != "SPO":
        raise BadRequest(
            f"schema[{i}]", f"an object item is for task SPO; {task} takes label strings"
        )
    from kgc.tasks.spo import split_typed

    label = f"{item.subject_type}_{item.predicate}_{item.object_type}"
    if "_" in item.subject_type or "_" in item.object_type:
        raise BadRequest(
            f"schema[{i}]",
            f"subject_type {item.subject_type!r} / object_type {item.object_type!r}: a type "
            "name cannot contain '_' (IEPile joins SPO labels with '_'); rename the type",
        )
    assert split_typed(label) == (item.subject_type, item.predicate, item.object_type)
    return label


def build_instructions(
    req: ExtractRequest, text: str, schema: Schema, settings: ServeSettings | None = None
) -> list[tuple[str, dict | None]]:
    """(instruction, answer schema or None) per schema split of one text, as `kgc extract`
    builds them (`kgc.schema_splits`); the answer schema is set when the request asks for
    constrained decoding."""
    from kgc.schema_splits import answer_schema, instructions
    from kgc.tasks import get

    task = get(req.task)
    s = settings or ServeSettings()
    return [
        (
            split.instruction,
            answer_schema(
                task,
                split.schema,
                max_text_chars=s.constrained_max_text_chars,
                max_list_items=s.constrained_max_list_items,
            )
            if req.constrained
            else None,
        )
        for split in instructions(task, req.language, schema, text, split_num=req.split_num)
    ]


def response_schema(body: dict) -> dict | None:
    """The JSON Schema of an OpenAI `response_format` ({"type": "json_schema", ...}) or None;
    a malformed one is a KgcError naming the field."""
    fmt = body.get("response_format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise KgcError(
            "field 'response_format' must be {'type': 'json_schema', 'json_schema': "
            "{'name': ..., 'schema': {...}}} or {'type': 'text'}"
        )
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise KgcError("field 'response_format.json_schema.schema' must be a JSON Schema object")
    return schema


def merge_outputs(task_name: str, outputs: list[str]) -> dict:
    """Parsed records of all schema splits of one text, de-duplicated as `kgc extract`
    merges a document's (`kgc.schema_splits.merge_records`), plus parse errors."""
    from kgc.schema_splits import merge_records
    from kgc.tasks import get

    task = get(task_name)
    parsed = [task.parse(out) for out in outputs]
    merged = merge_records((task, rec, None) for p in parsed for rec in p.records)
    return {"records": [rec for rec, _ in merged], "errors": [e for p in parsed for e in p.errors]}


def api_keys(env: str) -> set[str]:
    return {k.strip() for k in os.environ.get(env, "").split(",") if k.strip()}


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_matches(token: str, hashes: set[str] | list[str]) -> bool:
    """Constant-time check of a bearer token against the keys' hashes (every hash compared)."""
    h = key_hash(token)
    ok = False
    for k in hashes:
        ok |= hmac.compare_digest(h, k)
    return ok


def _adapter_folder(name: str, settings: ServeSettings):
    """The folder `name` in adapter_dir (a Path), or None. Names are plain folder names: no
    path separators or '..', so a request cannot reach outside the adapter directory."""
    if not ADAPTER_NAME.match(name) or ".." in name or not settings.adapter_dir:
        return None
    from pathlib import Path

    root = Path(settings.adapter_dir).resolve()
    path = (root / name).resolve()
    return path if path.parent == root and path.is_dir() else None


def resolve_adapter(name: str, settings: ServeSettings) -> str | None:
    """Directory of adapter `name`, or None when unknown: a configured one (`adapters`; the
    engine checks its files when it loads it), or a folder of adapter_dir holding peft's
    config and weights."""
    if name in settings.adapters:
        return settings.adapters[name]
    from kgc.checkpoint import adapter_problem

    path = _adapter_folder(name, settings)
    return str(path) if path is not None and adapter_problem(path) is None else None


def adapter_unavailable(name: str, settings: ServeSettings) -> str | None:
    """Why an adapter_dir folder called `name` cannot be served (its config or weights
    missing), for the 404; None when there is no such folder."""
    from kgc.checkpoint import adapter_problem

    path = _adapter_folder(name, settings)
    problem = adapter_problem(path) if path is not None else None
    return f"adapter {name!r} cannot be loaded: {problem}" if problem else None


def known_models(settings: ServeSettings) -> list[str]:
    names = [settings.name] + [f"{settings.name}:{a}" for a in settings.adapters]
    if settings.adapter_dir:
        from pathlib import Path

        root = Path(settings.adapter_dir)
        if root.is_dir():
            # only what a request could load: resolve_adapter refuses symlinks out of the folder
            names += sorted(
                f"{settings.name}:{p.name}"
                for p in root.iterdir()
                if p.name not in settings.adapters and resolve_adapter(p.name, settings)
            )
    return names


def split_model_name(model: str | None, settings: ServeSettings) -> str | None:
    """'kgc' → None (the base); 'kgc:ner' or 'ner' → adapter 'ner'. Raises KeyError if unknown."""
    if model in (None, "", settings.name):
        return None
    adapter = model.split(":", 1)[1] if model.startswith(settings.name + ":") else model
    if resolve_adapter(adapter, settings) is None:
        raise KeyError(adapter)
    return adapter


# ------------------------------------------------------------------ request checks (ingress)
class BadRequest(KgcError):
    """Maps to HTTP 422; `field` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value; stops counting past `limit` (iterative: a
    10,000-deep body cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def check_text(field: str, value: str) -> None:
    """Text must be encodable as UTF-8: a lone surrogate (a JSON "\\ud800" escape) is not."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start : exc.end].encode("unicode_escape").decode()
        raise BadRequest(
            field,
            f"contains {bad} at character {exc.start}, which is not valid Unicode text "
            "(a lone surrogate); send the text as valid UTF-8",
        ) from None


def check_strings(field: str, value: Any) -> None:
    """check_text for every string (keys included) inside a JSON value."""
    stack = [(field, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            check_text(where, v)
        elif isinstance(v, dict):
            for k, x in v.items():
                check_text(where, k)
                stack.append((f"{where}.{k}", x))
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", x) for i, x in enumerate(v))


def check_json_schema(field: str, schema: dict, limits: Limits) -> None:
    """Size, nesting and property count of a response_format schema (RequestTooLarge), and
    its strings (BadRequest). Whether xgrammar accepts it is checked when it is compiled."""
    size = len(json.dumps(schema, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > limits.max_schema_bytes:
        raise RequestTooLarge(
            f"{field} has {size} bytes; at most {limits.max_schema_bytes} (limits.max_schema_bytes)"
        )
    depth = json_depth(schema, limits.max_schema_depth)
    if depth > limits.max_schema_depth:
        raise RequestTooLarge(
            f"{field} is nested more than {limits.max_schema_depth} levels deep "
            "(limits.max_schema_depth)"
        )
    props, stack = 0, [schema]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if isinstance(v.get("properties"), dict):
                props += len(v["properties"])
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    if props > limits.max_schema_properties:
        raise RequestTooLarge(
            f"{field} declares {props} properties; at most {limits.max_schema_properties} "
            "(limits.max_schema_properties)"
        )
    check_strings(field, schema)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    # a string, or OpenAI content parts ({"type": "text", "text": ...}; text parts are kept)
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _text_parts(cls, v):
        if isinstance(v, list):
            for i, part in enumerate(v):
                if part.get("type", "text") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError(
                        f"content[{i}] must be a text part {{'type': 'text', 'text': '...'}}"
                    )
        return v

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p["text"] for p in self.content)
        return self.content or ""


def _finite(name: str, v: float | None) -> float | None:
    if v is not None and not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number")
    return v


class _SamplingFields(BaseModel):
    """What the chat and completions requests share: sampling numbers (finite), `stop` (a
    string or at most 4)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _no_nan(cls, v, info):
        if isinstance(v, bool) or (v is not None and not isinstance(v, (int, float))):
            raise ValueError(f"{info.field_name} must be a number")
        return _finite(info.field_name, v)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop strings")
        return v

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(_SamplingFields):
    """The OpenAI chat-completions request, typed: a malformed field is a 422 naming it.
    Fields of the OpenAI API that kgc does not implement are ignored, except values it would
    silently get wrong (n > 1, tools), which are refused."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(None, ge=1, strict=True)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, strict=True)
    stop: str | list[str] | None = None
    stream: bool = False
    response_format: dict[str, Any] | None = None
    tools: list | None = None  # refused: kgc does not call tools
    seed: int | None = None
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v):
        if v is not None and v != 1:
            raise ValueError(f"n={v} is not supported: kgc returns one choice per request (n=1)")
        return v

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, v):
        if v:
            raise ValueError("tools are not supported by kgc's chat endpoint")
        return v


class CompletionRequest(_SamplingFields):
    """The OpenAI (legacy) completions request: `prompt` is raw text, fed to the model as it
    is (no chat template), as vLLM's /v1/completions does. Unsupported values kgc would
    silently get wrong are refused."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    model: str | None = None
    prompt: str | list[str]
    max_tokens: int | None = Field(None, ge=1, strict=True)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, strict=True)
    best_of: int | None = Field(None, strict=True)
    stop: str | list[str] | None = None
    stream: bool = False
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None
    seed: int | None = None
    user: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("prompt is an empty list; send a string or a list of strings")
        return v

    @field_validator("n", "best_of")
    @classmethod
    def _one(cls, v, info):
        if v is not None and v != 1:
            raise ValueError(f"{info.field_name}={v} is not supported: one choice per prompt")
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v):
        if v:
            raise ValueError("echo=true is not supported: the prompt is not repeated")
        return v

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v):
        if v is not None:
            raise ValueError("logprobs are not supported by kgc")
        return v

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v):
        if v:
            raise ValueError("suffix (insertion) is not supported by kgc")
        return v

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\])$")


def validation_fields(exc) -> list[dict]:
    """A pydantic ValidationError as [{field, message}] (the input value is not echoed);
    union-member tags ("stop.list[str]") are dropped and the same field's messages joined."""
    out: dict[str, list[str]] = {}
    for e in exc.errors(include_input=False, include_url=False):
        parts = [str(x) for x in e["loc"] if not (isinstance(x, str) and _UNION_TAG.match(x))]
        out.setdefault(".".join(parts) or "body", []).append(e["msg"])
    return [{"field": f, "message": "; or ".join(dict.fromkeys(m))} for f, m in out.items()]
