"""Task registry: `register` a task class once, `get("NER")` its instance."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kgc.errors import KgcError

if TYPE_CHECKING:
    from kgc.tasks.base import Task

_TASKS: dict[str, Task] = {}


def register(cls):
    name = cls.name
    if name in _TASKS:
        raise ValueError(f"task {name!r} is already registered by {type(_TASKS[name]).__name__}")
    _TASKS[name] = cls()
    return cls


def get(name: str) -> Task:
    _load_builtin()
    try:
        return _TASKS[name.upper()]
    except (KeyError, AttributeError):
        raise KgcError(f"unknown task {name!r}; choose one of {', '.join(names())}") from None


_ORDER = ("NER", "RE", "SPO", "EE", "EET", "EEA", "KG")


def names() -> list[str]:
    _load_builtin()
    return sorted(_TASKS, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def _load_builtin() -> None:
    # Importing the modules runs their @register decorators; done lazily so that
    # `import kgc.tasks.registry` alone stays cheap and cycle-free.
    from kgc.tasks import ee, eea, eet, kg, ner, relation, spo  # noqa: F401
