"""`kgc graph build|export|show` and `kgc pipeline` (added to `kgc` by `kgc.cli`).

Importing this module is light (argparse only); handlers import what they need. `graph
build` and `pipeline` may run on Ray, which kgc.graph never imports: their handlers come from
the entry point (`kgc.cli`), which calls `build` / `pipeline` here with the Ray steps.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from kgc.errors import KgcError


def add_commands(sub, ray_handlers: dict[str, Callable]) -> None:
    """The graph commands; `graph build` and `pipeline` get `ray_handlers["graph build"]` and
    `ray_handlers["pipeline"]` as their handlers."""
    g = sub.add_parser(
        "graph",
        help="knowledge graph: build from extraction rows, export, HTML view",
        description="Assemble, canonicalise, merge and export a knowledge graph.",
    )
    verbs = g.add_subparsers(dest="graph_command", required=True, metavar="VERB")

    b = verbs.add_parser(
        "build",
        help="extraction output → merged graph → exports (streaming)",
        description="Build nodes.jsonl / edges.jsonl and the configured exports.",
    )
    b.add_argument("--config", required=True, help="YAML graph config (jobs/configs/graph_*.yaml)")
    b.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. strict=true")
    b.add_argument("--address", help="Ray cluster address (executor: ray; default: a local Ray)")
    b.add_argument("--quiet", action="store_true", help="no progress lines")
    b.set_defaults(handler=ray_handlers["graph build"])

    x = verbs.add_parser("export", help="(re)write exports of a built graph")
    x.add_argument("--graph", required=True, help="a built graph folder (nodes.jsonl, edges.jsonl)")
    x.add_argument(
        "--formats",
        default="neo4j,turtle,graphml,html",
        help="comma-separated: neo4j, turtle, graphml, html",
    )
    x.add_argument("--namespace", help="RDF namespace IRI (default http://kgc.local/graph/)")
    x.add_argument("--prefix", help="RDF prefix for the namespace (default kg)")
    x.set_defaults(handler=_cmd_export)

    s = verbs.add_parser(
        "show",
        help="write the self-contained HTML views of a built graph (graph, documents)",
        description="Write graph.html and, beside it, documents.html: each document's text "
        "with the extracted spans highlighted, linked from the graph view's mentions.",
    )
    s.add_argument("--graph", required=True, help="a built graph folder")
    s.add_argument("--out", help="HTML file (default: <graph>/graph.html)")
    s.add_argument("--max-nodes", type=int, default=800, help="nodes drawn (best supported)")
    s.add_argument("--title", default="kgc knowledge graph")
    s.add_argument(
        "--docs",
        nargs="+",
        metavar="PATH",
        help="the documents' text: JSONL {id, text}, or the inputs the graph was built from "
        "(default: those summary.json names, when they exist; else the graph's sentences)",
    )
    s.add_argument("--max-documents", type=int, default=100, help="documents in documents.html")
    s.add_argument(
        "--max-doc-chars", type=int, default=20_000, help="characters shown per document"
    )
    s.set_defaults(handler=_cmd_show)

    p = sub.add_parser(
        "pipeline",
        help="documents → extraction (per task) → knowledge graph, in one command",
        description="Run extraction for each task, then build the graph and its exports.",
    )
    p.add_argument(
        "--config", required=True, help="YAML pipeline config (jobs/configs/pipeline_*.yaml)"
    )
    p.add_argument(
        "overrides", nargs="*", help="e.g. extract.workers.num_actors=2 graph.strict=true"
    )
    p.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="each extraction clears its output folder's old results first (kgc extract --fresh)",
    )
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    p.set_defaults(handler=ray_handlers["pipeline"])


def _print(summary: dict) -> None:
    print(json.dumps(summary, ensure_ascii=False))


def build(args, ray_map_reduce: Callable) -> int:
    """`kgc graph build`; `ray_map_reduce` (kgc.runtime.graph.map_reduce) for `executor: ray`."""
    from kgc.config import load_config
    from kgc.graph.config import GraphConfig
    from kgc.graph.stream import run_build

    cfg = load_config(args.config, args.overrides, schema=GraphConfig)
    summary = run_build(
        cfg, progress=not args.quiet, address=args.address, ray_map_reduce=ray_map_reduce
    )
    _print(summary)
    if not args.quiet:
        build_block(summary)
    return 0


def build_block(summary: dict) -> str:
    """`kgc graph build`'s closing lines (stderr): nodes, edges, what was dropped, files."""
    from pathlib import Path

    from kgc.graph.files import SUMMARY
    from kgc.progress import clock, done_block

    exports = summary.get("exports") or {}
    dropped = summary.get("dropped_total", 0)
    return done_block(
        f"kgc graph build: done in {clock(summary.get('seconds', 0))}",
        [
            (
                "graph",
                f"{summary.get('nodes')} nodes, {summary.get('edges')} edges "
                f"({summary.get('node_mentions')} + {summary.get('edge_mentions')} mentions)",
            ),
            ("dropped", f"{dropped} records: {summary.get('dropped')}" if dropped else None),
            ("output", summary.get("output")),
            *((f"export {k}", v) for k, v in exports.items()),
            ("details", Path(summary.get("output", ".")) / SUMMARY),
        ],
    )


def _export_cfg(args, **extra):
    from pathlib import Path

    from kgc.graph.config import GraphConfig
    from kgc.graph.files import EDGES, NODES

    d = Path(args.graph)
    for f in (NODES, EDGES):
        if not (d / f).is_file():
            raise KgcError(
                f"--graph {args.graph!r} has no {f}; give a folder written by `kgc graph build`"
            )
    from kgc.config import load_config

    data = {"input": {"paths": [str(d)]}, "output": {"path": str(d)}, **extra}
    return load_config(None, [], data=data, schema=GraphConfig)


def _cmd_export(args) -> int:
    from kgc.graph.config import EXPORTS
    from kgc.graph.export import run_exports

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in EXPORTS]
    if bad or not formats:
        raise KgcError(
            f"--formats {args.formats!r}: unknown {bad or 'empty'}; choose from {', '.join(EXPORTS)}"
        )
    rdf = {k: v for k, v in (("namespace", args.namespace), ("prefix", args.prefix)) if v}
    cfg = _export_cfg(args, exports=formats, rdf=rdf)
    from pathlib import Path

    _print(run_exports(Path(args.graph), cfg))
    return 0


def _cmd_show(args) -> int:
    from pathlib import Path

    from kgc.graph.documents import DocLimits, summary_inputs
    from kgc.graph.html import write_html

    if args.max_nodes < 1:
        raise KgcError(f"--max-nodes must be at least 1, got {args.max_nodes}")
    limits = DocLimits(max_documents=args.max_documents, max_doc_chars=args.max_doc_chars)
    cfg = _export_cfg(args, html={"max_nodes": args.max_nodes, "title": args.title})
    out = Path(args.out) if args.out else Path(args.graph) / "graph.html"
    docs = args.docs or summary_inputs(Path(args.graph))
    try:
        summary = write_html(Path(args.graph), out, cfg.html, docs=docs, limits=limits)
    except KgcError as e:
        if args.docs:
            raise
        # the build's inputs could not be read back: the graph's own sentences will do
        print(f"kgc graph show: documents not read from {docs}: {e}", file=sys.stderr)
        summary = write_html(Path(args.graph), out, cfg.html, limits=limits)
    _print(summary)
    return 0


def pipeline(args, run_pipeline: Callable) -> int:
    """`kgc pipeline`: `--check` validates here; the run is `run_pipeline`
    (kgc.runtime.graph.run_pipeline)."""
    from kgc.config import load_config
    from kgc.graph.config import PipelineConfig
    from kgc.graph.pipeline import plan

    cfg = load_config(args.config, args.overrides, schema=PipelineConfig)
    if args.check:
        runs, g = plan(cfg)
        print(
            f"kgc pipeline: {args.config} is valid: tasks {[r.task for r in runs]} → {g.output.path}",
            file=sys.stderr,
        )
        return 0
    _print(run_pipeline(cfg, progress=not args.quiet, address=args.address, fresh=args.fresh))
    return 0


__all__ = ["add_commands", "build", "pipeline"]
