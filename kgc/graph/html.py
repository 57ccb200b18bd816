"""A self-contained HTML view of a graph: one file, all JS/CSS inline, no network access.

The page lays the graph out with a small force simulation (seeded, so the picture is the
same every time), colours nodes by type, searches names and aliases, and shows a clicked
node's details: type, support, confidence, its relations and its mentions, each with the
source sentence and the mention highlighted. Pan with the mouse, zoom with the wheel.

Deep links: `graph.html#q=obama` searches, `#select=<node id>` opens a node. After
rendering, `#rendered-node-count` / `#rendered-edge-count` hold the number of node and edge
elements drawn (and `#status` says "ready"), which a headless browser can read back.

The best-supported `html.max_nodes` nodes are drawn (the page says how many of how many),
with the edges between them and up to `html.max_mentions` mentions per node. Graph text is
data: it is embedded as JSON with `<` escaped and put into the page with `textContent`
only, never as markup. The page itself (template, style sheet, script) is package data next
to this module: viewer.html, viewer.css and viewer.js.
"""

from __future__ import annotations

import functools
import heapq
import html
import json
from importlib import resources
from pathlib import Path

from kgc.graph.clean import clean_str, json_line_safe
from kgc.graph.config import NODE_FIELDS, HtmlConfig
from kgc.graph.files import EDGES, NODES, iter_jsonl
from kgc.io import atomic_path

PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f77b4",
    "#2ca02c",
]
MENTION_KEYS = ("doc_id", "start", "end", "sentence", "sentence_start", "chunk", "model", "task")


def _colour(i: int, name: str) -> str:
    if i < len(PALETTE):
        return PALETTE[i]
    h = sum(ord(c) * 31**k for k, c in enumerate(name[:16])) % 360
    return f"hsl({h}, 55%, 55%)"


def page_data(graph_dir: Path, cfg: HtmlConfig) -> dict:
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
    for e in iter_jsonl(graph_dir / EDGES):
        total_edges += 1
        if e["source"] in keep and e["target"] in keep:
            edges.append({k: e[k] for k in ("id", "source", "target", "type", "kind", "support")})
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
                "mentions": [{k: m.get(k) for k in MENTION_KEYS} for m in n["mentions"]],
            }
        )
    return {
        "title": cfg.title,
        "nodes": nodes,
        "edges": sorted(edges, key=lambda e: e["id"]),
        "total_nodes": total_nodes,
        "total_edges": total_edges,
        "types": [
            {"type": t, "count": type_counts[t], "colour": _colour(i, t)}
            for i, t in enumerate(order)
        ],
    }


def render_html(data: dict) -> str:
    """The page with `data` embedded as JSON inside <script type="application/json">: `<`, `>`
    and `&` escaped (no `</script>` or `<!--` can end or change the script element), the
    line separators U+2028/U+2029 escaped too; text no UTF-8 file can hold was replaced
    when the graph was built (`kgc.graph.clean`)."""
    blob = json_line_safe(
        json.dumps(data, ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    page, css, js = (_asset(f"viewer.{ext}") for ext in ("html", "css", "js"))
    return (
        page.replace("__TITLE__", html.escape(clean_str(data["title"])))
        .replace("__CSS__", css)
        .replace("__JS__", js)
        .replace("__DATA__", blob)
    )


@functools.cache
def _asset(name: str) -> str:
    """One of the viewer files (read once)."""
    return (resources.files("kgc.graph") / name).read_text(encoding="utf-8")


def write_html(graph_dir: Path, path: Path, cfg: HtmlConfig) -> dict:
    data = page_data(Path(graph_dir), cfg)
    with atomic_path(path) as tmp:
        tmp.write_text(render_html(data), encoding="utf-8")
    return {
        "path": str(path),
        "nodes_shown": len(data["nodes"]),
        "edges_shown": len(data["edges"]),
        "nodes_total": data["total_nodes"],
        "edges_total": data["total_edges"],
    }
