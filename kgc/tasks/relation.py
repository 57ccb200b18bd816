"""RE: relation triples. Schema: line 2 (relations). Output {relation: [{subject, object}]}.

IEPile, OneKE and the *-iepile-lora models write `subject`/`object`; DeepKE's converter
wrote `head`/`tail`. Targets use subject/object; the parser reads both.
"""

from __future__ import annotations

from typing import Any

from kgc.parsing import ParseResult, as_text
from kgc.tasks.base import PAIRS, LabelTask, _str_field, not_in_schema, position
from kgc.tasks.registry import register

SUBJECT_KEYS = ("subject", "head", "sub", "s")
OBJECT_KEYS = ("object", "tail", "obj", "o")


def _first(item: dict, keys) -> Any:
    for k in keys:
        if k in item:
            return item[k]
    return None


def read_pairs(value: Any, result: ParseResult) -> None:
    """{relation: [{subject, object} | [subject, object]]} or a list of triples → records."""
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                h = as_text(_first(item, SUBJECT_KEYS))
                r = as_text(_first(item, ("relation", "predicate", "rel")))
                t = as_text(_first(item, OBJECT_KEYS))
                if h and r and t:
                    result.records.append({"head": h, "relation": r, "tail": t})
                    continue
            result.errors.append(f"skipped triple item {str(item)[:60]!r}")
        return
    if not isinstance(value, dict):
        result.errors.append(f"expected a JSON object, got {type(value).__name__}")
        return
    for rel, items in value.items():
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            if as_text(items) is not None:
                result.errors.append(f"relation {rel!r} has a bare value, not a list of pairs")
            continue
        for item in items:
            h = t = None
            if isinstance(item, dict):
                h, t = as_text(_first(item, SUBJECT_KEYS)), as_text(_first(item, OBJECT_KEYS))
            elif isinstance(item, list) and len(item) == 2:
                h, t = as_text(item[0]), as_text(item[1])
            if h is None or t is None:
                if item not in ([], {}, None, "NAN"):
                    result.errors.append(f"skipped pair under {rel!r}: {str(item)[:60]!r}")
                continue
            result.records.append({"head": h, "relation": rel, "tail": t})


def triple_tuples(records):
    return {"triple": [(r["head"], r["relation"], r["tail"]) for r in records]}


def pairs_by_position(text: str, anns: list[dict]) -> list[dict]:
    return sorted(anns, key=lambda a: (position(text, a["head"]), position(text, a["tail"])))


@register
class RE(LabelTask):
    name = "RE"
    annotation_key = "relation"
    groups = ("triple",)
    label_fields = {"triple": 1}  # (head, relation, tail)
    schema_line = 2

    def universe(self, schema):
        return list(schema.roles)

    def label_of(self, ann):
        return ann["relation"]

    def validate_one(self, ann, where, schema, problems):
        ok = all(
            _str_field(ann, f, where, problems) is not None for f in ("head", "relation", "tail")
        )
        if ok and ann["relation"] not in schema.roles:
            problems.append(
                f"{where}: "
                + not_in_schema("relation", ann["relation"], schema.roles, 2, "relations")
            )

    def target(self, anns, chunk, text):
        out: dict[str, list[dict]] = {r: [] for r in chunk}
        for a in pairs_by_position(text, anns):
            if a["relation"] in out:
                out[a["relation"]].append({"subject": a["head"], "object": a["tail"]})
        return out

    def answer_slot(self, element):
        return element, PAIRS

    def read_value(self, value, result):
        read_pairs(value, result)

    def tuples(self, records):
        return triple_tuples(records)
