"""Hostile text through `kgc graph build`: every export stays valid, and every change is counted.

Names, labels, sentences and row fields hold NUL and other controls, lone surrogates, quotes,
backslashes, newlines, `]]>`, `</script>`, `<!--` and the line separators U+2028/U+2029.
The graph is built once (local executor, no Ray) and each output is read back by a strict
reader: GraphML by xml.etree and networkx, the CSVs by csv (one record per line), Cypher by a
literal scanner, Turtle by rdflib and a STRING_LITERAL_QUOTE check, JSONL by json (UTF-8, one
object per line, also by `str.splitlines`), HTML by pulling out its JSON data block.

Lone surrogates sit inside the rows' nested JSON strings (records, instruction), as
model output carries them; a surrogate escape at a row's top level is rejected by the JSONL
reader (`kgc.io`) with its line, so row fields with surrogates are checked in memory.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from kgc.graph.build import build_in_memory
from kgc.graph.config import GraphConfig
from kgc.rows import row_id

pytestmark = pytest.mark.timeout(120)

NAMES = [
    "nul\x00ctl\x01",
    "\ud800high",
    "low\udfff",
    'q"uote',
    "back\\slash",
    'tail\\"',
    "new\nline",
    "cr\rret",
    "]]>cdata",
    "</script><script>alert(1)</script>",
    "<!--comment",
    "ls\u2028ps\u2029x",
    "nel\x85del\x7f",
    "unit\x1fsep",
    "non\uffffchar",
    "a;b`c'd",
]
TYPE = "per\x00son\ud801"
RELATION = 'rel\x02"\\\nx`y'
TRIGGER = "trig\x00ger"
ROLE = "ro\x1ble"
DOC = "doc\x00\x85\u2028<b>"
MODEL = "model\x01"
SOURCE = "src\x7f"
TEXT = " and ".join(NAMES) + f" met at {TRIGGER}."


def _bad(s: str) -> bool:
    """An unsafe character, defined independently of the code: a control other than
    tab/LF/CR, a surrogate, or U+FFFE/U+FFFF."""
    return any(
        (unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r") or c in "\ufffe\uffff"
        for c in s
    )


def _row(doc_id, task, records, *, text=TEXT, model=MODEL, source=SOURCE, rid=None):
    """A `kgc extract` row whose nested JSON strings hold their surrogates as escapes."""
    return {
        "id": rid or row_id("x", 0, len(text), [task, str(len(records)), repr(records)[:20]]),
        "doc_id": doc_id,
        "chunk_index": 0,
        "chunk_start": 0,
        "chunk_end": len(text),
        "task": task,
        "schema": "null",
        "instruction": json.dumps({"instruction": "…", "schema": None, "input": text}),
        "source": source,
        "records": json.dumps(records),  # ensure_ascii: "\ud800" stays an escape here
        "errors": "[]",
        "model_id": model,
    }


def _rows() -> list[dict]:
    return [
        _row(DOC, "NER", [{"entity": n, "entity_type": TYPE} for n in NAMES], rid="r-ner"),
        _row(
            "d2",
            "RE",
            [{"head": NAMES[0], "relation": RELATION, "tail": NAMES[1]}],
            model="m",
            source="",
            rid="r-re",
        ),
        _row(
            "d3",
            "EE",
            [
                {
                    "event_type": "meet\x00ing",
                    "event_trigger": TRIGGER,
                    "arguments": [{"argument": NAMES[3], "role": ROLE}],
                }
            ],
            model="m",
            source="",
            rid="r-ee",
        ),
    ]


def _expected_sanitized() -> Counter:
    """Which strings the build must report as changed, by field."""
    c: Counter = Counter()
    for r in _rows():
        for field, key in (("doc_id", "doc_id"), ("model", "model_id"), ("source", "source")):
            c[field] += _bad(r[key])
        c["text"] += _bad(json.loads(r["instruction"])["input"])
        for rec in json.loads(r["records"]):
            for k, v in rec.items():
                if isinstance(v, str):
                    c[k] += _bad(v)
            for a in rec.get("arguments", []):
                c["argument"] += _bad(a["argument"])
                c["role"] += _bad(a["role"])
    return +c


def _clean(s: str) -> str:
    return "".join("\ufffd" if _bad(ch) else ch for ch in s)


def _walk_strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for k, x in v.items():
            yield k
            yield from _walk_strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from _walk_strings(x)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from kgc.graph.stream import run_build

    tmp = tmp_path_factory.mktemp("hostile")
    src = tmp / "extract" / "rows"
    src.mkdir(parents=True)
    (src / "part-000000.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in _rows()), encoding="utf-8"
    )
    cfg = GraphConfig.model_validate(
        {
            "input": {"paths": [str(tmp / "extract")]},
            "output": {"path": str(tmp / "graph")},
            "canonical": {"aliases": {"ALIAS\x00": "Shown\x01"}},
            "html": {"title": "t</title>\x00"},
            "rdf": {"batch_nodes": 3},
        }
    )
    summary = run_build(cfg, progress=False)
    return summary, tmp / "graph"


# ----------------------------------------------------------------------------- the summary
def test_build_succeeds_and_counts_every_sanitized_string(built):
    summary, d = built
    want = _expected_sanitized()
    assert want["entity"] >= 5 and want["text"] == 3 and want["head"] == 1  # really hostile
    assert summary["sanitized"] == dict(sorted(want.items()))
    assert summary["sanitized_total"] == sum(want.values())
    assert json.loads((d / "summary.json").read_text(encoding="utf-8"))["sanitized"] == dict(
        sorted(want.items())
    )
    # one node per name (all distinct after cleaning), the event and its trigger's type
    assert summary["nodes"] == len(NAMES) + 1 and summary["edges"] == 2
    assert set(summary["exports"]) == {"neo4j", "turtle", "graphml", "html"}


def test_in_memory_build_counts_the_same_and_cleans_row_fields():
    rows = _rows()
    rows[1]["doc_id"], rows[1]["model_id"], rows[1]["id"] = "d\ud800", "m\udc00", None
    rows[2]["task"] = "EE\x00"  # not a task: dropped, its name still safe for the summary
    nodes, edges, summary = build_in_memory(rows, GraphConfig.model_validate(_cfg_min()))
    assert summary["sanitized"]["doc_id"] == 2 and summary["sanitized"]["model"] == 2
    assert summary["sanitized"]["task"] == 1 and summary["dropped"]["unknown_task"] == 1
    assert summary["sanitized_total"] == sum(summary["sanitized"].values())
    text = json.dumps([nodes, edges, summary], ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogate left anywhere
    # (node keys join their parts with \x1f, the one control the graph writes itself)
    assert not any(_bad(s.replace("\x1f", "")) for s in _walk_strings([nodes, edges, summary]))
    docs = {m["doc_id"] for n in nodes for m in n["mentions"]}
    assert "d\ufffd" in docs and _clean(DOC) in docs


def _cfg_min() -> dict:
    return {"input": {"paths": ["."]}, "output": {"path": "."}}


def test_cleaning_keeps_offsets_and_strict_labels():
    """A replaced character is one character: mentions still point at their text; strict mode
    compares cleaned labels with cleaned schema labels."""
    nodes, _, _ = build_in_memory(_rows()[:1], GraphConfig.model_validate(_cfg_min()))
    for n in nodes:
        for m in n["mentions"]:
            a, b = m["start"] - m["sentence_start"], m["end"] - m["sentence_start"]
            assert m["sentence"][a:b] == m["surface"] == _clean(m["surface"])
    row = _rows()[0]
    row["schema"] = json.dumps([TYPE])
    row["instruction"] = json.dumps({"input": TEXT, "schema": [TYPE]})
    nodes, _, summary = build_in_memory(
        [row], GraphConfig.model_validate(_cfg_min() | {"strict": True})
    )
    assert len(nodes) == len(NAMES) and not summary["dropped"]
    assert {n["type"] for n in nodes} == {_clean(TYPE)}


# ----------------------------------------------------------------------------- JSONL
def test_jsonl_is_utf8_one_object_per_line_with_no_unsafe_characters(built):
    summary, d = built
    for name, count in (("nodes.jsonl", summary["nodes"]), ("edges.jsonl", summary["edges"])):
        raw = (d / name).read_bytes()
        text = raw.decode("utf-8")  # strict: no lone surrogate could have been written
        lines = text.split("\n")[:-1]
        assert len(lines) == count == len(text.splitlines())  # U+2028 & co. escaped
        objs = [json.loads(line) for line in lines]
        bad = [s for s in _walk_strings(objs) if _bad(s.replace("\x1f", ""))]
        assert not bad, bad[:3]
    names = {n["name"] for n in (json.loads(x) for x in (d / "nodes.jsonl").open())}
    assert {"nul\ufffdctl\ufffd", "\ufffdhigh", "low\ufffd", 'tail\\"', "]]>cdata"} <= names
    assert "</script><script>alert(1)</script>" in names and "ls ps x" in names


# ----------------------------------------------------------------------------- GraphML
def test_graphml_is_valid_xml_and_loads_with_networkx(built):
    import networkx as nx

    summary, d = built
    root = ET.parse(d / "graph.graphml").getroot()
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    assert len(root.findall(".//g:node", ns)) == summary["nodes"]
    g = nx.read_graphml(d / "graph.graphml")
    assert g.number_of_nodes() == summary["nodes"] and g.number_of_edges() == summary["edges"]
    names = {g.nodes[n]["name"] for n in g}
    assert {"nul\ufffdctl\ufffd", "]]>cdata", "</script><script>alert(1)</script>"} <= names
    assert {g.edges[e]["type"] for e in g.edges} == {_clean(RELATION), _clean(ROLE)}


# ----------------------------------------------------------------------------- Neo4j
def _csv(path: Path) -> tuple[str, list[list[str]]]:
    raw = path.read_bytes().decode("utf-8")  # as written: no newline translation
    with open(path, encoding="utf-8", newline="") as fh:
        return raw, list(csv.reader(fh, strict=True))


@pytest.mark.parametrize("name, count", [("nodes.csv", "nodes"), ("relationships.csv", "edges")])
def test_neo4j_csv_parses_one_record_per_line(built, name, count):
    summary, d = built
    raw, rows = _csv(d / "neo4j" / name)
    assert len(rows) - 1 == summary[count]
    assert len({len(r) for r in rows}) == 1  # every row has the header's columns
    physical = raw.split("\r\n")
    assert physical[-1] == "" and len(physical) - 1 == len(rows)  # no record spans lines
    assert "\n" not in raw.replace("\r\n", "") and "\r" not in raw.replace("\r\n", "")
    assert not _bad(raw) and "\u2028" not in raw and "\u2029" not in raw
    for r in rows[1:]:
        json.loads(r[-1])  # mentions: JSON


def _scan_cypher(line: str) -> list[str]:
    """The string literals of one Cypher statement line; fails on an unterminated string or
    backtick name, or a statement that does not end with `;`."""
    strings, i, n = [], 0, len(line)
    while i < n:
        c = line[i]
        if c == '"':
            j = i + 1
            while j < n and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            assert j < n, f"unterminated string in {line[:80]!r}"
            strings.append(json.loads(line[i : j + 1]))  # JSON escapes are Cypher's
            i = j + 1
        elif c == "`":
            j = i + 1
            while True:
                j = line.index("`", j)
                if j + 1 < n and line[j + 1] == "`":
                    j += 2
                    continue
                break
            i = j + 1
        else:
            i += 1
    assert line.endswith(";")
    return strings


def test_cypher_statements_are_one_line_each_with_escaped_literals(built):
    summary, d = built
    text = (d / "neo4j" / "import.cypher").read_text(encoding="utf-8")
    assert not _bad(text) and "\u2028" not in text and "\u2029" not in text
    stmts = [x for x in text.split("\n") if x.startswith(("MERGE", "MATCH"))]
    assert len(stmts) == summary["nodes"] + summary["edges"]
    assert all(
        x.startswith(("//", "CREATE", ":begin", ":commit", "MERGE", "MATCH"))
        for x in text.split("\n")
        if x
    )
    literals = {s for x in stmts for s in _scan_cypher(x)}
    assert {'q"uote', "back\\slash", 'tail\\"', "nul\ufffdctl\ufffd"} <= literals


# ----------------------------------------------------------------------------- Turtle
_TTL_STRING = re.compile(r'"(?:[^"\\\n\r]|\\[tbnrf"\'\\]|\\u[0-9A-Fa-f]{4}|\\U[0-9A-Fa-f]{8})*"')


def test_turtle_literals_are_escaped_and_parse_back(built):
    import rdflib

    summary, d = built
    text = (d / "graph.ttl").read_text(encoding="utf-8")
    assert '"""' not in text  # no long strings: each literal one escaped line
    assert not _bad(text) and "\u2028" not in text and "\u2029" not in text
    for lit in re.findall(r'"(?:[^"\\]|\\.)*"', text, flags=re.S):
        assert _TTL_STRING.fullmatch(lit), lit
    g = rdflib.Graph()
    g.parse(d / "graph.ttl", format="turtle")
    assert len(g) == summary["exports"]["turtle"]["triples"]
    labels = {str(o) for o in g.objects(None, rdflib.RDFS.label)}
    assert {'q"uote', "back\\slash", 'tail\\"', "nul\ufffdctl\ufffd", _clean(TYPE)} <= labels
    assert _clean(DOC) in {
        str(o) for o in g.objects(None, rdflib.URIRef("http://kgc.local/graph/docId"))
    }


def test_turtle_string_escapes_what_rdflib_would_not():
    import rdflib

    from kgc.graph.clean import turtle_string

    for s in ['a\nb\\"', 'x"""y\n', "\x00\x1f\u2028\t\r\b\f", "end\\", "\ud800"]:
        lit = turtle_string(s)
        assert _TTL_STRING.fullmatch(lit), lit
        g = rdflib.Graph().parse(data=f"<http://x/s> <http://x/p> {lit} .", format="turtle")
        got = str(next(g.objects()))
        assert got == (s if s != "\ud800" else "\ufffd")


# ----------------------------------------------------------------------------- HTML
def test_html_embeds_data_without_markup_from_it(built):
    summary, d = built
    page = (d / "graph.html").read_text(encoding="utf-8")
    assert not _bad(page) and "\u2028" not in page and "\u2029" not in page
    assert page.count("</script>") == 2 and page.lower().count("<script") == 2  # the page's own
    assert "<!--" not in page and "]]>" not in page
    assert "<title>t&lt;/title&gt;\ufffd</title>" in page
    start = page.index('<script type="application/json" id="graph-data">')
    blob = page[page.index(">", start) + 1 : page.index("</script>", start)]
    data = json.loads(blob)
    names = {n["name"] for n in data["nodes"]}
    assert "</script><script>alert(1)</script>" in names and "<!--comment" in names
    assert len(data["nodes"]) == summary["nodes"]
