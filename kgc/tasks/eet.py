"""EET: event types and trigger words. Schema: line 1 (event types; line 3's keys if line 1
is empty). Output {event_type: [trigger, …]}."""

from __future__ import annotations

from kgc.parsing import as_text, as_values
from kgc.tasks.base import TEXTS, LabelTask, _str_field, by_position, not_in_schema
from kgc.tasks.registry import register


def event_types(schema) -> list[str]:
    return list(schema.types) or list(schema.type_roles)


@register
class EET(LabelTask):
    name = "EET"
    annotation_key = "event"
    groups = ("trigger",)
    label_fields = {"trigger": 0}  # (event type, trigger)

    def universe(self, schema):
        return event_types(schema)

    def label_of(self, ann):
        return ann["event_type"]

    def clean(self, annotations):
        return list(annotations)  # two events with the same trigger word are two events

    def validate_one(self, ann, where, schema, problems):
        _str_field(ann, "event_trigger", where, problems)
        etype = _str_field(ann, "event_type", where, problems)
        allowed = event_types(schema)
        if etype is not None and etype not in allowed:
            problems.append(
                f"{where}: " + not_in_schema("event_type", etype, allowed, 1, "event types")
            )

    def target(self, anns, chunk, text):
        out: dict[str, list[str]] = {t: [] for t in chunk}
        for ev in by_position(text, anns, key=lambda e: e["event_trigger"]):
            if ev["event_type"] in out:
                out[ev["event_type"]].append(ev["event_trigger"])
        return out

    def answer_slot(self, element):
        return element, TEXTS

    def read_value(self, value, result):
        if not isinstance(value, dict):
            result.errors.append(f"expected a JSON object, got {type(value).__name__}")
            return
        for etype, triggers in value.items():
            if isinstance(triggers, dict):
                triggers = [triggers]
            if isinstance(triggers, list):
                for t in triggers:
                    word = as_text(t.get("trigger")) if isinstance(t, dict) else as_text(t)
                    if word is not None:
                        result.records.append({"event_type": etype, "event_trigger": word})
                continue
            for word in as_values(triggers):
                result.records.append({"event_type": etype, "event_trigger": word})

    def tuples(self, records):
        return {"trigger": [(r["event_type"], r.get("event_trigger") or "") for r in records]}
