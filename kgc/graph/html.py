"""A self-contained HTML view of a graph: one file, all JS/CSS inline, no network access.

The page lays the graph out with a small force simulation (seeded, so the picture is the
same every time), colours nodes by type, searches names and aliases, and shows a clicked
node's details: type, support, confidence, its relations and its mentions, each with the
source sentence and the mention highlighted. Pan with the mouse, zoom with the wheel.

Deep links: `graph.html#q=obama` searches, `#select=<node id>` opens a node. After
rendering, `#rendered-node-count` / `#rendered-edge-count` hold the number of node and edge
elements drawn (and `#status` says "ready"), which a headless browser can read back.

Clicking an edge (or `#edge=<edge id>`, or "mentions" beside a relation in a node's details)
shows the edge the same way. Each mention with a place links to it in the document view
written beside the page (`documents.html#doc=<id>&span=<k>`, `kgc.graph.documents`).

The best-supported `html.max_nodes` nodes are drawn (the page says how many of how many),
with the edges between them, up to `html.max_mentions` mentions per node and
`EDGE_MENTIONS` per edge. Graph text is data: it is embedded as JSON with `<` escaped and
put into the page with `textContent` only, never as markup. The page itself (template,
style sheet, script) is package data next to this module: viewer.html, viewer.css and
viewer.js (and documents.html/.css/.js for the document view).
"""

from __future__ import annotations

import heapq
import html
from collections.abc import Callable
from pathlib import Path

from kgc.errors import KgcError
from kgc.graph.clean import clean_str
from kgc.graph.config import NODE_FIELDS, HtmlConfig
from kgc.graph.files import EDGES, NODES, iter_jsonl
from kgc.graph.page import PALETTE, asset, colour, embed_json, fill, tint  # noqa: F401
from kgc.io import atomic_path

MENTION_KEYS = ("doc_id", "start", "end", "sentence", "sentence_start", "chunk", "model", "task")
EDGE_MENTIONS = 5  # mentions embedded per edge (at most html.max_mentions; all in edges.jsonl)


def _mention(m: dict, link: Callable[[dict], str | None] | None, *extra: str) -> dict:
    out = {k: m.get(k) for k in (*MENTION_KEYS, *extra)}
    out["link"] = link(m) if link else None
    return out


def page_data(
    graph_dir: Path, cfg: HtmlConfig, link: Callable[[dict], str | None] | None = None
) -> dict:
    """The graph view's data. `link(mention)`: the document view fragment of a mention
    (`kgc.graph.documents.Evidence.link`), or None for no link."""
    total_nodes = 0

    def ranked():
        nonlocal total_nodes
        for n in iter_jsonl(graph_dir / NODES):
            total_nodes += 1
            n["mentions"] = n["mentions"][: cfg.max_mentions]  # only these are shown
            yield n

    top = heapq.nsmallest(
        cfg.max_nodes, ranked(), key=lambda n: (-n["support"], -n["mention_count"], n["id"])
    )
    keep = {n["id"] for n in top}
    edges, total_edges = [], 0
    n_edge_mentions = min(EDGE_MENTIONS, cfg.max_mentions)
    for e in iter_jsonl(graph_dir / EDGES):
        total_edges += 1
        if e["source"] in keep and e["target"] in keep:
            keys = ("id", "source", "target", "type", "kind", "support", "confidence")
            edges.append(
                {
                    **{k: e[k] for k in keys},
                    "mention_count": e["mention_count"],
                    "doc_count": e["doc_count"],
                    "mentions": [
                        _mention(m, link, "head", "tail") for m in e["mentions"][:n_edge_mentions]
                    ],
                }
            )
    type_counts: dict[str, int] = {}
    for n in top:
        type_counts[n["type"]] = type_counts.get(n["type"], 0) + 1
    order = sorted(type_counts, key=lambda t: (-type_counts[t], t))
    nodes = []
    for n in sorted(top, key=lambda n: n["id"]):
        nodes.append(
            {
                "id": n["id"],
                **{k: n[k] for k in NODE_FIELDS},
                "aliases": n["aliases"],
                "mentions": [_mention(m, link) for m in n["mentions"]],
            }
        )
    return {
        "title": cfg.title,
        "nodes": nodes,
        "edges": sorted(edges, key=lambda e: e["id"]),
        "total_nodes": total_nodes,
        "total_edges": total_edges,
        "types": [
            {"type": t, "count": type_counts[t], "colour": colour(i, t)}
            for i, t in enumerate(order)
        ],
    }


def render_html(data: dict) -> str:
    """The page with `data` embedded as JSON (`embed_json`)."""
    return fill(
        asset("viewer.html"),
        TITLE=html.escape(clean_str(data["title"])),
        CSS=asset("viewer.css"),
        JS=asset("viewer.js"),
        DATA=embed_json(data),
    )


def write_html(
    graph_dir: Path,
    path: Path,
    cfg: HtmlConfig,
    *,
    docs: list[str] | None = None,
    limits=None,
    id_field: str | None = "id",
) -> dict:
    """The graph view at `path` and the document view beside it (`documents.html`).

    `docs`: where the documents' text is (`kgc.graph.documents.load_texts`: JSONL documents,
    the annotated/prediction files or `kgc extract` outputs the graph was built from, their
    ids read as `id_field`); without it the document view shows the sentences around the
    graph's mentions. `limits`: `kgc.graph.documents.DocLimits`."""
    from kgc.graph.documents import DOCUMENTS, DocLimits, collect, load_texts, write_documents

    graph_dir, path = Path(graph_dir), Path(path)
    if path.name == DOCUMENTS:
        raise KgcError(
            f"{path}: {DOCUMENTS} is the document view's name; name the graph view otherwise"
        )
    ev = collect(graph_dir, limits or DocLimits())
    data = page_data(graph_dir, cfg, link=ev.link)
    data["documents"] = DOCUMENTS
    texts = load_texts(docs, ev.docs, id_field) if docs else None
    shown = write_documents(
        ev, path.with_name(DOCUMENTS), cfg, data, texts, list(docs or []), path.name
    )
    with atomic_path(path) as tmp:
        tmp.write_text(render_html(data), encoding="utf-8")
    return {
        "path": str(path),
        "nodes_shown": len(data["nodes"]),
        "edges_shown": len(data["edges"]),
        "nodes_total": data["total_nodes"],
        "edges_total": data["total_edges"],
        "documents": shown,
    }
