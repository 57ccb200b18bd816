"""Data augmentation for relation extraction: new labelled samples for a relation, generated
from k demonstrations with entity types, then parsed, validated and de-duplicated.

Input (the demonstrations) in either format, written back in the same one:
- DeepKE's: {text, head_entity, head_type, tail_entity, tail_type, relation};
- TACRED: {token, subj_start, subj_end, obj_start, obj_end, subj_type, obj_type, relation}
  (generated contexts are tokenised; entity spans must fall on token boundaries).

A generated sample is kept only if it parses, names the requested relation (when it names
one), both entities occur in its context, both types are in the allowed set, and it is not a
duplicate of a demonstration or of another sample. Every rejected sample is counted with its
reason. Besides `generated.json[l]`, the accepted samples are written as kgc raw RE records
(`generated_re.jsonl` + `generated_re_schema.json`) for `kgc convert --task RE`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgc.errors import KgcError, Problem
from kgc.icl.common import norm_label, sample, seeded_rng
from kgc.icl.config import IclConfig
from kgc.icl.data import Where, detokenize, read_records, str_field, tokenize
from kgc.icl.runner import Plan, Request, params_for
from kgc.parsing import extract_json, strip_fences

MAX_CONTEXT_CHARS = 2000
NEGATIVE = {"no_relation", "na", "other", "others", "false", "unanswerable", "norelation"}
_LINE = re.compile(
    r"context\s*[:：]\s*(?P<context>.+?)\s*head entity\s*[:：]\s*(?P<head>.+?)\.?\s*"
    r"head type\s*[:：]\s*(?P<head_type>.+?)\.?\s*tail entity\s*[:：]\s*(?P<tail>.+?)\.?\s*"
    r"tail type\s*[:：]\s*(?P<tail_type>[^.\n]+?)\.?\s*$",
    re.I,
)


@dataclass
class Sample:
    context: str
    head: str
    head_type: str
    tail: str
    tail_type: str
    relation: str

    def key(self) -> tuple:
        return (
            " ".join(self.context.casefold().split()),
            self.head.casefold(),
            self.tail.casefold(),
            norm_label(self.relation),
        )

    def demo_json(self) -> str:
        return json.dumps(
            {
                "relation": self.relation,
                "context": self.context,
                "head": self.head,
                "head_type": self.head_type,
                "tail": self.tail,
                "tail_type": self.tail_type,
            },
            ensure_ascii=False,
        )


# ----------------------------------------------------------------------------- reading
def detect_format(records: list[tuple[Where, Any]], fmt: str) -> str:
    if fmt != "auto":
        return fmt
    first = next((r for _, r in records if isinstance(r, dict)), {})
    return "tacred" if "token" in first else "deepke"


def read_demos(path: str, fmt: str) -> tuple[list[Sample], str, str]:
    """(samples, format, file kind: 'item' for a JSON list, 'line' for JSONL)."""
    records = read_records(path, "input file (augment demonstrations)")
    fmt = detect_format(records, fmt)
    problems: list[Problem] = []
    out: list[Sample] = []
    for where, rec in records:
        if fmt == "tacred":
            from kgc.icl.fewshot_re import to_instance

            inst = to_instance(rec, where, problems, True)
            if inst is not None:
                out.append(
                    Sample(
                        inst.sentence,
                        inst.head,
                        inst.head_type,
                        inst.tail,
                        inst.tail_type,
                        inst.relation or "",
                    )
                )
            continue
        vals = [
            str_field(rec, f, where, problems)
            for f in ("text", "head_entity", "head_type", "tail_entity", "tail_type", "relation")
        ]
        if all(vals):
            out.append(Sample(vals[0], vals[1], vals[2], vals[3], vals[4], vals[5]))
    if problems:
        raise KgcError(problems)
    kind = records[0][0].kind if records else "line"
    return out, fmt, kind


# ----------------------------------------------------------------------------- prompt
def build_prompt(
    language: str, relation: str, types: list[str], demos: list[Sample], n: int
) -> str:
    lines = "\n".join(d.demo_json() for d in demos)
    if language == "zh":
        return (
            "你在为关系抽取模型制作训练数据。每条样本包含一段上下文和其中出现的头实体、尾实体，"
            f"头实体与尾实体之间具有关系“{relation}”。实体类型只能取：{'、'.join(types)}。\n"
            f"示例：\n{lines}\n"
            f"请为关系“{relation}”再写 {n} 条新的、彼此不同的样本，每行一个JSON对象，键与示例相同；"
            "头实体和尾实体必须原样出现在上下文中。不要写其他内容。"
        )
    return (
        "You write training data for relation extraction. A sample is a short context with a "
        "head entity and a tail entity that both occur in it, where the head entity has the "
        f"relation '{relation}' to the tail entity. Entity types must be one of: "
        f"{', '.join(types)}.\nExamples:\n{lines}\n"
        f"Write {n} new and varied samples for the relation '{relation}', one JSON object per "
        "line with the same keys as the examples; the head and tail must appear verbatim in "
        "the context. Write nothing else."
    )


# ----------------------------------------------------------------------------- parsing
def candidates(text: str) -> tuple[list[dict], int]:
    """Sample-like dicts in the model's output, and how many non-empty lines were not one."""
    if not isinstance(text, str):
        return [], 1
    body = strip_fences(text)
    whole, errs = extract_json(body, opening="[")
    if isinstance(whole, list) and not errs and any(isinstance(x, dict) for x in whole):
        dicts = [x for x in whole if isinstance(x, dict)]
        return dicts, len(whole) - len(dicts)
    out: list[dict] = []
    bad = 0
    for line in body.splitlines():
        s = line.strip().strip(",")
        if not s or s in ("[", "]"):
            continue
        if "{" in s:
            v, _ = extract_json(s, opening="{")
            if isinstance(v, dict):
                out.append(v)
                continue
        m = _LINE.search(s)
        if m:
            out.append(m.groupdict())
            continue
        bad += 1
    return out, bad


def _find(context: str, ent: str, avoid: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """Where an entity occurs (exact first, then ignoring case), preferring a span that does not
    overlap `avoid`."""
    spans = []
    for hay, needle in ((context, ent), (context.casefold(), ent.casefold())):
        if len(hay) != len(context):
            continue  # case folding changed the length: offsets would be wrong
        start = hay.find(needle)
        while start >= 0:
            spans.append((start, start + len(needle)))
            start = hay.find(needle, start + 1)
        if spans:
            break
    if not spans:
        return None
    if avoid:
        for s in spans:
            if s[1] <= avoid[0] or s[0] >= avoid[1]:
                return s
    return spans[0]


def _type(value: Any, allowed: dict[str, str]) -> str | None:
    if not isinstance(value, str):
        return None
    return allowed.get(norm_label(value))


def validate(
    cand: dict, relation: str, allowed: dict[str, str], fmt: str
) -> tuple[dict | None, str | None]:
    """(output record in the input's format, None) or (None, rejection reason)."""
    get = {k.lower().replace(" ", "_"): v for k, v in cand.items()}
    ctx = get.get("context", get.get("text"))
    head = get.get("head", get.get("head_entity"))
    tail = get.get("tail", get.get("tail_entity"))
    if not all(isinstance(x, str) and x.strip() for x in (ctx, head, tail)):
        return None, "missing_field"
    ctx, head, tail = ctx.strip(), head.strip(), tail.strip()
    rel = get.get("relation")
    if isinstance(rel, str) and rel.strip() and norm_label(rel) != norm_label(relation):
        return None, "wrong_relation"
    if len(ctx) > MAX_CONTEXT_CHARS:
        return None, "context_too_long"
    ht, tt = _type(get.get("head_type"), allowed), _type(get.get("tail_type"), allowed)
    if ht is None or tt is None:
        return None, "type_not_allowed"
    hspan = _find(ctx, head)
    if hspan is None:
        return None, "head_not_in_context"
    tspan = _find(ctx, tail, avoid=hspan)
    if tspan is None:
        return None, "tail_not_in_context"
    head, tail = ctx[hspan[0] : hspan[1]], ctx[tspan[0] : tspan[1]]
    if fmt == "tacred":
        toks = tokenize(ctx)
        starts = {s: i for i, (_, s, _) in enumerate(toks)}
        ends = {e: i for i, (_, _, e) in enumerate(toks)}
        if not all(x in starts for x in (hspan[0], tspan[0])) or not all(
            x in ends for x in (hspan[1], tspan[1])
        ):
            return None, "span_not_on_token_boundary"
        return {
            "token": [t for t, _, _ in toks],
            "subj_start": starts[hspan[0]],
            "subj_end": ends[hspan[1]],
            "obj_start": starts[tspan[0]],
            "obj_end": ends[tspan[1]],
            "subj_type": ht,
            "obj_type": tt,
            "relation": relation,
        }, None
    return {
        "text": ctx,
        "head_entity": head,
        "head_type": ht,
        "tail_entity": tail,
        "tail_type": tt,
        "relation": relation,
    }, None


def record_key(rec: dict, fmt: str) -> tuple:
    if fmt == "tacred":
        toks = rec["token"]
        return Sample(
            detokenize(toks),
            detokenize(toks[rec["subj_start"] : rec["subj_end"] + 1]),
            rec["subj_type"],
            detokenize(toks[rec["obj_start"] : rec["obj_end"] + 1]),
            rec["obj_type"],
            rec["relation"],
        ).key()
    return Sample(
        rec["text"],
        rec["head_entity"],
        rec["head_type"],
        rec["tail_entity"],
        rec["tail_type"],
        rec["relation"],
    ).key()


def as_raw_re(rec: dict, fmt: str) -> dict:
    """A kgc raw RE record ({text, relation: [{head, relation, tail}]}) for `kgc convert`."""
    if fmt == "tacred":
        toks = rec["token"]
        return {
            "text": " ".join(toks),
            "relation": [
                {
                    "head": " ".join(toks[rec["subj_start"] : rec["subj_end"] + 1]),
                    "relation": rec["relation"],
                    "tail": " ".join(toks[rec["obj_start"] : rec["obj_end"] + 1]),
                }
            ],
        }
    return {
        "text": rec["text"],
        "relation": [
            {"head": rec["head_entity"], "relation": rec["relation"], "tail": rec["tail_entity"]}
        ],
    }


# ----------------------------------------------------------------------------- the mode
def plan(cfg: IclConfig, client, single: dict | None) -> Plan:
    ac = cfg.augment
    if not cfg.input:
        raise KgcError("input (the demonstration file: DeepKE RE/DA records or TACRED) is required")
    demos, fmt, kind = read_demos(cfg.input, ac.format)
    by_rel: dict[str, list[Sample]] = {}
    for d in demos:
        by_rel.setdefault(d.relation, []).append(d)
    if single is not None:
        relations = [single["relation"]]
    elif ac.relations:
        relations = list(ac.relations)
    else:
        relations = sorted(r for r in by_rel if norm_label(r) not in NEGATIVE)
    missing = [r for r in relations if r not in by_rel]
    if missing:
        raise KgcError(
            Problem(
                f"relation(s) {missing} have no demonstrations in the input; add samples of them "
                "or remove them from augment.relations",
                cfg.input,
            )
        )
    types = (
        list(ac.entity_types)
        if ac.entity_types
        else sorted({t for d in demos for t in (d.head_type, d.tail_type) if t})
    )
    if not types:
        raise KgcError("no entity types: set augment.entity_types or give typed demonstrations")
    allowed = {norm_label(t): t for t in types}
    requests, meta = [], []
    for rel in relations:
        for rnd in range(ac.requests_per_relation):
            rng = seeded_rng(ac.seed, "augment", rel, rnd)
            shown = sample(by_rel[rel], ac.k, rng)
            prompt = build_prompt(cfg.language, rel, types, shown, ac.samples_per_request)
            rid = f"{rel}#{rnd + 1}"
            params = params_for(cfg, max_tokens=2048, temperature=1.0, salt=rid)
            requests.append(Request(rid, [{"role": "user", "content": prompt}], params))
            meta.append(rel)
    state: dict[str, Any] = {}

    def finish(comps):
        rows, summary, accepted = _finish(cfg, fmt, demos, requests, meta, comps, allowed)
        state["accepted"] = accepted
        return rows, summary

    def write_generated(out: Path) -> Path:
        from kgc.io import write_jsonl_atomic, write_text_atomic

        acc = state.get("accepted", [])
        path = out / ("generated.json" if kind != "line" else "generated.jsonl")
        if kind != "line":
            body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in acc)
            write_text_atomic(path, f"[\n{body}\n]\n" if acc else "[]\n")
        else:
            write_jsonl_atomic(path, acc)
        return path

    def write_raw(out: Path) -> Path:
        from kgc.io import write_jsonl_atomic

        acc = state.get("accepted", [])
        path = out / "generated_re.jsonl"
        write_jsonl_atomic(path, [as_raw_re(r, fmt) for r in acc])
        rels = sorted({r["relation"] for r in acc} | set(relations))
        (out / "generated_re_schema.json").write_text(
            "[]\n" + json.dumps(rels, ensure_ascii=False) + "\n{}\n", encoding="utf-8"
        )
        return path

    return Plan(requests, finish, {"generated": write_generated, "generated_re": write_raw})


def _finish(cfg, fmt, demos, requests, meta, comps, allowed):
    seen = {d.key() for d in demos}
    demo_keys = set(seen)
    accepted: list[dict] = []
    rejected: Counter = Counter()
    per_rel: Counter = Counter()
    rows = []
    for req, rel, comp in zip(requests, meta, comps):
        rrej: Counter = Counter()
        n_ok = 0
        errors = []
        if comp.error:
            errors.append(f"request failed: {comp.error}")
        cands, bad = candidates(comp.text) if not comp.error else ([], 0)
        if bad:
            rrej["unparseable_line"] += bad
        for c in cands:
            rec, why = validate(c, rel, allowed, fmt)
            if rec is not None:
                k = record_key(rec, fmt)
                if k in demo_keys:
                    why = "duplicate_of_demonstration"
                elif k in seen:
                    why = "duplicate"
                else:
                    seen.add(k)
                    if fmt == "tacred":
                        rec = {"id": f"gen-{len(accepted) + 1}", **rec}
                    accepted.append(rec)
                    n_ok += 1
                    continue
            rrej[why] += 1
        if not comp.error and not cands:
            errors.append("no sample could be read from the output")
        rejected.update(rrej)
        per_rel[rel] += n_ok
        rows.append(
            {
                "id": req.id,
                "relation": rel,
                "output": comp.text,
                "accepted": n_ok,
                "rejected": dict(rrej),
                "errors": errors,
                "cached": comp.cached,
            }
        )
    summary = {
        "format": fmt,
        "demonstrations": len(demos),
        "accepted": len(accepted),
        "rejected": sum(rejected.values()),
        "rejected_by_reason": dict(sorted(rejected.items())),
        "accepted_by_relation": dict(sorted(per_rel.items())),
        "report": (
            f"augment: {len(accepted)} samples accepted, {sum(rejected.values())} rejected "
            f"({', '.join(f'{k} {v}' for k, v in sorted(rejected.items())) or 'none'})"
        ),
    }
    return rows, summary, accepted
