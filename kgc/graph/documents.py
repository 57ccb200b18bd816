"""The document view (`documents.html`): each document's text with every extracted span
highlighted in place, written beside `graph.html` by `kgc.graph.html.write_html`.

A *span* is one place in one document, `[start, end)` in document characters, where the
graph has a node mention (an entity, an event trigger, an event argument). Its records are
the nodes mentioned there and the edges (relations, roles, attributes) whose mention has an
end at that place (the node mention of the same row, record and role). Spans of a document
are numbered `k = 0, 1, …` in (start, longest first) order over *all* its located mentions,
whatever is shown, so `documents.html#doc=<id>&span=<k>` names the same place in every
rewrite of the view; `span=3,7` marks several (an edge's two ends).

Text comes from the documents when they are given (`load_texts`: JSONL `{id, text}`, the
annotated or prediction files the graph was built from, or `kgc extract` row shards, whose
chunks are put back together at their offsets) and match the graph (every mention's
sentence must sit at its offset); otherwise from the graph itself: the sentences around its
mentions, joined where they touch, with the text between them left out ("excerpts").

Overlapping spans never break the markup: the text is cut at every span boundary and each
piece is wrapped in the marks of the spans covering it, outermost first (earlier start,
then longer); a span that crosses the end of an outer one is split there into two marks
with the same `k`. Document text is data: it is embedded as escaped JSON and put into the
page with `textContent` only.

Bounded for large corpora (`DocLimits`): the `max_documents` documents with the most located
mentions, the first `max_doc_chars` characters of each, its first `max_spans` spans and
`max_records` records per span; the page says what was left out.
"""

from __future__ import annotations

import bisect
import html
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from kgc.errors import KgcError, Problem
from kgc.graph.clean import clean_str
from kgc.graph.config import HtmlConfig
from kgc.graph.files import EDGES, NODES, iter_jsonl
from kgc.io import atomic_path

DOCUMENTS = "documents.html"


@dataclass(frozen=True)
class DocLimits:
    max_documents: int = 100  # the documents with the most located mentions
    max_doc_chars: int = 20_000  # text shown per document (the rest is cut, and said so)
    max_spans: int = 2_000  # highlighted spans per document
    max_records: int = 12  # records listed per span (the rest counted)

    def __post_init__(self):
        for k in ("max_documents", "max_doc_chars", "max_spans", "max_records"):
            if getattr(self, k) < 1:
                raise KgcError(f"{k} must be at least 1, got {getattr(self, k)}")


class _Place:
    """One span being collected: the nodes and edges mentioned at it."""

    __slots__ = ("nodes", "edges")

    def __init__(self):
        self.nodes: dict[str, dict] = {}
        self.edges: dict[str, dict] = {}

    @staticmethod
    def add(table: dict, rid: str, m: dict, role: str) -> None:
        acc = table.setdefault(rid, {"n": 0, "tasks": Counter(), "models": set(), "roles": set()})
        acc["n"] += 1
        acc["tasks"][str(m.get("task") or "")] += 1
        acc["models"].add(str(m.get("model") or ""))
        acc["roles"].add(role)


class Evidence:
    """The spans of the documents the view shows, read from a built graph (`collect`)."""

    def __init__(self, limits: DocLimits):
        self.limits = limits
        self.total_docs = 0
        self.docs: list[str] = []  # shown, in doc id order
        self.left_out_mentions = 0  # located node mentions in documents not shown
        self.places: dict[str, dict[tuple[int, int], _Place]] = {}
        self.k_of: dict[tuple[str, int, int], int] = {}
        self.place_of: dict[tuple, tuple[str, int, int]] = {}  # (row, record, role) → place
        self.sentences: dict[str, set[tuple[int, str]]] = {}
        self.unlocated: Counter = Counter()  # mentions without a position, per document
        self.records: dict[str, dict] = {}  # node/edge id → what a span shows of it

    def link(self, m: dict) -> str | None:
        """The document view fragment for a graph mention (node or edge): `doc=<id>` plus
        `&span=<k>[,<k>]` when its place is known; None for a document not shown."""
        doc = str(m.get("doc_id"))
        if doc not in self.places:
            return None
        role = str(m.get("role") or "")
        ks: list[int] = []
        if ":" in role:  # an edge mention: its ends' places
            for r in role.split(":", 1)[1].split(">"):
                p = self.place_of.get((m.get("row_id"), m.get("record"), r))
                if p is not None:
                    ks.append(self.k_of[p])
        if not ks and m.get("start") is not None:
            k = self.k_of.get((doc, m["start"], m["end"]))
            if k is not None:
                ks.append(k)
        frag = "doc=" + quote(doc, safe="")
        if ks:
            frag += "&span=" + ",".join(str(k) for k in sorted(set(ks)))
        return frag


def _located(m: dict) -> bool:
    s, e = m.get("start"), m.get("end")
    return isinstance(s, int) and isinstance(e, int) and e > s >= 0


def collect(graph_dir: Path, limits: DocLimits | None = None) -> Evidence:
    """Three streaming passes over the graph: rank documents by located node mentions, keep
    the best `max_documents`, then gather their spans from the nodes and edges. Memory: a
    counter per document, plus the shown documents' mentions."""
    ev = Evidence(limits or DocLimits())
    graph_dir = Path(graph_dir)
    per_doc: Counter = Counter()
    for n in iter_jsonl(graph_dir / NODES):
        for m in n["mentions"]:
            per_doc[str(m.get("doc_id"))] += 1 if _located(m) else 0  # 0: counted, unranked
    ev.total_docs = len(per_doc)
    ranked = sorted(per_doc, key=lambda d: (-per_doc[d], d))
    keep = set(ranked[: ev.limits.max_documents])
    ev.left_out_mentions = sum(per_doc[d] for d in ranked[ev.limits.max_documents :])
    ev.docs = sorted(keep)
    ev.places = {d: {} for d in ev.docs}
    ev.sentences = {d: set() for d in ev.docs}
    names: dict[str, str] = {}
    for n in iter_jsonl(graph_dir / NODES):
        for m in n["mentions"]:
            doc = str(m.get("doc_id"))
            if doc not in keep:
                continue
            if isinstance(m.get("sentence"), str) and isinstance(m.get("sentence_start"), int):
                ev.sentences[doc].add((m["sentence_start"], m["sentence"]))
            if not _located(m):
                ev.unlocated[doc] += 1
                continue
            place = ev.places[doc].setdefault((m["start"], m["end"]), _Place())
            role = str(m.get("role") or "")
            _Place.add(place.nodes, n["id"], m, role)
            ev.place_of[(m.get("row_id"), m.get("record"), role)] = (doc, m["start"], m["end"])
            if n["id"] not in ev.records:
                names[n["id"]] = n["name"]
                ev.records[n["id"]] = {
                    "kind": n["kind"],
                    "id": n["id"],
                    "name": n["name"],
                    "type": n["type"],
                    "confidence": n["confidence"],
                    "support": n["support"],
                    "mentions": n["mention_count"],
                }
    for e in iter_jsonl(graph_dir / EDGES):
        for m in e["mentions"]:
            doc = str(m.get("doc_id"))
            if doc not in keep:
                continue
            if isinstance(m.get("sentence"), str) and isinstance(m.get("sentence_start"), int):
                ev.sentences[doc].add((m["sentence_start"], m["sentence"]))
            role = str(m.get("role") or "")
            ends = role.split(":", 1)[1].split(">") if ":" in role else []
            attached = False
            for r in ends:
                p = ev.place_of.get((m.get("row_id"), m.get("record"), r))
                if p is not None:
                    _Place.add(ev.places[doc][p[1:]].edges, e["id"], m, r)
                    attached = True
            if attached and e["id"] not in ev.records:
                ev.records[e["id"]] = {
                    "kind": e["kind"],
                    "id": e["id"],
                    "type": e["type"],
                    "source": names.get(e["source"], str(m.get("head") or e["source"])),
                    "target": names.get(e["target"], str(m.get("tail") or e["target"])),
                    "confidence": e["confidence"],
                    "support": e["support"],
                    "mentions": e["mention_count"],
                }
    for doc in ev.docs:
        for k, (s, e) in enumerate(sorted(ev.places[doc], key=lambda p: (p[0], -p[1]))):
            ev.k_of[(doc, s, e)] = k
    return ev


# ----------------------------------------------------------------------------- text
def load_texts(paths: Iterable[str], want: Iterable[str], id_field: str | None = "id") -> dict:
    """Full texts of the documents `want` (doc id → text) from `paths`: JSONL documents
    (`{id, text}`, annotated or not), DeepKE prediction files, or `kgc extract` outputs /
    row shards (each chunk's text put back at its offset). Document ids are worked out as
    `kgc graph build` does (`input.id_field`, else file:line), so give the paths the graph
    was built from. Text is cleaned as the build cleans it (`kgc.graph.clean`)."""
    from kgc.graph.build import _int, _json_obj
    from kgc.graph.config import GraphConfig
    from kgc.graph.inputs import _doc_id, input_files, iter_rows
    from kgc.io import read_jsonl

    want = set(want)
    cfg = GraphConfig.model_validate(
        {"input": {"paths": list(paths), "id_field": id_field}, "output": {"path": "."}}
    )
    chunks: dict[str, dict[int, str]] = {}
    for path, fmt, name in input_files(cfg):
        if fmt == "annotated":  # documents: {id, text, …}; annotations are not needed here
            for n, rec in read_jsonl(path):
                if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                    raise KgcError(Problem("a document needs a string field 'text'", path, n))
                doc = clean_str(_doc_id(rec, cfg, name, n))
                if doc in want:
                    chunks.setdefault(doc, {})[0] = rec["text"]
            continue
        for row in iter_rows(path, fmt, cfg, name):
            doc = clean_str(str(row.get("doc_id")))
            text = _json_obj(row.get("instruction")).get("input")
            if doc in want and isinstance(text, str):
                got = chunks.setdefault(doc, {})
                start = _int(row.get("chunk_start"))
                if len(text) > len(got.get(start, "")):
                    got[start] = text
    return {doc: stitch(parts) for doc, parts in chunks.items()}


def stitch(parts: dict[int, str]) -> str:
    """Chunks (start → text) put back together; a stretch no chunk covers becomes spaces
    (so offsets hold)."""
    out = ""
    for start in sorted(parts):
        t = parts[start]
        if start > len(out):
            out += " " * (start - len(out))
        if start + len(t) > len(out):
            out += t[len(out) - start :]
    return clean_str(out)


def excerpts(sentences: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    """Sentences (start, text) joined into sorted, disjoint segments where they overlap or
    touch."""
    segs: list[tuple[int, str]] = []
    for s, t in sorted(sentences, key=lambda x: (x[0], -len(x[1]), x[1])):
        if segs and s <= segs[-1][0] + len(segs[-1][1]):
            s0, t0 = segs[-1]
            if s + len(t) > s0 + len(t0):
                segs[-1] = (s0, t0 + t[s0 + len(t0) - s :])
        else:
            segs.append((s, t))
    return segs


def _matches(text: str, sentences: Iterable[tuple[int, str]]) -> bool:
    return all(text[s : s + len(t)] == t for s, t in sentences)


def nest(text: str, base: int, spans: list[tuple[int, int, int]]) -> list:
    """`text` (at document offset `base`) as pieces: strings and marks `{"k": k, "c": [...]}`.

    `spans` are (start, end, k) inside [base, base + len(text)). At every boundary the marks
    wanted are the spans covering the next piece, outermost first (earlier start, then
    longer, then k); the open marks they share as a prefix stay open, the others are closed
    and the new ones opened, so a crossing span is split where the outer one ends."""
    spans = sorted(spans, key=lambda x: (x[0], -x[1], x[2]))
    end = base + len(text)
    bounds = sorted({base, end, *(x for s, e, _ in spans for x in (s, e))})
    starts: dict[int, list] = {}
    for sp in spans:
        starts.setdefault(sp[0], []).append(sp)
    root: list = []
    stack: list[tuple[tuple, dict]] = []
    active: list[tuple] = []
    for a, b in zip(bounds, bounds[1:]):
        active = [sp for sp in active if sp[1] > a] + starts.get(a, [])
        i = 0
        while i < len(stack) and i < len(active) and stack[i][0] == active[i]:
            i += 1
        del stack[i:]
        for sp in active[i:]:
            mark = {"k": sp[2], "c": []}
            (stack[-1][1]["c"] if stack else root).append(mark)
            stack.append((sp, mark))
        into = stack[-1][1]["c"] if stack else root
        piece = text[a - base : b - base]
        if into and isinstance(into[-1], str):
            into[-1] += piece
        else:
            into.append(piece)
    return root


# ----------------------------------------------------------------------------- page
def _tasks(c: Counter) -> dict:
    return {t: c[t] for t in sorted(c)}


def _span_json(ev: Evidence, place: _Place, s: int, e: int, k: int, rec_index: dict) -> dict:
    nodes = sorted(place.nodes.items(), key=lambda kv: (-kv[1]["n"], kv[0]))
    edges = sorted(place.edges.items(), key=lambda kv: (ev.records[kv[0]]["type"], kv[0]))
    recs = []
    for rid, acc in [*nodes, *edges]:
        if rid not in rec_index:
            rec_index[rid] = len(rec_index)
        recs.append(
            {
                "r": rec_index[rid],
                "tasks": _tasks(acc["tasks"]),
                "models": sorted(acc["models"]),
                "roles": sorted(acc["roles"]),
            }
        )
    shown = recs[: ev.limits.max_records]
    head = ev.records[nodes[0][0]] if nodes else None
    return {
        "k": k,
        "s": s,
        "e": e,
        "type": head["type"] if head else None,
        "recs": shown,
        "more": len(recs) - len(shown),
    }


def document_data(
    ev: Evidence,
    cfg: HtmlConfig,
    graph: dict,
    texts: dict | None = None,
    source: list[str] | None = None,
    graph_href: str = "graph.html",
) -> dict:
    """The page's data: documents (text pieces with marks, spans, notes), the records the
    spans refer to, and the types with the graph view's colours (`graph`: its page data)."""
    from kgc.graph.page import colour, tint

    lim = ev.limits
    shown_nodes = {n["id"] for n in graph["nodes"]}
    shown_edges = {e["id"] for e in graph["edges"]}
    rec_index: dict[str, int] = {}
    docs = []
    type_counts: Counter = Counter()
    for doc in ev.docs:
        notes = []
        text = (texts or {}).get(doc)
        if text is not None and not _matches(text, ev.sentences[doc]):
            notes.append(
                "the text given for this document does not match the graph (a mention's "
                "sentence is not at its offset): showing the graph's sentences instead"
            )
            text = None
        elif text is None and texts is not None:
            notes.append("not found in the documents given: showing the graph's sentences")
        if text is not None:
            segs, mode = [(0, text)], "full"
        else:
            segs, mode = excerpts(ev.sentences[doc]), "excerpts"
        total_chars = sum(len(t) for _, t in segs)
        budget, cut = lim.max_doc_chars, []
        for s, t in segs:
            if budget <= 0:
                break
            cut.append((s, t[:budget]))
            budget -= len(t)
        shown_chars = sum(len(t) for _, t in cut)
        if shown_chars < total_chars:
            notes.append(
                f"text cut at {shown_chars:,} of {total_chars:,} characters (max_doc_chars)"
            )
        places = sorted(ev.places[doc], key=lambda p: (p[0], -p[1]))
        seg_starts = [a for a, _ in cut]
        seg_of: dict[tuple[int, int], int] = {}  # span → the segment holding it
        for s, e in places:
            i = bisect.bisect_right(seg_starts, s) - 1
            if i >= 0 and e <= cut[i][0] + len(cut[i][1]):
                seg_of[(s, e)] = i
        inside = [p for p in places if p in seg_of]
        outside = len(places) - len(inside)
        visible = inside[: lim.max_spans]
        if outside:
            where = "after the cut" if shown_chars < total_chars else "outside the text shown"
            notes.append(f"{outside} spans {where} are not highlighted")
        if len(inside) > len(visible):
            notes.append(
                f"only the first {len(visible)} of {len(inside)} spans are highlighted (max_spans)"
            )
        if ev.unlocated[doc]:
            notes.append(
                f"{ev.unlocated[doc]} mentions have no position in the text (their surface "
                "form was not found in the chunk) and are not highlighted"
            )
        spans = []
        body: list = []
        end_prev = 0
        by_seg: dict[int, list] = {}
        for s, e in visible:
            by_seg.setdefault(seg_of[(s, e)], []).append((s, e, ev.k_of[(doc, s, e)]))
        for i, (a, t) in enumerate(cut):
            if a > end_prev:  # text left out before this segment (its length is known)
                body.append({"gap": a - end_prev})
            body.extend(nest(t, a, by_seg.get(i, [])))
            end_prev = a + len(t)
        if mode == "excerpts" or shown_chars < total_chars:
            body.append({"gap": None})
        for s, e in visible:
            sj = _span_json(ev, ev.places[doc][(s, e)], s, e, ev.k_of[(doc, s, e)], rec_index)
            a, t = cut[seg_of[(s, e)]]
            sj["text"] = t[s - a : e - a]
            if sj["type"] is not None:
                type_counts[sj["type"]] += 1
            spans.append(sj)
        docs.append(
            {
                "id": doc,
                "mode": mode,
                "body": body,
                "spans": spans,
                "span_total": len(places),
                "notes": notes,
            }
        )
    records = [None] * len(rec_index)
    for rid, i in rec_index.items():
        r = dict(ev.records[rid])
        r["in_graph"] = rid in (shown_nodes if "name" in r else shown_edges)
        records[i] = r
    graph_colours = {t["type"]: t["colour"] for t in graph["types"]}
    extra = sorted(
        (t for t in type_counts if t not in graph_colours), key=lambda t: (-type_counts[t], t)
    )
    colours = dict(graph_colours)
    for i, t in enumerate(extra):
        colours[t] = colour(len(graph_colours) + i, t)
    types = [
        {"type": t, "count": type_counts[t], "colour": colours[t], "tint": tint(colours[t])}
        for t in sorted(type_counts, key=lambda t: (-type_counts[t], t))
    ]
    notes = []
    if ev.total_docs > len(ev.docs):
        notes.append(
            f"showing the {len(ev.docs)} documents with the most located mentions of "
            f"{ev.total_docs}; {ev.left_out_mentions:,} mentions in the other documents are not "
            "shown (max_documents)"
        )
    if source:
        notes.append("text: the documents in " + ", ".join(source))
    else:
        notes.append(
            "text: the sentences around the graph's mentions ([…] marks text left out); "
            "`kgc graph show --docs <documents>` shows the whole documents"
        )
    return {
        "title": f"{cfg.title} — documents",
        "graph": graph_href,
        "documents": docs,
        "records": records,
        "types": types,
        "total_docs": ev.total_docs,
        "notes": notes,
    }


def render_documents(data: dict) -> str:
    from kgc.graph.page import asset, embed_json, fill

    return fill(
        asset("documents.html"),
        TITLE=html.escape(clean_str(data["title"])),
        CSS=asset("documents.css"),
        JS=asset("documents.js"),
        DATA=embed_json(data),
    )


def write_documents(
    ev: Evidence,
    path: Path,
    cfg: HtmlConfig,
    graph: dict,
    texts: dict | None = None,
    source: list[str] | None = None,
    graph_href: str = "graph.html",
) -> dict:
    data = document_data(ev, cfg, graph, texts, source, graph_href)
    with atomic_path(path) as tmp:
        tmp.write_text(render_documents(data), encoding="utf-8")
    return {
        "path": str(path),
        "documents_shown": len(data["documents"]),
        "documents_total": ev.total_docs,
        "spans_shown": sum(len(d["spans"]) for d in data["documents"]),
        "full_text": sum(d["mode"] == "full" for d in data["documents"]),
    }


def summary_inputs(graph_dir: Path) -> list[str] | None:
    """The input paths `summary.json` says the graph was built from, when they all exist."""
    f = Path(graph_dir) / "summary.json"
    try:
        paths = json.loads(f.read_text(encoding="utf-8"))["input"]["paths"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(paths, list) or not paths:
        return None
    if not all(isinstance(p, str) and Path(p).exists() for p in paths):
        return None
    return paths
