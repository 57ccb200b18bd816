"""The files of a built graph (`nodes.jsonl`, `edges.jsonl`, `summary.json`) and their reader.

A leaf module: the build (`kgc.graph.stream`), the exports (`kgc.graph.export`) and the
viewer (`kgc.graph.html`) all read a graph folder through it, so none of them imports another
for its file names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from kgc.errors import KgcError

NODES, EDGES, SUMMARY = "nodes.jsonl", "edges.jsonl", "summary.json"


def iter_jsonl(p: str | os.PathLike) -> Iterator[dict]:
    """The records of a JSONL file the build wrote, one at a time (no validation: these
    files are ours, written atomically)."""
    with open(p, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def read_graph(graph_dir: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """A built graph's nodes and edges (in memory: for tests and small graphs)."""
    d = Path(graph_dir)
    for f in (NODES, EDGES):
        if not (d / f).is_file():
            raise KgcError(f"{d / f} does not exist; build the graph first (kgc graph build)")
    return list(iter_jsonl(d / NODES)), list(iter_jsonl(d / EDGES))
