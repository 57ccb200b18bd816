"""What the Serve app needs that is not Ray: request models, limits, instruction building for
`/v1/extract` (schema split as in batch extraction) and merging of the split results.

`schema` in a request is the task's label universe: a list of labels (NER entity types, RE
relations, EET event types, SPO "subject_type_predicate_object_type" strings) or an object
type → roles (EE, EEA event roles; KG attributes).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kgc.errors import KgcError
from kgc.schema import Schema

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_body_bytes: int = 1_000_000
    max_text_chars: int = 20_000
    max_texts: int = 64
    max_schema_items: int = 200
    max_new_tokens: int = 1024


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
    # hf: CPU/GPU, named LoRA adapters, P-Tuning; vllm: GPU only, one model (+ one LoRA)
    engine: Literal["hf", "vllm"] = "hf"
    model: str | None = None  # base model directory
    checkpoint: str | None = None  # or a kgc checkpoint (base + adapter + chat format)
    adapter: str | None = None  # an adapter always applied to the base (P-Tuning works here)
    name: str = "kgc"  # model name clients use for the base model
    adapters: dict[str, str] = {}  # name → adapter directory
    adapter_dir: str | None = None  # more adapters by folder name, loaded on first use
    max_loaded_adapters: int = Field(4, ge=1)
    batch_size: int = Field(16, ge=1)
    batch_wait_s: float = Field(0.02, ge=0)
    max_new_tokens: int = Field(256, ge=1)
    limits: Limits = Limits()
    api_keys_env: str = "KGC_API_KEYS"  # comma-separated keys in this environment variable
    auth_disabled: bool = False  # only for local use
    replica_cpus: float = Field(1.0, gt=0)  # CPUs per replica (fractional is fine)
    replica_gpus: float = Field(0.0, ge=0)  # GPUs per model replica (vllm needs ≥ 1)
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
    if s.engine == "vllm" and s.replica_gpus < 1:
        raise KgcError("engine: vllm runs on a CUDA GPU: set replica_gpus: 1 (or use engine: hf)")
    if s.engine == "vllm" and (s.adapters or s.adapter_dir):
        raise KgcError(
            "engine: vllm serves one model (optionally with `adapter:` or a kgc "
            "`checkpoint:`); named adapters (`adapters`, `adapter_dir`) need engine: hf"
        )


class ExtractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: Literal["NER", "RE", "SPO", "EE", "EET", "EEA", "KG"]
    schema_: list[str] | dict[str, list[str]] = Field(alias="schema")
    text: str | None = None
    texts: list[str] | None = None
    language: Literal["zh", "en"] = "zh"
    model: str | None = None
    split_num: int = Field(4, ge=-1)
    max_new_tokens: int | None = Field(None, ge=1)
    constrained: bool = False  # schema-constrained decoding: every answer parses


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
    return texts


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
        if req.task == "RE":
            schema = Schema.from_lists(roles=req.schema_)
        else:
            schema = Schema.from_lists(types=req.schema_)
    problems = task.check_schema(schema)
    if problems:
        raise KgcError("; ".join(problems))
    return schema


def build_instructions(
    req: ExtractRequest, text: str, schema: Schema, settings: ServeSettings | None = None
) -> list[tuple[str, dict | None]]:
    """(instruction, answer schema or None) per schema split of one text; the answer schema
    is set when the request asks for constrained decoding."""
    from kgc.engine import bounded
    from kgc.sampling import SamplingOptions, record_rng
    from kgc.tasks import get

    task = get(req.task)
    s = settings or ServeSettings()
    opts = SamplingOptions(split_num=req.split_num)
    chunks = task.test_chunks(None, schema, record_rng(0, 0, text), opts, text)
    return [
        (
            task.instruction(req.language, c, text),
            bounded(
                task.output_schema(c), s.constrained_max_text_chars, s.constrained_max_list_items
            )
            if req.constrained
            else None,
        )
        for c in chunks
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
    """Parsed records of all schema splits of one text, de-duplicated, plus parse errors."""
    from kgc.tasks import get

    task = get(task_name)
    records, errors, seen = [], [], set()
    for out in outputs:
        parsed = task.parse(out)
        errors.extend(parsed.errors)
        for rec in parsed.records:
            key = json.dumps(task.tuples([rec]), ensure_ascii=False, sort_keys=True)
            if key not in seen:
                seen.add(key)
                records.append(rec)
    return {"records": records, "errors": errors}


def api_keys(env: str) -> set[str]:
    return {k.strip() for k in os.environ.get(env, "").split(",") if k.strip()}


def resolve_adapter(name: str, settings: ServeSettings) -> str | None:
    """Directory of adapter `name`, or None when unknown. Names are plain folder names: no
    path separators or '..', so a request cannot reach outside the adapter directory."""
    if name in settings.adapters:
        return settings.adapters[name]
    if not ADAPTER_NAME.match(name) or ".." in name or not settings.adapter_dir:
        return None
    from pathlib import Path

    root = Path(settings.adapter_dir).resolve()
    path = (root / name).resolve()
    if path.parent != root or not (path / "adapter_config.json").is_file():
        return None
    return str(path)


def known_models(settings: ServeSettings) -> list[str]:
    names = [settings.name] + [f"{settings.name}:{a}" for a in settings.adapters]
    if settings.adapter_dir:
        from pathlib import Path

        root = Path(settings.adapter_dir)
        if root.is_dir():
            names += sorted(
                f"{settings.name}:{p.name}"
                for p in root.iterdir()
                if (p / "adapter_config.json").is_file() and p.name not in settings.adapters
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


def chat_prompt(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({"role": str(m.get("role", "user")), "content": str(content or "")})
    return out
