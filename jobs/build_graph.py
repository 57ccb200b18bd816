"""Build a knowledge graph from extraction output (streaming), then export it.

Local:
    python -m jobs.build_graph --config jobs/configs/graph_demo.yaml
    kgc graph build --config jobs/configs/graph_demo.yaml
On a cluster (executor: ray runs the map/reduce tasks on it):
    ray job submit --working-dir . -- python -m jobs.build_graph \
        --config jobs/configs/graph_demo.yaml executor=ray

Documents → extraction → graph in one command: `kgc pipeline --config …` (see
jobs/configs/pipeline_demo.yaml).
"""

from __future__ import annotations

import sys

from kgc.cli import main

if __name__ == "__main__":
    sys.exit(main(["graph", "build", *sys.argv[1:]]))
