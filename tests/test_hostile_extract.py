"""`kgc extract` against damaged outputs and inputs: a shard cut short or not UTF-8, a copied
shard, a document removed between runs (each set aside, counted, and the rerun converges to
every current id exactly once), and input files that are not UTF-8 or hold lone surrogates
(named file:line problems, never a traceback)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import IEPILE, read_jsonl, write_jsonl

from kgc.config import ExtractConfig, load_config
from kgc.errors import KgcError
from kgc.rows import row_id
from kgc.shards import (
    QUARANTINE,
    SHARDS,
    read_rows,
    scan_shards,
    settle_shards,
    shard_files,
    write_shard,
)

pytestmark = pytest.mark.timeout(300)


def rows_of(doc: str, n: int, output: str = "out") -> list[dict]:
    """`n` rows of document `doc`, with every field a written row has."""
    return [
        {
            "id": row_id(doc, i, i + 1, []),
            "doc_id": doc,
            "chunk_index": i,
            "chunk_start": i,
            "chunk_end": i + 1,
            "task": "NER",
            "schema": "[]",
            "instruction": json.dumps({"input": "x"}),
            "source": "",
            "label": None,
            "output": output,
            "records": "[]",
            "errors": "[]",
            "model_id": "test",
        }
        for i in range(n)
    ]


def ids(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows]


def shards_dir(out: Path) -> Path:
    d = out / SHARDS
    d.mkdir(parents=True, exist_ok=True)
    return d


# ----------------------------------------------------------------------------- B1: damaged shards
def _cut(text: bytes) -> bytes:
    return text[: text.rindex(b'"model_id"')]  # the last row loses its end and its newline


def _bad_utf8(text: bytes) -> bytes:
    lines = text.split(b"\n")
    lines[2] = lines[2].replace(b'"out"', b'"o\xffut"')
    return b"\n".join(lines)


def _not_a_row(text: bytes) -> bytes:
    lines = text.split(b"\n")
    lines[1] = b'{"id": "x"}'
    return b"\n".join(lines)


@pytest.mark.parametrize(
    "damage, line, needle",
    [
        (_cut, 4, r"malformed JSON \(.* at column \d+\); the last line is cut short"),
        (_bad_utf8, 3, r"invalid UTF-8 \(byte 0xff at character \d+\)"),
        (_not_a_row, 2, r"the row lacks \['doc_id'.*not a `kgc extract` row"),
        (lambda text: b"", 1, "the shard is empty"),
    ],
    ids=["cut-short", "not-utf8", "not-a-row", "empty"],
)
def test_damaged_shard_is_named_set_aside_and_its_rows_left_to_redo(
    damage, line, needle, tmp_path, capsys
):
    good, bad = rows_of("a", 4), rows_of("b", 4)
    keep = write_shard(shards_dir(tmp_path), good, "jsonl")
    hurt = write_shard(shards_dir(tmp_path), bad, "jsonl")
    damaged = damage(hurt.read_bytes())
    hurt.write_bytes(damaged)
    # a plain reader names the file and line and the fix, never a raw decode error
    with pytest.raises(KgcError, match=rf"{hurt}:{line}: {needle}.*rerun the same"):
        read_rows(tmp_path)
    expected = set(ids(good + bad))
    scan = scan_shards(tmp_path, expected)
    assert [(f, p.line) for f, p in scan.corrupt] == [(hurt, line)]
    assert ids(scan.rows) == ids(good)  # none of the damaged shard's rows is trusted
    assert expected - set(ids(scan.rows)) == set(ids(bad))  # what a rerun extracts again
    moved = settle_shards(tmp_path, scan)
    dest = tmp_path / QUARANTINE / f"{hurt.name}.corrupt-1"
    assert moved == [
        {
            "shard": hurt.name,
            "moved_to": str(dest),
            "reason": str(scan.corrupt[0][1]),
            "rows_kept": 0,
        }
    ]
    assert dest.read_bytes() == damaged  # kept as it was, for inspection
    err = capsys.readouterr().err
    assert f"kgc extract: warning: {hurt}:{line}: " in err and str(dest) in err
    assert shard_files(tmp_path) == [keep]
    assert ids(read_rows(tmp_path)) == ids(good)


def test_quarantine_never_overwrites_and_parquet_damage_is_named(tmp_path):
    out = shards_dir(tmp_path)
    first = write_shard(out, rows_of("a", 2), "parquet")
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])
    settle_shards(tmp_path, scan_shards(tmp_path))
    again = write_shard(out, rows_of("a", 2), "parquet")  # the same name, damaged again
    again.write_bytes(data[:10])
    scan = scan_shards(tmp_path)
    assert scan.corrupt and "unreadable Parquet shard" in str(scan.corrupt[0][1])
    assert str(again) in str(scan.corrupt[0][1])
    settle_shards(tmp_path, scan)
    q = sorted(p.name for p in (tmp_path / QUARANTINE).iterdir())
    assert q == [f"{first.name}.corrupt-1", f"{first.name}.corrupt-2"]
    assert (tmp_path / QUARANTINE / q[0]).read_bytes() == data[: len(data) // 2]


# ----------------------------------------------------------------------------- B2: duplicates, removed documents
def test_copied_shard_first_name_wins_and_the_rest_is_counted(tmp_path, capsys):
    out = shards_dir(tmp_path)
    a = write_shard(out, rows_of("a", 3), "jsonl")
    # the same rows under two more names (a copy made by hand, a re-split batch), each with
    # different outputs so that the copy kept is visible; one sorts before the original
    early = out / "part-000.jsonl"
    late = out / "part-zzz.jsonl"
    for f, tag in ((early, "early"), (late, "late")):
        f.write_text("".join(json.dumps(r) + "\n" for r in rows_of("a", 3, tag)))
    # and a shard overlapping the original by one row
    partial = write_shard(out, rows_of("a", 3)[2:] + rows_of("b", 2), "jsonl")
    expected = set(ids(rows_of("a", 3) + rows_of("b", 2)))
    scan = scan_shards(tmp_path, expected)
    assert not scan.corrupt and scan.stale == 0
    assert scan.duplicates == 3 + 3 + 1
    assert Counter(ids(scan.rows)) == Counter(expected)  # each id once
    kept = {r["id"]: r["output"] for r in scan.rows}
    assert set(kept[i] for i in ids(rows_of("a", 3))) == {"early"}  # the first name wins
    before = Counter(ids(read_rows(tmp_path)))
    moved = settle_shards(tmp_path, scan)
    assert sorted(m["shard"] for m in moved) == sorted([a.name, late.name, partial.name])
    assert {m["shard"]: m["rows_kept"] for m in moved}[partial.name] == 2
    assert "already in part-000.jsonl" in capsys.readouterr().err
    # rows/ now holds each id once; nothing is lost: every row set aside is in quarantine
    after = Counter(ids(read_rows(tmp_path)))
    assert after == Counter(expected)
    aside = Counter(
        r["id"]
        for f in (tmp_path / QUARANTINE).iterdir()
        for r in map(json.loads, f.read_text().splitlines())
    )
    assert after + aside - Counter(ids(rows_of("b", 2))) == before
    # and it has converged: the next scan finds nothing to set aside
    again = scan_shards(tmp_path, expected)
    assert (again.duplicates, again.stale, again.corrupt, again.rewrite) == (0, 0, [], {})


def test_rows_of_a_removed_document_are_set_aside_and_counted(tmp_path):
    mixed = write_shard(shards_dir(tmp_path), rows_of("kept", 3) + rows_of("gone", 2), "jsonl")
    only_gone = write_shard(shards_dir(tmp_path), rows_of("gone2", 2), "jsonl")
    expected = set(ids(rows_of("kept", 3)))
    scan = scan_shards(tmp_path, expected)
    assert scan.stale == 4 and scan.duplicates == 0
    assert Counter(ids(scan.rows)) == Counter(expected)
    moved = settle_shards(tmp_path, scan)
    assert {m["shard"]: m["rows_kept"] for m in moved} == {mixed.name: 3, only_gone.name: 0}
    assert all("no longer produces" in m["reason"] for m in moved)
    assert Counter(ids(read_rows(tmp_path))) == Counter(expected)
    assert len(list((tmp_path / QUARANTINE).iterdir())) == 2
    # scanning with no expected ids keeps every id (what an inspection would want)
    assert scan_shards(tmp_path).stale == 0


# ----------------------------------------------------------------------------- B3: input decoding
def doc_cfg(tmp_path, src, *overrides):
    data = {
        "input": {"path": str(src), "id_field": "id"},
        "task": "NER",
        "schema": str(IEPILE / "NER" / "schema.json"),
        "engine": {"type": "hf", "model": "unused"},
        "output": {"path": str(tmp_path / "out")},
    }
    return load_config(None, list(overrides), data=data, schema=ExtractConfig)


@pytest.mark.parametrize(
    "name, content, problems",
    [
        (
            "c.jsonl",
            b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n{"id": "c", "text": "\xff"}\n',
            [":2: invalid UTF-8 (byte 0xe9 at character 25)", ":3: invalid UTF-8 (byte 0xff"],
        ),
        (
            "c.jsonl",
            b'{"id": "a", "text": "x\\ud800y"}\n{"id": "b", "text": "ok", "m": ["\\udfff"]}\n',
            [
                ":1: field 'text' holds a lone surrogate escape \"\\ud800\"",
                ":2: field 'm[0]' holds a lone surrogate escape \"\\udfff\"",
            ],
        ),
        ("a.txt", b"line one\nline two\nthree \xff\xfe\n", [":3: invalid UTF-8 (byte 0xff"]),
    ],
    ids=["jsonl-not-utf8", "jsonl-lone-surrogate", "txt-not-utf8"],
)
def test_undecodable_input_is_a_named_problem(name, content, problems, tmp_path):
    from kgc.extract import read_documents

    src = tmp_path / name
    src.write_bytes(content)
    for path in (src, f"file://{src}"):  # local and through pyarrow's filesystems
        with pytest.raises(KgcError) as err:
            read_documents(doc_cfg(tmp_path, path))
        got = [str(p) for p in err.value.problems]
        assert len(got) == len(problems)
        for p, want in zip(got, problems):
            assert p.startswith(f"{path}{want}"), p
        assert "re-encode" in got[0] or "replace the escape" in got[0]


def test_surrogate_pairs_and_crlf_text_still_read(tmp_path):
    from kgc.extract import read_documents

    src = tmp_path / "c.jsonl"
    src.write_bytes(b'{"id": "a", "text": "smile \\ud83d\\ude00 \\u00e9"}\n')
    assert [d["text"] for d in read_documents(doc_cfg(tmp_path, src))] == ["smile 😀 é"]
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_bytes("naïve\r\ntext\n".encode())
    docs = read_documents(doc_cfg(tmp_path, tmp_path / "t", "input.format=txt"))
    assert [d["text"] for d in docs] == ["naïve\ntext\n"]  # universal newlines, as before


def test_instruction_input_and_plain_jsonl_readers_name_bad_bytes(tmp_path):
    from kgc.convert import convert_file
    from kgc.extract import read_instruction_rows
    from kgc.io import read_jsonl

    test = tmp_path / "ner.test.jsonl"
    convert_file(
        "NER", IEPILE / "NER" / "sample.json", IEPILE / "NER" / "schema.json", test, split="test"
    )
    lines = test.read_bytes().splitlines(keepends=True)
    test.write_bytes(b"".join(lines[:1] + [lines[1].replace(b'"', b'"\x80', 1)] + lines[2:]))
    with pytest.raises(KgcError, match=rf"^{test}:2: invalid UTF-8 \(byte 0x80"):
        read_instruction_rows(doc_cfg(tmp_path, test, "input.format=iepile"))
    with pytest.raises(KgcError, match=rf"^{test}:2: invalid UTF-8"):
        list(read_jsonl(test))  # without a problems list it raises at the first bad line


# ----------------------------------------------------------------------------- end to end
def test_rerun_over_damaged_output_and_a_shrunk_corpus_converges(
    local_ray, tiny_llama, tmp_path, capsys
):
    """Run, then damage everything a rerun can meet at once — a shard cut short, a copied
    shard, a document removed from the corpus — and rerun the same command: it completes
    with every current id exactly once, and counts everything it set aside."""
    from kgc.extract import DOCUMENTS, document_rows, read_documents
    from kgc.runtime.extract import run_extract

    texts = [r["text"] for r in read_jsonl(IEPILE / "NER" / "sample.json")]
    docs = [{"id": f"d{i}", "text": texts[i % len(texts)]} for i in range(8)]
    src = write_jsonl(tmp_path / "corpus.jsonl", docs)
    overrides = [
        "engine.batch_size=2",
        "workers.rows_per_call=2",  # several shards to damage
        "generation.max_new_tokens=2",
        "workers.num_actors=1",
        "workers.cpus_per_actor=1",
        "chunk.max_tokens=512",
        "output.format=jsonl",  # a shard cut mid-line, as the issue met it
    ]
    cfg = doc_cfg(tmp_path, src, f"engine.model={tiny_llama}", *overrides)
    first = run_extract(cfg, progress=False)
    assert first["shards_corrupt"] == first["rows_duplicate"] == first["rows_not_in_input"] == 0
    shards = shard_files(tmp_path / "out")
    assert len(shards) >= 3
    by_shard = {f: ids(read_jsonl(f)) for f in shards}
    doc_of = {r["id"]: r["doc_id"] for r in read_rows(tmp_path / "out")}

    cut, copied = shards[0], shards[1]
    cut.write_bytes(cut.read_bytes()[:-7])
    copy = copied.with_name("part-zzzz.jsonl")
    shutil.copy(copied, copy)
    by_shard[copy] = by_shard[copied]
    gone = doc_of[by_shard[shards[2]][0]]  # a document with rows in an intact shard
    write_jsonl(src, [d for d in docs if d["id"] != gone])

    cfg = doc_cfg(tmp_path, src, f"engine.model={tiny_llama}", *overrides)
    second = run_extract(cfg, progress=False)
    current = {
        r["id"]
        for d in read_documents(cfg)
        for r in document_rows(
            {"doc_id": d["doc_id"], "text": d["text"]}, cfg, _schema(cfg), _offsets(cfg)
        )
    }
    intact = [f for f in shards if f != cut] + [copy]
    stale = sum(doc_of[i] == gone for f in intact for i in by_shard[f])
    assert second["shards_corrupt"] == 1
    assert second["rows_not_in_input"] == stale > 0
    assert second["rows_duplicate"] == sum(doc_of[i] != gone for i in by_shard[copied])
    assert second["rows_this_run"] == sum(doc_of[i] != gone for i in by_shard[cut])
    assert second["rows"] == len(current)
    assert Counter(ids(read_rows(tmp_path / "out"))) == Counter(current)  # exactly once
    merged = [json.loads(x) for x in (tmp_path / "out" / DOCUMENTS).read_text().splitlines()]
    assert sorted(d["doc_id"] for d in merged) == sorted(d["id"] for d in docs if d["id"] != gone)
    err = capsys.readouterr().err
    assert f"{cut}:" in err and "cannot be read" in err and "already in" in err
    assert any(m["moved_to"].endswith(".corrupt-1") for m in second["set_aside"])

    third = run_extract(cfg, progress=False)  # converged: nothing to redo or set aside
    assert third["rows_this_run"] == 0 and third["set_aside"] == []


def _schema(cfg):
    from kgc.schema import read_schema

    return read_schema(cfg.schema_path)


def _offsets(cfg):
    from kgc.modeling.engines import offsets_fn

    return offsets_fn(cfg.engine)
