"""Knowledge graph: canonicalisation and merging, support and provenance, strict mode, the
streaming build (buckets, Ray executor), exports read back by rdflib / networkx / csv, the
CLI and its errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_jsonl

from kgc.errors import KgcError
from kgc.graph.build import build_in_memory
from kgc.graph.config import GraphConfig
from kgc.rows import row_id

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "examples" / "corpus"


def cfg(tmp_path=None, **kw) -> GraphConfig:
    data = {"input": {"paths": [str(tmp_path or ".")]}, "output": {"path": str(tmp_path or ".")}}
    for k, v in kw.items():
        data[k] = v
    return GraphConfig.model_validate(data)


def row(doc_id, text, task, records, *, start=0, chunk=0, schema=None, model="model-a"):
    """An extraction row as `kgc extract` writes it (the chunk is text, at `start`)."""
    return {
        "id": row_id(doc_id, start, start + len(text), [task, schema, chunk]),
        "doc_id": doc_id,
        "chunk_index": chunk,
        "chunk_start": start,
        "chunk_end": start + len(text),
        "task": task,
        "schema": json.dumps(schema, ensure_ascii=False),
        "instruction": json.dumps({"instruction": "…", "schema": schema, "input": text}),
        "source": "",
        "label": None,
        "output": "",
        "records": json.dumps(records, ensure_ascii=False),
        "errors": "[]",
        "model_id": model,
    }


def by_name(nodes):
    return {n["name"]: n for n in nodes}


# ----------------------------------------------------------------------------- merging
def test_case_whitespace_and_alias_merge_into_one_node_with_every_mention():
    texts = {
        "d1": "Barack Obama was born in Honolulu.",
        "d2": "Yesterday barack  obama spoke.",
        "d3": "Obama won.",
    }
    surfaces = {"d1": "Barack Obama", "d2": "barack  obama", "d3": "Obama"}
    rows = [
        row(d, t, "NER", [{"entity": surfaces[d], "entity_type": "person"}])
        for d, t in texts.items()
    ]
    # without an alias table: the case/space variants merge, the alias does not
    nodes, _, _ = build_in_memory(rows, cfg())
    assert sorted(n["name"] for n in nodes) == ["Barack Obama", "Obama"]
    merged = by_name(nodes)["Barack Obama"]
    assert merged["mention_count"] == 2 and merged["aliases"] == ["barack obama"]

    nodes, _, summary = build_in_memory(rows, cfg(canonical={"aliases": {"obama": "Barack Obama"}}))
    assert len(nodes) == 1
    n = nodes[0]
    assert n["name"] == "Barack Obama" and n["type"] == "person"
    assert n["aliases"] == ["Obama", "barack obama"]
    assert n["support"] == 3 and n["mention_count"] == 3 and n["doc_count"] == 3
    assert {m["doc_id"] for m in n["mentions"]} == set(texts)
    for m in n["mentions"]:  # offsets point at the surface form in its document
        assert texts[m["doc_id"]][m["start"] : m["end"]] == surfaces[m["doc_id"]]
        assert m["sentence"] == texts[m["doc_id"]] and m["model"] == "model-a"
        assert m["row_id"] and m["chunk"] == 0
    assert summary["records"] == summary["records_used"] == 3 and summary["dropped"] == {}


def test_nfkc_and_casefold_switches():
    rows = [
        row("a", "ＩＢＭ推出了电脑。", "NER", [{"entity": "ＩＢＭ", "entity_type": "org"}]),
        row("b", "IBM released it.", "NER", [{"entity": "IBM", "entity_type": "org"}]),
        row("c", "ibm too.", "NER", [{"entity": "ibm", "entity_type": "org"}]),
    ]
    assert len(build_in_memory(rows, cfg())[0]) == 1
    assert len(build_in_memory(rows, cfg(canonical={"nfkc": False}))[0]) == 2
    assert len(build_in_memory(rows, cfg(canonical={"casefold": False}))[0]) == 2


def test_merge_across_types_switch():
    rows = [
        row("a", "Apple makes phones.", "NER", [{"entity": "Apple", "entity_type": "org"}]),
        row("b", "An apple a day.", "NER", [{"entity": "apple", "entity_type": "food"}]),
    ]
    one = build_in_memory(rows, cfg())[0]
    assert len(one) == 1 and one[0]["types"] == {"food": 1, "org": 1}
    two = build_in_memory(rows, cfg(merge_across_types=False))[0]
    assert sorted(n["type"] for n in two) == ["food", "org"]


def test_alias_table_errors(tmp_path):
    from kgc.graph.canonical import Canonicaliser, load_alias_file

    with pytest.raises(KgcError, match="cycle"):
        Canonicaliser(aliases={"a": "b", "b": "a"})
    c = Canonicaliser(aliases={"Bo": "Barack", "Barack": "Barack Obama"})
    assert c.key("BO") == c.key("barack obama") == "barack obama"
    bad = tmp_path / "aliases.tsv"
    bad.write_text("Obama\tBarack Obama\nno tab here\n", encoding="utf-8")
    with pytest.raises(KgcError, match=r"aliases.tsv:2: each line must be"):
        load_alias_file(str(bad))
    with pytest.raises(KgcError, match="alias file does not exist"):
        load_alias_file(str(tmp_path / "missing.tsv"))
    assert load_alias_file(str(CORPUS / "aliases.tsv"))["周树人"] == "鲁迅"


# ----------------------------------------------------------------------------- support
SENT = "Marie Curie married Pierre Curie in Paris. "
REL = {"head": "Marie Curie", "relation": "spouse", "tail": "Pierre Curie"}


def test_edge_seen_in_three_chunks_has_support_three_and_three_provenance_entries():
    filler = "Nothing happens here at all. "
    doc = (SENT + filler) * 3
    step = len(SENT + filler)
    rows = [
        row("doc", doc[i * step : (i + 1) * step], "RE", [REL], start=i * step, chunk=i)
        for i in range(3)
    ]
    nodes, edges, _ = build_in_memory(rows, cfg())
    assert len(edges) == 1
    e = edges[0]
    assert e["support"] == 3 and e["mention_count"] == 3 and len(e["mentions"]) == 3
    assert e["confidence"] == pytest.approx(1 - 0.5**3)
    assert sorted(m["chunk"] for m in e["mentions"]) == [0, 1, 2]
    assert len({m["row_id"] for m in e["mentions"]}) == 3
    for m in e["mentions"]:  # each mention spans head..tail in the document
        assert doc[m["start"] : m["end"]] == "Marie Curie married Pierre Curie"
        assert m["sentence"] == SENT.strip()
    names = by_name(nodes)
    assert e["source"] == names["Marie Curie"]["id"] and e["target"] == names["Pierre Curie"]["id"]
    assert names["Marie Curie"]["support"] == 3


def test_same_span_in_overlapping_chunks_counts_once_but_keeps_both_mentions():
    doc = "Intro words. " + SENT + "Outro words."
    a = row("doc", doc[:60], "RE", [REL], start=0, chunk=0)
    b = row("doc", doc[5:], "RE", [REL], start=5, chunk=1)
    _, edges, _ = build_in_memory([a, b], cfg())
    assert edges[0]["support"] == 1 and edges[0]["mention_count"] == 2
    assert {m["start"] for m in edges[0]["mentions"]} == {doc.index("Marie")}


def test_a_row_read_twice_is_counted_once():
    r = row("doc", SENT, "RE", [REL])
    _, edges, summary = build_in_memory([r, r], cfg())
    assert edges[0]["mention_count"] == 1
    assert summary["duplicate_mentions"] == 3  # head, tail and edge of the repeated record


# ----------------------------------------------------------------------------- record kinds
def test_events_spo_kg_and_unusable_records_are_counted():
    text = "In 2008, Obama was elected president."
    ee = row(
        "d",
        text,
        "EE",
        [
            {
                "event_type": "Elect",
                "event_trigger": "elected",
                "arguments": [
                    {"argument": "Obama", "role": "person"},
                    {"argument": "2008", "role": "time"},
                ],
            },
            "not a record",
        ],
    )
    spo = row(
        "d",
        text,
        "SPO",
        [{"head": "Obama", "relation": "holds", "tail": "president"}],
        schema=[{"subject_type": "person", "predicate": "holds", "object_type": "office"}],
    )
    kg = row(
        "k",
        "Ada Lovelace, born 1815.",
        "KG",
        [{"head": "Ada Lovelace", "relation": "birth", "tail": "1815", "head_type": "person"}],
    )
    weird = row("d", text, "XYZ", [{"x": 1}])
    nodes, edges, s = build_in_memory([ee, spo, kg, weird], cfg())
    names = by_name(nodes)
    ev = names["elected"]
    assert ev["kind"] == "event" and ev["type"] == "Elect" and ev["doc_id"] == "d"
    roles = {(e["type"], e["target"]) for e in edges if e["kind"] == "role"}
    assert roles == {("person", names["Obama"]["id"]), ("time", names["2008"]["id"])}
    assert names["Obama"]["type"] == "person" and names["president"]["type"] == "office"
    attr = [e for e in edges if e["kind"] == "attribute"]
    assert len(attr) == 1 and attr[0]["type"] == "birth"
    assert names["Ada Lovelace"]["type"] == "person" and names["1815"]["type"] == "Entity"
    assert s["dropped"] == {"bad_record": 1, "unknown_task": 1}
    assert s["records"] == 5 and s["records_used"] == 3
    assert s["records"] == s["records_used"] + sum(s["dropped"].values())


def test_strict_mode_drops_and_counts_labels_outside_the_schema(tmp_path):
    text = "Marie Curie married Pierre Curie in Paris."
    re_row = row(
        "d",
        text,
        "RE",
        [REL, {"head": "Marie Curie", "relation": "lives_in", "tail": "Paris"}],
        schema=["spouse"],
    )
    ner_row = row(
        "d",
        text,
        "NER",
        [
            {"entity": "Paris", "entity_type": "location"},
            {"entity": "Marie Curie", "entity_type": "scientist"},
        ],
        schema=["location", "person"],
    )
    ee_row = row(
        "d",
        text,
        "EE",
        [
            {
                "event_type": "Marry",
                "event_trigger": "married",
                "arguments": [
                    {"argument": "Marie Curie", "role": "person"},
                    {"argument": "Paris", "role": "weather"},
                ],
            },
            {"event_type": "Party", "event_trigger": "in", "arguments": []},
        ],
        schema=[{"event_type": "Marry", "trigger": True, "arguments": ["person", "place"]}],
    )
    rows = [re_row, ner_row, ee_row]
    loose_n, loose_e, loose = build_in_memory(rows, cfg())
    _, strict_e, strict = build_in_memory(rows, cfg(strict=True))
    assert loose["dropped"] == {}
    assert strict["dropped"] == {
        "relation_outside_schema": 1,
        "entity_type_outside_schema": 1,
        "event_type_outside_schema": 1,
        "role_outside_schema": 1,
    }
    record_level = sum(v for k, v in strict["dropped"].items() if k != "role_outside_schema")
    assert strict["records"] == 6 == strict["records_used"] + record_level
    assert {e["type"] for e in loose_e} == {"spouse", "lives_in", "person", "weather"}
    assert {e["type"] for e in strict_e} == {"spouse", "person"}
    # a schema file restricts further (line 2: relations)
    schema = tmp_path / "schema.json"
    schema.write_text('["location"]\n["lives_in"]\n{"Marry": ["place"]}\n', encoding="utf-8")
    _, e3, s3 = build_in_memory(rows, cfg(strict=True, schema=str(schema)))
    assert s3["dropped"]["relation_outside_schema"] == 2  # spouse (file), lives_in (row)
    assert s3["dropped"]["role_outside_schema"] == 2
    assert e3 == []


# ----------------------------------------------------------------------------- streaming
def test_grounded_mode_drops_and_counts_names_the_text_does_not_contain():
    text = "Marie Curie married Pierre Curie in Paris."
    rows = [
        row("d", text, "RE", [REL, {"head": "Marie Curie", "relation": "spouse", "tail": "Bob"}]),
        row("d", text, "NER", [{"entity": "Paris", "entity_type": "city"},
                               {"entity": "Lyon", "entity_type": "city"}]),
        row("d", text, "EE", [
            {"event_type": "Marry", "event_trigger": "wed", "arguments": []},
            {"event_type": "Marry", "event_trigger": "married", "arguments": [
                {"argument": "Pierre Curie", "role": "person"},
                {"argument": "London", "role": "place"}]},
        ]),
    ]  # fmt: skip
    nodes, edges, _ = build_in_memory(rows, cfg())
    assert "Lyon" in by_name(nodes) and "Bob" in by_name(nodes)  # off: everything is kept
    nodes, edges, summary = build_in_memory(rows, cfg(grounded=True))
    names = by_name(nodes)
    assert {"Lyon", "Bob", "London", "wed"}.isdisjoint(names)
    assert {"Marie Curie", "Pierre Curie", "Paris", "married"} <= set(names)
    assert summary["dropped"] == {
        "relation_not_in_text": 1,
        "entity_not_in_text": 1,
        "trigger_not_in_text": 1,
        "argument_not_in_text": 1,
    }
    assert sorted(e["type"] for e in edges) == ["person", "spouse"]


def _synthetic_rows(n_docs: int) -> list[dict]:
    rows = []
    for i in range(n_docs):
        a, b = f"Person {i % 37}", f"City {i % 11}"
        text = f"{a} lives in {b}. {a.upper()} likes {b}."
        rows.append(
            row(
                f"doc{i}",
                text,
                "RE",
                [{"head": a, "relation": "lives_in", "tail": b}],
                model=f"m{i % 2}",
            )
        )
        rows.append(row(f"doc{i}", text, "NER", [{"entity": a.upper(), "entity_type": "person"}]))
    return rows


def _write_shards(tmp_path: Path, rows: list[dict], per_shard: int = 50) -> Path:
    out = tmp_path / "extract"
    (out / "rows").mkdir(parents=True)
    for k in range(0, len(rows), per_shard):
        write_jsonl(out / "rows" / f"part-{k:06d}.jsonl", rows[k : k + per_shard])
    return out


def _canon(objs):
    return sorted(json.dumps(o, sort_keys=True, ensure_ascii=False) for o in objs)


def test_streaming_build_equals_in_memory(tmp_path):
    from kgc.graph.stream import read_graph, run_build

    rows = _synthetic_rows(300)
    src = _write_shards(tmp_path, rows)
    c = cfg(tmp_path, buckets=7, exports=[], bucket_mb=0.01)
    c.input.paths = [str(src)]
    c.output.path = str(tmp_path / "graph")
    summary = run_build(c, progress=False)
    nodes, edges = read_graph(tmp_path / "graph")
    mem_nodes, mem_edges, mem = build_in_memory(rows, c)
    assert _canon(nodes) == _canon(mem_nodes) and _canon(edges) == _canon(mem_edges)
    assert summary["buckets"] == 7 and summary["input"]["files"] == 12
    pairs = {(i % 37, i % 11) for i in range(300)}  # one lives_in edge per distinct pair
    assert summary["nodes"] == len(nodes) == 37 + 11 and summary["edges"] == len(edges) == len(
        pairs
    )
    assert summary["rows"] == len(rows) and summary["records_used"] == mem["records_used"]
    assert not (tmp_path / "graph" / ".graph-work").exists()
    assert json.loads((tmp_path / "graph" / "summary.json").read_text())["nodes"] == 48


def test_parquet_shards_give_the_same_graph_as_jsonl(tmp_path):
    from kgc.graph.stream import EDGES, NODES, run_build
    from kgc.shards import write_shard

    rows = _synthetic_rows(40)
    outs = []
    for fmt in ("jsonl", "parquet"):
        shards = tmp_path / fmt / "rows"
        shards.mkdir(parents=True)
        for k in range(0, len(rows), 25):
            write_shard(shards, rows[k : k + 25], fmt)
        c = cfg(tmp_path, exports=[])
        c.input.paths, c.output.path = [str(tmp_path / fmt)], str(tmp_path / f"g-{fmt}")
        assert run_build(c, progress=False)["rows"] == len(rows)
        outs.append([(tmp_path / f"g-{fmt}" / f).read_bytes() for f in (NODES, EDGES)])
    assert outs[0] == outs[1]


@pytest.mark.timeout(180)
def test_ray_executor_writes_the_same_graph(tmp_path, local_ray):
    from kgc.graph.stream import EDGES, NODES, run_build
    from kgc.runtime.graph import map_reduce

    src = _write_shards(tmp_path, _synthetic_rows(120), per_shard=40)
    outs = []
    for ex in ("local", "ray"):
        c = cfg(tmp_path, buckets=3, exports=[], executor=ex, bucket_mb=0.005)
        c.input.paths = [str(src)]
        c.output.path = str(tmp_path / ex)
        run_build(c, progress=False, ray_map_reduce=map_reduce)
        outs.append([(tmp_path / ex / f).read_bytes() for f in (NODES, EDGES)])
    assert outs[0] == outs[1] and outs[0][0]


# ----------------------------------------------------------------------------- exports
NASTY = 'Ann "the; `tick`" <b>\nO\'Neil'


@pytest.fixture
def built(tmp_path):
    from kgc.graph.stream import run_build

    rows = _synthetic_rows(20) + [
        row(
            "nasty",
            f"{NASTY} met 张三 in 北京.",
            "RE",
            [{"head": NASTY, "relation": "met; `x`", "tail": "张三"}],
        ),
        row(
            "nasty",
            f"{NASTY} met 张三 in 北京.",
            "NER",
            [{"entity": "北京", "entity_type": "地点 / place"}],
        ),
    ]
    src = _write_shards(tmp_path, rows)
    c = cfg(
        tmp_path,
        rdf={"namespace": "http://example.org/kg#", "prefix": "ex", "batch_nodes": 7},
    )
    c.input.paths = [str(src)]
    c.output.path = str(tmp_path / "graph")
    return run_build(c, progress=False), tmp_path / "graph"


def test_turtle_parses_back_to_the_same_triple_count(built):
    import rdflib

    summary, d = built
    ttl = summary["exports"]["turtle"]
    g = rdflib.Graph()
    g.parse(d / "graph.ttl", format="turtle")
    assert len(g) == ttl["triples"] > summary["nodes"] + summary["edges"]
    ns = rdflib.Namespace("http://example.org/kg#")
    nodes = set(g.subjects(rdflib.RDF.type, ns.Entity))
    assert len(nodes) == summary["nodes"] and all(str(s).startswith(str(ns)) for s in nodes)
    labels = {str(o) for o in g.objects(None, rdflib.RDFS.label)}
    assert " ".join(NASTY.split()) in labels or NASTY in labels
    assert len(set(g.subjects(rdflib.RDF.type, rdflib.RDF.Statement))) == summary["edges"]


def test_graphml_loads_with_networkx_to_the_same_counts(built):
    import networkx as nx

    summary, d = built
    g = nx.read_graphml(d / "graph.graphml")
    assert g.number_of_nodes() == summary["nodes"] and g.number_of_edges() == summary["edges"]
    assert {g.nodes[n]["name"] for n in g} >= {"张三", "北京"}


def test_neo4j_csv_headers_and_rows(built):
    summary, d = built
    with open(d / "neo4j" / "nodes.csv", encoding="utf-8", newline="") as fh:
        nodes = list(csv.reader(fh))
    with open(d / "neo4j" / "relationships.csv", encoding="utf-8", newline="") as fh:
        rels = list(csv.reader(fh))
    assert nodes[0][:3] == ["id:ID", "name", ":LABEL"]
    assert rels[0][:3] == [":START_ID", ":END_ID", ":TYPE"]
    typed = {h.split(":")[0]: h.split(":")[1] for h in nodes[0] if ":" in h and h[0] != ":"}
    assert typed["support"] == "int" and typed["confidence"] == "double"
    assert len(nodes) - 1 == summary["nodes"] and len(rels) - 1 == summary["edges"]
    ids = {r[0] for r in nodes[1:]}
    assert all(r[0] in ids and r[1] in ids for r in rels[1:])  # no dangling relationship
    labels = {lab for r in nodes[1:] for lab in r[2].split(";")}
    assert {"KgcNode", "Entity", "person", "地点 / place"} <= labels
    nasty = [r for r in nodes[1:] if r[1].startswith("Ann")]
    assert nasty and "\n" not in nasty[0][1]
    assert all(json.loads(r[-1]) for r in nodes[1:])  # mentions: a JSON list
    cypher = (d / "neo4j" / "import.cypher").read_text(encoding="utf-8")
    lines = [x for x in cypher.splitlines() if x.startswith(("MERGE", "MATCH"))]
    assert len(lines) == summary["nodes"] + summary["edges"]
    assert cypher.count(":begin") == cypher.count(":commit") >= 1
    assert "`met; ``x```" in cypher  # backticks doubled in a relationship type
    assert (d / "neo4j" / "import.sh").read_text().count("neo4j-admin") == 1


def test_exports_can_be_rewritten_from_a_built_graph(built, tmp_path):
    from kgc.cli import main

    summary, d = built
    (d / "graph.ttl").unlink()
    assert main(["graph", "export", "--graph", str(d), "--formats", "turtle"]) == 0
    assert (d / "graph.ttl").exists()
    assert main(["graph", "show", "--graph", str(d), "--out", str(tmp_path / "v.html")]) == 0
    assert "rendered-node-count" in (tmp_path / "v.html").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- CLI & config
def test_cli_build_on_the_bundled_demo_config(tmp_path, capsys):
    from kgc.cli import main

    code = main(
        [
            "graph",
            "build",
            "--config",
            str(ROOT / "jobs" / "configs" / "graph_demo.yaml"),
            "--quiet",
            f"input.paths=[{CORPUS / 'demo.jsonl'}]",
            f"canonical.alias_file={CORPUS / 'aliases.tsv'}",
            f"schema={CORPUS / 'schema.json'}",
            f"output.path={tmp_path / 'g'}",
        ]
    )
    assert code == 0
    s = json.loads(capsys.readouterr().out)
    n_docs = len((CORPUS / "demo.jsonl").read_text(encoding="utf-8").splitlines())
    assert s["rows"] == 3 * n_docs and s["records_used"] == s["records"]
    from kgc.graph.stream import read_graph

    names = by_name(read_graph(tmp_path / "g")[0])
    obama = names["Barack Obama"]
    assert {"Obama", "barack obama"} <= set(obama["aliases"]) and obama["doc_count"] == 4
    assert "鲁迅" in names and "周树人" not in names and "IBM" in names
    assert set(s["exports"]) == {"neo4j", "turtle", "graphml", "html"}


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["bogus=1"], "unknown key 'bogus'"),
        (["buckets=0"], "buckets"),
        (["rdf.namespace=example"], "rdf.namespace"),
        (["input.paths=[/no/such/dir]"], "input.paths entry does not exist"),
        (["exports=[pdf]"], "exports"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_field(tmp_path, capsys, overrides, needle):
    from kgc.cli import main

    conf = tmp_path / "g.yaml"
    conf.write_text(
        f"input: {{paths: [{CORPUS / 'demo.jsonl'}]}}\noutput: {{path: {tmp_path / 'o'}}}\n"
    )
    assert main(["graph", "build", "--config", str(conf), "--quiet", *overrides]) == 2
    assert needle in capsys.readouterr().err


def test_bad_rows_are_reported_with_file_and_line(tmp_path):
    from kgc.graph.stream import run_build

    f = write_jsonl(tmp_path / "rows.jsonl", [{"doc_id": "a", "task": "NER", "records": []}])
    with open(f, "a") as fh:
        fh.write("{not json\n")
    c = cfg(tmp_path, exports=[])
    c.input.paths, c.output.path = [str(f)], str(tmp_path / "o")
    with pytest.raises(KgcError, match=r"rows.jsonl:2: malformed JSON"):
        run_build(c, progress=False)
    ann = write_jsonl(tmp_path / "ann.jsonl", [{"text": "x", "entities": []}])
    c.input.paths = [str(ann)]
    with pytest.raises(KgcError, match=r"ann.jsonl:1: .*none of the annotation fields"):
        run_build(c, progress=False)


def test_graph_modules_import_light():
    mods = [
        "kgc.graph",
        "kgc.graph.cli",
        "kgc.graph.config",
        "kgc.graph.build",
        "kgc.graph.stream",
        "kgc.graph.export",
        "kgc.graph.html",
        "kgc.graph.pipeline",
    ]
    heavy = ("torch", "transformers", "ray", "rdflib", "networkx", "numpy")
    code = (
        "import sys, json\n"
        f"for m in {mods!r}: __import__(m)\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
