"""KG: entity-centric attribute extraction (CCKS2024 style). Schema: line 3 (entity type →
attributes). Output {entity_type: {entity: {attribute: value | [values]}}}.

Raw records carry relation triples {head, relation, tail[, head_type]}. A head's type is its
`head_type` when given, else the only (or first) schema type whose attributes include the
relation. Gold attributes are always in the train schema (DeepKE could sample them out and
then train the model to omit true facts).
"""

from __future__ import annotations

from typing import Any

from kgc.parsing import as_values
from kgc.tasks.base import (
    TEXT_OR_TEXTS,
    TypedRolesTask,
    _str_field,
    by_position,
    closed_object,
    not_in_schema,
    one_or_many,
    unique,
)
from kgc.tasks.registry import register


@register
class KG(TypedRolesTask):
    name = "KG"
    annotation_key = "relation"
    groups = ("attribute",)
    label_fields = {"attribute": 1}  # (entity, attribute, value)
    type_field = "entity_type"
    roles_field = "attributes"

    def head_type(self, ann: dict, type_roles) -> str | None:
        ht = ann.get("head_type")
        if isinstance(ht, str) and ht in type_roles:
            return ht
        for t, attrs in type_roles.items():
            if ann.get("relation") in attrs:
                return t
        return None

    def validate_one(self, ann, where, schema, problems):
        fields = ("head", "relation", "tail")
        if not all(_str_field(ann, f, where, problems) is not None for f in fields):
            return
        ht = ann.get("head_type")
        if ht is not None and ht not in schema.type_roles:
            problems.append(
                f"{where}: "
                + not_in_schema("head_type", str(ht), list(schema.type_roles), 3, "entity types")
            )
        elif self.head_type(ann, schema.type_roles) is None or (
            ann["relation"] not in schema.type_roles[self.head_type(ann, schema.type_roles)]
        ):
            allowed = sorted({a for attrs in schema.type_roles.values() for a in attrs})
            problems.append(
                f"{where}: " + not_in_schema("relation", ann["relation"], allowed, 3, "attributes")
            )

    def prepare(self, anns: list[dict], schema) -> list[dict]:
        """Annotations with their resolved head type (stored under `head_type`)."""
        return [{**a, "head_type": self.head_type(a, schema.type_roles)} for a in anns]

    def positive_roles(self, anns):
        out: dict[str, list[str]] = {}
        for a in anns:
            attrs = out.setdefault(a["head_type"], [])
            if a["relation"] not in attrs:
                attrs.append(a["relation"])
        return out

    def target(self, anns, chunk, text):
        out: dict[str, dict] = {}
        for el in chunk:
            etype, attrs = el["entity_type"], el["attributes"]
            mine = [a for a in anns if a.get("head_type", etype) == etype]
            entities: dict[str, dict] = {}
            for head in by_position(text, unique(a["head"] for a in mine)):
                facts = {}
                for attr in attrs:
                    values = unique(
                        a["tail"] for a in mine if a["head"] == head and a["relation"] == attr
                    )
                    if values:
                        facts[attr] = one_or_many(values, text)
                if facts:
                    entities[head] = facts
            out[etype] = entities
        return out

    def answer_slot(self, element):
        facts = closed_object({a: TEXT_OR_TEXTS for a in element["attributes"]}, required=False)
        # {entity name: {attribute: value(s)}}; names are free text
        return element["entity_type"], {"type": "object", "additionalProperties": facts}

    def read_value(self, value: Any, result) -> None:
        if not isinstance(value, dict):
            result.errors.append(f"expected a JSON object, got {type(value).__name__}")
            return
        for etype, entities in value.items():
            if isinstance(entities, list):  # [{entity: {attr: v}}] — tolerate a list of objects
                merged: dict = {}
                for e in entities:
                    if isinstance(e, dict):
                        merged.update(e)
                entities = merged
            if not isinstance(entities, dict):
                if as_values(entities):
                    result.errors.append(f"entities of {etype!r} are not an object")
                continue
            for head, facts in entities.items():
                if not isinstance(facts, dict):
                    result.errors.append(f"attributes of {head!r} are not an object")
                    continue
                for attr, val in facts.items():
                    for v in as_values(val):
                        result.records.append(
                            {"head": head, "relation": attr, "tail": v, "head_type": etype}
                        )

    def tuples(self, records):
        return {"attribute": [(r["head"], r["relation"], r["tail"]) for r in records]}
