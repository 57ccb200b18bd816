"""The IE tasks, one module each, registered by name: `kgc.tasks.get("NER")`.

`TASK_NAMES` (`kgc.tasks.registry`) lists the built-in names; importing this package, or
reading that list, loads no task module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kgc.errors import KgcError
from kgc.tasks.registry import TASK_NAMES, TaskName, register, registered

if TYPE_CHECKING:
    from kgc.tasks.base import Task

__all__ = ["TASK_NAMES", "TaskName", "get", "names", "register"]


def get(name: str) -> Task:
    _load_builtin()
    try:
        return registered()[name.upper()]
    except (KeyError, AttributeError):
        raise KgcError(f"unknown task {name!r}; choose one of {', '.join(names())}") from None


def names() -> list[str]:
    """Every registered task: the built-in ones in `TASK_NAMES` order, then others by name."""
    _load_builtin()
    n = len(TASK_NAMES)
    return sorted(registered(), key=lambda t: (TASK_NAMES.index(t) if t in TASK_NAMES else n, t))


def _load_builtin() -> None:
    # Importing the modules runs their @register decorators; done on first use so that
    # `import kgc.tasks` stays cheap.
    from kgc.tasks import ee, eea, eet, kg, ner, relation, spo  # noqa: F401
