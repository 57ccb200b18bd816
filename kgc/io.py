"""JSONL reading with line-numbered errors, and atomic writing (no half-written outputs)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
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
    Malformed means: not valid JSON, not valid UTF-8 (reported with the byte and where it is in the line),
    or a string holding a lone surrogate escape such as ``"\\ud800"`` (reported with the
    field; such a string is not text and cannot be written back as UTF-8, so it is an error,
    never replaced in silence).
    """
    p = check_readable(path)
    # surrogateescape: a byte that is not UTF-8 becomes one of U+DC80..U+DCFF instead of a
    # UnicodeDecodeError with no line number; `iter_jsonl_lines` reports it with its line
    with p.open("r", encoding="utf-8", errors="surrogateescape") as fh:
        yield from iter_jsonl_lines(fh, str(p), problems)


def iter_jsonl_lines(
    lines: Iterable[str], name: str, problems: list[Problem] | None = None
) -> Iterator[tuple[int, Any]]:
    """`read_jsonl` over any iterable of text lines (a remote file's contents, say).

    Lines decoded with ``errors="surrogateescape"`` (see `decode_utf8`) have their invalid
    UTF-8 bytes reported here, line by line."""
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        msg = undecodable(raw)
        if msg is None:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                msg = (
                    f"malformed JSON ({exc.msg} at column {exc.colno}); each line must be one "
                    "JSON object"
                )
            else:
                msg = lone_surrogate(raw, value)
        if msg is not None:
            prob = Problem(msg, name, lineno)
            if problems is None:
                raise KgcError(prob) from None
            problems.append(prob)
            continue
        yield lineno, value


# U+DC80..U+DCFF: what `surrogateescape` makes of a byte that is not UTF-8
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def decode_utf8(data: bytes) -> str:
    """Bytes → text; a byte that is not UTF-8 is kept as U+DC80..U+DCFF (surrogateescape) for
    `undecodable` to report with its place instead of raising UnicodeDecodeError."""
    return data.decode("utf-8", errors="surrogateescape")


def undecodable(text: str) -> str | None:
    """The problem with a line decoded by `decode_utf8`, or None if it was valid UTF-8."""
    m = _ESCAPED_BYTE.search(text)
    if m is None:
        return None
    byte = ord(m.group()) - 0xDC00
    return (
        f"invalid UTF-8 (byte 0x{byte:02x} at character {m.start() + 1}); the file must be "
        "UTF-8 text: re-encode it (e.g. `iconv -f cp1252 -t utf-8 FILE > FILE.utf8`)"
    )


def lone_surrogate(raw: str, value: Any) -> str | None:
    """The problem if a string in `value` (parsed from the JSON line `raw`) holds a lone
    surrogate, which JSON's \\uXXXX escapes allow but UTF-8 cannot encode; else None."""
    if "\\u" not in raw or not _SURROGATE_ESCAPE.search(raw):
        return None  # no surrogate escape in the line: nothing to walk
    found = _find_surrogate(value, "")
    if found is None:
        return None  # escapes that form valid pairs (an emoji, say)
    where, char = found
    field = f"field '{where}'" if where else "the value"
    return (
        f'{field} holds a lone surrogate escape "\\u{ord(char):04x}" (half of a UTF-16 '
        "pair, not a character, and not writable as UTF-8); fix the producer of this file, "
        "or replace the escape with the intended character or \\ufffd"
    )


def _find_surrogate(value: Any, path: str) -> tuple[str, str] | None:
    if isinstance(value, str):
        m = _SURROGATE.search(value)
        return (path, m.group()) if m else None
    if isinstance(value, dict):
        for k, v in value.items():
            m = _SURROGATE.search(k)
            if m:  # the key itself: shown escaped, it cannot be printed
                key = ascii(k)[1:-1]
                return (f"{path}.{key}" if path else key, m.group())
            found = _find_surrogate(v, f"{path}.{k}" if path else k)
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _find_surrogate(v, f"{path}[{i}]")
            if found:
                return found
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A new, empty temporary file next to ``path`` (same folder, so the rename is atomic),
    renamed over ``path`` when the block completes; on an error it is removed and ``path``
    is left as it was. For writers that want a path (csv, rdflib, networkx, binary files);
    `atomic_file` gives a text handle on top of it.

    The folder is created if missing. The temporary name is ``.<name>.<pid>.<random>.tmp``,
    created exclusively (no two writers share one), with the permissions any new file gets
    (the umask), which the final file keeps."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Any]:
    """A UTF-8 text file handle whose contents replace ``path`` only when the block
    completes; on an error the temporary file is removed and ``path`` is left as it was."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        yield fh


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


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """``obj`` as one JSON document (UTF-8 text kept as is), written atomically."""
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=indent))
