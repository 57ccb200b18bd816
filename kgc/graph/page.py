"""What the graph view and the document view share: the type colours, JSON embedded in a
page, the page template's slots, and the package's page assets."""

from __future__ import annotations

import functools
import json
import re
from importlib import resources

from kgc.graph.clean import json_line_safe

PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f77b4",
    "#2ca02c",
]


def colour(i: int, name: str) -> str:
    """The colour of the i-th type (by node count) in both views."""
    if i < len(PALETTE):
        return PALETTE[i]
    h = sum(ord(c) * 31**k for k, c in enumerate(name[:16])) % 360
    return f"hsl({h}, 55%, 55%)"


def tint(c: str) -> str:
    """A light version of `colour`'s colours, for highlighted text."""
    if c.startswith("#") and len(c) == 7:
        return c + "38"
    if c.startswith("hsl(") and c.endswith(")"):
        return "hsla(" + c[4:-1] + ", 0.22)"
    return c


def embed_json(data) -> str:
    """`data` as JSON text for a <script type="application/json"> element: `<`, `>` and `&`
    escaped (no `</script>` or `<!--` can end or change the script element), the line
    separators U+2028/U+2029 escaped too; text no UTF-8 file can hold was replaced when the
    graph was built (`kgc.graph.clean`)."""
    return json_line_safe(
        json.dumps(data, ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


_SLOT = re.compile(r"__(TITLE|CSS|JS|DATA)__")


def fill(page: str, **parts: str) -> str:
    """The template's __TITLE__, __CSS__, __JS__, __DATA__ slots filled in one pass (a title
    or data holding "__JS__" stays as it is)."""
    return _SLOT.sub(lambda m: parts[m.group(1)], page)


@functools.cache
def asset(name: str) -> str:
    """One of the viewer files (read once)."""
    return (resources.files("kgc.graph") / name).read_text(encoding="utf-8")
