"""In-context extraction through an OpenAI-compatible API (LLMICL, augment, few-shot RE,
CodeKGC), batched on Ray Data for large inputs.

Local (threads, or an embedded Ray for large files):
    kgc icl --config jobs/configs/icl_fewshot_re.yaml
    python -m jobs.icl --config jobs/configs/icl_fewshot_re.yaml
On a cluster (the key's environment variable is forwarded to the Ray Data actors):
    ray job submit --working-dir . -- python -m jobs.icl --config jobs/configs/icl_fewshot_re.yaml

Responses are cached on disk (client.cache_dir), so rerunning the same command costs nothing.
"""

from __future__ import annotations

import sys

from kgc.cli import main

if __name__ == "__main__":
    sys.exit(main(["icl", *sys.argv[1:]]))
