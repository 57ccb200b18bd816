"""EE: event extraction (type, trigger, arguments). Schema: line 3 (event type → roles).

Instruction elements: {event_type, trigger: true, arguments: [roles]}. Output:
{event_type: [{trigger, arguments: {role: value | "NAN" | [values]}}]}; an event none of
whose arguments is asked for has "arguments": {}.
"""

from __future__ import annotations

from typing import Any

from kgc.parsing import ParseResult, as_text, as_values
from kgc.tasks.base import (
    TEXT,
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


def validate_event(ann: Any, where: str, schema, problems: list[str]) -> None:
    etype = _str_field(ann, "event_type", where, problems)
    if etype is None:
        return
    if "event_trigger" in ann and not isinstance(ann["event_trigger"], str):
        problems.append(f"{where}: field 'event_trigger' must be a string")
    if etype not in schema.type_roles:
        problems.append(
            f"{where}: "
            + not_in_schema("event_type", etype, list(schema.type_roles), 3, "event types")
        )
        return
    args = ann.get("arguments", [])
    if not isinstance(args, list):
        problems.append(f"{where}: field 'arguments' must be a list")
        return
    roles = schema.type_roles[etype]
    for j, arg in enumerate(args):
        w = f"{where}.arguments[{j}]"
        _str_field(arg, "argument", w, problems)
        role = _str_field(arg, "role", w, problems)
        if role is not None and role not in roles:
            problems.append(f"{w}: " + not_in_schema("role", role, roles, 3, f"roles of {etype!r}"))


def event_target(anns: list[dict], chunk: list[dict], text: str) -> dict:
    out: dict[str, list[dict]] = {}
    for el in chunk:
        etype, roles = el["event_type"], el["arguments"]
        events = []
        for ev in by_position(
            text,
            [a for a in anns if a["event_type"] == etype],
            key=lambda e: e.get("event_trigger"),
        ):
            args = [a for a in ev.get("arguments", []) if a["role"] in roles]
            if args:
                arguments = {}
                for role in roles:
                    values = unique(a["argument"] for a in args if a["role"] == role)
                    arguments[role] = one_or_many(values, text) if values else "NAN"
            else:
                arguments = {}
            item: dict[str, Any] = {}
            if el.get("trigger", True) is not False:
                item["trigger"] = ev.get("event_trigger") or "NAN"
            item["arguments"] = arguments
            events.append(item)
        out[etype] = events
    return out


def read_events(value: Any, result: ParseResult) -> None:
    if not isinstance(value, dict):
        result.errors.append(f"expected a JSON object, got {type(value).__name__}")
        return
    for etype, events in value.items():
        if isinstance(events, dict):
            events = [events]
        if not isinstance(events, list):
            if as_text(events) is not None:
                result.errors.append(f"events of {etype!r} are not a list")
            continue
        for ev in events:
            if isinstance(ev, str):
                if as_text(ev) is not None:
                    result.records.append(
                        {"event_type": etype, "event_trigger": ev, "arguments": []}
                    )
                continue
            if not isinstance(ev, dict):
                result.errors.append(f"skipped event under {etype!r}: {str(ev)[:60]!r}")
                continue
            trigger = as_text(ev.get("trigger", ev.get("event_trigger"))) or ""
            arguments = []
            raw = ev.get("arguments", {})
            if isinstance(raw, dict):
                for role, val in raw.items():
                    arguments.extend({"argument": v, "role": role} for v in as_values(val))
            elif isinstance(raw, list):
                for a in raw:
                    arg = as_text(a.get("argument")) if isinstance(a, dict) else None
                    role = as_text(a.get("role")) if isinstance(a, dict) else None
                    if arg is not None and role is not None:
                        arguments.append({"argument": arg, "role": role})
            if not trigger and not arguments:
                continue  # an empty event (e.g. cut right after "{") says nothing
            result.records.append(
                {"event_type": etype, "event_trigger": trigger, "arguments": arguments}
            )


def argument_tuples(records: list[dict]) -> list[tuple]:
    return [
        (r["event_type"], a["role"], a["argument"]) for r in records for a in r.get("arguments", [])
    ]


@register
class EE(TypedRolesTask):
    name = "EE"
    annotation_key = "event"
    groups = ("trigger", "argument")
    label_fields = {"trigger": 0, "argument": 0}  # (event type, trigger), (event type, …)

    def validate_one(self, ann, where, schema, problems):
        validate_event(ann, where, schema, problems)

    def clean(self, annotations):
        return list(annotations)  # identical events stay: the text may report one twice

    def positive_roles(self, anns):
        out: dict[str, list[str]] = {}
        for ev in anns:
            roles = out.setdefault(ev["event_type"], [])
            for a in ev.get("arguments", []):
                if a["role"] not in roles:
                    roles.append(a["role"])
        return out

    def element(self, type_, roles, anns, text):
        return {"event_type": type_, "trigger": True, "arguments": roles}

    def target(self, anns, chunk, text):
        return event_target(anns, chunk, text)

    def answer_slot(self, element):
        item = {} if element.get("trigger", True) is False else {"trigger": TEXT}
        roles = {role: TEXT_OR_TEXTS for role in element["arguments"]}
        item["arguments"] = closed_object(roles, required=False)  # {} when no argument
        return element["event_type"], {"type": "array", "items": closed_object(item)}

    def read_value(self, value, result):
        read_events(value, result)

    def tuples(self, records):
        return {
            "trigger": [(r["event_type"], r.get("event_trigger") or "") for r in records],
            "argument": argument_tuples(records),
        }
