"""Name canonicalisation: the key two surface forms must share to become one node.

`canonical("Barack  OBAMA")` → ``"barack obama"``: Unicode NFKC (full-width → half-width,
compatibility forms folded), whitespace collapsed and stripped, case folded — each step can
be switched off. An alias table then maps canonical aliases onto canonical names
(``{"Obama": "Barack Obama"}``): both sides are canonicalised the same way, chains are
followed (``a → b → c``) and a cycle is an error, never a silent loop.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path

from kgc.errors import KgcError, Problem

_SPACE = re.compile(r"\s+")


class Canonicaliser:
    def __init__(
        self,
        *,
        nfkc: bool = True,
        whitespace: bool = True,
        casefold: bool = True,
        aliases: Mapping[str, str] | None = None,
    ):
        self.nfkc, self.whitespace, self.casefold = nfkc, whitespace, casefold
        self.display: dict[str, str] = {}  # canonical name → the name as the table writes it
        raw: dict[str, str] = {}
        for alias, name in (aliases or {}).items():
            a, n = self.normalise(alias), self.normalise(name)
            if not a or not n:
                raise KgcError(
                    f"alias table entry {alias!r} → {name!r} has an empty side after "
                    "normalisation; remove it"
                )
            if a != n:
                raw[a] = n
            self.display.setdefault(n, _tidy(name))
        self.aliases = {a: _follow(a, raw) for a in raw}

    def normalise(self, name: str) -> str:
        s = unicodedata.normalize("NFKC", name) if self.nfkc else name
        s = _SPACE.sub(" ", s).strip() if self.whitespace else s
        return s.casefold() if self.casefold else s

    def key(self, name: str) -> str:
        """The merge key of a surface form (alias table applied)."""
        n = self.normalise(name)
        return self.aliases.get(n, n)

    def preferred(self, key: str) -> str | None:
        """The display name the alias table gives a key, if any."""
        return self.display.get(key)


def _tidy(name: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", name)).strip()


def _follow(start: str, table: dict[str, str]) -> str:
    seen = [start]
    cur = table[start]
    while cur in table:
        if cur in seen:
            raise KgcError(
                f"alias table has a cycle: {' → '.join([*seen, cur])}; "
                "make every chain end at one canonical name"
            )
        seen.append(cur)
        cur = table[cur]
    return cur


def load_alias_file(path: str) -> dict[str, str]:
    """Aliases from a JSON/YAML mapping ``{alias: name}`` or a TSV of ``alias<TAB>name`` lines."""
    p = Path(path)
    if not p.is_file():
        raise KgcError(Problem("alias file does not exist; check canonical.alias_file", path))
    text = p.read_text(encoding="utf-8")
    if p.suffix in (".json", ".yaml", ".yml"):
        import yaml

        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise KgcError(
                Problem(f"alias file is not valid {p.suffix[1:]}: {exc}", path)
            ) from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise KgcError(
                Problem('alias file must be a mapping of strings {"alias": "name"}', path)
            )
        return dict(data)
    out: dict[str, str] = {}
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            problems.append(Problem("each line must be `alias<TAB>canonical name`", path, n))
            continue
        out[parts[0]] = parts[1]
    if problems:
        raise KgcError(problems)
    return out
