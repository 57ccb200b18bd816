"""RE data augmentation: generated samples parsed, validated (entities in the context, types
allowed, requested relation), de-duplicated, rejected ones counted by reason, written in the
input's format and convertible to IEPile RE with `kgc convert`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("openai")

from kgc.errors import KgcError  # noqa: E402
from kgc.icl import augment  # noqa: E402
from kgc.icl.config import load_icl_config  # noqa: E402
from kgc.icl.runner import run_icl  # noqa: E402
from tests.support.replay import ReplayServer  # noqa: E402

pytestmark = pytest.mark.timeout(60)
EX = Path(__file__).resolve().parent.parent / "examples" / "icl"


def sample_line(context, head, tail, ht="ORGANIZATION", tt="PERSON", rel="org:founded_by"):
    return json.dumps(
        {
            "relation": rel,
            "context": context,
            "head": head,
            "head_type": ht,
            "tail": tail,
            "tail_type": tt,
        }
    )


GENERATED = "\n".join(
    [
        "Here are the new samples:",
        sample_line("Halvard Ship Works was founded by Erik Halvard in 1901 .", "Halvard Ship Works", "Erik Halvard"),
        sample_line("Halvard Ship Works was founded by Erik Halvard in 1901 .", "Halvard Ship Works", "Erik Halvard"),
        sample_line("Mira Sol launched Sunpath Media in 2020 .", "Sunpath Media", "Mira Sol", ht="COMPANY"),
        sample_line("The firm was created by Ola Berg .", "Nordic Ink", "Ola Berg"),
        sample_line("Nordic Ink was created by Ola Berg .", "Nordic Ink", "Ola Bergström"),
        sample_line("Ola Berg works at Nordic Ink .", "Ola Berg", "Nordic Ink", rel="per:employee_of"),
        sample_line("Lumen Robotics was started in 2011 by engineer Marta Ilves .", "Lumen Robotics", "Marta Ilves"),
        sample_line("The Berg-Lund Trust was set up by Ann Lund .", "Berg", "Ann Lund"),
        "Relation: org:founded_by. Context: greenleaf co-op was formed by Ruth Ames . Head Entity: Greenleaf Co-op. Head Type: organization. Tail Entity: Ruth Ames. Tail Type: PERSON.",
        '{"relation": "org:founded_by", "context": "no entities here"}',
    ]
)  # fmt: skip


def run(srv, tmp_path, input_file, **aug):
    cfg = load_icl_config(
        None,
        data={
            "mode": "augment",
            "input": str(input_file),
            "output": str(tmp_path / "out"),
            "client": {
                "base_url": srv.base_url,
                "model": "m",
                "allow_no_key": True,
                "cache_dir": None,
            },
            "augment": aug,
        },
    )
    return run_icl(cfg)


def test_tacred_augmentation_validates_dedups_and_counts(tmp_path):
    with ReplayServer([{"match": "'org:founded_by'", "reply": GENERATED}], default="") as srv:
        res = run(srv, tmp_path, EX / "tacred_train.json", relations=["org:founded_by"], k=2)
        prompt = srv.requests[0]["body"]["messages"][0]["content"]
        assert srv.requests[0]["body"]["temperature"] == 1.0
    assert prompt.count('"relation": "org:founded_by"') == 2  # k demonstrations, typed
    assert "ORGANIZATION" in prompt and "CITY" in prompt  # the allowed types are listed
    s = res.summary
    assert s["accepted"] == 2
    assert s["rejected_by_reason"] == {
        "duplicate": 1,
        "duplicate_of_demonstration": 1,
        "head_not_in_context": 1,
        "missing_field": 1,
        "span_not_on_token_boundary": 1,
        "tail_not_in_context": 1,
        "type_not_allowed": 1,
        "unparseable_line": 1,
        "wrong_relation": 1,
    }
    generated = json.loads((tmp_path / "out" / "generated.json").read_text())
    first, second = generated
    assert first["token"][first["subj_start"] : first["subj_end"] + 1] == [
        "Halvard",
        "Ship",
        "Works",
    ]
    assert first["token"][first["obj_start"] : first["obj_end"] + 1] == ["Erik", "Halvard"]
    assert (first["subj_type"], first["obj_type"]) == ("ORGANIZATION", "PERSON")
    # case-insensitive find keeps the context's own spelling; types map to the allowed form
    assert second["token"][second["subj_start"] : second["subj_end"] + 1] == ["greenleaf", "co-op"]
    assert second["subj_type"] == "ORGANIZATION"
    # generated TACRED records read back as few-shot RE demonstrations
    from kgc.icl.fewshot_re import read_instances

    assert [
        i.relation for i in read_instances(str(tmp_path / "out" / "generated.json"), "x", True)
    ] == ["org:founded_by"] * 2


def test_generated_data_converts_to_iepile_re(tmp_path):
    from kgc.convert import convert_file

    with ReplayServer([{"match": "'org:founded_by'", "reply": GENERATED}], default="") as srv:
        run(srv, tmp_path, EX / "tacred_train.json", relations=["org:founded_by"])
    out = tmp_path / "out"
    stats = convert_file(
        "RE", out / "generated_re.jsonl", out / "generated_re_schema.json", tmp_path / "re.jsonl"
    )
    assert (stats.records_in, stats.records_out) == (2, 2)
    recs = [json.loads(x) for x in (tmp_path / "re.jsonl").read_text().splitlines()]
    assert json.loads(recs[0]["output"]) == {
        "org:founded_by": [{"subject": "Halvard Ship Works", "object": "Erik Halvard"}]
    }


def test_deepke_format_in_and_out(tmp_path):
    reply = "\n".join(
        [
            json.dumps({"context": "Jo Park founded Lattice Labs .", "head": "Lattice Labs", "head_type": "organization", "tail": "Jo Park", "tail_type": "person"}),
            json.dumps({"context": "Bad types .", "head": "Bad", "head_type": "city", "tail": "types", "tail_type": "person"}),
        ]
    )  # fmt: skip
    with ReplayServer([{"match": "'org:founded_by'", "reply": reply}], default="") as srv:
        res = run(srv, tmp_path, EX / "augment_deepke.json", requests_per_relation=2)
        # two rounds per relation, different salts: two requests per relation
        assert srv.count() == 4
    gen = json.loads((tmp_path / "out" / "generated.json").read_text())
    assert gen == [
        {
            "text": "Jo Park founded Lattice Labs .",
            "head_entity": "Lattice Labs",
            "head_type": "organization",
            "tail_entity": "Jo Park",
            "tail_type": "person",
            "relation": "org:founded_by",
        }
    ]
    assert res.summary["rejected_by_reason"] == {"duplicate": 1, "type_not_allowed": 2}
    assert [r["id"] for r in res.rows] == [
        "org:founded_by#1",
        "org:founded_by#2",
        "per:employee_of#1",
        "per:employee_of#2",
    ]
    assert res.rows[2]["errors"] == ["no sample could be read from the output"]


def test_candidates_reads_json_lists_and_lines():
    cands, bad = augment.candidates('```json\n[{"context": "a"}, {"context": "b"}]\n```')
    assert [c["context"] for c in cands] == ["a", "b"] and bad == 0
    cands, bad = augment.candidates('{"context": "a"}\nprose\n\n{"context": "b",')
    assert len(cands) == 2 and bad == 1


def test_unknown_relation_is_an_error(tmp_path):
    with ReplayServer([]) as srv, pytest.raises(KgcError, match="no demonstrations"):
        run(srv, tmp_path, EX / "augment_deepke.json", relations=["per:spouse"])
