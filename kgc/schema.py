"""The IEPile 3-line schema file: line 1 type list, line 2 role/relation list, line 3 type→roles.

Which line a task uses: NER, EET and SPO line 1; RE line 2; EE, EEA and KG line 3.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from kgc.errors import KgcError, Problem
from kgc.io import check_readable

_LINE_SHAPES = (
    "a JSON list of strings (entity / event / typed-relation types)",
    "a JSON list of strings (relations or argument roles)",
    'a JSON object mapping each type to a list of roles, e.g. {"人物": ["出生日期"]}',
)


@dataclass(frozen=True)
class Schema:
    types: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    type_roles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    path: str = "<schema>"

    @classmethod
    def from_lists(cls, types=(), roles=(), type_roles=None, path: str = "<schema>") -> Schema:
        tr = {k: tuple(v) for k, v in (type_roles or {}).items()}
        return cls(tuple(types), tuple(roles), tr, path)


def _check_str_list(value, lineno: int, path: str, problems: list[Problem]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        problems.append(
            Problem(
                f"schema line {lineno} must be {_LINE_SHAPES[lineno - 1]}, got "
                f"{type(value).__name__}: {json.dumps(value, ensure_ascii=False)[:80]}",
                path,
                lineno,
            )
        )
        return ()
    return tuple(value)


def read_schema(path: str | os.PathLike) -> Schema:
    """Read and validate a schema file; every shape problem is reported with its line."""
    p = check_readable(path, "schema file")
    spath = str(p)
    lines = [(i, ln) for i, ln in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)]
    lines = [(i, ln) for i, ln in lines if ln.strip()]
    if len(lines) != 3:
        raise KgcError(
            Problem(
                f"schema file must have exactly 3 non-empty lines (types list, roles list, "
                f"type→roles object), found {len(lines)}; see the IEPile schema format in the "
                "README",
                spath,
            )
        )
    problems: list[Problem] = []
    values = []
    for lineno, (_, raw) in enumerate(lines, 1):
        try:
            values.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            problems.append(
                Problem(
                    f"schema line {lineno} is not valid JSON ({exc.msg}); it must be "
                    f"{_LINE_SHAPES[lineno - 1]}",
                    spath,
                    lineno,
                )
            )
            values.append(None)
    if problems:
        raise KgcError(problems)
    types = _check_str_list(values[0], 1, spath, problems)
    roles = _check_str_list(values[1], 2, spath, problems)
    type_roles: dict[str, tuple[str, ...]] = {}
    third = values[2]
    if not isinstance(third, dict):
        problems.append(
            Problem(
                f"schema line 3 must be {_LINE_SHAPES[2]}, got {type(third).__name__}",
                spath,
                3,
            )
        )
    else:
        for k, v in third.items():
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                problems.append(
                    Problem(
                        f"schema line 3: roles of type {k!r} must be a list of strings, got "
                        f"{json.dumps(v, ensure_ascii=False)[:80]}",
                        spath,
                        3,
                    )
                )
                continue
            type_roles[k] = tuple(v)
    if problems:
        raise KgcError(problems)
    return Schema(types, roles, type_roles, spath)
