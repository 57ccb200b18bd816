"""kgc.io's atomic writers: the whole file or nothing, no temporary files left behind."""

from __future__ import annotations

import json
import os
import stat

import pytest

from kgc.io import atomic_file, atomic_path, write_json_atomic, write_jsonl_atomic


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_path_renames_when_done_and_makes_the_folder(tmp_path):
    dest = tmp_path / "a" / "b" / "out.bin"
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.is_file() and not dest.exists()
        tmp.write_bytes(b"\x00data")
    assert dest.read_bytes() == b"\x00data"
    assert os.listdir(dest.parent) == ["out.bin"]
    # a new file's permissions, not a private temporary file's
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~_umask()


def test_atomic_path_error_keeps_the_old_file(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("boom")
    assert dest.read_text(encoding="utf-8") == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_nested_writers_to_one_path_get_distinct_temporary_files(tmp_path):
    dest = tmp_path / "x.txt"
    with atomic_path(dest) as a, atomic_path(dest) as b:
        assert a != b
        b.write_text("inner", encoding="utf-8")
        a.write_text("outer", encoding="utf-8")
    assert dest.read_text(encoding="utf-8") == "outer"  # the last rename wins
    assert os.listdir(tmp_path) == ["x.txt"]


def test_text_and_json_writers(tmp_path):
    def rows():
        yield {"t": "张三"}
        raise ValueError("producer failed")

    with pytest.raises(ValueError):
        write_jsonl_atomic(tmp_path / "r.jsonl", rows())
    assert os.listdir(tmp_path) == []
    assert write_jsonl_atomic(tmp_path / "r.jsonl", [{"t": "张三"}, [1]]) == 2
    assert (tmp_path / "r.jsonl").read_text(encoding="utf-8") == '{"t": "张三"}\n[1]\n'
    with atomic_file(tmp_path / "t.txt") as fh:
        fh.write("é\n")
    assert (tmp_path / "t.txt").read_bytes() == "é\n".encode()
    write_json_atomic(tmp_path / "s.json", {"a": [1], "b": "ü"})
    assert (tmp_path / "s.json").read_text(encoding="utf-8") == json.dumps(
        {"a": [1], "b": "ü"}, ensure_ascii=False, indent=1
    )
