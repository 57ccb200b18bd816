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

    s = verbs.add_parser("show", help="write the self-contained HTML view of a built graph")
    s.add_argument("--graph", required=True, help="a built graph folder")
    s.add_argument("--out", help="HTML file (default: <graph>/graph.html)")
    s.add_argument("--max-nodes", type=int, default=800, help="nodes drawn (best supported)")
    s.add_argument("--title", default="kgc knowledge graph")
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
    _print(
        run_build(cfg, progress=not args.quiet, address=args.address, ray_map_reduce=ray_map_reduce)
    )
    return 0


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

    from kgc.graph.html import write_html

    if args.max_nodes < 1:
        raise KgcError(f"--max-nodes must be at least 1, got {args.max_nodes}")
    cfg = _export_cfg(args, html={"max_nodes": args.max_nodes, "title": args.title})
    out = Path(args.out) if args.out else Path(args.graph) / "graph.html"
    _print(write_html(Path(args.graph), out, cfg.html))
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
    _print(run_pipeline(cfg, progress=not args.quiet, address=args.address))
    return 0


__all__ = ["add_commands", "build", "pipeline"]
