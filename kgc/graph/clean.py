"""Graph text made safe for every export, once, where it enters the graph.

Extraction rows are model output and user documents: a name, label or sentence may hold any
code point JSON can carry, including NUL and other control characters and lone UTF-16
surrogates (``"\\ud800"`` in the JSON). Surrogates cannot be encoded as UTF-8 at all, and XML
1.0 (GraphML) forbids most C0 controls even as character references, so such characters
cannot be escaped away later: `clean` replaces each with U+FFFD (the replacement character)
as the row is read. One character becomes one character, so document offsets and spans stay
valid. `RowMapper` counts every string it changed by field (`sanitized` in the summary), so
nothing changes silently.

Replaced: C0 controls other than tab, LF and CR; DEL and the C1 controls (U+007F–U+009F);
surrogates (U+D800–U+DFFF); the non-characters U+FFFE and U+FFFF (not XML characters).
Kept: everything else, including tab/newline, quotes, backslashes and the line separators
U+2028/U+2029, which each export escapes by its own rules.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

REPLACEMENT = "\ufffd"
BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# strings in records are counted under their key when it is one of these (else "record")
RECORD_FIELDS = frozenset(
    (
        "entity",
        "entity_type",
        "head",
        "head_type",
        "relation",
        "tail",
        "tail_type",
        "event_type",
        "event_trigger",
        "argument",
        "role",
    )
)


def clean(s: str) -> tuple[str, int]:
    """(s with every unsafe character replaced by U+FFFD, the number replaced)."""
    if BAD_CHARS.search(s) is None:  # the common case: no copy
        return s, 0
    return BAD_CHARS.subn(REPLACEMENT, s)


def clean_str(s: str) -> str:
    return clean(s)[0]


def clean_value(v: Any, counts: Counter | None = None, field: str = "record") -> Any:
    """`v` with every string inside it cleaned (dict values, list/tuple/set items; dict keys
    are kept). Each changed string adds 1 to counts[field], the field being the key of the
    innermost record dict holding it (see RECORD_FIELDS)."""
    if isinstance(v, str):
        out, n = clean(v)
        if n and counts is not None:
            counts[field] += 1
        return out
    if isinstance(v, dict):
        return {k: clean_value(x, counts, k if k in RECORD_FIELDS else field) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return type(v)(clean_value(x, counts, field) for x in v)
    return v


# ----------------------------------------------------------------------------- per format
_LINE_SEPARATORS = {"\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_line_safe(text: str) -> str:
    """JSON text with U+2028/U+2029 escaped (the same JSON value): `str.splitlines` and
    JavaScript before ES2019 treat them as line breaks, so a JSONL line stays one line."""
    if "\u2028" in text or "\u2029" in text:
        for ch, esc in _LINE_SEPARATORS.items():
            text = text.replace(ch, esc)
    return text


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(s: str) -> str:
    """A string XML 1.0 can hold: characters outside its Char production replaced (they
    cannot be written even as &#...; references); markup characters are the writer's job."""
    return _XML_BAD.sub(REPLACEMENT, s)


_TURTLE_ESC = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_TURTLE_BAD = re.compile('[\\\\"\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]')


def _turtle_char(m: re.Match) -> str:
    ch = m.group()
    esc = _TURTLE_ESC.get(ch)
    if esc is not None:
        return esc
    if "\ud800" <= ch <= "\udfff":  # not a code point a UCHAR may name
        return "\\uFFFD"
    return f"\\u{ord(ch):04X}"


def turtle_string(s: str) -> str:
    """A Turtle STRING_LITERAL_QUOTE ("..."): quote, backslash and line breaks as ECHAR,
    other controls and the line separators as \\uXXXX, so the literal is one line."""
    return '"' + _TURTLE_BAD.sub(_turtle_char, s) + '"'
