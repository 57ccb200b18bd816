"""What every IE task provides, and the shared machinery of the two task shapes.

A task knows: its raw annotation field and how to validate it against the schema, the
schema elements its instructions carry (train: sampled; test: the whole universe), the
target JSON a model should produce for one schema chunk, how to read a model's output back
into annotation-shaped records, and the tuples its metrics count.

Two shapes cover the seven tasks:
- `LabelTask` (NER, RE, SPO, EET): the schema is a flat list of labels.
- `TypedRolesTask` (EE, EEA, KG): the schema maps types to roles (event roles / attributes).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from kgc.instructions import build_instruction
from kgc.parsing import ParseResult, extract_json
from kgc.sampling import (
    SamplingOptions,
    binomial,
    cluster_negatives,
    order,
    sample_negatives,
    split_chunks,
)
from kgc.schema import Schema

Annotation = dict[str, Any]
Element = Any  # one item of an instruction's "schema" list (a string or a dict)

# JSON Schema pieces of the answers (Task.output_schema, for constrained decoding)
TEXT = {"type": "string"}
TEXTS = {"type": "array", "items": TEXT}
TEXT_OR_TEXTS = {"anyOf": [TEXT, TEXTS]}


def closed_object(props: dict[str, dict], *, required: bool = True) -> dict:
    """An object with exactly these keys (all required, in this order, unless not required)."""
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required else [],
        "additionalProperties": False,
    }


PAIRS = {"type": "array", "items": closed_object({"subject": TEXT, "object": TEXT})}


def position(text: str, s: Any) -> int:
    """Where a span first occurs in the text; spans not found sort after all others."""
    if isinstance(s, str) and s:
        p = text.find(s)
        if p >= 0:
            return p
    return len(text) + 1


def by_position(text: str, items: Iterable[Any], key=lambda x: x) -> list[Any]:
    return sorted(items, key=lambda x: position(text, key(x)))  # stable: ties keep order


def one_or_many(values: list[str], text: str) -> str | list[str]:
    """IEPile's value shape: a single value as a string, several as a list in text order."""
    if len(values) == 1:
        return values[0]
    return by_position(text, values)


def unique(items: Iterable[Any]) -> list[Any]:
    seen: set = set()
    out = []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def _str_field(ann: Any, name: str, where: str, problems: list[str]) -> str | None:
    if not isinstance(ann, dict):
        problems.append(f"{where} must be a JSON object, got {type(ann).__name__}")
        return None
    value = ann.get(name)
    if not isinstance(value, str):
        shown = "missing" if name not in ann else f"{type(value).__name__} {value!r}"
        problems.append(f"{where}: field {name!r} must be a string ({shown})")
        return None
    return value


def not_in_schema(field: str, value: str, allowed: Sequence[str], line: int, what: str) -> str:
    shown = ", ".join(list(allowed)[:12]) + (" …" if len(allowed) > 12 else "")
    return (
        f"field {field!r} value {value!r} is not in the schema ({what}: {shown or 'none'}); "
        f"add it to line {line} of the schema file or fix the annotation"
    )


class Task(ABC):
    """Base of all tasks. Subclasses set the class attributes and fill in the hooks."""

    name: ClassVar[str]
    annotation_key: ClassVar[str]
    groups: ClassVar[tuple[str, ...]]
    # metric group → where its tuples hold their label (relation, entity type), for the
    # per-label scores (`kgc eval --by label`); a group not named here has none
    label_fields: ClassVar[dict[str, int]] = {}

    # --- raw annotated records ------------------------------------------------------------

    def validate(self, annotations: Any, schema: Schema) -> list[str]:
        """Problems with a record's annotation list (empty when it is usable)."""
        if not isinstance(annotations, list):
            return [
                f"field {self.annotation_key!r} must be a list, got {type(annotations).__name__}"
            ]
        problems: list[str] = []
        for i, ann in enumerate(annotations):
            self.validate_one(ann, f"{self.annotation_key}[{i}]", schema, problems)
        return problems

    @abstractmethod
    def validate_one(self, ann: Any, where: str, schema: Schema, problems: list[str]) -> None: ...

    def clean(self, annotations: list[Annotation]) -> list[Annotation]:
        """Annotations as used for targets and labels (exact duplicates removed by default)."""
        out, seen = [], set()
        for ann in annotations:
            key = repr(sorted(ann.items()))
            if key not in seen:
                seen.add(key)
                out.append(ann)
        return out

    def check_schema(self, schema: Schema) -> list[str]:
        """Problems that make the schema unusable for this task."""
        return []

    def prepare(self, anns: list[Annotation], schema: Schema) -> list[Annotation]:
        """Validated annotations → the form targets are built from (e.g. resolved types)."""
        return anns

    # --- instruction building -------------------------------------------------------------

    @abstractmethod
    def train_chunks(
        self,
        anns: list[Annotation],
        schema: Schema,
        rng: random.Random,
        opts: SamplingOptions,
        text: str,
    ) -> list[list[Element]]:
        """Schema chunks of a train record: gold labels plus sampled negatives."""
        ...

    @abstractmethod
    def test_chunks(
        self,
        anns: list[Annotation] | None,
        schema: Schema,
        rng: random.Random,
        opts: SamplingOptions,
        text: str,
    ) -> list[list[Element]]:
        """Schema chunks of a test record (anns is None for label-less input)."""
        ...

    def instruction(self, language: str, chunk: list[Element], text: str, info=None) -> str:
        """The instruction JSON string; `info` (kgc.convert.SchemaInfo): OneKE's described
        schema and example forms."""
        if info is None:
            return build_instruction(self.name, language, chunk, text)
        from kgc.instructions import described_schema

        schema = (
            described_schema(self.name, chunk, info.descriptions) if info.descriptions else chunk
        )
        return build_instruction(self.name, language, schema, text, info.examples)

    @abstractmethod
    def target(self, anns: list[Annotation], chunk: list[Element], text: str) -> dict:
        """The JSON object a perfect model answers for this chunk of the schema."""
        ...

    def output_schema(self, chunk: list[Element]) -> dict:
        """JSON Schema of an answer to an instruction with this schema chunk: the chunk's
        keys (no others, in order), each with the task's value shape. Constrained decoding
        uses it so that every answer parses."""
        props: dict[str, dict] = {}
        for el in chunk:
            key, value = self.answer_slot(el)
            props.setdefault(key, value)
        return closed_object(props)

    @abstractmethod
    def answer_slot(self, element: Element) -> tuple[str, dict]:
        """The answer's key for one schema element and the JSON Schema of its value."""
        ...

    # --- model output ---------------------------------------------------------------------

    def parse(self, output: Any) -> ParseResult:
        """Model output text → annotation-shaped records and errors. Never raises."""
        try:
            return self.parse_unguarded(output)
        except Exception as exc:  # a parser bug must not lose the row; it is reported
            return ParseResult(
                [], [f"internal parser error: {type(exc).__name__}: {exc}"], readable=False
            )

    def parse_unguarded(self, output: Any) -> ParseResult:
        value, errors = extract_json(output)
        result = ParseResult([], list(errors))
        if value is None:
            result.readable = not errors
            return result
        self.read_value(value, result)
        return result

    @abstractmethod
    def read_value(self, value: Any, result: ParseResult) -> None: ...

    # --- scoring --------------------------------------------------------------------------

    @abstractmethod
    def tuples(self, records: list[Annotation]) -> dict[str, list[tuple]]:
        """The items each metric group counts, from gold or predicted records."""
        ...


class LabelTask(Task):
    """Tasks whose schema is a flat list of labels (NER, RE, SPO, EET)."""

    schema_line: ClassVar[int] = 1

    @abstractmethod
    def universe(self, schema: Schema) -> list[str]: ...

    @abstractmethod
    def label_of(self, ann: Annotation) -> str: ...

    def element(self, label: str) -> Element:
        return label

    def sort_key(self, label: str) -> Any:
        return label

    def check_schema(self, schema: Schema) -> list[str]:
        if not self.universe(schema):
            return [
                f"the schema has no labels for task {self.name}: line {self.schema_line} of the "
                "schema file is empty"
            ]
        return []

    def train_chunks(self, anns, schema, rng, opts, text=""):
        universe = self.universe(schema)
        positives = unique(self.label_of(a) for a in anns)
        if opts.hard_negatives is not None:
            labels = cluster_negatives(
                rng, positives, universe, opts.hard_negatives, opts.split_num, opts.neg_prob
            )
        elif opts.neg_prob <= 0:
            labels = list(positives)
        else:
            labels = positives + sample_negatives(rng, positives, universe, opts.neg_prob)
        labels = order(labels, rng, opts.random_order, self.sort_key)
        return [[self.element(x) for x in c] for c in split_chunks(labels, opts.split_num)]

    def test_chunks(self, anns, schema, rng, opts, text=""):
        labels = order(self.universe(schema), rng, opts.random_order, self.sort_key)
        return [[self.element(x) for x in c] for c in split_chunks(labels, opts.split_num)]


class TypedRolesTask(Task):
    """Tasks whose schema maps a type to roles (EE and EEA: event roles; KG: attributes)."""

    type_field: ClassVar[str] = "event_type"
    roles_field: ClassVar[str] = "arguments"
    negative_types: ClassVar[bool] = True

    def type_roles(self, schema: Schema) -> dict[str, tuple[str, ...]]:
        return schema.type_roles

    def check_schema(self, schema: Schema) -> list[str]:
        if not self.type_roles(schema):
            return [
                f"the schema has no types for task {self.name}: line 3 of the schema file "
                "(type → roles object) is empty"
            ]
        return []

    @abstractmethod
    def positive_roles(self, anns: list[Annotation]) -> dict[str, list[str]]:
        """Gold types (first-appearance order) → roles they use."""
        ...

    def element(
        self, type_: str, roles: list[str], anns: list[Annotation] | None, text: str
    ) -> Element:
        return {self.type_field: type_, self.roles_field: roles}

    def _sample(self, anns, schema, rng, opts) -> list[tuple[str, list[str]]]:
        type_roles = self.type_roles(schema)
        p = opts.neg_prob
        picked: list[tuple[str, list[str]]] = []
        pos = self.positive_roles(anns)
        for t, roles in pos.items():
            extra = sample_negatives(rng, roles, type_roles[t], p) if p > 0 else []
            picked.append((t, list(roles) + extra))
        if self.negative_types and p > 0:
            for t in sample_negatives(rng, list(pos), list(type_roles), p):
                roles = list(type_roles[t])
                k = min(max(binomial(rng, len(roles), p), 1), len(roles))
                picked.append((t, rng.sample(roles, k)))
        return picked

    def _finish(self, picked, anns, text, rng, opts) -> list[list[Element]]:
        if opts.random_order:
            rng.shuffle(picked)
            for _, roles in picked:
                rng.shuffle(roles)
        else:
            picked = sorted((t, sorted(r)) for t, r in picked)
        elements = [self.element(t, r, anns, text) for t, r in picked]
        return split_chunks(elements, opts.split_num)

    def train_chunks(self, anns, schema, rng, opts, text: str = ""):
        return self._finish(self._sample(anns, schema, rng, opts), anns, text, rng, opts)

    def test_chunks(self, anns, schema, rng, opts, text: str = ""):
        picked = [(t, list(r)) for t, r in self.type_roles(schema).items()]
        return self._finish(picked, anns, text, rng, opts)


__all__ = [
    "Annotation",
    "Element",
    "LabelTask",
    "ParseResult",
    "Task",
    "TypedRolesTask",
    "by_position",
    "not_in_schema",
    "one_or_many",
    "position",
    "unique",
]
