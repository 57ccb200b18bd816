"""Model output text → JSON value, tolerant of what real models emit; never raises.

Handles: markdown code fences, prose before/after the JSON, single-quoted strings, bare
(unquoted) words, Python literals, trailing/double commas, `NAN`, full-width colons, and
truncated output (generation cut at max_new_tokens): complete items are kept, the item that
was cut is dropped, and the truncation is reported as an error.

Model output is data: it is parsed here, never evaluated.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 64
NAN_WORDS = frozenset({"", "NAN", "NONE", "NULL", "N/A"})

_DECODER = json.JSONDecoder()
_FENCE = re.compile(r"```[A-Za-z0-9_+-]*[^\S\n]*\n?(.*?)(?:```|\Z)", re.S)
_WS = " \t\r\n\u3000\ufeff"
_BARE_STOP = ',:{}[]"\n，：'
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_STRING_SPECIAL = {q: re.compile(r"[\\" + q + "]") for q in "\"'"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/", "\\": "\\"}
_AFTER_STRING = ",:}]，："


@dataclass
class ParseResult:
    """Records extracted from one model output, plus what went wrong (empty when clean)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: False when no JSON value at all could be read from the output
    readable: bool = True

    @property
    def ok(self) -> bool:
        return not self.errors


class _EOF(Exception):
    pass


class _TooDeep(Exception):
    pass


class _Lenient:
    """A forgiving recursive-descent JSON reader. Every loop step consumes input or returns."""

    def __init__(self, s: str, pos: int):
        self.s = s
        self.i = pos
        self.n = len(s)
        self.truncated = False
        self.repairs: list[str] = []

    def ws(self) -> None:
        s, n, i = self.s, self.n, self.i
        while i < n and s[i] in _WS:
            i += 1
        self.i = i

    def value(self, depth: int) -> Any:
        self.ws()
        if self.i >= self.n:
            raise _EOF
        c = self.s[self.i]
        if c == "{":
            return self.obj(depth + 1)
        if c == "[":
            return self.arr(depth + 1)
        if c in "\"'":
            return self.string()
        if c in ",}]":
            self.repairs.append("missing value")
            return None
        if c in ":：":
            self.i += 1
            self.repairs.append("stray colon")
            return None
        return self.bare()

    def obj(self, depth: int) -> dict:
        if depth > MAX_DEPTH:
            raise _TooDeep
        self.i += 1
        out: dict[str, Any] = {}
        while True:
            self.ws()
            if self.i >= self.n:
                self.truncated = True
                return out
            c = self.s[self.i]
            if c == "}":
                self.i += 1
                return out
            if c in ",，":
                self.i += 1
                continue
            if c in "]:：":
                self.i += 1
                self.repairs.append(f"unexpected {c!r} in object")
                continue
            try:
                key = self.string() if c in "\"'" else self.bare(key=True)
                self.ws()
                if self.i >= self.n:
                    raise _EOF
                if self.s[self.i] in ":：":
                    self.i += 1
                else:
                    self.repairs.append("missing ':' after key")
                value = self.value(depth)
            except _EOF:
                self.truncated = True
                return out
            key = key if isinstance(key, str) else json.dumps(key)
            if key in out and isinstance(out[key], list) and isinstance(value, list):
                out[key] = out[key] + value  # a repeated key (e.g. one predicate twice) merges
            else:
                out[key] = value

    def arr(self, depth: int) -> list:
        if depth > MAX_DEPTH:
            raise _TooDeep
        self.i += 1
        out: list[Any] = []
        while True:
            self.ws()
            if self.i >= self.n:
                self.truncated = True
                return out
            c = self.s[self.i]
            if c == "]":
                self.i += 1
                return out
            if c in ",，":
                self.i += 1
                continue
            if c in "}:：":
                self.i += 1
                self.repairs.append(f"unexpected {c!r} in list")
                continue
            try:
                out.append(self.value(depth))
            except _EOF:
                self.truncated = True
                return out

    def string(self) -> str:
        s, n = self.s, self.n
        q = s[self.i]
        special = _STRING_SPECIAL[q]
        i = self.i + 1
        buf: list[str] = []
        while True:
            m = special.search(s, i)
            if m is None:
                self.i = n
                raise _EOF
            j = m.start()
            buf.append(s[i:j])
            if s[j] == "\\":
                if j + 1 >= n:
                    self.i = n
                    raise _EOF
                e = s[j + 1]
                if e == "u":
                    hexpart = s[j + 2 : j + 6]
                    if len(hexpart) < 4 and j + 6 > n:
                        self.i = n
                        raise _EOF
                    try:
                        buf.append(chr(int(hexpart, 16)))
                        i = j + 6
                    except ValueError:
                        buf.append("\\u")
                        i = j + 2
                    continue
                buf.append(_ESCAPES.get(e, e))
                i = j + 2
                continue
            # A quote closes the string only when a delimiter (or the end) follows it, so an
            # unescaped quote inside a value (O'Brien, 5'11") stays part of the value.
            k = j + 1
            while k < n and s[k] in _WS:
                k += 1
            if k >= n or s[k] in _AFTER_STRING:
                self.i = j + 1
                if q == "'":
                    self.repairs.append("single-quoted string")
                return "".join(buf)
            buf.append(q)
            i = j + 1

    def bare(self, key: bool = False) -> Any:
        s, n = self.s, self.n
        start = i = self.i
        stops = _BARE_STOP
        while i < n and s[i] not in stops:
            i += 1
        if i == start:  # a delimiter we cannot use here: skip it so the loop advances
            self.i = i + 1
            self.repairs.append(f"unexpected {s[start]!r}")
            return None
        if i >= n:
            self.i = n
            raise _EOF  # a bare token that runs into the end may have been cut
        self.i = i
        tok = s[start:i].strip()
        if key:
            return tok
        low = tok.lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("null", "none"):
            return None
        if low in ("nan", "n/a"):
            return "NAN"
        if _NUMBER.fullmatch(tok):
            try:
                return json.loads(tok)
            except ValueError:
                return tok
        self.repairs.append("unquoted word")
        return tok


def strip_fences(text: str) -> str:
    if "```" not in text:
        return text
    m = _FENCE.search(text)
    if m and ("{" in m.group(1) or "[" in m.group(1)):
        return m.group(1)
    return text.replace("```", "")


def extract_json(text: Any, *, opening: str = "{[") -> tuple[Any, list[str]]:
    """Find and read the JSON value in a model's output.

    Returns (value, errors). value is None when nothing usable was found; errors is empty
    when the output was read without losing anything (quirks such as single quotes are
    repaired silently).
    """
    if not isinstance(text, str):
        return None, [f"output is {type(text).__name__}, not text"]
    s = strip_fences(text)
    starts = [p for p in (s.find(ch) for ch in opening) if p >= 0]
    if not starts:
        word = s.strip().strip("。.").upper()
        if word in NAN_WORDS and word:
            return None, []  # the model said "nothing" in words
        return None, ["no JSON object in output" if s.strip() else "empty output"]
    start = min(starts)
    try:
        value, _ = _DECODER.raw_decode(s, start)
        return value, []
    except (ValueError, RecursionError):
        pass
    reader = _Lenient(s, start)
    try:
        value = reader.value(0)
    except _TooDeep:
        return None, [f"output nests deeper than {MAX_DEPTH} levels"]
    except _EOF:
        return None, ["output ends inside its first value (truncated)"]
    errors = []
    if reader.truncated:
        errors.append("output is truncated JSON; complete items were kept")
    return value, errors


def is_nan(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().upper() in NAN_WORDS


def as_values(value: Any) -> list[str]:
    """A role/attribute value that may be a string, a number or a (nested) list → strings."""
    if is_nan(value) or isinstance(value, bool):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (int, float)):
        return [str(value)]
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for v in value:
            if not isinstance(v, (list, tuple, dict)):
                out.extend(as_values(v))
        return out
    return []


def as_text(value: Any) -> str | None:
    """A single string slot (entity, trigger, subject): one string or number, else None."""
    vals = as_values(value)
    return vals[0] if len(vals) == 1 else None
