"""`kgc pipeline`: the bundled demo corpus → extraction (NER, RE, EE) on Ray Data through the
OpenAI engine (answered by the annotation-replay oracle) → graph → exports; a rerun resumes
and rewrites the same graph; bad configs stop before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import read_jsonl

from kgc.config import load_config
from kgc.graph.config import PipelineConfig

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "examples" / "corpus"
CONFIG = ROOT / "jobs" / "configs" / "pipeline_demo.yaml"


def demo_cfg(base_url: str, out: Path, *more) -> PipelineConfig:
    return load_config(
        CONFIG,
        [
            f"extract.input.path={CORPUS / 'demo.jsonl'}",
            f"extract.schema={CORPUS / 'schema.json'}",
            f"extract.engine.base_url={base_url}",
            f"extract.output.path={out}",
            f"graph.canonical.alias_file={CORPUS / 'aliases.tsv'}",
            *more,
        ],
        schema=PipelineConfig,
    )


@pytest.fixture
def oracle():
    from jobs.graph_demo import Oracle, serve

    srv = serve(Oracle())
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_demo_pipeline_end_to_end_and_rerun(local_ray, oracle, tmp_path):
    from kgc.graph.stream import EDGES, NODES, read_graph
    from kgc.runtime.graph import run_pipeline
    from kgc.shards import read_rows

    out = tmp_path / "run"
    s = run_pipeline(demo_cfg(oracle, out), progress=False)
    docs = read_jsonl(CORPUS / "demo.jsonl")
    assert set(s["extract"]) == {"NER", "RE", "EE"}
    for task, ex in s["extract"].items():
        assert ex["documents"] == len(docs) and ex["rows_this_run"] == ex["rows"] > 0
        assert ex["parse_error_rate"] == 0.0, task
    g = s["graph"]
    assert g["rows"] == sum(ex["rows"] for ex in s["extract"].values())
    assert g["records"] == sum(ex["records"] for ex in s["extract"].values())
    assert g["dropped"] == {} and g["strict"] is True
    nodes, edges = read_graph(out / "graph")
    assert len(nodes) == g["nodes"] > 20 and len(edges) == g["edges"] > 20
    names = {n["id"]: n["name"] for n in nodes}
    obama = next(n for n in nodes if n["name"] == "Barack Obama")
    assert {"Obama", "barack obama"} <= set(obama["aliases"])

    # every relation the graph has is a gold one; the gold ones it lacks are exactly those
    # whose two ends never share a chunk (the model never saw them together)
    def key(name: str) -> str:
        return " ".join(name.split()).casefold()

    aliases = dict(
        line.split("\t")
        for line in (CORPUS / "aliases.tsv").read_text().splitlines()
        if "\t" in line
    )
    canon = {key(a): key(b) for a, b in aliases.items()}

    def c(name):
        return canon.get(key(name), key(name))

    got = {
        (c(names[e["source"]]), e["type"], c(names[e["target"]]))
        for e in edges
        if e["kind"] == "relation"
    }
    chunks = [json.loads(r["instruction"])["input"] for r in read_rows(out / "RE")]
    seen = {
        (c(r["head"]), r["relation"], c(r["tail"]))
        for d in docs
        for r in d["relation"]
        if any(r["head"] in ch and r["tail"] in ch and ch in d["text"] for ch in chunks)
    }
    assert got == seen and ("鲁迅", "author_of", "呐喊") not in seen  # split by chunking

    # the fact the long document repeats is supported by several of its chunks
    born = next(e for e in edges if e["type"] == "born_in" and e["source"] == obama["id"])
    assert born["support"] >= 3 and born["support"] == born["mention_count"]
    assert {m["doc_id"] for m in born["mentions"]} == {"en-obama-1", "en-obama-profile"}
    assert len({m["chunk"] for m in born["mentions"] if m["doc_id"] == "en-obama-profile"}) >= 2
    assert all(m["model"].startswith("openai:kgc-demo-oracle") for m in born["mentions"])
    assert json.loads((out / "pipeline.json").read_text())["graph"]["nodes"] == len(nodes)
    for f in ("graph.ttl", "graph.graphml", "graph.html", "neo4j/nodes.csv"):
        assert (out / "graph" / f).stat().st_size > 0

    before = [(out / "graph" / f).read_bytes() for f in (NODES, EDGES)]
    again = run_pipeline(demo_cfg(oracle, out), progress=False)
    for ex in again["extract"].values():
        assert ex["rows_this_run"] == 0 and ex["rows_skipped_resume"] == ex["rows"]
    assert [(out / "graph" / f).read_bytes() for f in (NODES, EDGES)] == before


@pytest.mark.parametrize(
    "more, needle",
    [
        (["tasks=[{task: NER}, {task: ner}]"], "appears twice"),
        (["tasks=[{task: NOPE}]"], "unknown task 'NOPE'"),
        (["tasks=[{task: RE, schema: /no/schema.json}]"], "schema file does not exist"),
        (["graph.bogus=1"], "unknown key 'graph.bogus'"),
    ],
)
def test_pipeline_check_catches_bad_configs_before_running(tmp_path, capsys, more, needle):
    from kgc.cli import main

    args = [
        "pipeline",
        "--config",
        str(CONFIG),
        "--check",
        f"extract.input.path={CORPUS / 'demo.jsonl'}",
        f"extract.schema={CORPUS / 'schema.json'}",
        f"extract.output.path={tmp_path / 'o'}",
    ]
    assert main(args) == 0
    assert "is valid" in capsys.readouterr().err
    assert main([*args, *more]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
