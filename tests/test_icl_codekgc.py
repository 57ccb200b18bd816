"""CodeKGC: schema and demonstrations as code; the model's code read with `ast` against a
whitelist — hostile output yields errors, executes nothing, never crashes; F1 on the bundled
CoNLL04-style file through a replaying server."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from kgc.icl import codekgc
from kgc.icl.codekgc import CodeReader, CodeSchema

pytestmark = pytest.mark.timeout(60)
EX = Path(__file__).resolve().parent.parent / "examples" / "icl"
SCHEMA = CodeSchema(
    ["person", "organization", "location"],
    ["Work for", "Kill", "Organization based in", "Live in", "Located in"],
)
READER = CodeReader(SCHEMA, max_source_chars=5000, max_nodes=400, max_string_chars=100)
GOOD = "Triple(person('Ann Lee'), Rel('Work for'), organization('Acme'))"


def test_schema_code_is_python_with_a_class_per_label():
    code = SCHEMA.code()
    tree = ast.parse(code)  # syntax only
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {
        "Entity",
        "Rel",
        "Triple",
        "Extract",
        "person",
        "Work_for",
        "Organization_based_in",
    } <= classes
    odd = CodeSchema(["class", "1st type", "Entity"], ["a-b", "a b"])
    names = list(odd.entity_class.values()) + list(odd.relation_class.values())
    assert all(n.isidentifier() for n in names) and len(set(names)) == len(names)
    assert "Entity" not in names and "class" not in names


def test_demonstration_code_round_trips():
    triples = [{"head": "Ann Lee", "head_type": "person", "relation": "Work for", "tail": "Acme", "tail_type": "organization"}]  # fmt: skip
    res = READER.parse(SCHEMA.extract_code(triples))
    assert res.errors == [] and res.triples == triples


@pytest.mark.parametrize(
    "code",
    [
        f"extract = Extract([{GOOD}])",
        f"extract = Extract([{GOOD},])",
        f"Extract([{GOOD}])",
        f"```python\nextract = Extract(triples=[{GOOD}])\n```",
        "extract = Extract([Triple(head=person('Ann Lee'), relation=Work_for(), tail=organization('Acme'))])",
        f'""" Ann Lee works for Acme . """\nextract = Extract([{GOOD}])\n""" Next text . """\nextract = Extract([])',
    ],
)
def test_accepted_shapes(code):
    res = READER.parse(code)
    assert res.errors == []
    assert [(t["head"], t["relation"], t["tail"]) for t in res.triples] == [
        ("Ann Lee", "Work for", "Acme")
    ]


MARKER = Path("/tmp/kgc-codekgc-test-pwned")
HOSTILE = [
    (f"extract = Extract([{GOOD}, __import__('os').system('touch {MARKER}')])", "call of attribute .system"),
    (f"import os\nos.system('touch {MARKER}')\nextract = Extract([{GOOD}])", "not allowed (Import"),
    ("extract = Extract([Triple(person(__import__('os').getcwd()), Rel('Kill'), person('b'))])", "expected a string literal"),
    ("extract = Extract([Triple(person('a'.join('bc')), Rel('Kill'), person('b'))])", "expected a string literal"),
    ("extract = Extract([Triple(person('a' * 10**9), Rel('Kill'), person('b'))])", "expected a string literal"),
    ("extract = Extract([Triple(person.__class__('a'), Rel('Kill'), person('b'))])", "expected ClassName"),
    ("extract = Extract([Triple(object('a'), Rel('Kill'), person('b'))])", "unknown entity class 'object'"),
    ("extract = Extract([Triple(person('a'), Rel('Owns'), person('b'))])", "relation 'Owns'"),
    ("extract = Extract([Triple(person('a'), eval('Rel'), person('b'))])", "unknown relation class 'eval'"),
    ("extract = Extract([Triple(person('a'), Rel('Kill'), person(f'{1+1}'))])", "expected a string literal"),
    ("extract = Extract([Triple(person(b'a'), Rel('Kill'), person('b'))])", "expected a string literal"),
    ("extract = Extract([Triple(person('" + "x" * 500 + "'), Rel('Kill'), person('b'))])", "over the limit of 100"),
    ("extract = Extract([Triple(*args)])", "needs head, relation and tail"),
    ("extract = Extract(lambda: 1)", "needs a list literal"),
    ("extract = Extract([" + GOOD + "] + [])", "needs a list literal"),
    ("extract = (lambda: __import__('os'))()", "must be Extract"),
    ("x = 1\ndel x", "not allowed (Assign"),
    ("extract = Extract([" + "(" * 300 + ")" * 300 + "])", "nest deeper"),
    ("extract = Extract([" + ", ".join([GOOD] * 30) + "])", "more than 400 syntax nodes"),
    ("1" * 50_000, "over the limit of 5000"),
    ("extract = Extract([9" + "9" * 4400 + "])", "Exceeds the limit (4300 digits)"),
    ("extract = Extract([Triple(person(" + "9" * 4000 + "), Rel('Kill'), person('b'))])", "expected a string literal"),
    ("print('hi')", "not allowed"),
    ("while True: pass", "not allowed (While"),
]  # fmt: skip


@pytest.mark.parametrize("code, error", HOSTILE)
def test_hostile_output_is_read_not_run(code, error):
    MARKER.unlink(missing_ok=True)
    res = READER.parse(code)
    assert any(error in e for e in res.errors), res.errors
    assert not MARKER.exists()
    for t in res.triples:  # whatever was accepted is plain strings from the whitelist
        assert set(t) == {"head", "head_type", "relation", "tail", "tail_type"}
        assert all(isinstance(v, str) for v in t.values())


def test_hostile_output_keeps_the_good_triples():
    res = READER.parse(HOSTILE[0][0])
    assert [t["head"] for t in res.triples] == ["Ann Lee"]


def test_truncated_and_broken_output():
    cut = f"extract = Extract([{GOOD}, Triple(person('Bo'), Rel('Kil"
    res = READER.parse(cut)
    assert [t["head"] for t in res.triples] == ["Ann Lee"] and "not valid Python" in res.errors[0]
    res = READER.parse("The triples are: " + GOOD + " and that is all")
    assert len(res.triples) == 1
    for junk in ("", "   ", None, 42, "Sorry, no code.", "extract = ", "Triple(", "))))"):
        res = READER.parse(junk)
        assert res.triples == [] and res.errors


def test_the_module_never_evaluates_or_executes():
    """No call in kgc/icl/codekgc.py can run code: only ast.parse builds a tree."""
    banned = {"eval", "exec", "compile", "__import__", "getattr", "import_module", "literal_eval"}
    tree = ast.parse(inspect.getsource(codekgc))
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            called.add(f.id if isinstance(f, ast.Name) else getattr(f, "attr", ""))
    assert not called & banned
    assert "parse" in called  # ast.parse is how the output is read


def _codekgc_cfg(tmp_path, srv, **codekgc):
    from kgc.icl.config import load_icl_config

    return load_icl_config(
        None,
        data={
            "mode": "codekgc",
            "input": str(EX / "conll04_test.json"),
            "output": str(tmp_path / "out"),
            "client": {
                "base_url": srv.base_url,
                "model": "m",
                "allow_no_key": True,
                "cache_dir": None,
            },  # fmt: skip
            "codekgc": codekgc,
        },
    )


def test_f1_on_the_bundled_conll04_file(tmp_path):
    pytest.importorskip("openai")
    from kgc.icl.runner import run_icl
    from tests.support.replay import ReplayServer, load_rules

    rules, default = load_rules(EX / "replay_codekgc.json")
    with ReplayServer(rules, default=default) as srv:
        cfg = _codekgc_cfg(tmp_path, srv, demos=str(EX / "codekgc_demos.json"))
        res = run_icl(cfg)
        prompt = srv.requests[0]["body"]["messages"][1]["content"]
    assert "class Work_for(Rel):" in prompt and prompt.endswith("extract =")
    assert prompt.count("extract = Extract(") == 4  # the demonstrations
    s = res.summary["scores"]["triple"]
    assert (s["tp"], s["pred"], s["gold"]) == (5, 6, 9)
    assert res.summary["report"] == "triple: P 83.33  R 55.56  F1 66.67"
    rows = {r["id"]: r for r in res.rows}
    assert len(rows) == 6 and rows["c6"]["triples"] == [] and rows["c6"]["errors"]
    assert "call of attribute .system" in rows["c3"]["errors"][0]
    assert not Path("/tmp/kgc-codekgc-pwned").exists()
    assert (tmp_path / "out" / "schema.py.txt").read_text() == SCHEMA_FOR(cfg)


def SCHEMA_FOR(cfg):  # noqa: N802 - reads like the thing it builds
    return codekgc.build_schema(cfg, codekgc.load_demos(cfg), []).code()


DEEPKE = Path(__file__).resolve().parent / "data" / "deepke" / "codekgc"


def test_deepke_prompt_files_run_as_they_are(tmp_path):
    """DeepKE's own CodeKGC schema_prompt and ICL_prompt (copies in tests/data/deepke/):
    read as text, parsed with ast, sent verbatim ahead of the query; the answers are read
    against the schema their classes define."""
    pytest.importorskip("openai")
    from kgc.icl.runner import run_icl
    from tests.support.replay import ReplayServer, load_rules

    rules, default = load_rules(EX / "replay_codekgc.json")
    schema_text = (DEEPKE / "schema_prompt").read_text()
    icl_text = (DEEPKE / "ICL_prompt").read_text()
    with ReplayServer(rules, default=default) as srv:
        cfg = _codekgc_cfg(tmp_path, srv, schema_prompt=str(DEEPKE / "schema_prompt"),
                          icl_prompt=str(DEEPKE / "ICL_prompt"))  # fmt: skip
        res = run_icl(cfg)
        prompt = srv.requests[0]["body"]["messages"][1]["content"]
    assert prompt.startswith(schema_text.rstrip()) and icl_text.rstrip() in prompt
    assert prompt.endswith("extract =")
    assert res.summary["demonstrations"] == 15
    assert res.summary["entity_types"] == ["person", "organization", "location"]
    assert res.summary["relations"] == ["Work for", "Kill", "Organization based in",
                                        "Live in", "Located in"]  # fmt: skip
    s = res.summary["scores"]["triple"]
    assert (s["tp"], s["pred"], s["gold"]) == (5, 6, 9)  # as with kgc's own prompt
    assert not Path("/tmp/kgc-codekgc-pwned").exists()


def test_deepke_prompt_files_are_never_run(tmp_path):
    """Code in a prompt file is data: a schema prompt's statements are not run; an ICL
    prompt statement outside the whitelist is an error naming its line."""
    from kgc.errors import KgcError

    marker = tmp_path / "pwned"
    schema = tmp_path / "schema_prompt"
    schema.write_text(
        f"import os\nos.system('touch {marker}')\n" + (DEEPKE / "schema_prompt").read_text()
    )
    parsed, _ = codekgc.schema_from_prompt(str(schema))
    assert parsed.relations[0] == "Work for" and not marker.exists()
    icl = tmp_path / "ICL_prompt"
    icl.write_text(
        '""" Ann Lee works for Acme . """\n'
        "extract = Extract([Triple(person('Ann Lee'), Rel('Work for'), organization('Acme'))])\n"
        '""" Bad . """\n'
        f"extract = Extract([__import__('os').system('touch {marker}')])\n"
    )
    with pytest.raises(KgcError, match=r"ICL_prompt:4.*codekgc.icl_prompt statement"):
        codekgc.demos_from_prompt(str(icl), CodeReader(parsed))
    assert not marker.exists()
    with pytest.raises(KgcError, match="not Python code"):
        bad = tmp_path / "bad"
        bad.write_text("class (:\n")
        codekgc.schema_from_prompt(str(bad))
