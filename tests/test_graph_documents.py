"""The document view (documents.html): every extracted span highlighted in its document, in
headless Chromium with networking disabled; the graph view's mention links open the span;
document text and ids with markup stay text; overlapping spans nest deterministically; the
caps say what they left out. A screenshot is kept in out/test-artifacts/documents.png."""

from __future__ import annotations

import argparse
import html
import json
import re
from pathlib import Path

import pytest
from test_graph_html import ARTIFACTS, CORPUS, browse, build, find_chromium, text_of

from kgc.graph.documents import DocLimits, excerpts, nest, stitch
from kgc.graph.html import write_html
from kgc.graph.stream import read_graph

pytestmark = pytest.mark.timeout(600)  # includes installing chromium when it is missing
DEMO = CORPUS / "demo.jsonl"
# a tag, whatever its attribute values hold (a serialised `title` may keep `<` and `>`)
TAG = r'</?[a-zA-Z][^">]*(?:"[^"]*"[^">]*)*>'
MARK = r'<mark(?:\s+[^\s=>]+="[^"]*")*\s*>'


def strip(fragment: str, sep: str = "") -> str:
    return html.unescape(re.sub(TAG, sep, fragment))


def panel(dom: str) -> str:
    """The text of the span details panel."""
    start = dom.index('id="span-details"')
    return strip(dom[start : dom.index("</aside>", start)], " ")


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


def sections(dom: str) -> dict[str, dict]:
    """Document id → {spans (data-spans), ks (the data-k of its marks), active, text}."""
    out = {}
    pat = r'<section class="doc[^"]*" data-doc="([^"]*)" data-spans="(\d+)">(.*?)</section>'
    for m in re.finditer(pat, dom, re.S):
        body = m.group(3)
        marks = re.findall(r'<mark class="([^"]*)" data-k="(\d+)"', body)
        text = re.search(r'<div class="text">(.*)</div>', body, re.S).group(1)
        out[html.unescape(m.group(1))] = {
            "spans": int(m.group(2)),
            "ks": sorted({int(k) for _, k in marks}),
            "pieces": len(marks),
            "active": sorted({int(k) for c, k in marks if "active" in c.split()}),
            "text": strip(text),
            "surfaces": _surfaces(text),
        }
    return out


def _surfaces(text_html: str) -> list[str]:
    """The text of each outermost mark, in document order."""
    out, depth, cur = [], 0, []
    for tok in re.split(f"({MARK}|</mark>)", text_html):
        if re.fullmatch(MARK, tok):
            depth += 1
        elif tok == "</mark>":
            depth -= 1
            if depth == 0:
                out.append(strip("".join(cur)))
                cur = []
        elif depth:
            cur.append(tok)
    return out


def expected_spans(nodes: list[dict]) -> dict[str, int]:
    """Distinct located node-mention places per document, from nodes.jsonl."""
    places: dict[str, set] = {}
    for n in nodes:
        for m in n["mentions"]:
            places.setdefault(m["doc_id"], set())
            if m["start"] is not None:
                places[m["doc_id"]].add((m["start"], m["end"]))
    return {d: len(p) for d, p in places.items()}


def doc_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    start = text.index('<script type="application/json" id="doc-data">')
    return json.loads(text[text.index(">", start) + 1 : text.index("</script>", start)])


# ----------------------------------------------------------------------------- no browser
def _flat(pieces: list) -> str:
    return "".join(p if isinstance(p, str) else _flat(p["c"]) for p in pieces)


def test_nest_splits_a_crossing_span_where_the_outer_one_ends():
    text = "New York University"
    spans = [(10, 18, 0), (14, 29, 1), (10, 29, 2)]  # New York, York University, the whole
    got = nest(text, 10, spans)
    assert got == [
        {
            "k": 2,
            "c": [{"k": 0, "c": ["New ", {"k": 1, "c": ["York"]}]}, {"k": 1, "c": [" University"]}],
        }
    ]
    assert nest(text, 10, spans[::-1]) == got  # input order does not matter
    assert _flat(got) == text
    # same place twice (two records): nested by k; text around them is kept
    assert nest("a bc d", 0, [(2, 4, 5), (2, 4, 1)]) == [
        "a ",
        {"k": 1, "c": [{"k": 5, "c": ["bc"]}]},
        " d",
    ]


def test_stitch_and_excerpts_keep_offsets():
    assert stitch({0: "abcdef", 4: "efgh", 10: "kl"}) == "abcdefgh  kl"
    assert stitch({0: "ab\x00c"}) == "ab\ufffdc"  # cleaned as the build cleans text
    assert excerpts([(10, "kl."), (0, "ab."), (2, ".cd"), (20, "x")]) == [
        (0, "ab.cd"),
        (10, "kl."),
        (20, "x"),
    ]


def test_caps_say_what_they_left_out(tmp_path):
    from conftest import write_jsonl

    docs = [
        {
            "id": f"d{i:02d}",
            "text": " ".join(f"P{i}x{j} met Q{j}." for j in range(i + 1)),
            "entity": [{"entity": f"P{i}x{j}", "entity_type": "person"} for j in range(i + 1)],
        }
        for i in range(12)
    ]
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    _, d = build(tmp_path, src)
    out = write_html(d, d / "graph.html", _html_cfg(), docs=[str(src)], limits=DocLimits(3, 60, 2))
    assert out["documents"]["documents_shown"] == 3 and out["documents"]["documents_total"] == 12
    data = doc_data(d / "documents.html")
    assert [x["id"] for x in data["documents"]] == ["d09", "d10", "d11"]  # the most mentions
    assert "showing the 3 documents with the most located mentions of 12" in data["notes"][0]
    assert "mentions in the other documents are not shown" in data["notes"][0]
    d11 = data["documents"][-1]
    assert d11["mode"] == "full" and len(d11["spans"]) == 2  # max_spans
    text = _flat([p for p in d11["body"] if isinstance(p, str) or "gap" not in p])
    assert text == docs[11]["text"][:60]
    assert any("text cut at 60 of" in n for n in d11["notes"])
    assert any("spans after the cut are not highlighted" in n for n in d11["notes"])
    assert any("only the first 2 of" in n for n in d11["notes"])
    assert d11["body"][-1] == {"gap": None}
    before = [(d / f).read_bytes() for f in ("graph.html", "documents.html")]
    write_html(d, d / "graph.html", _html_cfg(), docs=[str(src)], limits=DocLimits(3, 60, 2))
    assert [(d / f).read_bytes() for f in ("graph.html", "documents.html")] == before


def _html_cfg(**kw):
    from kgc.graph.config import HtmlConfig

    return HtmlConfig(**kw)


def test_show_command_reads_the_documents_the_graph_was_built_from(tmp_path, capsys):
    from kgc.graph.cli import add_commands

    _, d = build(tmp_path, DEMO)
    assert doc_data(d / "documents.html")["documents"][0]["mode"] == "excerpts"  # the build's
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"), {"graph build": None, "pipeline": None})
    args = parser.parse_args(["graph", "show", "--graph", str(d), "--max-documents", "4"])
    assert args.handler(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["documents"]["documents_shown"] == 4 == printed["documents"]["full_text"]
    data = doc_data(d / "documents.html")
    texts = {json.loads(x)["id"]: json.loads(x)["text"] for x in DEMO.read_text().splitlines()}
    assert all(x["mode"] == "full" for x in data["documents"])
    assert all(_flat(x["body"]) == texts[x["id"]] for x in data["documents"])
    assert "text: the documents in " in data["notes"][-1]


# ----------------------------------------------------------------------------- in chromium
def test_every_span_is_highlighted_per_document(chromium, tmp_path):
    summary, d = build(tmp_path, DEMO)
    nodes, _ = read_graph(d)
    want = expected_spans(nodes)
    assert len(want) == 9 and sum(want.values()) > 40
    texts = {json.loads(x)["id"]: json.loads(x)["text"] for x in DEMO.read_text().splitlines()}
    for mode in ("excerpts", "full"):
        if mode == "full":
            write_html(d, d / "graph.html", _html_cfg(), docs=[str(DEMO)])
        dom = browse(chromium, d / "documents.html", tmp_path)
        assert text_of(dom, "status") == "ready"
        got = sections(dom)
        assert {doc: s["spans"] for doc, s in got.items()} == want, mode
        assert {doc: len(s["ks"]) for doc, s in got.items()} == want, mode
        assert int(text_of(dom, "rendered-span-count")) == sum(want.values())
        assert int(text_of(dom, "rendered-doc-count")) == 9 == int(text_of(dom, "total-doc-count"))
        for doc, s in got.items():
            assert s["ks"] == list(range(want[doc]))  # k: 0.. in document order
            if mode == "full":
                assert s["text"] == texts[doc]  # the whole document, marks around its spans
            else:
                assert all(part in texts[doc] for part in s["text"].split("[…]"))
        # worked out by hand from examples/corpus/demo.jsonl (NER, RE and EE records of one
        # document) and the build's placing rules: "Obama" is the one not inside "Barack
        # Obama"; the wedding's place is the "Chicago" nearest "married" (24 characters
        # before it; the other is 29 after), the same place as NER's and RE's "Chicago"
        assert got["en-obama-1"]["surfaces"] == [
            "Barack Obama",
            "born",
            "Honolulu",
            "1961",
            "Harvard Law School",
            "Chicago",
            "1992",
            "Obama",
            "married",
            "Michelle Robinson",
        ]


def test_graph_view_mention_links_open_their_spans(chromium, tmp_path):
    _, d = build(tmp_path, DEMO)
    write_html(d, d / "graph.html", _html_cfg(), docs=[str(DEMO)])
    nodes, edges = read_graph(d)
    obama = next(n for n in nodes if n["name"] == "Barack Obama")
    dom = browse(chromium, d / "graph.html", tmp_path, f"select={obama['id']}")
    hrefs = [html.unescape(h) for h in re.findall(r'<a class="doc-link" href="([^"]+)"', dom)]
    assert hrefs and all(h.startswith("documents.html#doc=") for h in hrefs)
    page, fragment = hrefs[0].split("#", 1)
    assert (d / page).is_file()
    k = int(re.search(r"span=(\d+)$", fragment).group(1))
    first = obama["mentions"][0]
    assert fragment.startswith(f"doc={first['doc_id']}&")
    doc = browse(chromium, d / page, tmp_path, fragment)
    got = sections(doc)[first["doc_id"]]
    assert got["active"] == [k]  # the linked span, and only it, is marked active
    assert got["surfaces"][k] == "Barack Obama"
    shown = re.search(r'id="span-details" data-doc="([^"]*)" data-span="([^"]*)"', doc)
    assert shown and shown.groups() == (first["doc_id"], str(k))
    assert f'data-record="{obama["id"]}"' in doc
    details = panel(doc)
    assert f"confidence {obama['confidence']}" in details and "model annotation" in details
    # an edge: its mention links to both ends
    born = next(e for e in edges if e["type"] == "born_in" and e["source"] == obama["id"])
    dom = browse(chromium, d / "graph.html", tmp_path, f"edge={born['id']}")
    assert f'data-edge="{born["id"]}"' in dom
    href = html.unescape(re.search(r'<a class="doc-link" href="([^"]+)"', dom).group(1))
    ks = [int(x) for x in re.search(r"span=([\d,]+)$", href).group(1).split(",")]
    assert len(ks) == 2
    doc = browse(chromium, d / "documents.html", tmp_path, href.split("#", 1)[1])
    got = sections(doc)[born["mentions"][0]["doc_id"]]
    assert got["active"] == ks
    assert [got["surfaces"][k] for k in ks] == ["Barack Obama", "Honolulu"]
    assert "Barack Obama —born_in→ Honolulu" in panel(doc)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "documents.png"
    shot.unlink(missing_ok=True)
    browse(chromium, d / "documents.html", tmp_path, fragment, shot=shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"\nscreenshot: {shot}")


def test_markup_in_documents_stays_text_and_overlaps_nest(chromium, tmp_path):
    from conftest import write_jsonl

    evil = '</script><img src=x onerror="document.title=1"><b>bold</b><!--'
    doc_id = 'd<i>1</i>&span=9#"x"'
    text = f"{evil} studied at New York University.\u2028Then {evil} left."
    docs = [
        {
            "id": doc_id,
            "text": text,
            "entity": [
                {"entity": evil, "entity_type": "person"},
                {"entity": "New York", "entity_type": "location"},
                {"entity": "York University", "entity_type": "organization"},
                {"entity": "New York University", "entity_type": "organization"},
            ],
        }
    ]
    src = write_jsonl(tmp_path / "evil.jsonl", docs)
    _, d = build(tmp_path, src, html={"title": "<i>t</i>"})
    write_html(d, d / "graph.html", _html_cfg(title="<i>t</i>"), docs=[str(src)])
    page = (d / "documents.html").read_text(encoding="utf-8")
    assert page.count("</script>") == 2 and page.lower().count("<script") == 2
    assert "<!--" not in page and "\u2028" not in page and "default-src 'none'" in page
    nodes, _ = read_graph(d)
    bad = next(n for n in nodes if n["name"] == evil)
    dom = browse(chromium, d / "graph.html", tmp_path, f"select={bad['id']}")
    href = html.unescape(re.search(r'<a class="doc-link" href="([^"]+)"', dom).group(1))
    dom = browse(chromium, d / "documents.html", tmp_path, href.split("#", 1)[1])
    assert text_of(dom, "status") == "ready"
    bare = re.sub(r'="[^"]*"', '=""', dom)  # attribute values (titles) hold names as text
    assert "<img" not in bare and "<b>bold" not in bare and "<i>" not in bare
    got = sections(dom)
    assert list(got) == [doc_id]
    s = got[doc_id]
    assert s["text"] == text  # every character, as text
    assert s["spans"] == 4 == len(s["ks"]) and len(s["active"]) == 1
    assert s["surfaces"][s["active"][0]] == evil
    # "New York University" holds "New York" and "York University", which cross: the
    # later one is split where "New York" ends, so 5 marks for 4 spans
    assert s["pieces"] == 5
    assert html.escape(evil, quote=False) in dom


def test_row_chunks_are_put_back_together_and_hostile_text_stays_text(chromium, tmp_path):
    """`kgc extract` rows as the documents: overlapping chunks stitched at their offsets;
    the hostile rows of test_hostile_graph (controls, surrogates, `</script>`, U+2028 in
    names, doc ids and text) give a page with no markup from them."""
    from test_hostile_graph import DOC, TEXT, _bad, _clean, _row, _rows

    text = "Ann Lee met Bob Ray in Oslo. Later Bob Ray met Cy Dee in Rome. Cy Dee left."
    chunked = []
    for i, (s, e) in enumerate(((0, 40), (30, len(text)))):
        chunk = text[s:e]
        names = [n for n in ("Ann Lee", "Bob Ray", "Cy Dee", "Oslo", "Rome") if n in chunk]
        recs = [{"entity": n, "entity_type": "x"} for n in names]
        r = _row("chunked", "NER", recs, text=chunk, model="m", source="", rid=f"c{i}")
        r.update(chunk_index=i, chunk_start=s, chunk_end=e)
        chunked.append(r)
    rows = tmp_path / "extract" / "rows"
    rows.mkdir(parents=True)
    (rows / "part-000000.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [*_rows(), *chunked]), encoding="utf-8"
    )
    _, d = build(tmp_path, tmp_path / "extract")
    out = write_html(d, d / "graph.html", _html_cfg(), docs=[str(tmp_path / "extract")])
    assert out["documents"]["full_text"] == out["documents"]["documents_shown"] == 4
    data = doc_data(d / "documents.html")
    docs = {x["id"]: x for x in data["documents"]}
    assert _flat(docs["chunked"]["body"]) == text  # two chunks, 10 characters shared
    assert _flat(docs[_clean(DOC)]["body"]) == _clean(TEXT)
    want = expected_spans(read_graph(d)[0])
    assert {i: len(x["spans"]) for i, x in docs.items()} == want
    page = (d / "documents.html").read_text(encoding="utf-8")
    assert page.count("</script>") == 2 and page.lower().count("<script") == 2
    assert "<!--" not in page and "\u2028" not in page and "\u2029" not in page
    assert not _bad(page)
    dom = browse(chromium, d / "documents.html", tmp_path)
    assert text_of(dom, "status") == "ready"
    assert int(text_of(dom, "rendered-span-count")) == sum(want.values())
    bare = re.sub(r'="[^"]*"', '=""', dom)
    assert bare.lower().count("<script") == 2 and "<b>" not in bare
