"""The IE tasks, one module each, registered by name: `kgc.tasks.get("NER")`."""

from kgc.tasks.registry import get, names, register

TASK_NAMES = ("NER", "RE", "SPO", "EE", "EET", "EEA", "KG")

__all__ = ["TASK_NAMES", "get", "names", "register"]
