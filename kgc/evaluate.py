"""Score model outputs on IEPile test records (`kgc eval`).

Input lines are test records (`id`, `instruction`, `label`, optional `source`) with the
model's text in `output`. The lines of one record (one per schema chunk) are grouped by
(source, id); their predictions are pooled and scored against the record's label. Two
records with the same text share an id, so the n-th repeat of an instruction inside a group
starts the n-th record instead of doubling the first one's predictions.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kgc.convert import text_id
from kgc.errors import KgcError, Problem
from kgc.io import dumps, read_jsonl
from kgc.metrics import MATCH_MODES, PRF, count, normalize_item
from kgc.schema import Schema
from kgc.tasks import get as get_task
from kgc.tasks.base import Task, TypedRolesTask

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class EvalOptions:
    """How outputs are matched. `strict`: the papers' strict F1 (SpERT's evaluator, and the
    CoNLL04 / ADE tables that follow it): strings exact (no normalisation) and each record's
    gold and predicted items taken as sets (a gold item counts once, a repeated prediction
    once); it overrides `match` and `normalize`."""

    match: str = "multiset"
    normalize: bool = True
    rouge: bool = False
    language: str | None = None
    segmenter: str = "char"
    strict: bool = False

    def __post_init__(self) -> None:
        if self.strict:
            object.__setattr__(self, "match", "set")
            object.__setattr__(self, "normalize", False)


# how the strict headline names a metric group (`strict relation F1 (micro): …`)
_GROUP_TERMS = {"triple": "relation"}


class _LabelScores:
    """Per-label counts of one metric group, pooled over records. Items are split by their
    label as matching sees it (normalised or not), so the rows add up to the group's total;
    a row is named by the gold spelling of its label (else the first predicted one)."""

    def __init__(self, index: int, match: str, normalize: bool):
        self.index, self.match, self.normalize = index, match, normalize
        self.names: dict[Any, list] = {}  # label key → [gold spelling, predicted spelling]
        self.scores: dict[Any, PRF] = {}

    def add(self, pred: list[tuple], gold: list[tuple]) -> None:
        parts: dict[Any, tuple[list, list]] = {}
        for side, items in ((0, gold), (1, pred)):
            for item in items:
                key = normalize_item(item[self.index], self.normalize)
                parts.setdefault(key, ([], []))[side].append(item)
                names = self.names.setdefault(key, [None, None])
                names[side] = names[side] or str(item[self.index])
        for key, (g, p) in parts.items():
            c = count(p, g, match=self.match, normalize=self.normalize)
            self.scores.setdefault(key, PRF()).add(c)

    def as_dict(self) -> dict[str, dict]:
        rows = {(g or p): self.scores[k].as_dict() for k, (g, p) in self.names.items()}
        return dict(sorted(rows.items()))


@dataclass
class _Group:
    source: str
    label: list
    lines: list[tuple[int, dict, Any]]  # (line number, record, parsed instruction or None)


def _read_label(rec: dict, problems: list[str]) -> list | None:
    if "label" not in rec:
        problems.append(
            "field 'label' is missing; evaluate test records converted from annotated data "
            "(kgc convert --split test)"
        )
        return None
    label = rec["label"]
    if isinstance(label, str):
        try:
            label = json.loads(label)
        except json.JSONDecodeError as exc:
            problems.append(f"field 'label' is not valid JSON ({exc.msg})")
            return None
    if not isinstance(label, list):
        problems.append(f"field 'label' must be a JSON list, got {type(label).__name__}")
        return None
    return label


def _group_rows(
    task: Task, rows: Iterable[tuple[int, Any]], path: str
) -> tuple[list[_Group], list[Problem]]:
    problems: list[Problem] = []
    groups: dict[tuple, _Group] = {}
    seen: Counter = Counter()
    for lineno, rec in rows:
        local: list[str] = []
        if not isinstance(rec, dict):
            problems.append(
                Problem(f"record must be a JSON object, got {type(rec).__name__}", path, lineno)
            )
            continue
        instruction = rec.get("instruction")
        if not isinstance(instruction, str):
            local.append("field 'instruction' must be the instruction JSON string")
        if "output" not in rec:
            local.append("field 'output' (the model's text) is missing")
        label = _read_label(rec, local)
        inst = None
        if isinstance(instruction, str):
            try:
                inst = json.loads(instruction)
            except json.JSONDecodeError:
                inst = None
        rid = rec.get("id")
        if not isinstance(rid, str):
            if isinstance(inst, dict) and isinstance(inst.get("input"), str):
                rid = text_id(inst["input"])
            else:
                local.append(
                    "field 'id' is missing and the instruction has no 'input' to derive it"
                )
        if local:
            problems.extend(Problem(p, path, lineno) for p in local)
            continue
        source = rec.get("source") if isinstance(rec.get("source"), str) else ""
        occurrence = seen[(source, rid, instruction)]
        seen[(source, rid, instruction)] += 1
        key = (source, rid, occurrence)
        if key not in groups:
            groups[key] = _Group(source, label, [])
        groups[key].lines.append((lineno, rec, inst))
    return list(groups.values()), problems


def _chunk_schema(task: Task, chunk: list) -> Schema:
    if isinstance(task, TypedRolesTask):
        return Schema.from_lists(
            type_roles={
                el.get(task.type_field): el.get(task.roles_field, [])
                for el in chunk
                if isinstance(el, dict)
            }
        )
    return Schema()


def _gold_text(task: Task, label: list, inst: Any) -> str | None:
    """The output a perfect model gives for this line (for ROUGE), or None if unknown."""
    if not isinstance(inst, dict) or not isinstance(inst.get("schema"), list):
        return None
    chunk, text = inst["schema"], inst.get("input") or ""
    try:
        anns = task.prepare(label, _chunk_schema(task, chunk))
        return dumps(task.target(anns, chunk, text))
    except (KeyError, TypeError, AttributeError):
        return None


def evaluate_rows(
    task: Task | str,
    rows: Iterable[tuple[int, Any]],
    *,
    path: str = "<input>",
    opts: EvalOptions | None = None,
) -> dict:
    task = get_task(task) if isinstance(task, str) else task
    opts = opts or EvalOptions()
    if opts.match not in MATCH_MODES:
        raise KgcError(f"--match must be one of {', '.join(MATCH_MODES)}, got {opts.match!r}")
    groups, problems = _group_rows(task, rows, path)
    if problems:
        raise KgcError(problems)

    overall = {g: PRF() for g in task.groups}
    by_label = {
        g: _LabelScores(task.label_fields[g], opts.match, opts.normalize)
        for g in task.groups
        if g in task.label_fields
    }
    by_source: dict[str, dict] = {}
    lines = parse_errors = unparseable = 0
    examples: list[dict] = []
    rouge_sums: Counter = Counter()
    rouge_n = 0
    for group in groups:
        src = by_source.setdefault(
            group.source,
            {"records": 0, "parse_errors": 0, "scores": {g: PRF() for g in task.groups}},
        )
        src["records"] += 1
        preds: list[dict] = []
        for lineno, rec, inst in group.lines:
            lines += 1
            result = task.parse(rec.get("output"))
            preds.extend(result.records)
            if result.errors:
                parse_errors += 1
                src["parse_errors"] += 1
                if not result.readable:
                    unparseable += 1
                if len(examples) < MAX_EXAMPLES:
                    examples.append({"line": lineno, "errors": result.errors})
            if opts.rouge:
                gold_text = _gold_text(task, group.label, inst)
                if gold_text is not None:
                    from kgc.rouge import rouge

                    out = rec.get("output") if isinstance(rec.get("output"), str) else ""
                    rouge_sums.update(rouge(out, gold_text, opts.language, opts.segmenter))
                    rouge_n += 1
        gold_t = task.tuples(group.label)
        pred_t = task.tuples(preds)
        for g in task.groups:
            c = count(pred_t[g], gold_t[g], match=opts.match, normalize=opts.normalize)
            overall[g].add(c)
            src["scores"][g].add(c)
            if g in by_label:
                by_label[g].add(pred_t[g], gold_t[g])

    report: dict[str, Any] = {
        "task": task.name,
        "records": len(groups),
        "lines": lines,
        "parse_errors": parse_errors,
        "unparseable": unparseable,
        "strict": opts.strict,
        "scores": {g: v.as_dict() for g, v in overall.items()},
        "by_label": {g: v.as_dict() for g, v in by_label.items()},
        "by_source": {
            s: {
                "records": v["records"],
                "parse_errors": v["parse_errors"],
                "scores": {g: prf.as_dict() for g, prf in v["scores"].items()},
            }
            for s, v in sorted(by_source.items())
        },
        "parse_error_examples": examples,
    }
    if opts.rouge:
        report["rouge"] = {
            k: (rouge_sums[k] / rouge_n if rouge_n else 0.0)
            for k in ("rouge-1", "rouge-2", "rouge-l")
        }
    return report


def evaluate_file(task: str, path: str | os.PathLike, opts: EvalOptions | None = None) -> dict:
    task_obj = get_task(task)
    problems: list[Problem] = []
    rows = list(read_jsonl(path, problems))
    if problems:
        raise KgcError(problems)
    return evaluate_rows(task_obj, rows, path=str(path), opts=opts)


def strict_lines(report: dict) -> list[str]:
    """The papers' headline, one line per metric group, e.g.
    `strict relation F1 (micro): 0.4980  P 0.5100  R 0.4870` (RE, SPO; NER: `strict entity`)."""
    return [
        f"strict {_GROUP_TERMS.get(g, g)} F1 (micro): {s['f1']:.4f}  P {s['precision']:.4f}  "
        f"R {s['recall']:.4f}"
        for g, s in report["scores"].items()
    ]


def format_table(report: dict, by_source: bool = False, by_label: bool = False) -> str:
    """A plain-text table of the report (what `kgc eval` prints without --json); a strict
    report (`--strict`) starts with `strict_lines`, `by_label` adds a row per label."""
    head = (
        f"task {report['task']}: {report['records']} records, {report['lines']} lines, "
        f"{report['parse_errors']} with parse errors ({report['unparseable']} unreadable)"
    )
    entries: list[tuple[str, str, dict]] = [("(all)", g, s) for g, s in report["scores"].items()]
    if by_source:
        for src, v in report["by_source"].items():
            entries += [(src or "(none)", g, s) for g, s in v["scores"].items()]
    if by_label:
        for g, labels in report.get("by_label", {}).items():
            entries += [(label, g, s) for label, s in labels.items()]
    first = ("source / label" if by_source else "label") if by_label else "source"
    w = max(16, len(first), *(len(e[0]) for e in entries))
    rows = [
        f"{first:<{w}} {'group':<10} {'P':>7} {'R':>7} {'F1':>7} {'tp':>6} {'pred':>6} {'gold':>6}"
    ]
    for name, g, s in entries:
        rows.append(
            f"{name:<{w}} {g:<10} {s['precision']:7.4f} {s['recall']:7.4f} {s['f1']:7.4f} "
            f"{s['tp']:6d} {s['pred']:6d} {s['gold']:6d}"
        )
    out = [head, *rows]
    if report.get("strict"):
        out = [*strict_lines(report), *out]
    if "rouge" in report:
        r = report["rouge"]
        out.append(
            f"ROUGE-1 {r['rouge-1']:.4f}  ROUGE-2 {r['rouge-2']:.4f}  ROUGE-L {r['rouge-l']:.4f}"
        )
    if "ccks_score" in report:
        out.append(f"CCKS2023 score (0.5·F1 + 0.5·ROUGE-2): {report['ccks_score']:.4f}")
    return "\n".join(out)
