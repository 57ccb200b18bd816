"""Raw annotated JSONL + 3-line schema → IEPile instruction records (train or test split).

Train records: {"task", "source", "instruction", "output"} (one per schema chunk).
Test records:  {"id", "task", "source", "instruction"[, "label"]}; id = sha256(text) as in
IEPile, label = the record's (de-duplicated) annotation list as a JSON string, absent for
label-less input.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgc.errors import KgcError, Problem
from kgc.io import check_readable, dumps, read_jsonl, write_jsonl_atomic
from kgc.sampling import SamplingOptions, record_rng
from kgc.schema import Schema, read_schema
from kgc.tasks import get as get_task
from kgc.tasks.base import LabelTask, Task

SPLITS = ("train", "test")


def text_id(text: str) -> str:
    """IEPile's record id: the SHA-256 of the input text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class ConvertStats:
    records_in: int = 0
    records_out: int = 0
    label_less: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        parts = [f"{self.records_in} input records → {self.records_out} instruction records"]
        if self.label_less:
            parts.append(f"{self.label_less} label-less")
        for reason, n in sorted(self.skipped.items()):
            parts.append(f"{n} produced no instruction ({reason})")
        return "; ".join(parts)


@dataclass(frozen=True)
class SchemaInfo:
    """OneKE's instruction forms (`kgc convert --schema-info FILE`): label descriptions
    (label → text, or {"description": text, "roles": {role: text}} for EE and KG types) and
    worked examples ([{"input": text, "output": {...}}], with the instruction's suffix)."""

    descriptions: dict[str, Any] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)


def _labels(task: Task, schema: Schema) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """The labels a description may name, and each type's roles (EE, KG)."""
    if task.name in ("EE", "EEA", "KG"):
        return list(schema.type_roles), dict(schema.type_roles)
    if task.name == "RE":
        return list(schema.roles), {}
    return list(schema.types), {}


def read_schema_info(path: str | os.PathLike, task: Task, schema: Schema) -> SchemaInfo:
    """Read and check a --schema-info file; every problem is reported with its field."""
    p = check_readable(path, "schema-info file")
    where = str(p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise KgcError(Problem(f"not valid JSON ({exc.msg}, line {exc.lineno})", where)) from None
    shape = (
        'a JSON object {"descriptions": {label: text}, "examples": [{"input": text, '
        '"output": {...}}]} (either key may be left out)'
    )
    if not isinstance(data, dict) or not data:
        raise KgcError(Problem(f"must be {shape}", where))
    problems = [
        Problem(f"unknown key {k!r}; the file takes 'descriptions' and 'examples'", where)
        for k in data
        if k not in ("descriptions", "examples")
    ]
    labels, roles = _labels(task, schema)
    desc = data.get("descriptions", {})
    if not isinstance(desc, dict):
        problems.append(Problem("'descriptions' must be an object {label: text}", where))
        desc = {}
    for label, d in desc.items():
        field_ = f"descriptions.{label}"
        if label not in labels:
            problems.append(
                Problem(
                    f"{field_}: {label!r} is not a label of the schema "
                    f"({', '.join(labels[:8])}{', …' if len(labels) > 8 else ''})",
                    where,
                )
            )
        elif isinstance(d, dict) and task.name in ("EE", "KG"):
            extra = sorted(set(d) - {"description", "roles"})
            if extra or not isinstance(d.get("description", ""), str):
                problems.append(
                    Problem(
                        f"{field_}: takes 'description' (text) and 'roles' ({{role: text}})"
                        + (f"; unknown {extra}" if extra else ""),
                        where,
                    )
                )
            given = d.get("roles", {})
            if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
                problems.append(Problem(f"{field_}.roles: must be an object {{role: text}}", where))
            else:
                bad = sorted(set(given) - set(roles.get(label, ())))
                if bad:
                    problems.append(
                        Problem(
                            f"{field_}.roles: {bad} are not roles of {label!r} in the schema "
                            f"({', '.join(roles.get(label, ()))})",
                            where,
                        )
                    )
        elif not isinstance(d, str) or not d.strip():
            problems.append(Problem(f"{field_}: must be a non-empty text", where))
    if desc:
        from kgc.instructions import DESCRIBED_TASKS

        if task.name not in DESCRIBED_TASKS:
            problems.append(
                Problem(
                    f"'descriptions': OneKE documents described schemas for "
                    f"{', '.join(DESCRIBED_TASKS)}, not {task.name}; remove 'descriptions'",
                    where,
                )
            )
    examples = data.get("examples", [])
    if not isinstance(examples, list):
        problems.append(Problem("'examples' must be a list of {input, output} objects", where))
        examples = []
    for i, ex in enumerate(examples):
        ok = (
            isinstance(ex, dict)
            and set(ex) == {"input", "output"}
            and isinstance(ex["input"], str)
            and ex["input"].strip()
            and isinstance(ex["output"], dict)
        )
        if not ok:
            problems.append(
                Problem(
                    f'examples[{i}]: must be {{"input": non-empty text, "output": '
                    "{an answer object}}",
                    where,
                )
            )
    if problems:
        raise KgcError(problems)
    return SchemaInfo(dict(desc), list(examples))


def convert_record(
    task: Task,
    rec: Any,
    index: int,
    schema: Schema,
    *,
    split: str,
    language: str,
    opts: SamplingOptions,
    source: str | None,
    default_source: str = "",
    info: SchemaInfo | None = None,
) -> tuple[list[dict], list[str], str | None]:
    """One raw record → (instruction records, problems, reason it produced none)."""
    if not isinstance(rec, dict):
        return [], [f"record must be a JSON object, got {type(rec).__name__}"], None
    text = rec.get("text")
    if not isinstance(text, str) or not text.strip():
        shown = "missing" if "text" not in rec else repr(text)[:40]
        return [], [f"field 'text' must be a non-empty string ({shown})"], None
    key = task.annotation_key
    anns = rec.get(key)
    if anns is None:
        if split == "train":
            return (
                [],
                [
                    f"field {key!r} is missing; train records need annotations "
                    f"(use --split test to convert unannotated text)"
                ],
                None,
            )
    else:
        problems = task.validate(anns, schema)
        if problems:
            return [], problems, None
        anns = task.clean(anns)
    own = rec.get("source") if isinstance(rec.get("source"), str) else None
    src = source or own or default_source  # --source, then the record's, then the folder's
    rng = record_rng(opts.seed, index, text)
    prepared = task.prepare(anns, schema) if anns is not None else None
    if split == "train":
        chunks = task.train_chunks(prepared, schema, rng, opts, text)
    else:
        chunks = task.test_chunks(prepared, schema, rng, opts, text)
    if not chunks:
        if split == "train" and opts.neg_prob <= 0:
            return [], [], "no gold labels and --neg-prob 0"
        return [], [], f"no {key} annotations for {task.name}"
    out = []
    for chunk in chunks:
        instruction = task.instruction(language, chunk, text, info)
        if split == "train":
            target = task.target(prepared, chunk, text)
            out.append(
                {
                    "task": task.name,
                    "source": src,
                    "instruction": instruction,
                    "output": dumps(target),
                }
            )
        else:
            item = {
                "id": text_id(text),
                "task": task.name,
                "source": src,
                "instruction": instruction,
            }
            if anns is not None:
                item["label"] = dumps(anns)
            out.append(item)
    return out, [], None


def convert_rows(
    task: Task,
    rows: Iterable[tuple[int, Any]],
    schema: Schema,
    *,
    split: str,
    language: str,
    opts: SamplingOptions,
    source: str | None = None,
    default_source: str = "",
    path: str = "<input>",
    info: SchemaInfo | None = None,
) -> tuple[list[dict], ConvertStats, list[Problem]]:
    stats = ConvertStats()
    problems: list[Problem] = []
    out: list[dict] = []
    for lineno, rec in rows:
        stats.records_in += 1
        recs, probs, skipped = convert_record(
            task,
            rec,
            lineno,
            schema,
            split=split,
            language=language,
            opts=opts,
            source=source,
            default_source=default_source,
            info=info,
        )
        problems.extend(Problem(p, path, lineno) for p in probs)
        if skipped:
            stats.skipped[skipped] += 1
        if isinstance(rec, dict) and task.annotation_key not in rec and not probs:
            stats.label_less += 1
        out.extend(recs)
    stats.records_out = len(out)
    return out, stats, problems


def read_hard_negatives(path: str | os.PathLike, task: Task, schema: Schema) -> dict:
    p = check_readable(path, "hard-negatives file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise KgcError(Problem(f"not valid JSON ({exc.msg}, line {exc.lineno})", str(p))) from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in data.values()
    ):
        raise KgcError(
            Problem('must be a JSON object {"label": ["hard negative label", ...]}', str(p))
        )
    if not isinstance(task, LabelTask):
        raise KgcError(
            f"--hard-negatives works for NER, RE, SPO and EET, not {task.name}; drop the option"
        )
    universe = set(task.universe(schema))
    unknown = sorted({x for k, v in data.items() for x in [k, *v] if x not in universe})
    if unknown:
        raise KgcError(
            Problem(
                f"labels not in the schema: {', '.join(unknown[:10])}; every label and hard "
                "negative must be a schema label",
                str(p),
            )
        )
    return data


def check_options(
    task: Task, split: str, language: str, opts: SamplingOptions | None
) -> SamplingOptions:
    """The options every input format's conversion checks first (split, language, sampling)."""
    if split not in SPLITS:
        raise KgcError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    from kgc.instructions import instruction_text

    instruction_text(task.name, language)  # validates the language early
    opts = opts or SamplingOptions()
    if opts.split_num == 0 or opts.split_num < -1:
        raise KgcError(f"--split-num must be -1 (no split) or >= 1, got {opts.split_num}")
    if not 0.0 <= opts.neg_prob <= 1.0:
        raise KgcError(f"--neg-prob must be between 0 and 1, got {opts.neg_prob}")
    return opts


def convert_file(
    task_name: str,
    input_path: str | os.PathLike,
    schema_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    split: str = "train",
    language: str = "zh",
    opts: SamplingOptions | None = None,
    source: str | None = None,
    hard_negatives: str | os.PathLike | None = None,
    schema_info: str | os.PathLike | None = None,
) -> ConvertStats:
    """Convert a file; on any problem nothing is written and every problem is raised."""
    task = get_task(task_name)
    opts = check_options(task, split, language, opts)
    check_readable(input_path)
    schema = read_schema(schema_path)
    schema_problems = task.check_schema(schema)
    if schema_problems:
        raise KgcError([Problem(p, str(schema_path)) for p in schema_problems])
    if hard_negatives is not None:
        hn = read_hard_negatives(hard_negatives, task, schema)
        opts = SamplingOptions(**{**opts.__dict__, "hard_negatives": hn})
    info = read_schema_info(schema_info, task, schema) if schema_info is not None else None
    problems: list[Problem] = []
    rows = list(read_jsonl(input_path, problems))
    out, stats, rec_problems = convert_rows(
        task,
        rows,
        schema,
        split=split,
        language=language,
        opts=opts,
        source=source,
        default_source=Path(input_path).resolve().parent.name,
        path=str(input_path),
        info=info,
    )
    problems.extend(rec_problems)
    if problems:
        problems.sort(key=lambda p: p.line or 0)
        raise KgcError(problems + [Problem(f"nothing written to {output_path}")])
    write_jsonl_atomic(output_path, out)
    return stats
