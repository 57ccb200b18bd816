"""Paths in configs: a relative path written in a config file resolves against that file's
folder; a path given as an override (key=value) or in `data=` against the current folder.
The shipped configs load, and the documented commands work, from any folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from kgc.config import (
    EvalConfig,
    ExtractConfig,
    FinetuneConfig,
    load_config,
    resolve_config_paths,
)
from kgc.errors import KgcError
from kgc.graph.config import GraphConfig, PipelineConfig
from kgc.icl.config import IclConfig, load_icl_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "jobs" / "configs"
SCHEMAS = (FinetuneConfig, ExtractConfig, EvalConfig, GraphConfig, PipelineConfig, IclConfig)


def schema_for(path: Path) -> type[BaseModel]:
    """The schema a shipped config is read with (by its name's prefix, as the jobs do)."""
    for prefix, schema in (
        ("extract_", ExtractConfig),
        ("eval_", EvalConfig),
        ("graph_", GraphConfig),
        ("pipeline_", PipelineConfig),
        ("icl_", IclConfig),
    ):
        if path.stem.startswith(prefix):
            return schema
    return FinetuneConfig


def load(path: Path | str, overrides: list[str] | None = None, schema=None):
    schema = schema or schema_for(Path(path))
    if schema is IclConfig:
        return load_icl_config(path, overrides)
    return load_config(path, overrides, schema=schema)


def get(cfg: BaseModel, key: str):
    """A config's value at a dotted YAML key (aliases as written in files)."""
    node = cfg.model_dump(by_alias=True)
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node.get(part)
        if node is None:
            return None
    return node


def write(path: Path, tree: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- the rule
def test_file_values_resolve_against_the_file_folder_overrides_against_cwd(tmp_path, monkeypatch):
    cfg_dir = tmp_path / "project" / "configs"
    conf = write(cfg_dir / "eval.yaml", {"task": "NER", "input": "../data/p.jsonl", "report": "r.json"})  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    cfg = load_config(conf, [], schema=EvalConfig)
    assert cfg.input == str(tmp_path / "project" / "data" / "p.jsonl")
    assert cfg.report == str(cfg_dir / "r.json")

    # an override is a path from the current folder: kept as given
    cfg = load_config(conf, ["input=mine.jsonl", "report=out/r.json"], schema=EvalConfig)
    assert (cfg.input, cfg.report) == ("mine.jsonl", "out/r.json")
    assert Path(cfg.input).resolve() == elsewhere / "mine.jsonl"

    # so is a `data=` dict (no file): nothing to be relative to
    cfg = load_config(None, [], data={"task": "NER", "input": "../x.jsonl"}, schema=EvalConfig)
    assert cfg.input == "../x.jsonl"


def test_a_relative_config_path_keeps_paths_relative_to_the_current_folder(tmp_path, monkeypatch):
    """`--config jobs/configs/x.yaml` from the root gives root-relative paths (what a cluster
    job's working_dir, the uploaded root, needs); an absolute config path gives absolute."""
    write(tmp_path / "jobs" / "configs" / "e.yaml", {"task": "NER", "input": "../../ex/p.jsonl"})
    monkeypatch.chdir(tmp_path)
    assert load_config("jobs/configs/e.yaml", [], schema=EvalConfig).input == "ex/p.jsonl"
    cfg = load_config(tmp_path / "jobs" / "configs" / "e.yaml", [], schema=EvalConfig)
    assert cfg.input == str(tmp_path / "ex" / "p.jsonl")


@pytest.mark.parametrize(
    "written, kept",
    [
        ("/abs/train.jsonl", True),
        ("s3://bucket/train.jsonl", True),
        ("file:///abs/train.jsonl", True),
        ("~/data/train.jsonl", True),
        ("", True),
        ("train.jsonl", False),
        ("./train.jsonl", False),
        ("sub/train.jsonl", False),
    ],
)
def test_what_is_left_as_written(tmp_path, written, kept):
    tree = {"model": {"path": "/m"}, "data": {"train_file": written}}
    changed = resolve_config_paths(tree, FinetuneConfig, str(tmp_path))
    got = tree["data"]["train_file"]
    if kept:
        assert got == written and changed == []
    else:
        assert got == os.path.normpath(str(tmp_path / written))
        assert [(c.key, c.written, c.resolved) for c in changed] == [
            ("data.train_file", written, got)
        ]


def test_a_model_name_stays_a_name_unless_it_is_next_to_the_config(tmp_path):
    tree = {"model": {"path": "smollm2-135m-instruct"}, "data": {"train_file": "t.jsonl"}}
    resolve_config_paths(tree, FinetuneConfig, str(tmp_path))
    assert tree["model"]["path"] == "smollm2-135m-instruct"  # a prepared model's name
    (tmp_path / "my-model").mkdir()
    for written, want in (("my-model", tmp_path / "my-model"), ("models/x", tmp_path / "models/x")):
        tree = {"model": {"path": written}, "data": {"train_file": "t.jsonl"}}
        resolve_config_paths(tree, FinetuneConfig, str(tmp_path))
        assert tree["model"]["path"] == str(want)


def test_an_openai_engine_model_is_a_served_name_never_a_path(tmp_path):
    base = {"input": {"path": "d"}, "task": "NER", "output": {"path": "o"}}
    served = {**base, "engine": {"type": "openai", "model": "org/model-7b"}}
    resolve_config_paths(served, ExtractConfig, str(tmp_path))
    assert served["engine"]["model"] == "org/model-7b"
    local = {**base, "engine": {"type": "hf", "model": "models/m"}}
    resolve_config_paths(local, ExtractConfig, str(tmp_path))
    assert local["engine"]["model"] == str(tmp_path / "models" / "m")
    pipeline = {"extract": served | {"engine": {"type": "openai", "model": "a/b"}}}
    resolve_config_paths(pipeline, PipelineConfig, str(tmp_path))
    assert pipeline["extract"]["engine"]["model"] == "a/b"


def test_lists_and_list_items(tmp_path):
    d = str(tmp_path)
    one = {"input": {"paths": "rows"}, "output": {"path": "g"}}
    resolve_config_paths(one, GraphConfig, d)
    assert one["input"]["paths"] == str(tmp_path / "rows")
    many = {"input": {"paths": ["a", "/abs/b", "s3://c/d"]}, "output": {"path": "g"}}
    changed = resolve_config_paths(many, GraphConfig, d)
    assert many["input"]["paths"] == [str(tmp_path / "a"), "/abs/b", "s3://c/d"]
    assert [c.key for c in changed] == ["input.paths.0", "output.path"]
    pipe = {
        "extract": {"input": {"path": "docs"}, "schema": "s.json", "output": {"path": "o"}},
        "tasks": [{"task": "NER"}, {"task": "RE", "schema": "re.json"}],
        "graph": {"canonical": {"alias_file": "al.tsv"}},
    }
    resolve_config_paths(pipe, PipelineConfig, d)
    assert pipe["tasks"] == [{"task": "NER"}, {"task": "RE", "schema": str(tmp_path / "re.json")}]
    assert pipe["extract"]["schema"] == str(tmp_path / "s.json")
    assert pipe["graph"]["canonical"]["alias_file"] == str(tmp_path / "al.tsv")


def test_icl_sections_and_a_trailing_slash(tmp_path):
    tree = {
        "mode": "codekgc",
        "input": "in.json",
        "output": "out/",
        "client": {"cache_dir": "cache"},
        "codekgc": {"schema_prompt": "p/schema.py", "icl_prompt": "p/icl.py", "demos": "d.json"},
    }
    resolve_config_paths(tree, IclConfig, str(tmp_path))
    assert tree["output"] == str(tmp_path / "out") + "/"
    assert tree["client"]["cache_dir"] == str(tmp_path / "cache")
    assert tree["codekgc"] == {
        "schema_prompt": str(tmp_path / "p" / "schema.py"),
        "icl_prompt": str(tmp_path / "p" / "icl.py"),
        "demos": str(tmp_path / "d.json"),
    }


def test_a_path_written_for_the_old_rule_is_named_with_its_fix(tmp_path, monkeypatch):
    """A config whose input path exists only relative to the current folder (the way paths
    were read before): the error names the key, the value and the three fixes."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "p.jsonl").write_text("{}\n")
    conf = write(tmp_path / "configs" / "eval.yaml", {"task": "NER", "input": "data/p.jsonl"})
    with pytest.raises(KgcError) as exc:
        load_config(conf, [], schema=EvalConfig)
    msg = str(exc.value)
    assert msg.startswith(f"{conf}: key 'input' = 'data/p.jsonl': ")
    assert str(tmp_path / "configs" / "data" / "p.jsonl") in msg
    assert "write input: ../data/p.jsonl in the file" in msg
    assert "override input=data/p.jsonl" in msg
    # the override it suggests works, and so does the rewritten file
    assert load_config(conf, ["input=data/p.jsonl"], schema=EvalConfig).input == "data/p.jsonl"
    write(conf, {"task": "NER", "input": "../data/p.jsonl"})
    assert Path(load_config(conf, [], schema=EvalConfig).input) == tmp_path / "data" / "p.jsonl"
    # outputs are not inputs: an output folder that exists here is no error
    (tmp_path / "r.json").write_text("{}")
    write(conf, {"task": "NER", "input": "../data/p.jsonl", "report": "r.json"})
    assert load_config(conf, [], schema=EvalConfig).report == str(tmp_path / "configs" / "r.json")


# ----------------------------------------------------------------------------- declarations
def _model_of(annotation) -> type[BaseModel] | None:
    """The pydantic model inside `X`, `X | None`, `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _holds_str(annotation) -> bool:
    """`str`, `str | None`, `list[str]`, `dict[str, str]` (not a Literal of strings)."""
    return annotation is str or any(_holds_str(a) for a in typing.get_args(annotation))


def _field(model: type[BaseModel], name: str):
    for fname, info in model.model_fields.items():
        if name in (fname, info.alias):
            return info
    return None


def _str_leaves(model: type[BaseModel], prefix: str = "", seen=()):
    """Every dotted key (aliases, `*` for list items) whose value may be a string."""
    for fname, info in model.model_fields.items():
        key = f"{prefix}{info.alias or fname}"
        sub = _model_of(info.annotation)
        if sub is not None and sub not in seen:
            is_list = typing.get_origin(info.annotation) is list
            yield from _str_leaves(sub, f"{key}.*." if is_list else f"{key}.", (*seen, sub))
        elif _holds_str(info.annotation):
            yield key


# string keys that are not paths (names, texts, URLs, enums written as str)
NOT_PATHS = {
    "model.family", "model.template", "model.system_prompt", "model.attn_implementation",
    "run.name", "input.text_field", "input.id_field", "task", "engine.base_url",
    "engine.api_key_env", "client.base_url", "client.model", "client.api_key_env",
    "client.embedding_model", "client.system_prompt", "generation.stop", "runner.address",
    "llmicl.domain", "llmicl.labels", "llmicl.instruction", "llmicl.head_entity",
    "llmicl.head_type", "llmicl.tail_entity", "llmicl.tail_type", "augment.relations",
    "augment.entity_types", "fewshot_re.relations", "fewshot_re.negative_label",
    "codekgc.relations", "codekgc.entity_types", "input.annotation_tasks", "input.task",
    "canonical.aliases", "default_type", "rdf.namespace", "rdf.prefix", "html.title",
    "method.lora.target_modules", "address", "tasks.*.task",
}  # fmt: skip


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
def test_declared_path_keys_exist_and_every_path_key_is_declared(schema):
    declared = schema.config_paths
    assert set(schema.config_inputs) <= set(declared)
    assert set(getattr(schema, "config_names", ())) <= set(schema.config_inputs)
    for key in declared:  # each names a string field of the schema
        model, parts = schema, key.split(".")
        for i, part in enumerate(parts):
            if part == "*":
                continue
            info = _field(model, part)
            assert info is not None, f"{schema.__name__}.config_paths: {key!r} is no field"
            if i < len(parts) - 1:
                model = _model_of(info.annotation)
        assert _holds_str(info.annotation), key
    # and the other way: a new string field is a declared path or named here as no path
    undeclared = []
    for key in _str_leaves(schema):
        bare = key.split(".", 1)[1] if key.startswith(("extract.", "graph.")) else key
        if key not in declared and key not in NOT_PATHS and bare not in NOT_PATHS:
            undeclared.append(key)
    assert not undeclared, (
        f"{schema.__name__}: string keys {undeclared} are neither in config_paths nor in "
        "NOT_PATHS here: declare a path key in the schema's config_paths (and config_inputs "
        "when a run reads it), or add a key that holds no path to NOT_PATHS"
    )


# ----------------------------------------------------------------------------- shipped configs
SHIPPED = sorted(CONFIGS.glob("*.yaml"))


def test_there_are_shipped_configs():
    assert len(SHIPPED) >= 10


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_config_loads_from_another_folder(path, tmp_path, monkeypatch):
    schema = schema_for(path)
    monkeypatch.chdir(tmp_path)
    cfg = load(path, schema=schema)
    # the same meaning as from the repository's root with a root-relative --config
    monkeypatch.chdir(ROOT)
    from_root = load(path.relative_to(ROOT), schema=schema)
    checked = 0
    for key in schema.config_paths:
        if "*" in key:
            continue
        value, rel = get(cfg, key), get(from_root, key)
        for v, r in zip(*(x if isinstance(x, list) else [x] for x in (value, rel)), strict=True):
            if v is None or "://" in v or v.startswith("~") or v == r:  # not a relative path
                continue
            assert Path(v).is_absolute(), (path.name, key, v)
            assert os.path.relpath(v, ROOT) == os.path.normpath(r), (path.name, key, v, r)
            assert Path(v).resolve().is_relative_to(ROOT), (path.name, key, v)  # inside the repo
            if key in schema.config_inputs:
                # a bundled file, or a placeholder for the user's own data/model/run
                top = Path(r).parts[0]
                assert Path(v).exists() or top in ("data", "runs"), (path.name, key, v)
                checked += Path(v).exists()
    if path.stem.startswith(("eval", "graph", "pipeline", "icl", "ner_lora")):
        assert checked, f"{path.name}: names no bundled input file"


# ----------------------------------------------------------------------------- the bar
def _kgc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "kgc", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.timeout(300)
def test_eval_config_from_outside_the_repository(tmp_path):
    # report= is an override, so it lands in the current folder (not next to the config)
    r = _kgc(["eval", "--config", str(CONFIGS / "eval_ner.yaml"), "report=ner.json"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "entity" in r.stdout and '"f1": 0.5714' in (tmp_path / "ner.json").read_text()


@pytest.mark.timeout(300)
def test_train_check_from_outside_the_repository(tmp_path, tiny_llama):
    pytest.importorskip("transformers")
    config = CONFIGS / "ner_lora.yaml"
    r = _kgc(["train", "--config", str(config), f"model.path={tiny_llama}", "--check"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"kgc train: {config} is valid" in r.stderr
    assert re.search(r"\b6 records: longest prompt \d+ tokens", r.stderr), r.stderr  # measured


@pytest.mark.parametrize("uri", ["s3://bucket/out", "gs://bucket/out", "file:///data/out"])
def test_an_output_uri_is_refused_naming_the_key_the_value_and_the_fix(tmp_path, uri):
    """kgc writes outputs with local file I/O: `output.path: s3://bucket/out` used to become
    a local folder `s3:/bucket/out` (extraction) and nothing reached the bucket."""
    cfg = {"task": "NER", "input": {"path": "s3://bucket/in/"}, "engine": {"model": "m"}}
    refused = r"output\.path.*{}.* is a URI.*mount the bucket.*set output\.path to its path"
    with pytest.raises(KgcError, match=refused.format(re.escape(repr(uri)))):
        load_config(None, [], data={**cfg, "output": {"path": uri}}, schema=ExtractConfig)
    with pytest.raises(KgcError, match=refused.format(re.escape(repr(uri)))):
        load_config(
            None,
            [],
            data={"input": {"paths": [str(tmp_path)]}, "output": {"path": uri}},
            schema=GraphConfig,
        )
    with pytest.raises(KgcError, match=r"output.*is a URI.*set output to its path"):
        load_icl_config(None, data={"mode": "llmicl", "output": uri})
    # the input stays a URI (read through pyarrow); a local output folder is fine
    ok = load_config(None, [], data={**cfg, "output": {"path": "out"}}, schema=ExtractConfig)
    assert ok.input.path == "s3://bucket/in/"
