"""Graph and pipeline configs (YAML + `key.sub=value` overrides, via `kgc.config.load_config`).

    input: {paths: [out/ner, out/re], format: auto}
    output: {path: out/graph}
    canonical: {nfkc: true, whitespace: true, casefold: true, aliases: {Obama: Barack Obama}}
    strict: false            # true: drop (and count) labels outside the schema
    exports: [neo4j, turtle, graphml, html]   # nodes.jsonl + edges.jsonl are always written

A pipeline config is an extraction config (`extract:`, see `kgc.config.ExtractConfig`), an
optional list of tasks to run over the same documents, and a `graph:` section whose input
defaults to the extraction outputs.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from kgc.config import ExtractConfig, _Strict, local_folder

EXPORTS = ("neo4j", "turtle", "graphml", "html")  # nodes.jsonl / edges.jsonl: always
# the scalar node properties every export carries (Neo4j, GraphML, the HTML view)
NODE_FIELDS = ("name", "type", "kind", "support", "confidence", "mention_count", "doc_count")


class GraphInput(_Strict):
    # extraction output folders (with rows/), folders or files of row shards, annotated
    # JSONL ({text, entity|relation|event}), or DeepKE prediction files (IEPile instruction
    # records with the model's `output`); one path or a list
    paths: list[str] = Field(min_length=1)
    format: Literal["auto", "rows", "annotated", "predictions"] = "auto"
    # annotated input: which task reads each annotation field
    annotation_tasks: dict[str, str] = {"entity": "NER", "relation": "RE", "event": "EE"}
    # predictions: the task that parses `output` (None: from each record's instruction text)
    task: str | None = None
    # annotated and predictions input: document id field (default: the file's path relative
    # to the input paths' common folder, and its line: NER/test.json:3)
    id_field: str | None = "id"

    @field_validator("paths", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, str) else v


class GraphOutput(_Strict):
    path: str

    @field_validator("path")
    @classmethod
    def _local_folder(cls, v: str) -> str:
        return local_folder(
            v, "output.path", "kgc writes the graph's files with local file I/O", "/data/out/graph"
        )


class CanonicalConfig(_Strict):
    nfkc: bool = True
    whitespace: bool = True
    casefold: bool = True
    aliases: dict[str, str] = {}  # alias → canonical name
    alias_file: str | None = None  # JSON/YAML mapping or TSV alias<TAB>name


class RdfConfig(_Strict):
    namespace: str = "http://kgc.local/graph/"
    prefix: str = "kg"
    batch_nodes: int = Field(5000, ge=1)  # nodes per serialised rdflib graph (streaming)

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        if not v.endswith(("/", "#")) or ":" not in v:
            raise ValueError(
                "must be an absolute IRI ending in '/' or '#', e.g. http://example.org/kg/"
            )
        return v


class HtmlConfig(_Strict):
    title: str = "kgc knowledge graph"
    max_nodes: int = Field(800, ge=1)  # the best-supported nodes are shown; the rest counted
    max_mentions: int = Field(20, ge=0)  # mentions embedded per node (all are in nodes.jsonl)


class GraphConfig(_Strict):
    # the keys that hold paths (kgc.config.load_config: relative ones in a file → its folder)
    config_paths: ClassVar[tuple[str, ...]] = (
        "input.paths",
        "output.path",
        "canonical.alias_file",
        "schema",
    )
    config_inputs: ClassVar[tuple[str, ...]] = ("input.paths", "canonical.alias_file", "schema")

    input: GraphInput
    output: GraphOutput
    canonical: CanonicalConfig = CanonicalConfig()
    # one node per canonical name whatever its type (false: a name + type is a node)
    merge_across_types: bool = True
    default_type: str = "Entity"  # type of a node no mention typed
    strict: bool = False  # drop (and count) labels outside each row's schema (and `schema`)
    schema_path: str | None = Field(None, alias="schema")  # 3-line schema file for strict mode
    # drop (and count) records whose names/triggers/arguments do not occur in their chunk's
    # text: invented by the model, not extracted (KG attribute values may be normalised)
    grounded: bool = False
    confidence_prior: float = Field(0.5, gt=0, lt=1)  # per-mention belief, noisy-OR combined
    sentence_max_chars: int = Field(400, ge=20)
    max_mentions: int | None = Field(None, ge=1)  # cap per node/edge (None: keep every one)
    buckets: int | Literal["auto"] = "auto"  # hash partitions merged one at a time
    bucket_mb: float = Field(64.0, gt=0)  # auto: input MB per bucket
    executor: Literal["local", "ray"] = "local"
    cpus_per_task: float = Field(0.5, gt=0)  # executor=ray
    exports: list[Literal["neo4j", "turtle", "graphml", "html"]] = list(EXPORTS)
    rdf: RdfConfig = RdfConfig()
    html: HtmlConfig = HtmlConfig()

    model_config = _Strict.model_config | {"populate_by_name": True}

    @field_validator("buckets")
    @classmethod
    def _buckets(cls, v):
        if isinstance(v, int) and not 1 <= v <= 65536:
            raise ValueError("must be 'auto' or between 1 and 65536")
        return v


class PipelineGraph(GraphConfig):
    input: GraphInput | None = None  # default: the extraction outputs
    output: GraphOutput | None = None  # default: <extract.output.path>/graph


class TaskRun(_Strict):
    task: str
    schema_path: str | None = Field(None, alias="schema")  # default: extract.schema
    split_num: int | None = None

    model_config = _Strict.model_config | {"populate_by_name": True}


def _under(prefix: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{prefix}.{k}" for k in keys)


class PipelineConfig(_Strict):
    config_paths: ClassVar[tuple[str, ...]] = (
        *_under("extract", ExtractConfig.config_paths),
        "tasks.*.schema",
        *_under("graph", GraphConfig.config_paths),
    )
    config_inputs: ClassVar[tuple[str, ...]] = (
        *_under("extract", ExtractConfig.config_inputs),
        "tasks.*.schema",
        *_under("graph", GraphConfig.config_inputs),
    )
    config_names: ClassVar[tuple[str, ...]] = _under("extract", ExtractConfig.config_names)
    config_paths_unless: ClassVar[dict[str, tuple[str, str]]] = {
        f"extract.{k}": (f"extract.{other}", value)
        for k, (other, value) in ExtractConfig.config_paths_unless.items()
    }

    extract: ExtractConfig
    # run the extraction once per task (outputs under <extract.output.path>/<TASK>);
    # empty: the one task of `extract`
    tasks: list[TaskRun] = []
    graph: PipelineGraph = PipelineGraph()
    address: str | None = None  # Ray address (default: a local Ray)
