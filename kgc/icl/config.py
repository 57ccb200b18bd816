"""`kgc icl` configuration: one YAML file, `key.sub=value` overrides, validated once.

The API key is never part of a config: `client.api_key_env` names the environment variable
that holds it. Unknown keys are rejected with the key and the fix (`kgc.config.load_config`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kgc.config import local_folder
from kgc.errors import KgcError, Problem
from kgc.icl import MODES

Mode = Literal[MODES]  # each mode also has its section below (IclConfig.<mode>)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ClientConfig(_Strict):
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable
    allow_no_key: bool = False  # a local server without auth (vLLM, kgc serve auth_disabled)
    timeout_s: float = Field(60.0, gt=0)  # one attempt as a whole: connect, headers, body
    # an answer's size (a chat answer is a few KB; 128 embeddings of 3,072 floats ≈ 10 MB)
    max_response_bytes: int = Field(16 << 20, ge=1024)
    max_retries: int = Field(5, ge=0)  # on 429, 5xx, timeouts and connection errors
    backoff_s: float = Field(1.0, ge=0)  # first wait; doubles per retry, with jitter
    max_backoff_s: float = Field(60.0, ge=0)  # also the cap on a server's Retry-After
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    concurrency: int = Field(8, ge=1)  # requests in flight per process / Ray actor
    cache_dir: str | None = "~/.cache/kgc/icl"  # responses on disk; null disables
    embedding_model: str | None = None  # fewshot_re nearest demos through /v1/embeddings
    system_prompt: str | None = None


class ChatSampling(_Strict):
    max_tokens: int | None = Field(None, ge=1)  # None: the mode's default
    temperature: float | None = Field(None, ge=0, le=2)  # None: the mode's default
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] = Field(default_factory=list, max_length=4)
    seed: int | None = None


class RunnerConfig(_Strict):
    backend: Literal["auto", "threads", "ray"] = "auto"
    ray_threshold: int = Field(200, ge=1)  # auto: Ray Data from this many requests on
    num_actors: int = Field(2, ge=1)
    cpus_per_actor: float = Field(0.25, gt=0)  # fractional: the actors mostly wait on HTTP
    batch_size: int = Field(16, ge=1)
    # no batch back from the actors for this long → fail the run (a rerun resumes from the
    # cache); longer than a batch of requests can take with every retry at the defaults
    stall_timeout_s: float = Field(1800.0, gt=0)
    address: str | None = None  # Ray cluster address (default: a local Ray)


class LlmiclConfig(_Strict):
    task: Literal["ner", "re", "ee", "rte", "ccks2023"] = "ner"
    demos: str | None = None  # a demonstration file, or a folder of <task>_<en|cn>.json
    num_demos: int | None = Field(None, ge=0)  # None: every demonstration in the file
    seed: int = 42
    domain: str | None = None
    labels: list[str] | None = None  # entity types, relations, event types (optional)
    instruction: str | None = None  # replaces the built-in instruction
    # a single RE query (with --text): the entity pair
    head_entity: str | None = None
    head_type: str | None = None
    tail_entity: str | None = None
    tail_type: str | None = None


class AugmentConfig(_Strict):
    relations: list[str] | None = None  # default: every relation in the input
    k: int = Field(3, ge=1)  # demonstrations per request
    samples_per_request: int = Field(5, ge=1)
    requests_per_relation: int = Field(1, ge=1)
    entity_types: list[str] | None = None  # allowed types; default: those in the input
    seed: int = 42
    format: Literal["auto", "deepke", "tacred"] = "auto"  # output follows the input


class FewshotReConfig(_Strict):
    train: str | None = None  # demonstration pool (TACRED JSON list or JSONL)
    prompt: Literal["text", "text_schema", "instruct", "instruct_schema"] = "instruct_schema"
    k: int = Field(1, ge=0)  # demonstrations per relation
    selection: Literal["random", "nearest"] = "random"
    seed: int = 42
    relations: list[str] | None = None  # default: labels of train and input
    negative_label: str = "no_relation"
    max_prompt_chars: int = Field(24_000, ge=200)  # farthest demos dropped beyond this
    # generation of new training samples (augment) for the fine-tune is the augment mode


class CodeKgcConfig(_Strict):
    relations: list[str] = Field(default_factory=list)
    entity_types: list[str] = Field(default_factory=list)
    demos: str | None = None  # JSON/JSONL {text, triples: [{head, head_type, ...}]}
    # DeepKE's CodeKGC prompt files, used as they are (read as text, parsed with `ast`, never
    # run): the schema as Python classes (entity types: classes of Entity, relations:
    # classes of Rel) and the demonstrations as docstring + `extract = Extract([...])` pairs
    schema_prompt: str | None = None
    icl_prompt: str | None = None
    num_demos: int | None = Field(None, ge=0)
    seed: int = 42
    max_source_chars: int = Field(20_000, ge=100)
    max_nodes: int = Field(5_000, ge=10)
    max_string_chars: int = Field(500, ge=1)


class IclConfig(_Strict):
    # the keys that hold paths (kgc.config.load_config: relative ones in a file → its folder)
    config_paths: ClassVar[tuple[str, ...]] = (
        "input",
        "output",
        "client.cache_dir",
        "llmicl.demos",
        "fewshot_re.train",
        "codekgc.demos",
        "codekgc.schema_prompt",
        "codekgc.icl_prompt",
    )
    config_inputs: ClassVar[tuple[str, ...]] = (
        "input",
        "llmicl.demos",
        "fewshot_re.train",
        "codekgc.demos",
        "codekgc.schema_prompt",
        "codekgc.icl_prompt",
    )

    mode: Mode
    language: Literal["en", "zh"] = "en"
    input: str | None = None  # a file (JSON list or JSONL); or --text on the command line
    output: str | None = None  # a folder: predictions.jsonl, summary.json (+ generated data)
    client: ClientConfig = ClientConfig()
    generation: ChatSampling = ChatSampling()
    runner: RunnerConfig = RunnerConfig()
    llmicl: LlmiclConfig = LlmiclConfig()
    augment: AugmentConfig = AugmentConfig()
    fewshot_re: FewshotReConfig = FewshotReConfig()
    codekgc: CodeKgcConfig = CodeKgcConfig()

    @field_validator("output")
    @classmethod
    def _local_folder(cls, v: str | None) -> str | None:
        if v is None:
            return v
        why = "kgc writes predictions.jsonl and summary.json there with local file I/O"
        return local_folder(v, "output", why, "/data/out/icl")


def load_icl_config(
    path, overrides: list[str] | None = None, data: dict | None = None
) -> IclConfig:
    from kgc.config import load_config

    cfg = load_config(path, overrides, data=data, schema=IclConfig)
    stray = sorted((set(MODES) - {cfg.mode}) & cfg.model_fields_set)
    if stray:
        raise KgcError(
            Problem(
                f"section(s) {', '.join(stray)} are set but mode is {cfg.mode!r}; remove them "
                "or change mode",
                str(path) if path else "<config>",
            )
        )
    return cfg
