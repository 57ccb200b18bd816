"""Fine-tune a causal LM into an IE extractor on Ray Train.

Local (embedded Ray):
    kgc train --config jobs/configs/ner_lora.yaml
    python -m jobs.finetune --config jobs/configs/ner_lora.yaml model.path=/models/Qwen2.5-7B-Instruct
On a cluster:
    ray job submit --working-dir . -- python -m jobs.finetune --config jobs/configs/ner_lora.yaml

Submitting the same run.name again resumes from its latest checkpoint.
"""

from __future__ import annotations

import sys

from kgc.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
