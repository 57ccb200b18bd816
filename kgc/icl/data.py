"""Reading ICL inputs and demonstration files (a JSON list, one JSON object, or JSONL).

Every record keeps where it came from (`Where`), so a problem names the file, the line or
list item, the field, the bad value and the fix.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgc.errors import KgcError, Problem
from kgc.io import check_readable


@dataclass(frozen=True)
class Where:
    path: str
    number: int  # line (JSONL) or 1-based item (JSON list)
    kind: str = "line"

    def problem(self, message: str) -> Problem:
        if self.kind == "line":
            return Problem(message, self.path, self.number)
        return Problem(f"item {self.number}: {message}", self.path)

    @property
    def id(self) -> str:
        return f"{Path(self.path).name}:{self.number}"


def read_records(path: str | os.PathLike, what: str = "input file") -> list[tuple[Where, Any]]:
    """All records of a file: a JSON list, a single JSON object, or JSON Lines."""
    p = check_readable(path, what)
    text = p.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if not stripped:
        raise KgcError(Problem(f"the {what} is empty", str(p)))
    if stripped[0] == "[":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KgcError(
                Problem(
                    f"not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}); give a "
                    "JSON list of objects or one JSON object per line",
                    str(p),
                )
            ) from None
        return [(Where(str(p), i, "item"), v) for i, v in enumerate(value, 1)]
    if stripped[0] == "{":
        try:
            return [(Where(str(p), 1, "item"), json.loads(text))]  # one (pretty-printed) object
        except json.JSONDecodeError:
            pass
    out: list[tuple[Where, Any]] = []
    problems: list[Problem] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((Where(str(p), n), json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(
                Problem(
                    f"malformed JSON ({exc.msg} at column {exc.colno}); each line must be one "
                    "JSON object (or give the whole file as one JSON list)",
                    str(p),
                    n,
                )
            )
    if problems:
        raise KgcError(problems)
    return out


def record_id(rec: Any, where: Where) -> str:
    rid = rec.get("id") if isinstance(rec, dict) else None
    return str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) else where.id


def unique_ids(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Repeated ids get `#n` suffixes: two records with one id stay two rows."""
    seen: dict[str, int] = {}
    out = []
    for rid, rec in items:
        seen[rid] = seen.get(rid, 0) + 1
        out.append((rid if seen[rid] == 1 else f"{rid}#{seen[rid]}", rec))
    return out


def str_field(rec: Any, name: str, where: Where, problems: list[Problem], fix: str = "") -> str:
    """A required non-empty string field; '' (and a problem) when it is not one."""
    if not isinstance(rec, dict):
        problems.append(where.problem(f"record must be a JSON object, got {type(rec).__name__}"))
        return ""
    value = rec.get(name)
    if not isinstance(value, str) or not value.strip():
        shown = "missing" if name not in rec else f"{json.dumps(value, ensure_ascii=False)[:60]}"
        problems.append(where.problem(f"field {name!r} must be a non-empty string ({shown}){fix}"))
        return ""
    return value


_TOKEN = re.compile(r"\w+(?:[-'.]\w+)*|[^\w\s]", re.UNICODE)


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """Words and punctuation with character offsets (a PTB-like split for TACRED files)."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


PTB_UNESCAPE = {
    "-LRB-": "(",
    "-RRB-": ")",
    "-LSB-": "[",
    "-RSB-": "]",
    "-LCB-": "{",
    "-RCB-": "}",
    "``": '"',
    "''": '"',
}


def detokenize(tokens: list[str]) -> str:
    return " ".join(PTB_UNESCAPE.get(t, t) for t in tokens)
