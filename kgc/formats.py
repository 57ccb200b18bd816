"""The input formats of `kgc convert --format` and `kgc eval --format`: the one list of each.

Each format's reader lives in its own module (`kgc.convert`: DeepKE's raw JSONL, `kgc.legacy`
and `kgc.legacy_tasks`: the CCKS2023 text format, `kgc.spert`: SpERT JSON); the CLI, the
config models and the docs take the names from here.
"""

from __future__ import annotations

from typing import Literal

# name → what `kgc convert --format NAME` reads (the --help text)
CONVERT_FORMATS: dict[str, str] = {
    "iepile": "DeepKE's raw JSONL {text, entity|relation|event} + a 3-line --schema (default)",
    "ccks2023": "the 2023 CCKS / InstructIE text format of DeepKE's kg2instruction (RE, NER, "
    "EE, EET, EEA)",
    "spert": "SpERT JSON (CoNLL04, ADE, SciERC, ...: tokens, entity spans or BILOU tags, "
    "relations) + its --types file (RE, SPO, NER)",
}
# what `kgc eval --format NAME` scores: test records with the model's `output`
EVAL_FORMATS = ("iepile", "ccks2023")
# a pydantic field of this type accepts exactly the scored formats
EvalFormat = Literal[EVAL_FORMATS]
