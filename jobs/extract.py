"""Batch extraction over a corpus on Ray Data (resumable, exactly-once rows).

Local (embedded Ray):
    kgc extract --config jobs/configs/extract_ner.yaml
    python -m jobs.extract --config jobs/configs/extract_ner.yaml
On a cluster:
    ray job submit --working-dir . -- python -m jobs.extract --config jobs/configs/extract_ner.yaml

Rerunning the same command skips every row already written.
"""

from __future__ import annotations

import sys

from kgc.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
