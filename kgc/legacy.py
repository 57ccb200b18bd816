"""The 2023 CCKS2023 / InstructIE text format (DeepKE's `kg2instruction`), relation triples.

Records `{text, relation: [{head, relation, tail}]}` become
`{"id", "instruction", "input", "output"}` with the output written one triple per line as
`(head,relation,tail)` (`NAN` when there is none). Scoring parses gold and predicted texts the
same way and reports triple F1, ROUGE-1/2/L and the CCKS2023 score 0.5·F1 + 0.5·ROUGE-2.
The instruction wording here is kgc's own; only the output layout follows the 2023 format.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from kgc.convert import text_id
from kgc.errors import KgcError, Problem
from kgc.io import dumps
from kgc.metrics import PRF, count
from kgc.tasks.base import position

FORMATS = ("iepile", "ccks2023")
TASKS = ("RE",)

_INSTRUCTION = {
    "zh": (
        "候选关系列表：{relations}。请从下面的输入文本中找出所有符合候选关系的三元组，"
        "每行写一个，格式为(头实体,关系,尾实体)；若不存在符合的关系，只输出NAN。"
    ),
    "en": (
        "Candidate relations: {relations}. Find every triple in the input text below whose "
        "relation is a candidate, one per line, written as (head entity,relation,tail entity); "
        "if there is none, output only NAN."
    ),
}
_LINE = re.compile(r"[(（](.*)[)）]")
_SEP = re.compile(r"[,，]")


def instruction(relations: list[str], language: str) -> str:
    if language not in _INSTRUCTION:
        raise KgcError(f"--language must be zh or en, got {language!r}")
    return _INSTRUCTION[language].format(relations=dumps(relations))


def render(triples: Iterable[tuple[str, str, str]], text: str = "") -> str:
    triples = sorted(triples, key=lambda t: (position(text, t[0]), position(text, t[2])))
    return "\n".join(f"({h},{r},{t})" for h, r, t in triples) or "NAN"


def parse(
    output: Any, relations: Iterable[str] = ()
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """`(head,relation,tail)` lines → triples; never raises. Commas inside a head or tail are
    resolved with the known relation names when given (else the 2nd field is the relation)."""
    if not isinstance(output, str):
        return [], [f"output is {type(output).__name__}, not text"]
    rels = set(relations)
    triples, errors = [], []
    for raw in output.splitlines():
        line = raw.strip()
        if not line or line.strip("。.").upper() == "NAN":
            continue
        m = _LINE.search(line)
        parts = [p.strip() for p in _SEP.split(m.group(1) if m else line)]
        if len(parts) < 3:
            errors.append(f"not a (head,relation,tail) line: {line[:60]!r}")
            continue
        idx = next((i for i in range(1, len(parts) - 1) if parts[i] in rels), 1)
        head, rel, tail = ",".join(parts[:idx]), parts[idx], ",".join(parts[idx + 1 :])
        if not head or not rel or not tail or head.upper() == "NAN" or tail.upper() == "NAN":
            continue
        triples.append((head, rel, tail))
    return triples, errors


def gold_triples(rec: dict) -> list[tuple[str, str, str]] | None:
    """Gold from `relation` dicts, a CCKS `kg` list of [h, r, t], or None if absent."""
    if isinstance(rec.get("relation"), list):
        return [
            (r["head"], r["relation"], r["tail"])
            for r in rec["relation"]
            if isinstance(r, dict)
            and all(isinstance(r.get(k), str) for k in ("head", "relation", "tail"))
        ]
    if isinstance(rec.get("kg"), list):
        return [tuple(x) for x in rec["kg"] if isinstance(x, list) and len(x) == 3]
    return None


def convert_rows(rows, *, split: str, language: str, relations: list[str] | None, path: str):
    rows = list(rows)
    problems: list[Problem] = []
    if relations is None:
        relations = sorted(
            {t[1] for _, r in rows if isinstance(r, dict) for t in (gold_triples(r) or [])}
        )
    rel_set = set(relations)
    out = []
    for lineno, rec in rows:
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str) or not rec["text"]:
            problems.append(Problem("record needs a non-empty string field 'text'", path, lineno))
            continue
        gold = gold_triples(rec)
        if gold is None and split == "train":
            problems.append(
                Problem("field 'relation' is missing; train records need it", path, lineno)
            )
            continue
        for _h, r, _t in gold or []:
            if r not in rel_set:
                problems.append(
                    Problem(
                        f"field 'relation' value {r!r} is not in the schema relations; add it to "
                        "line 2 of the schema file",
                        path,
                        lineno,
                    )
                )
        text = rec["text"]
        item: dict[str, Any] = {"id": text_id(text)}
        if isinstance(rec.get("cate"), str):
            item["cate"] = rec["cate"]
        item["instruction"] = instruction(relations, language)
        item["input"] = text
        if gold is not None:
            item["output" if split == "train" else "label"] = render(gold, text)
        out.append(item)
    return out, problems


def evaluate_rows(
    rows: Iterable[tuple[int, Any]],
    *,
    path: str = "<input>",
    language: str | None = None,
    segmenter: str = "char",
    match: str = "multiset",
    normalize: bool = True,
) -> dict:
    from kgc.rouge import rouge

    problems: list[Problem] = []
    total = PRF()
    sums: Counter = Counter()
    n = parse_errors = 0
    for lineno, rec in rows:
        if not isinstance(rec, dict) or "output" not in rec:
            problems.append(
                Problem("record needs the model's text in field 'output'", path, lineno)
            )
            continue
        label = rec.get("label")
        if isinstance(label, str):
            gold, _ = parse(label)
            gold_text = label
        else:
            gold = gold_triples(rec)
            if gold is None:
                problems.append(
                    Problem("no gold: give 'label' (gold text), 'relation' or 'kg'", path, lineno)
                )
                continue
            gold_text = render(gold, rec.get("input", ""))
        pred, errs = parse(rec["output"])
        parse_errors += bool(errs)
        total.add(count(pred, gold, match=match, normalize=normalize))
        out = rec["output"] if isinstance(rec["output"], str) else ""
        sums.update(rouge(out, gold_text, language, segmenter))
        n += 1
    if problems:
        raise KgcError(problems)
    r = {k: (sums[k] / n if n else 0.0) for k in ("rouge-1", "rouge-2", "rouge-l")}
    return {
        "task": "RE",
        "format": "ccks2023",
        "records": n,
        "lines": n,
        "parse_errors": parse_errors,
        "unparseable": 0,
        "scores": {"triple": total.as_dict()},
        "by_source": {},
        "rouge": r,
        "ccks_score": 0.5 * total.f1 + 0.5 * r["rouge-2"],
    }


def relations_from_schema(path) -> list[str]:
    from kgc.schema import read_schema

    schema = read_schema(path)
    rels = list(schema.roles)
    if not rels:
        raise KgcError(Problem("line 2 (relations) of the schema is empty", str(path)))
    return rels


__all__ = ["FORMATS", "convert_rows", "evaluate_rows", "parse", "render", "json"]
