"""JSONL reading with line-numbered errors, and atomic writing (no half-written outputs)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kgc.errors import KgcError, Problem


def dumps(obj: Any) -> str:
    """JSON the way IEPile writes it: UTF-8 text kept as is, default separators."""
    return json.dumps(obj, ensure_ascii=False)


def check_readable(path: str | os.PathLike, what: str = "input file") -> Path:
    p = Path(path)
    if not p.exists():
        raise KgcError(Problem(f"{what} does not exist; check the path", str(p)))
    if not p.is_file():
        raise KgcError(Problem(f"{what} is not a regular file", str(p)))
    return p


def read_jsonl(
    path: str | os.PathLike, problems: list[Problem] | None = None
) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed value) for every non-blank line of a JSONL file.

    A malformed line is reported, never skipped in silence: it raises at once, or, when the
    caller passes a ``problems`` list, is appended there so all bad lines are reported together.
    """
    p = check_readable(path)
    with p.open("r", encoding="utf-8") as fh:
        yield from iter_jsonl_lines(fh, str(p), problems)


def iter_jsonl_lines(
    lines: Iterable[str], name: str, problems: list[Problem] | None = None
) -> Iterator[tuple[int, Any]]:
    """`read_jsonl` over any iterable of text lines (a remote file's contents, say)."""
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            prob = Problem(
                f"malformed JSON ({exc.msg} at column {exc.colno}); each line must be one "
                "JSON object",
                name,
                lineno,
            )
            if problems is None:
                raise KgcError(prob) from None
            problems.append(prob)
            continue
        yield lineno, value


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Any]:
    """A text file handle whose contents replace ``path`` only when the block completes;
    on an error the temporary file is removed and ``path`` is left as it was."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.parent or "."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write records as JSONL to a temporary file and rename it over ``path`` when complete.

    If producing the records fails part-way, the temporary file is removed and ``path`` is
    left as it was, so a reader never sees half an output.
    """
    count = 0
    with atomic_file(path) as fh:
        for rec in records:
            fh.write(dumps(rec))
            fh.write("\n")
            count += 1
    return count


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)
