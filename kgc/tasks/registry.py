"""Task registry: the built-in task names, and `register` for task classes.

`TASK_NAMES` is the one list of the built-in task names (in their display order); config
models, the CLI and the HTTP API take their choices from it (`TaskName`) without importing
any task module. Each built-in module registers its class with `@register`; `kgc.tasks.get`
loads them on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from kgc.tasks.base import Task

TASK_NAMES = ("NER", "RE", "SPO", "EE", "EET", "EEA", "KG")
# a pydantic field of this type accepts exactly the built-in task names
TaskName = Literal[TASK_NAMES]

_TASKS: dict[str, Task] = {}


def register(cls):
    name = cls.name
    if name in _TASKS:
        raise ValueError(f"task {name!r} is already registered by {type(_TASKS[name]).__name__}")
    _TASKS[name] = cls()
    return cls


def registered() -> dict[str, Task]:
    """The tasks registered so far (built-in ones only once `kgc.tasks` has loaded them)."""
    return _TASKS
