"""Score model outputs against gold labels (micro P/R/F1 per task, per source; ROUGE and the
CCKS2023 score for the legacy format).

Local:
    python -m jobs.evaluate --config jobs/configs/eval_ner.yaml
    kgc eval --config jobs/configs/eval_ner.yaml
On a cluster:
    ray job submit --working-dir . -- python -m jobs.evaluate --config jobs/configs/eval_ner.yaml

Options are the config's keys (task, input, format, by_source, by_label, match, normalize,
strict, rouge, language, segmenter, report); `key=value` arguments after the config override them.
"""

from __future__ import annotations

import sys

from kgc.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
