"""LLMICL: NER, RE, EE and RTE by in-context learning, and CCKS2023 instruction KGC.

Prompts (kgc's own wording, English and Chinese) ask for the JSON layouts kgc's task parsers
read, so answers become the same records as fine-tuned models' (`kgc.tasks`). Demonstrations
are chat turns (user: text, assistant: answer). DeepKE's demonstration files are accepted as
they are; its NER file carries no input text, so those answers are shown as examples of the
format only (and counted in the summary).

Input records (JSON list or JSONL), gold optional (scored when present):
- ner: {text[, entity: [{entity, entity_type}] | data: [{E, W}]]}
- re:  {text, head_entity, tail_entity[, head_type, tail_type, relation]}
- ee:  {text[, event_list: [{event_type, arguments: [{role, argument}]}] | event: [...]]}
- rte: {text[, labels: [[subject, predicate, object]]]}
- ccks2023: {input (or text)[, instruction, output | label | kg]} — the 2023 format,
  answers `(head,relation,tail)` per line, scored with F1, ROUGE-2 and 0.5·F1 + 0.5·ROUGE-2.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kgc.errors import KgcError, Problem
from kgc.icl.common import (
    NONE_WORDS,
    first_answer_line,
    fmt_prf,
    norm_label,
    sample,
    score_groups,
    seeded_rng,
)
from kgc.icl.config import IclConfig
from kgc.icl.data import Where, read_records, record_id, str_field, unique_ids
from kgc.icl.runner import Plan, Request, params_for
from kgc.parsing import ParseResult, as_text, extract_json

TASK_OF = {"ner": "NER", "re": "RE", "ee": "EE", "rte": "RE"}
GROUPS = {"ner": ("entity",), "re": ("triple",), "rte": ("triple",), "ee": ("trigger", "argument")}


# ----------------------------------------------------------------------------- prompts
def _join(labels: list[str], language: str) -> str:
    return ("、" if language == "zh" else ", ").join(labels)


def instruction(task: str, language: str, domain: str | None, labels: list[str] | None) -> str:
    """The system message for a task (kgc's wording, from prompts/llmicl.json)."""
    segments = _prompts().get(task)
    if segments is None:
        raise KgcError(f"llmicl.task {task!r} has no built-in instruction")
    # None: not given (no domain, no labels); a label list of one "" is given and joins to ""
    given = {"domain": domain or None, "labels": _join(labels, language) if labels else None}
    out = []
    for seg in segments["zh" if language == "zh" else "en"]:
        if isinstance(seg, str):
            out.append(seg)
        elif given[seg["if"]] is not None:
            out.append(seg["then"].replace("{" + seg["if"] + "}", given[seg["if"]]))
        else:
            out.append(seg["else"])
    return "".join(out)


@functools.cache
def _prompts() -> dict:
    """task → language → segments: a string is literal; {"if": "domain" | "labels", "then",
    "else"} is `then` with the value put in for `{domain}` / `{labels}` when it is given."""
    text = (resources.files("kgc.icl") / "prompts" / "llmicl.json").read_text(encoding="utf-8")
    return json.loads(text)


def user_message(task: str, language: str, rec: dict) -> str:
    zh = language == "zh"
    text = rec.get("text") or rec.get("input") or ""
    if task == "re":
        ht = f"（{rec['head_type']}）" if zh and rec.get("head_type") else ""
        tt = f"（{rec['tail_type']}）" if zh and rec.get("tail_type") else ""
        if zh:
            return (
                f"文本：{text}\n头实体：{rec['head_entity']}{ht}\n尾实体：{rec['tail_entity']}{tt}"
                "\n头实体与尾实体的关系："
            )
        ht = f" ({rec['head_type']})" if rec.get("head_type") else ""
        tt = f" ({rec['tail_type']})" if rec.get("tail_type") else ""
        return (
            f"Text: {text}\nHead entity: {rec['head_entity']}{ht}\n"
            f"Tail entity: {rec['tail_entity']}{tt}\nRelation of the head entity to the tail "
            "entity:"
        )
    if task == "ccks2023":
        inst = rec.get("instruction") or ""
        return f"{inst}\n{'输入：' if zh else 'Input: '}{text}".strip()
    return f"{'文本：' if zh else 'Text: '}{text}"


# ----------------------------------------------------------------------------- gold / answers
def gold_records(task: str, rec: dict) -> list[dict] | None:
    """Gold annotation of an input or demonstration record, in kgc's record shape."""
    if task == "ner":
        if isinstance(rec.get("entity"), list):
            return [
                {"entity": e["entity"], "entity_type": e["entity_type"]}
                for e in rec["entity"]
                if isinstance(e, dict) and isinstance(e.get("entity"), str)
                and isinstance(e.get("entity_type"), str)
            ]  # fmt: skip
        for key in ("data", "entities"):
            if isinstance(rec.get(key), list):
                return _ew_records(rec[key])
        return None
    if task == "re":
        rel = rec.get("relation")
        if not isinstance(rel, str):
            return None
        if norm_label(rel) in {norm_label(w) for w in NONE_WORDS} | {"norelation"}:
            return []
        return [{"head": rec["head_entity"], "relation": rel, "tail": rec["tail_entity"]}]
    if task == "ee":
        if isinstance(rec.get("event_list"), list):
            return _event_list_records(rec["event_list"])
        if isinstance(rec.get("event"), list):
            return _event_list_records(rec["event"])
        return None
    if task == "rte":
        for key in ("labels", "triple_list"):
            if isinstance(rec.get(key), list):
                return [
                    {"head": str(t[0]), "relation": str(t[1]), "tail": str(t[2])}
                    for t in rec[key]
                    if isinstance(t, (list, tuple)) and len(t) == 3
                ]
        if isinstance(rec.get("relation"), list):
            return [
                {"head": r["head"], "relation": r["relation"], "tail": r["tail"]}
                for r in rec["relation"]
                if isinstance(r, dict) and all(isinstance(r.get(k), str) for k in ("head", "relation", "tail"))
            ]  # fmt: skip
        return None
    return None


def _ew_records(items: list) -> list[dict]:
    out = []
    for e in items:
        if not isinstance(e, dict):
            continue
        ent = as_text(e.get("W", e.get("entity", e.get("text"))))
        typ = as_text(e.get("E", e.get("entity_type", e.get("type"))))
        if ent and typ:
            out.append({"entity": ent, "entity_type": typ})
    return out


def _event_list_records(events: list) -> list[dict]:
    out = []
    for ev in events:
        if not isinstance(ev, dict) or not isinstance(ev.get("event_type"), str):
            continue
        args = []
        for a in ev.get("arguments") or []:
            if isinstance(a, dict):
                arg, role = as_text(a.get("argument")), as_text(a.get("role"))
                if arg and role:
                    args.append({"argument": arg, "role": role})
        trig = ev.get("event_trigger", ev.get("trigger"))
        out.append(
            {
                "event_type": ev["event_type"],
                "event_trigger": trig if isinstance(trig, str) else "",
                "arguments": args,
            }
        )
    return out


def answer_text(task: str, records: list[dict], labels: list[str] | None = None) -> str:
    """A demonstration's answer, written exactly as the prompt asks the model to answer."""
    if task == "ner":
        out: dict[str, list[str]] = {t: [] for t in labels or []}
        for r in records:
            out.setdefault(r["entity_type"], []).append(r["entity"])
        return json.dumps(out, ensure_ascii=False)
    if task == "re":
        return records[0]["relation"] if records else "NONE"
    if task == "ee":
        ev_out: dict[str, list[dict]] = {}
        for r in records:
            item: dict[str, Any] = {}
            if r.get("event_trigger"):
                item["trigger"] = r["event_trigger"]
            args: dict[str, Any] = {}
            for a in r["arguments"]:
                prev = args.get(a["role"])
                if prev is None:
                    args[a["role"]] = a["argument"]
                else:
                    args[a["role"]] = [*([prev] if isinstance(prev, str) else prev), a["argument"]]
            item["arguments"] = args
            ev_out.setdefault(r["event_type"], []).append(item)
        return json.dumps(ev_out, ensure_ascii=False)
    if task == "rte":
        return json.dumps(
            [[r["head"], r["relation"], r["tail"]] for r in records], ensure_ascii=False
        )
    raise KgcError(f"no answer format for task {task!r}")


# ----------------------------------------------------------------------------- parsing
def parse_answer(task: str, text: str, labels: list[str] | None = None) -> ParseResult:
    """The model's answer → kgc records and errors. Never raises."""
    try:
        return _parse(task, text, labels)
    except Exception as exc:  # noqa: BLE001 - a parser bug must not lose the row
        return ParseResult([], [f"internal parser error: {type(exc).__name__}: {exc}"], False)


def _parse(task: str, text: str, labels: list[str] | None) -> ParseResult:
    from kgc.tasks import get

    if not isinstance(text, str):
        return ParseResult([], [f"output is {type(text).__name__}, not text"], False)
    if task == "re":
        ans = first_answer_line(text)
        res = ParseResult()
        if not ans:
            res.errors.append("empty output")
            res.readable = False
        elif norm_label(ans) in {norm_label(w) for w in NONE_WORDS}:
            pass
        elif labels:
            match = {norm_label(x): x for x in labels}.get(norm_label(ans))
            if match is None:
                res.errors.append(f"answer {ans[:60]!r} is not one of the candidate relations")
            else:
                res.records.append({"relation": match})
        else:
            res.records.append({"relation": ans})
        return res
    value, errors = extract_json(text)
    res = ParseResult([], list(errors))
    if value is None:
        res.readable = not errors
        return res
    if task == "ner":
        if isinstance(value, list) and any(
            isinstance(v, dict) and ("W" in v or "E" in v) for v in value
        ):
            res.records.extend(_ew_records(value))  # the [{"E": type, "W": entity}] layout
        else:
            get("NER").read_value(value, res)
        if labels:
            allowed = set(labels)
            bad = sorted({r["entity_type"] for r in res.records} - allowed)
            if bad:
                res.errors.append(f"entity types not in the labels dropped: {bad[:5]}")
                res.records = [r for r in res.records if r["entity_type"] in allowed]
    elif task == "ee":
        if isinstance(value, list):
            res.records.extend(_event_list_records(value))
        else:
            get("EE").read_value(value, res)
    elif task == "rte":
        if isinstance(value, list) and all(isinstance(v, (list, tuple)) for v in value):
            for v in value:
                parts = [as_text(x) for x in v]
                if len(parts) == 3 and all(parts):
                    res.records.append({"head": parts[0], "relation": parts[1], "tail": parts[2]})
                else:
                    res.errors.append(f"skipped triple {str(v)[:60]!r}")
        else:
            from kgc.tasks.relation import read_pairs

            read_pairs(value, res)
        if labels:
            by_norm = {norm_label(x): x for x in labels}
            kept = []
            for r in res.records:
                m = by_norm.get(norm_label(r["relation"]))
                if m is None:
                    res.errors.append(f"predicate {r['relation'][:40]!r} is not in the labels")
                else:
                    kept.append({**r, "relation": m})
            res.records = kept
    return res


# ----------------------------------------------------------------------------- demos
@dataclass
class Demo:
    user: str | None  # None: an answer without its text (DeepKE's NER demo file)
    answer: str


def demo_path(cfg: IclConfig) -> Path | None:
    d = cfg.llmicl.demos
    if not d:
        return None
    p = Path(d)
    if not p.is_dir():
        return p
    task = cfg.llmicl.task
    langs = ("cn", "zh", "ch") if cfg.language == "zh" else ("en",)
    for lang in langs:
        for ext in (".json", ".jsonl"):
            f = p / f"{task}_{lang}{ext}"
            if f.is_file():
                return f
    raise KgcError(
        Problem(
            f"no demonstration file for task {task!r} and language {cfg.language!r} in the "
            f"folder; expected {task}_{langs[0]}.json (llmicl.demos)",
            str(p),
        )
    )


def load_demos(cfg: IclConfig) -> tuple[list[Demo], int]:
    """(demonstrations, how many of them have no input text)."""
    path = demo_path(cfg)
    if path is None:
        return [], 0
    task, lang, labels = cfg.llmicl.task, cfg.language, cfg.llmicl.labels
    records = read_records(path, "demonstration file (llmicl.demos)")
    if (
        task == "ner"
        and len(records) == 1
        and isinstance(records[0][1], dict)
        and isinstance(records[0][1].get("samples"), list)
    ):
        where = records[0][0]
        records = [
            (Where(where.path, i, "sample"), s) for i, s in enumerate(records[0][1]["samples"], 1)
        ]
    problems: list[Problem] = []
    demos: list[Demo] = []
    no_text = 0
    for where, rec in records:
        if task == "ccks2023":
            src = rec.get("input") or rec.get("text") if isinstance(rec, dict) else None
            out = rec.get("output") if isinstance(rec, dict) else None
            if not isinstance(src, str) or not isinstance(out, str):
                problems.append(
                    where.problem(
                        "a CCKS2023 demonstration needs string fields 'input' and 'output' "
                        "((head,relation,tail) lines)"
                    )
                )
                continue
            demos.append(Demo(user_message(task, lang, rec), out))
            continue
        if task == "re":
            for f in ("text", "head_entity", "tail_entity", "relation"):
                str_field(rec, f, where, problems)
            if problems:
                continue
        gold = gold_records(task, rec) if isinstance(rec, dict) else None
        if gold is None:
            need = {
                "ner": "'entity' ([{entity, entity_type}]) or 'data' ([{E, W}])",
                "re": "'relation'",
                "ee": "'event_list' or 'event'",
                "rte": "'labels' ([[subject, predicate, object]])",
            }[task]
            problems.append(where.problem(f"a demonstration needs its answer in field {need}"))
            continue
        has_text = isinstance(rec.get("text"), str) and rec["text"].strip()
        if not has_text:
            if task != "ner":
                str_field(rec, "text", where, problems)
                continue
            no_text += 1
        demos.append(
            Demo(
                user_message(task, lang, rec) if has_text else None, answer_text(task, gold, labels)
            )
        )
    if problems:
        raise KgcError(problems)
    demos = sample(demos, cfg.llmicl.num_demos, seeded_rng(cfg.llmicl.seed, "llmicl-demos"))
    return demos, sum(d.user is None for d in demos) if no_text else 0


def messages_for(system: str, demos: list[Demo], user: str, language: str) -> list[dict]:
    format_only = [d.answer for d in demos if d.user is None]
    if format_only:
        head = "\n答案示例：\n" if language == "zh" else "\nExamples of answers:\n"
        system = system + head + "\n".join(format_only)
    msgs = [{"role": "system", "content": system}] if system else []
    for d in demos:
        if d.user is not None:
            msgs += [
                {"role": "user", "content": d.user},
                {"role": "assistant", "content": d.answer},
            ]
    msgs.append({"role": "user", "content": user})
    return msgs


# ----------------------------------------------------------------------------- the mode
def read_inputs(cfg: IclConfig, single: dict | None) -> list[tuple[str, dict]]:
    task = cfg.llmicl.task
    if single is not None:
        rec = dict(single)
        if task == "re":
            for f in ("head_entity", "head_type", "tail_entity", "tail_type"):
                if rec.get(f) is None and getattr(cfg.llmicl, f):
                    rec[f] = getattr(cfg.llmicl, f)
            missing = [f for f in ("head_entity", "tail_entity") if not rec.get(f)]
            if missing:
                raise KgcError(
                    f"llmicl.task=re with --text needs the entity pair: give --head and --tail "
                    f"(or llmicl.head_entity / llmicl.tail_entity); missing {missing}"
                )
        return [("text:1", rec)]
    if not cfg.input:
        raise KgcError("input (a JSON/JSONL file) or --text is required")
    out = []
    problems: list[Problem] = []
    text_field = "input" if task == "ccks2023" else "text"
    for where, rec in read_records(cfg.input):
        if task == "ccks2023" and isinstance(rec, dict) and "input" not in rec and "text" in rec:
            text_field_here = "text"
        else:
            text_field_here = text_field
        str_field(rec, text_field_here, where, problems)
        if task == "re":
            str_field(rec, "head_entity", where, problems, "; give the pair to classify")
            str_field(rec, "tail_entity", where, problems, "; give the pair to classify")
        if isinstance(rec, dict):
            out.append((record_id(rec, where), rec))
    if problems:
        raise KgcError(problems)
    return unique_ids(out)


def plan(cfg: IclConfig, client, single: dict | None) -> Plan:
    task, lang = cfg.llmicl.task, cfg.language
    labels = cfg.llmicl.labels
    inputs = read_inputs(cfg, single)
    demos, no_text = load_demos(cfg)
    requests = []
    if task == "ccks2023":
        from kgc import legacy

        fallback = legacy.instruction(labels, lang) if labels else None
        for rid, rec in inputs:
            if not isinstance(rec.get("instruction"), str):
                if fallback is None:
                    raise KgcError(
                        f"record {rid}: field 'instruction' is missing; give it in the input or "
                        "set llmicl.labels (the candidate relations) to use kgc's instruction"
                    )
                rec = {**rec, "instruction": fallback}
            system = cfg.llmicl.instruction or ""
            msgs = messages_for(system, demos, user_message(task, lang, rec), lang)
            requests.append(Request(rid, msgs, params_for(cfg, max_tokens=512, temperature=0.0)))
    else:
        system = cfg.llmicl.instruction or instruction(task, lang, cfg.llmicl.domain, labels)
        for rid, rec in inputs:
            msgs = messages_for(system, demos, user_message(task, lang, rec), lang)
            mt = 32 if task == "re" else 512
            requests.append(Request(rid, msgs, params_for(cfg, max_tokens=mt, temperature=0.0)))

    def finish(comps):
        return _finish(cfg, inputs, comps, len(demos), no_text)

    return Plan(requests, finish)


def _finish(cfg: IclConfig, inputs, comps, n_demos: int, no_text: int):
    task, labels = cfg.llmicl.task, cfg.llmicl.labels
    rows = []
    pairs = []
    ccks_rows = []
    for (rid, rec), comp in zip(inputs, comps):
        row: dict[str, Any] = {"id": rid, "task": task}
        if task == "ccks2023":
            from kgc import legacy

            triples, errors = legacy.parse(comp.text, labels or ())
            records = [{"head": h, "relation": r, "tail": t} for h, r, t in triples]
            row["input"] = rec.get("input") or rec.get("text")
            gold_text = rec.get("label") if isinstance(rec.get("label"), str) else rec.get("output")
            if isinstance(gold_text, str):
                ccks_rows.append((len(ccks_rows) + 1, {"output": comp.text, "label": gold_text}))
            elif isinstance(rec.get("kg"), list) or isinstance(rec.get("relation"), list):
                g = {k: rec[k] for k in ("kg", "relation") if k in rec}
                ccks_rows.append((len(ccks_rows) + 1, {"output": comp.text, **g}))
        else:
            res = parse_answer(task, comp.text, labels)
            records, errors = res.records, res.errors
            row["text"] = rec.get("text")
            if task == "re":
                records = [
                    {
                        "head": rec["head_entity"],
                        "relation": r["relation"],
                        "tail": rec["tail_entity"],
                    }
                    for r in records
                ]
                row["head_entity"], row["tail_entity"] = rec["head_entity"], rec["tail_entity"]
            gold = gold_records(task, rec)
            if gold is not None:
                row["gold"] = gold
                pairs.append(_tuples(task, records, gold))
        if comp.error:
            errors = [f"request failed: {comp.error}", *errors]
        row.update(output=comp.text, records=records, errors=errors, cached=comp.cached)
        rows.append(row)
    summary: dict[str, Any] = {
        "task": task,
        "language": cfg.language,
        "rows": len(rows),
        "demonstrations": n_demos,
        "rows_with_errors": sum(bool(r["errors"]) for r in rows),
        "records": sum(len(r["records"]) for r in rows),
    }
    if no_text:
        summary["demonstrations_without_text"] = no_text
    if task == "ccks2023" and ccks_rows:
        from kgc import legacy

        rep = legacy.evaluate_rows(ccks_rows, language=cfg.language)
        summary["scored_rows"] = len(ccks_rows)
        summary["scores"] = {
            "f1": rep["scores"]["triple"]["f1"],
            "precision": rep["scores"]["triple"]["precision"],
            "recall": rep["scores"]["triple"]["recall"],
            "rouge-2": rep["rouge"]["rouge-2"],
            "ccks_score": rep["ccks_score"],
        }
        summary["report"] = (
            f"CCKS2023: F1 {rep['scores']['triple']['f1']:.4f}  ROUGE-2 "
            f"{rep['rouge']['rouge-2']:.4f}  score {rep['ccks_score']:.4f}"
        )
    elif pairs:
        scores = score_groups(pairs, GROUPS[task])
        summary["scored_rows"] = len(pairs)
        summary["scores"] = scores
        summary["report"] = "  ".join(f"{g}: {fmt_prf(s)}" for g, s in scores.items())
    return rows, summary


def _tuples(task: str, pred: list[dict], gold: list[dict]):
    from kgc.tasks import get

    t = get(TASK_OF[task])
    if task == "ee" and not any(g.get("event_trigger") for g in gold):
        # the gold has no triggers (DeepKE's EE files): events are matched by type only
        pred = [{**p, "event_trigger": ""} for p in pred]
    return t.tuples(pred), t.tuples(gold)
