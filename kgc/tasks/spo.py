"""SPO: typed relation triples. Schema: line 1 "subject_type_predicate_object_type" strings.

Instruction elements are {subject_type, predicate, object_type}; the output is keyed by
predicate ({predicate: [{subject, object}]}). When two schema elements in one chunk share a
predicate (different types), their pairs share that key instead of overwriting each other.
"""

from __future__ import annotations

from kgc.tasks.base import PAIRS, LabelTask, _str_field, not_in_schema
from kgc.tasks.registry import register
from kgc.tasks.relation import pairs_by_position, read_pairs, triple_tuples


def split_typed(label: str) -> tuple[str, str, str] | None:
    """'人物_毕业院校_学校' → ('人物', '毕业院校', '学校'); the predicate may contain '_'."""
    parts = label.split("_")
    if len(parts) < 3:
        return None
    return parts[0], "_".join(parts[1:-1]), parts[-1]


def typed_label(ann: dict) -> str:
    return f"{ann['head_type']}_{ann['relation']}_{ann['tail_type']}"


@register
class SPO(LabelTask):
    name = "SPO"
    annotation_key = "relation"
    groups = ("triple",)
    label_fields = {"triple": 1}  # (head, relation, tail)

    def universe(self, schema):
        return [t for t in schema.types if split_typed(t) is not None]

    def check_schema(self, schema):
        bad = [t for t in schema.types if split_typed(t) is None]
        if bad:
            return [
                f"SPO schema types must look like subject_type_predicate_object_type; "
                f"line 1 has {bad[:3]!r}"
            ]
        return super().check_schema(schema)

    def label_of(self, ann):
        return typed_label(ann)

    def element(self, label):
        s, p, o = split_typed(label)
        return {"subject_type": s, "predicate": p, "object_type": o}

    def sort_key(self, label):
        return split_typed(label)

    def validate_one(self, ann, where, schema, problems):
        fields = ("head", "head_type", "relation", "tail", "tail_type")
        if all(_str_field(ann, f, where, problems) is not None for f in fields):
            label = typed_label(ann)
            if label not in schema.types:
                problems.append(
                    f"{where}: "
                    + not_in_schema(
                        "head_type_relation_tail_type", label, schema.types, 1, "typed relations"
                    )
                )

    def target(self, anns, chunk, text):
        out: dict[str, list[dict]] = {}
        wanted = set()
        for el in chunk:
            out.setdefault(el["predicate"], [])
            wanted.add((el["subject_type"], el["predicate"], el["object_type"]))
        for a in pairs_by_position(text, anns):
            if (a["head_type"], a["relation"], a["tail_type"]) in wanted:
                out[a["relation"]].append({"subject": a["head"], "object": a["tail"]})
        return out

    def answer_slot(self, element):
        return element["predicate"], PAIRS

    def read_value(self, value, result):
        read_pairs(value, result)

    def tuples(self, records):
        return triple_tuples(records)
