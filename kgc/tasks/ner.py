"""NER: typed entity spans. Schema: line 1 (entity types). Output {type: [entity, …]}."""

from __future__ import annotations

from typing import Any

from kgc.parsing import ParseResult, as_text, as_values
from kgc.tasks.base import TEXTS, LabelTask, _str_field, by_position, not_in_schema
from kgc.tasks.registry import register


@register
class NER(LabelTask):
    name = "NER"
    annotation_key = "entity"
    groups = ("entity",)
    label_fields = {"entity": 1}  # (entity, entity type)

    def universe(self, schema):
        return list(schema.types)

    def label_of(self, ann):
        return ann["entity_type"]

    def validate_one(self, ann, where, schema, problems):
        entity = _str_field(ann, "entity", where, problems)
        etype = _str_field(ann, "entity_type", where, problems)
        if entity is not None and etype is not None and etype not in schema.types:
            problems.append(
                f"{where}: " + not_in_schema("entity_type", etype, schema.types, 1, "entity types")
            )

    def target(self, anns, chunk, text):
        out: dict[str, list[str]] = {t: [] for t in chunk}
        for ann in by_position(text, anns, key=lambda a: a["entity"]):
            if ann["entity_type"] in out:
                out[ann["entity_type"]].append(ann["entity"])
        return out

    def answer_slot(self, element):
        return element, TEXTS

    def read_value(self, value: Any, result: ParseResult) -> None:
        if isinstance(value, dict):
            for etype, ents in value.items():
                if isinstance(ents, dict):
                    result.errors.append(f"entities of {etype!r} are an object, not a list")
                    continue
                for ent in as_values(ents):
                    result.records.append({"entity": ent, "entity_type": etype})
        elif isinstance(value, list):  # the raw annotation layout, [{"entity", "entity_type"}]
            for item in value:
                ent = as_text(item.get("entity")) if isinstance(item, dict) else None
                etype = as_text(item.get("entity_type")) if isinstance(item, dict) else None
                if ent is None or etype is None:
                    result.errors.append(f"skipped entity item {str(item)[:60]!r}")
                    continue
                result.records.append({"entity": ent, "entity_type": etype})
        else:
            result.errors.append(f"expected a JSON object, got {type(value).__name__}")

    def tuples(self, records):
        return {"entity": [(r["entity"], r["entity_type"]) for r in records]}
