"""Exports of a built graph (`nodes.jsonl`, `edges.jsonl`), each streamed from those files.

- `neo4j/`: `nodes.csv` + `relationships.csv` with the headers `neo4j-admin database import`
  reads (`id:ID,name,:LABEL,…` and `:START_ID,:END_ID,:TYPE,…`), `import.sh` (that command)
  and `import.cypher`, the same graph as Cypher statements for `cypher-shell -f` into a
  running database (MERGE on a unique `KgcNode.id`, so it can be rerun).
- `graph.ttl`: RDF Turtle written with rdflib, batch by batch (a batch is a small rdflib
  graph; Turtle allows the prefixes to be declared again, so the batches concatenate into
  one document). Nodes are `<ns>node/<id>` with `rdf:type` their kind and type class,
  `rdfs:label` the name; each edge is a direct triple `<src> <ns><kind>/<type> <dst>` plus an
  `rdf:Statement` carrying support, confidence and its mentions (doc id, offsets, model).
- `graph.graphml`: GraphML via networkx (a MultiDiGraph held in memory: nodes and edges
  with their scalar attributes, not the mentions).
- `graph.html`: the self-contained viewer (`kgc.graph.html`).

Every file is written to a temporary name and renamed when complete (`kgc.io.atomic_path`). Graph text was made
safe when the graph was built (`kgc.graph.clean`); each export still escapes by its own
rules: CSV quoting with names/labels on one line and JSON columns with U+2028/U+2029 escaped,
Cypher literals as JSON strings, Turtle literals as escaped one-line strings (`turtle_string`,
not rdflib's long strings), GraphML text with XML-forbidden characters replaced.
"""

from __future__ import annotations

import csv
import json
import sys
import unicodedata
from pathlib import Path

from kgc.graph.clean import clean_str, json_line_safe, turtle_string, xml_safe
from kgc.graph.config import NODE_FIELDS, GraphConfig
from kgc.graph.files import EDGES, NODES, iter_jsonl
from kgc.io import atomic_path

KGC_LABEL = "KgcNode"


def _nodes(d: Path):
    return iter_jsonl(d / NODES)


def _edges(d: Path):
    return iter_jsonl(d / EDGES)


def run_exports(graph_dir: Path, cfg: GraphConfig, *, progress: bool = False) -> dict:
    out: dict = {}
    for fmt in cfg.exports:
        out[fmt] = EXPORTERS[fmt](Path(graph_dir), cfg)
        if progress:
            print(f"[kgc graph] export {fmt}: {out[fmt]}", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------- neo4j
NODE_HEADER = [
    "id:ID",
    "name",
    ":LABEL",
    "type",
    "kind",
    "support:int",
    "confidence:double",
    "mention_count:int",
    "doc_count:int",
    "aliases",
    "mentions",
]
REL_HEADER = [
    ":START_ID",
    ":END_ID",
    ":TYPE",
    "id",
    "kind",
    "support:int",
    "confidence:double",
    "mention_count:int",
    "doc_count:int",
    "mentions",
]


def _one_line(s: str) -> str:
    """One line of safe text: line breaks (incl. U+2028/U+2029, NEL) become spaces."""
    return " ".join(clean_str(str(s)).splitlines()) if s else ""


def _label(s: str) -> str:
    """A neo4j-admin label: ';' separates labels in the :LABEL column, so it is replaced."""
    return _one_line(s).replace(";", "_") or "_"


def node_labels(node: dict) -> list[str]:
    labels = [KGC_LABEL, "Entity" if node["kind"] == "entity" else "Event", _label(node["type"])]
    return list(dict.fromkeys(labels))


def _js(v) -> str:
    """JSON text on one line (controls escaped by JSON, U+2028/U+2029 escaped too)."""
    return json_line_safe(json.dumps(v, ensure_ascii=False))


def export_neo4j(d: Path, cfg: GraphConfig) -> dict:
    nd = d / "neo4j"
    n_nodes = n_edges = 0
    with atomic_path(nd / "nodes.csv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(NODE_HEADER)
        for n in _nodes(d):
            w.writerow(
                [
                    n["id"],
                    _one_line(n["name"]),
                    ";".join(node_labels(n)),
                    _one_line(n["type"]),
                    n["kind"],
                    n["support"],
                    n["confidence"],
                    n["mention_count"],
                    n["doc_count"],
                    _js(n["aliases"]),
                    _js(n["mentions"]),
                ]
            )
            n_nodes += 1
    with (
        atomic_path(nd / "relationships.csv") as tmp,
        open(tmp, "w", encoding="utf-8", newline="") as fh,
    ):
        w = csv.writer(fh)
        w.writerow(REL_HEADER)
        for e in _edges(d):
            w.writerow(
                [
                    e["source"],
                    e["target"],
                    _one_line(e["type"]) or "_",
                    e["id"],
                    e["kind"],
                    e["support"],
                    e["confidence"],
                    e["mention_count"],
                    e["doc_count"],
                    _js(e["mentions"]),
                ]
            )
            n_edges += 1
    with atomic_path(nd / "import.sh") as tmp:
        tmp.write_text(
            "#!/usr/bin/env sh\n"
            "# Offline bulk import into an empty database (stop it first; Neo4j 5):\n"
            "#   NEO4J_HOME=/path/to/neo4j sh import.sh [database]\n"
            'set -eu\ncd "$(dirname "$0")"\n'
            '"${NEO4J_HOME:-.}/bin/neo4j-admin" database import full "${1:-neo4j}" \\\n'
            "  --nodes=nodes.csv --relationships=relationships.csv --overwrite-destination\n",
            encoding="utf-8",
        )
    statements = write_cypher(d, nd / "import.cypher")
    return {
        "nodes_csv": str(nd / "nodes.csv"),
        "relationships_csv": str(nd / "relationships.csv"),
        "cypher": str(nd / "import.cypher"),
        "nodes": n_nodes,
        "relationships": n_edges,
        "cypher_statements": statements,
    }


def cypher_string(s: str) -> str:
    """A Cypher string literal (JSON's escapes are Cypher's: quote, backslash, newline and
    \\u escapes such as \\u00e9), U+2028/U+2029 escaped too (one line); characters no
    UTF-8 file can hold, and the other controls, are replaced first (`kgc.graph.clean`)."""
    return json_line_safe(json.dumps(clean_str(str(s)), ensure_ascii=False))


def cypher_name(s: str) -> str:
    """A backticked Cypher label / relationship type (backticks doubled)."""
    return "`" + _one_line(s).replace("`", "``") + "`"


def _cypher_map(props: dict) -> str:
    parts = []
    for k, v in props.items():
        if isinstance(v, bool) or v is None:
            continue
        val = repr(v) if isinstance(v, (int, float)) else cypher_string(v)
        parts.append(f"{k}: {val}")
    return "{" + ", ".join(parts) + "}"


def write_cypher(d: Path, path: Path, batch: int = 1000) -> int:
    """`cypher-shell -f import.cypher`: constraint, then MERGE statements in transactions."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("// kgc knowledge graph — run with: cypher-shell -f import.cypher\n")
        fh.write(
            f"CREATE CONSTRAINT kgc_node_id IF NOT EXISTS FOR (n:{KGC_LABEL}) "
            "REQUIRE n.id IS UNIQUE;\n"
        )
        count += 1
        in_tx = 0

        def stmt(s: str) -> None:
            nonlocal count, in_tx
            if in_tx == 0:
                fh.write(":begin\n")
            fh.write(s + ";\n")
            count += 1
            in_tx += 1
            if in_tx == batch:
                fh.write(":commit\n")
                in_tx = 0

        for n in _nodes(d):
            labels = ":".join(cypher_name(x) for x in node_labels(n)[1:])
            props = {
                **{k: n[k] for k in NODE_FIELDS},
                "aliases": _js(n["aliases"]),
                "mentions": _js(n["mentions"]),
            }
            stmt(
                f"MERGE (n:{KGC_LABEL} {{id: {cypher_string(n['id'])}}}) "
                f"SET n:{labels} SET n += {_cypher_map(props)}"
            )
        for e in _edges(d):
            props = {
                "kind": e["kind"],
                "support": e["support"],
                "confidence": e["confidence"],
                "mention_count": e["mention_count"],
                "doc_count": e["doc_count"],
                "mentions": _js(e["mentions"]),
            }
            stmt(
                f"MATCH (a:{KGC_LABEL} {{id: {cypher_string(e['source'])}}}), "
                f"(b:{KGC_LABEL} {{id: {cypher_string(e['target'])}}}) "
                f"MERGE (a)-[r:{cypher_name(e['type'] or '_')} {{id: {cypher_string(e['id'])}}}]->(b) "
                f"SET r += {_cypher_map(props)}"
            )
        if in_tx:
            fh.write(":commit\n")
    return count


# ----------------------------------------------------------------------------- RDF
_IRI_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def iri_segment(s: str) -> str:
    """A string as one IRI path segment: letters/digits of any script kept, the rest %XX."""
    out = []
    for ch in clean_str(s):
        if ch in _IRI_SAFE or (ord(ch) > 127 and unicodedata.category(ch)[0] in "LMN"):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out) or "_"


def _text_literal_class():
    """An rdflib Literal for plain strings that serialises as one escaped "..." string.

    rdflib writes a string holding a newline as a triple-quoted string with only backslashes
    and some quotes escaped, which is invalid Turtle when the text ends in a backslash and a
    quote, and it leaves other control characters raw. This one writes every string as
    `turtle_string` does: quote, backslash, tab and line breaks as escapes, other controls and
    U+2028/U+2029 as \\uXXXX."""
    from rdflib import Literal

    class TextLiteral(Literal):
        __slots__ = ()

        def _quote_encode(self) -> str:
            return turtle_string(str(self))

    return TextLiteral


def export_turtle(d: Path, cfg: GraphConfig) -> dict:
    from rdflib import RDF, RDFS, XSD, Graph, Literal, Namespace, URIRef

    Text = _text_literal_class()  # strings; typed literals (numbers) as rdflib writes them

    ns = Namespace(cfg.rdf.namespace)
    declared: set = set()
    total = 0

    def new_graph() -> Graph:
        g = Graph()
        g.bind(cfg.rdf.prefix, ns)
        g.bind("rdfs", RDFS)
        g.bind("xsd", XSD)
        return g

    def declare(g: Graph, iri: URIRef, what, label: str) -> None:
        if iri not in declared:
            declared.add(iri)
            g.add((iri, RDF.type, what))
            g.add((iri, RDFS.label, Text(clean_str(label))))

    def measures(g: Graph, s: URIRef, obj: dict, prefix: str) -> None:
        g.add((s, ns.support, Literal(obj["support"], datatype=XSD.integer)))
        g.add((s, ns.confidence, Literal(obj["confidence"], datatype=XSD.double)))
        g.add((s, ns.mentionCount, Literal(obj["mention_count"], datatype=XSD.integer)))
        for i, m in enumerate(obj["mentions"]):
            mi = ns[f"mention/{prefix}/{i}"]
            g.add((s, ns.mention, mi))
            g.add((mi, RDF.type, ns.Mention))
            g.add((mi, ns.docId, Text(clean_str(str(m["doc_id"])))))
            if m.get("start") is not None:
                g.add((mi, ns.start, Literal(m["start"], datatype=XSD.integer)))
                g.add((mi, ns.end, Literal(m["end"], datatype=XSD.integer)))
            g.add((mi, ns.chunk, Literal(m["chunk"], datatype=XSD.integer)))
            if m.get("model"):
                g.add((mi, ns.model, Text(clean_str(str(m["model"])))))

    path = d / "graph.ttl"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:

        def flush(g: Graph) -> None:
            nonlocal total
            if len(g):
                total += len(g)
                fh.write(g.serialize(format="turtle", encoding="utf-8"))
                fh.write(b"\n")

        g, k = new_graph(), 0
        for n in _nodes(d):
            s = ns[f"node/{n['id']}"]
            kind_cls = ns.Entity if n["kind"] == "entity" else ns.Event
            type_cls = ns[f"type/{iri_segment(n['type'])}"]
            declare(g, type_cls, RDFS.Class, n["type"])
            g.add((s, RDF.type, kind_cls))
            g.add((s, RDF.type, type_cls))
            g.add((s, RDFS.label, Text(clean_str(n["name"]))))
            for a in n["aliases"]:
                g.add((s, ns.alias, Text(clean_str(a))))
            measures(g, s, n, n["id"])
            k += 1
            if k % cfg.rdf.batch_nodes == 0:
                flush(g)
                g = new_graph()
        for e in _edges(d):
            src, dst = ns[f"node/{e['source']}"], ns[f"node/{e['target']}"]
            pred = ns[f"{e['kind']}/{iri_segment(e['type'])}"]
            declare(g, pred, RDF.Property, e["type"])
            g.add((src, pred, dst))
            st = ns[f"edge/{e['id']}"]
            g.add((st, RDF.type, RDF.Statement))
            g.add((st, RDF.subject, src))
            g.add((st, RDF.predicate, pred))
            g.add((st, RDF.object, dst))
            measures(g, st, e, e["id"])
            k += 1
            if k % cfg.rdf.batch_nodes == 0:
                flush(g)
                g = new_graph()
        flush(g)
    return {"path": str(path), "triples": total, "namespace": cfg.rdf.namespace}


# ----------------------------------------------------------------------------- GraphML
def export_graphml(d: Path, cfg: GraphConfig) -> dict:
    import networkx as nx

    def x(v):  # XML 1.0 cannot hold most C0 controls, even as references: replaced
        return xml_safe(v) if isinstance(v, str) else v

    g = nx.MultiDiGraph()
    for n in _nodes(d):
        attrs = {k: x(n[k]) for k in NODE_FIELDS}
        attrs["confidence"] = float(attrs["confidence"])
        g.add_node(n["id"], **attrs, aliases=x(_js(n["aliases"])))
    for e in _edges(d):
        g.add_edge(
            e["source"],
            e["target"],
            key=e["id"],
            type=x(e["type"]),
            kind=x(e["kind"]),
            support=e["support"],
            confidence=float(e["confidence"]),
            mention_count=e["mention_count"],
            doc_count=e["doc_count"],
        )
    path = d / "graph.graphml"
    with atomic_path(path) as tmp:
        nx.write_graphml(g, tmp)
    return {"path": str(path), "nodes": g.number_of_nodes(), "edges": g.number_of_edges()}


def export_html(d: Path, cfg: GraphConfig) -> dict:
    from kgc.graph.html import write_html

    return write_html(d, d / "graph.html", cfg.html)


EXPORTERS = {
    "neo4j": export_neo4j,
    "turtle": export_turtle,
    "graphml": export_graphml,
    "html": export_html,
}
