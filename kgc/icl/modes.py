"""Mode dispatch: mode `m` (one of `kgc.icl.MODES`) is the module `kgc.icl.<m>`, whose
`plan(cfg, client, single) -> Plan` makes its requests."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from kgc.icl import MODES

if TYPE_CHECKING:  # the mode modules import the runner; the runner imports this lazily
    from kgc.icl.config import IclConfig
    from kgc.icl.runner import Plan

MODULES = {m: f"kgc.icl.{m}" for m in MODES}


def plan(cfg: IclConfig, client, single: dict | None) -> Plan:
    return importlib.import_module(MODULES[cfg.mode]).plan(cfg, client, single)
