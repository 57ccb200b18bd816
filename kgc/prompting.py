"""Instruction records → one chat turn (query, target), and the input text inside it.

Two record layouts are understood:
- IEPile: `instruction` is the JSON string {"instruction", "schema", "input"} and is itself
  the user message (as OneKE and the *-iepile-lora models were trained); `output` is the target.
- CCKS2023 / InstructIE (legacy): text fields `instruction`, `input`, `output`; the user
  message is `instruction` + "\\n" + `input`.

Length budgets shorten the *input text* only, so the instruction, the schema, the template's
assistant marker and the target's closing survive truncation.
"""

from __future__ import annotations

import json
import os
from typing import Any

from kgc.errors import KgcError, Problem
from kgc.io import read_jsonl


def is_legacy(record: dict) -> bool:
    return isinstance(record.get("input"), str)


def query_of(record: dict) -> str:
    if is_legacy(record):
        inp = record["input"]
        return record["instruction"] + ("\n" + inp if inp else "")
    return record["instruction"]


def input_text(record: dict) -> str:
    """The document text of a record (what truncation may shorten)."""
    if is_legacy(record):
        return record["input"]
    try:
        inst = json.loads(record["instruction"])
    except (json.JSONDecodeError, TypeError):
        return ""
    return inst.get("input", "") if isinstance(inst, dict) else ""


def with_input(record: dict, text: str) -> dict:
    """A copy of the record whose input text is `text` (instruction JSON re-dumped in order)."""
    if is_legacy(record):
        return {**record, "input": text}
    inst = json.loads(record["instruction"])
    inst["input"] = text
    return {**record, "instruction": json.dumps(inst, ensure_ascii=False)}


def check_record(rec: Any, need_output: bool = True) -> str | None:
    if not isinstance(rec, dict):
        return f"record must be a JSON object, got {type(rec).__name__}"
    if not isinstance(rec.get("instruction"), str):
        return "field 'instruction' must be a string (an IEPile instruction or legacy text)"
    if need_output and not isinstance(rec.get("output"), str):
        hint = (
            " — this looks like a test record (it has 'label'); convert with --split train"
            if "label" in rec
            else ""
        )
        return f"field 'output' (the target text) is missing or not a string{hint}"
    if not is_legacy(rec):
        try:
            inst = json.loads(rec["instruction"])
        except json.JSONDecodeError:
            return "field 'instruction' is neither IEPile instruction JSON nor has an 'input' field"
        if not isinstance(inst, dict):
            return "field 'instruction' must decode to a JSON object"
    return None


def read_sft_records(path: str | os.PathLike, need_output: bool = True) -> list[dict]:
    """Training/validation records; every bad line is reported (file, line, problem)."""
    problems: list[Problem] = []
    records: list[dict] = []
    for lineno, rec in read_jsonl(path, problems):
        msg = check_record(rec, need_output)
        if msg:
            problems.append(Problem(msg, str(path), lineno))
        else:
            records.append(rec)
    if problems:
        raise KgcError(problems)
    if not records:
        raise KgcError(Problem("no records: the file is empty", str(path)))
    return records
