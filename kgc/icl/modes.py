"""Mode dispatch: each mode module has `plan(cfg, client, single) -> Plan`."""

from __future__ import annotations

import importlib

from kgc.icl.config import IclConfig
from kgc.icl.runner import Plan

MODULES = {
    "llmicl": "kgc.icl.llmicl",
    "augment": "kgc.icl.augment",
    "fewshot_re": "kgc.icl.fewshot_re",
    "codekgc": "kgc.icl.codekgc",
}


def plan(cfg: IclConfig, client, single: dict | None) -> Plan:
    return importlib.import_module(MODULES[cfg.mode]).plan(cfg, client, single)
